"""Candidate sources beyond `generate` (models.ranking.sources): per-group pools, "your top brands",
"new in your categories" and merging candidate tables, on tiny inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from models.ranking.candidates import Candidates
from models.ranking.catalog import PAD, Catalog
from models.ranking.sources import (
    brand_carousels,
    group_pools,
    merge,
    new_in_categories,
    picked_for_you,
)

NEG = -np.inf


def _affinity(r_hat: np.ndarray):
    """r̂ of (batch row, item) pairs read off a (B, n_items) table."""

    def affinity(rows: np.ndarray, items: np.ndarray) -> np.ndarray:
        return r_hat[np.asarray(rows)[:, None], items]

    return affinity


def _catalog(brands: list[str | None]) -> Catalog:
    n = len(brands)
    return Catalog.build(
        item_ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        categories=np.array(["c"] * n, dtype=object),
        cat_names={},
        in_stock=np.ones(n, dtype=bool),
        has_image=np.ones(n, dtype=bool),
        is_new=np.zeros(n, dtype=bool),
        pop_total=np.ones(n),
        pop_recent=np.zeros(n),
        trend=np.zeros(n),
        trending_n=0,
        brands=np.array(brands, dtype=object),
    )


def _cands(user, ids, items, *, fixed=None) -> Candidates:
    n = len(user)
    width = max((len(x) for x in items), default=0)
    mat = np.full((n, width), PAD, dtype=np.int64)
    for j, x in enumerate(items):
        mat[j, : len(x)] = x
    ids = np.array(ids, dtype=object)
    return Candidates(
        user=np.array(user, dtype=np.int64),
        carousel_id=ids,
        title=np.array([f"T {c}" for c in ids], dtype=object),
        family=np.array([f"f {c}" for c in ids], dtype=object),
        reason=np.array([f"r {c}" for c in ids], dtype=object),
        fixed_order=np.zeros(n, dtype=bool) if fixed is None else np.array(fixed, dtype=bool),
        items=mat,
    )


# ---------------------------------------------------------------------------------------------
# group_pools


def test_group_pools_keep_each_groups_items_in_the_given_order():
    group = np.array([0, 1, 0, -1, 1, 2])  # item 3 has no group
    order = np.array([5, 4, 3, 2, 1, 0])  # best first
    out = group_pools(group, order, 4, 2)
    assert out.dtype == np.int64
    assert out.tolist() == [[2, 0], [4, 1], [5, PAD], [PAD, PAD]]  # group 3 has no items
    # the width cuts each pool
    assert group_pools(group, order, 4, 1).tolist() == [[2], [4], [5], [PAD]]
    # items missing from the order are left out; the order's order is kept
    assert group_pools(group, np.array([4, 0, 2]), 3, 3).tolist() == [
        [0, 2, PAD],
        [4, PAD, PAD],
        [PAD, PAD, PAD],
    ]


def test_group_pools_edge_cases():
    group = np.array([1, 0, 1])
    assert group_pools(group, np.array([], dtype=np.int64), 2, 2).tolist() == [[PAD, PAD]] * 2
    # a catalogue without brands: every item ungrouped, no groups
    assert group_pools(np.array([-1, -1]), np.array([1, 0]), 0, 2).shape == (0, 2)
    assert group_pools(np.array([-1, -1]), np.array([1, 0]), 1, 2).tolist() == [[PAD, PAD]]


# ---------------------------------------------------------------------------------------------
# brand_carousels

BRANDS = ["Acme", "Acme", "Acme", "Solo", "Zest", "Zest"]  # codes by name: Acme 0, Solo 1, Zest 2
# user 0 scores every item; user 1 has item 1 out of stock (-inf) and item 4 unscored (NaN)
BRAND_R = np.array(
    [
        [0.1, 0.5, 0.3, 0.9, 0.2, 0.8],
        [0.4, NEG, 0.4, 0.1, np.nan, 0.7],
    ]
)


def _brand_pools(catalog: Catalog, width: int = 3) -> np.ndarray:
    return group_pools(catalog.item_brand, np.arange(len(catalog.item_ids)), 3, width)


def test_brand_pools_of_the_catalogue():
    catalog = _catalog(BRANDS)
    assert catalog.brand_names.tolist() == ["Acme", "Solo", "Zest"]
    assert _brand_pools(catalog).tolist() == [[0, 1, 2], [3, PAD, PAD], [4, 5, PAD]]


def test_brand_carousels_rank_each_top_brand_by_affinity():
    catalog = _catalog(BRANDS)
    top = np.array([[0, 2], [2, 0]])  # best brand first
    out = brand_carousels(
        catalog, _brand_pools(catalog), top, _affinity(BRAND_R), n_items=2, min_items=2
    )
    # user 1's Zest has one usable item (4 is unscored): dropped; user 1's Acme: 0 and 2 tie at
    # 0.4 and keep the pool's order, 1 is out of stock
    assert out.user.tolist() == [0, 0, 1]
    assert out.carousel_id.tolist() == ["brand:Acme", "brand:Zest", "brand:Acme"]
    assert out.title.tolist() == ["More from Acme", "More from Zest", "More from Acme"]
    assert out.family.tolist() == ["brand"] * 3
    assert out.reason.tolist() == ["top_brands"] * 3
    assert out.fixed_order.tolist() == [False] * 3
    assert out.items.tolist() == [[1, 2], [5, 4], [0, 2]]
    assert out.items.dtype == np.int64


def test_brand_carousels_pad_to_n_items_and_skip_missing_brands():
    catalog = _catalog(BRANDS)
    pools = _brand_pools(catalog)
    top = np.array([[0, -1], [-1, -1]])  # user 1 has no top brand
    out = brand_carousels(catalog, pools, top, _affinity(BRAND_R), n_items=4, min_items=1)
    assert out.user.tolist() == [0]
    assert out.items.tolist() == [[1, 2, 0, PAD]]  # all of Acme, by r̂, PAD-padded
    # one item is enough with min_items = 1: user 0's Solo
    out = brand_carousels(
        catalog, pools, np.array([[1], [1]]), _affinity(BRAND_R), n_items=2, min_items=1
    )
    assert out.carousel_id.tolist() == ["brand:Solo", "brand:Solo"]
    assert out.items.tolist() == [[3, PAD], [3, PAD]]


def test_brand_carousels_empty_cases():
    catalog = _catalog(BRANDS)
    pools = _brand_pools(catalog)
    aff = _affinity(BRAND_R)
    for top in (np.full((2, 0), -1), np.full((0, 1), -1), np.full((2, 1), -1)):
        out = brand_carousels(catalog, pools, top, aff, n_items=3, min_items=1)
        assert len(out) == 0 and out.items.shape == (0, 3)
    no_brands = _catalog([None] * 6)
    out = brand_carousels(
        no_brands, np.empty((0, 3), dtype=np.int64), np.array([[-1]]), aff, n_items=3, min_items=1
    )
    assert len(out) == 0 and out.items.shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# new_in_categories

NEW_POOLS = np.array([[0, 1], [PAD, PAD], [4, 5]])  # category 1 has nothing new
NEW_AFF = np.array([[0.2, 0.9, 0.5], [0.7, 0.1, 0.7]])  # user 0 likes category 1 best
NEW_R = np.array(
    [
        [0.1, 0.2, 0.0, 0.0, 0.3, 0.6],
        [0.5, 0.9, 0.0, 0.0, 0.4, NEG],  # item 5 out of stock for user 1
    ]
)


def _new(**kw) -> Candidates:
    args = {"n_cats": 1, "n_items": 3, "min_items": 2}
    args.update(kw)
    return new_in_categories(NEW_POOLS, NEW_AFF, _affinity(NEW_R), **args)


def test_new_in_categories_takes_the_best_categories_with_new_items():
    out = _new()
    # user 0: category 1 has nothing new -> category 2; user 1: categories 0 and 2 tie -> 0
    assert out.user.tolist() == [0, 1]
    assert out.items.tolist() == [[5, 4, PAD], [1, 0, PAD]]  # by r̂
    assert out.carousel_id.tolist() == ["new_in_categories"] * 2
    assert out.title.tolist() == ["New in your categories"] * 2
    assert out.family.tolist() == ["new"] * 2
    assert out.reason.tolist() == ["new_in_categories"] * 2
    assert out.fixed_order.tolist() == [False, False]


def test_new_in_categories_pools_several_categories_and_ranks_them_together():
    out = _new(n_cats=2)
    # user 0: categories 2, 0 -> 5 (.6), 4 (.3), 1 (.2), 0 (.1); user 1: 0, 2 -> 1, 0, 4 (5 -inf)
    assert out.items.tolist() == [[5, 4, 1], [1, 0, 4]]
    # more categories than there are: only the ones with new items count
    assert _new(n_cats=5, n_items=5).items.tolist() == [[5, 4, 1, 0, PAD], [1, 0, 4, PAD, PAD]]


def test_new_in_categories_drops_users_with_too_few_items():
    out = _new(min_items=3)  # one category holds at most 2 new items
    assert len(out) == 0 and out.items.shape == (0, 3)
    # user 1 has 3 usable items over both categories, user 0 four
    out = _new(n_cats=2, min_items=4, n_items=4)
    assert out.user.tolist() == [0]
    assert out.items.tolist() == [[5, 4, 1, 0]]


def test_new_in_categories_empty_cases():
    aff = _affinity(NEW_R)
    out = new_in_categories(
        np.empty((3, 0), dtype=np.int64), NEW_AFF, aff, n_cats=2, n_items=3, min_items=1
    )
    assert len(out) == 0 and out.items.shape == (0, 3)
    out = new_in_categories(NEW_POOLS, np.empty((0, 3)), aff, n_cats=2, n_items=3, min_items=1)
    assert len(out) == 0 and out.items.shape == (0, 3)
    nothing_new = np.full((3, 2), PAD)
    out = new_in_categories(nothing_new, NEW_AFF, aff, n_cats=2, n_items=3, min_items=1)
    assert len(out) == 0


# ---------------------------------------------------------------------------------------------
# merge


def test_merge_sorts_by_user_keeping_each_tables_order():
    a = _cands([0, 1], ["a0", "a1"], [[1, 2, 3], [4, 5, 6]], fixed=[True, False])
    b = _cands([0, 0], ["b0", "b0x"], [[7], [8]])
    out = merge([a, Candidates.empty(4), b], 2)
    assert out.user.tolist() == [0, 0, 0, 1]
    assert out.carousel_id.tolist() == ["a0", "b0", "b0x", "a1"]
    assert out.title.tolist() == ["T a0", "T b0", "T b0x", "T a1"]
    assert out.family.tolist() == ["f a0", "f b0", "f b0x", "f a1"]
    assert out.reason.tolist() == ["r a0", "r b0", "r b0x", "r a1"]
    assert out.fixed_order.tolist() == [True, False, False, False]
    # items cut or PAD-padded to the width
    assert out.items.tolist() == [[1, 2], [7, PAD], [8, PAD], [4, 5]]
    # later tables come after earlier ones within a user
    out = merge([b, a], 3)
    assert out.carousel_id.tolist() == ["b0", "b0x", "a0", "a1"]
    assert out.items.tolist() == [[7, PAD, PAD], [8, PAD, PAD], [1, 2, 3], [4, 5, 6]]


@pytest.mark.parametrize("parts", [[], [Candidates.empty(5)], [Candidates.empty(0)] * 2])
def test_merge_of_nothing_is_empty(parts):
    out = merge(parts, 3)
    assert len(out) == 0 and out.items.shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# "picked for you"

N = np.nan
# two users' candidate rows: user 0 has two rows sharing item 3, user 1 one short row
FY_USER = np.array([0, 0, 1])
FY_ITEMS = np.array([[3, 1, 4, PAD], [5, 3, 2, 6], [7, 8, PAD, PAD]])
FY_SCORES = np.array([[0.5, 0.4, N, N], [0.1, 0.5, 0.2, 0.3], [0.6, 0.2, N, N]])
FY_BOUGHT = np.array([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0]], dtype=bool)


def _pairs(bought: np.ndarray = FY_BOUGHT):
    """The fixture's candidate rows as the (user, item, score, bought) pairs they hold; item 3
    of user 0 comes twice (two rows), PAD cells are not pairs, item 4 has no score."""
    r, c = np.nonzero(FY_ITEMS != PAD)
    return FY_USER[r], FY_ITEMS[r, c], FY_SCORES[r, c], bought[r, c]


def _fy(bought: np.ndarray = FY_BOUGHT, **kw):
    args = {"rows": 2, "per_carousel": 2, "n_items": 3, "min_items": 2, "explore_weight": 0.0}
    args.update(kw)
    return picked_for_you(*_pairs(bought), n_users=2, **args)


def test_picked_for_you_ranks_each_users_distinct_items_in_blocks():
    cands, p, v = _fy()
    # user 0's distinct scored items: 3 (0.5), 1 (0.4), 6 (0.3), 2 (0.2), 5 (0.1); item 4 has
    # no score; row k starts at the k-th block of 2 and holds 3 items
    assert cands.user.tolist() == [0, 0, 1]
    assert cands.carousel_id.tolist() == ["for_you", "for_you:2", "for_you"]
    assert cands.title.tolist() == ["Picked for you", "More picked for you", "Picked for you"]
    assert set(cands.family) == {"for_you"} and set(cands.reason) == {"for_you"}
    assert not cands.fixed_order.any()
    assert cands.items.tolist() == [[3, 1, 6], [6, 2, 5], [7, 8, PAD]]
    np.testing.assert_allclose(p[0], [0.5, 0.4, 0.3])
    np.testing.assert_allclose(v, p)  # explore_weight 0: the value is the score
    assert np.isnan(p[2, 2])
    # user 1's second block would hold nothing: no row; min_items 3 also drops its first
    cands, _, _ = _fy(min_items=3)
    assert cands.user.tolist() == [0, 0]


def test_picked_for_you_weights_never_bought_items_by_the_users_expected_mix():
    cands, p, v = _fy(explore_weight=1.0, rows=1, n_items=5)
    # user 0: R = 0.5 + 0.4 + 0.3 + 0.2 + 0.1 = 1.5; never bought: 2 (0.2), 5 (0.1): E = 0.3
    # so a new item's value is p * (1 + 1.5 / 0.3) = 6p: 2 -> 1.2, 5 -> 0.6
    assert cands.items[0].tolist() == [2, 5, 3, 1, 6]
    np.testing.assert_allclose(v[0], [1.2, 0.6, 0.5, 0.4, 0.3])
    np.testing.assert_allclose(p[0], [0.2, 0.1, 0.5, 0.4, 0.3])
    # user 1: R = 0.8, E = 0.2 (item 8): 8 -> 0.2 * 5 = 1.0 goes ahead of 7 (0.6)
    assert cands.items[1].tolist()[:2] == [8, 7]
    # a user without never-bought items is ranked by score alone
    only_bought = np.ones_like(FY_BOUGHT)
    c2, _, v2 = _fy(only_bought, rows=1, n_items=5, explore_weight=3.0)
    assert c2.items[0].tolist() == [3, 1, 6, 2, 5]


def test_picked_for_you_off_or_invalid():
    cands, p, v = _fy(rows=0)
    assert len(cands) == 0 and p.shape == (0, 3) and v.shape == (0, 3)
    with pytest.raises(ValueError, match="explore_weight"):
        _fy(explore_weight=-1.0)
