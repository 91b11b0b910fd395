"""models.ranking.candidates: the vectorised `generate` against the former per-user loop (kept here as
the reference), and the catalogue's category pools, brand codes and candidate universe."""

from __future__ import annotations

import numpy as np
import pytest

from models.ranking.candidates import Candidates, generate
from models.ranking.catalog import PAD, Catalog, CuratedCarousel
from models.ranking.item_lists import best_first, top_k_fast, top_k_rows


def hand_catalog(categories, **fields) -> Catalog:
    """`Catalog.build` over items i0, i1, ... of the given categories, every one with an image
    and none new; `fields` are the other arguments."""
    n = len(categories)
    return Catalog.build(
        item_ids=np.array([f"i{i}" for i in range(n)], dtype=object),
        categories=np.array(categories, dtype=object),
        has_image=np.ones(n, dtype=bool),
        is_new=np.zeros(n, dtype=bool),
        **fields,
    )


# ---------------------------------------------------------------------------------------------
# reference: the loop-based generate this module had before it was vectorised. Inputs adapted
# to the column form (a dense (B, n_items) matrix, -inf for an item without a column), and one
# rule made explicit: a list ranked by score leaves out the items scored -inf, and the
# conditions on a list's length (category eligibility, trending non-empty) count what is left.
# Its top-k of each row is item_lists.top_k_rows (argpartition + stable sort, -inf as PAD), the
# plain version the fast top_k_fast is checked against below.


def reference_generate(
    *,
    catalog,
    item_scores,
    col_of,
    cat_affinity,
    cat_eta,
    buy_again,
    curated,
    n_items,
    min_items,
    n_category,
    n_discover_cats=3,
):
    b = item_scores.shape[0]
    dense = np.full((b, len(catalog.item_ids)), -np.inf)
    has = np.flatnonzero(col_of >= 0)
    dense[:, has] = item_scores[:, col_of[has]]

    def usable(items, scores):  # adapted: score-ranked lists hold no item scored -inf
        items = np.asarray(items, dtype=np.int64)
        return items[scores[items] > -np.inf]

    out = []

    def add(u, cid, title, family, reason, fixed, items):
        out.append((u, cid, title, family, reason, fixed, [int(i) for i in items]))

    n_cats = len(catalog.cat_ids)
    n_cat_items = np.array(
        [[len(usable(catalog.cat_items[c], dense[u])) for c in range(n_cats)] for u in range(b)],
        dtype=np.int64,
    ).reshape(b, n_cats)
    eligible = n_cat_items >= min_items
    aff = np.where(eligible, cat_affinity, -np.inf)
    top_cats = top_k_rows(aff, n_category)
    undiscovered = np.where(eligible & (cat_eta <= 0), cat_affinity, -np.inf)
    disc_cats = top_k_rows(undiscovered, n_discover_cats)
    for u in range(b):
        scores = dense[u]
        for cc in curated:
            if cc.immutable:
                items = np.asarray(cc.items, dtype=np.int64)
            else:
                items = usable(cc.items, scores)
                items = items[np.argsort(-scores[items], kind="stable")]
            add(u, cc.carousel_id, cc.title, cc.family, "curated", cc.immutable, items[:n_items])
        if len(buy_again[u]) >= min_items:
            add(
                u,
                "buy_again",
                "Buy it again",
                "buy_again",
                "buy_again",
                False,
                buy_again[u][:n_items],
            )
        t = usable(catalog.trending, scores)
        if len(t):
            add(
                u,
                "trending",
                "Trending now",
                "trending",
                "trending",
                False,
                t[np.argsort(-scores[t], kind="stable")][:n_items],
            )
        for c in top_cats[u]:
            if c == PAD:
                continue
            pool = usable(catalog.cat_items[c], scores)
            items = pool[np.argsort(-scores[pool], kind="stable")][:n_items]
            cid = catalog.cat_ids[c]
            add(
                u,
                f"category:{cid}",
                f"More in {catalog.cat_names[c]}",
                "category",
                "category_affinity",
                False,
                items,
            )
        picks = [usable(catalog.cat_items[c], scores) for c in disc_cats[u] if c != PAD]
        if picks:
            ranked = [p[np.argsort(-scores[p], kind="stable")][:n_items] for p in picks]
            width = max(len(r) for r in ranked)
            inter = np.full((len(ranked), width), PAD, dtype=np.int64)
            for j, r in enumerate(ranked):
                inter[j, : len(r)] = r
            flat = inter.T.reshape(-1)
            flat = flat[flat != PAD][:n_items]
            if len(flat) >= min_items:
                add(u, "discover", "Discover something new", "discover", "discover", True, flat)
    return out


def _rows(cands: Candidates, n_items: int):
    assert cands.items.shape == (len(cands), n_items)
    assert cands.items.dtype == np.int64 and cands.user.dtype == np.int64
    assert cands.fixed_order.dtype == bool
    for field in ("carousel_id", "title", "family", "reason"):
        assert getattr(cands, field).dtype == object
    out = []
    for j in range(len(cands)):
        row = cands.items[j]
        n = int((row != PAD).sum())
        assert (row[:n] != PAD).all() and (row[n:] == PAD).all(), "PAD only at the end"
        out.append(
            (
                int(cands.user[j]),
                cands.carousel_id[j],
                cands.title[j],
                cands.family[j],
                cands.reason[j],
                bool(cands.fixed_order[j]),
                row[:n].tolist(),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# random small worlds


def _world(rng: np.random.Generator):
    n = int(rng.integers(1, 50))
    n_cat_labels = int(rng.integers(1, 8))
    cats = np.array([f"c{int(c)}" for c in rng.integers(0, n_cat_labels, n)], dtype=object)
    in_stock = rng.random(n) < rng.choice([0.6, 0.9, 1.0])
    pop_recent = rng.integers(0, 4, n).astype(float)  # few values: ties
    catalog = hand_catalog(
        cats,
        cat_names={f"c{c}": f"Cat {c}" for c in range(0, n_cat_labels, 2)},
        in_stock=in_stock,
        pop_total=rng.integers(0, 5, n).astype(float),
        pop_recent=pop_recent,
        trend=rng.choice([0.0, 1.0, 2.0], n),
        trending_n=int(rng.integers(0, 12)),
        category_pool=[None, None, 2, 4, 8][int(rng.integers(0, 5))],
    )
    stocked = np.flatnonzero(catalog.in_stock)
    b = int(rng.integers(0, 9))
    curated = []
    for k in range(int(rng.integers(0, 4))):
        m = int(rng.integers(0, min(len(stocked), 9) + 1))
        items = rng.choice(stocked, m, replace=False) if m else np.empty(0, np.int64)
        curated.append(
            CuratedCarousel(
                f"cur{k}", f"Curated {k}", f"fam{k % 2}", items, bool(rng.random() < 0.5)
            )
        )
    # score columns: the universe plus curated items, minus a few, plus a few extra, shuffled
    wanted = np.union1d(catalog.universe(), np.concatenate([c.items for c in curated] + [[]]))
    wanted = wanted.astype(np.int64)
    wanted = wanted[rng.random(len(wanted)) > rng.choice([0.0, 0.1, 0.3])]
    extra = rng.choice(n, int(rng.integers(0, 4)), replace=True) if n else np.empty(0, np.int64)
    cols = rng.permutation(np.union1d(wanted, extra).astype(np.int64))
    col_of = np.full(n, -1, dtype=np.int64)
    col_of[cols] = np.arange(len(cols))
    n_cols = len(cols) + int(rng.integers(0, 3))  # unused trailing columns are allowed
    mode = int(rng.integers(0, 3))
    if mode == 0:
        scores = rng.integers(0, 4, (b, n_cols)).astype(float)  # ties
    else:
        scores = rng.standard_normal((b, n_cols))
    if mode == 2:
        odd = rng.random((b, n_cols)) < 0.1
        scores[odd] = rng.choice([0.0, -0.0, np.nan, np.inf], int(odd.sum()))
    if n_cols:
        scores[:, rng.random(n_cols) < 0.1] = -np.inf  # out of stock for everyone
    scores[rng.random((b, n_cols)) < rng.choice([0.0, 0.05, 0.2])] = -np.inf  # per user
    n_cats = len(catalog.cat_ids)
    aff = rng.integers(0, 5, (b, n_cats)).astype(float) if mode == 0 else rng.random((b, n_cats))
    eta = rng.choice([0.0, -0.5, 1.0, 2.0], (b, n_cats))
    buy = []
    for _ in range(b):
        m = int(rng.integers(0, min(n, 8) + 1))
        buy.append(rng.choice(n, m, replace=False).astype(np.int64) if m else np.empty(0))
    kwargs = dict(
        catalog=catalog,
        item_scores=scores,
        col_of=col_of,
        cat_affinity=aff,
        cat_eta=eta,
        buy_again=buy,
        curated=curated,
        n_items=int(rng.integers(1, 8)),
        min_items=int(rng.integers(0, 5)),
        n_category=int(rng.integers(0, 6)),
        n_discover_cats=int(rng.integers(0, 4)),
    )
    return kwargs


@pytest.mark.parametrize("seed", range(300))
def test_generate_matches_the_loop_reference(seed):
    kwargs = _world(np.random.default_rng(seed))
    want = reference_generate(**kwargs)
    got = generate(**kwargs)
    assert _rows(got, kwargs["n_items"]) == want
    assert len(got) == len(want)


@pytest.mark.parametrize("seed", range(20))
def test_best_first_is_a_stable_argsort(seed):
    rng = np.random.default_rng(seed)
    specials = [0.0, -0.0, 1.0, -1.0, np.inf, 5e-324, -5e-324, 1.0 + 2**-52, 1.0 + 2**-50]
    for _ in range(50):
        m, length, n = (int(x) for x in rng.integers(0, [20, 300 if seed % 4 == 0 else 40, 50]))
        s = [
            rng.standard_normal((m, length)),
            rng.integers(-2, 3, (m, length)).astype(float),
            rng.choice(specials, (m, length)),
            rng.standard_normal((m, length)).astype(np.float32),
        ][int(rng.integers(0, 4))]
        s[rng.random((m, length)) < 0.2] = -np.inf
        order = np.argsort(-s, axis=1, kind="stable")[:, :n]
        keep = np.take_along_axis(s, order, axis=1) > -np.inf
        want = np.full((m, n), PAD)
        want[:, : order.shape[1]] = np.where(keep, order, PAD)
        best, count = best_first(s, n)
        assert best.tolist() == want.tolist()
        assert count.tolist() == keep.sum(axis=1).tolist()


@pytest.mark.parametrize("seed", range(10))
def test_top_k_fast_is_top_k_rows(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        m, width, k = (int(x) for x in rng.integers(0, [20, 40, 12]))
        a = [
            rng.standard_normal((m, width)),
            rng.integers(0, 4, (m, width)).astype(float),
            rng.choice([0.0, -0.0, 1.0, np.inf, np.nan, 2.0], (m, width)),
            rng.random((m, width)).astype(np.float32),
        ][int(rng.integers(0, 4))]
        a[rng.random((m, width)) < 0.3] = -np.inf
        assert top_k_fast(a, k).tolist() == top_k_rows(a, k).tolist()


def test_generate_on_hand_built_inputs():
    # items 0-3 in cA, 4-7 in cB, 8 in cC (too small); 3 is out of stock
    pop = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1], dtype=float)
    catalog = hand_catalog(
        ["cA"] * 4 + ["cB"] * 4 + ["cC"],
        cat_names={"cA": "Apples"},
        in_stock=np.arange(9) != 3,
        pop_total=pop,
        pop_recent=np.array([0, 0, 0, 0, 0, 0, 1, 2, 0], dtype=float),
        trend=np.ones(9),
        trending_n=5,
    )
    assert catalog.trending.tolist() == [7, 6]
    universe = catalog.universe()
    assert universe.tolist() == [0, 1, 2, 4, 5, 6, 7, 8]
    col_of = np.full(9, -1, dtype=np.int64)
    col_of[universe] = np.arange(len(universe))[::-1]  # any column order
    dense = np.array(
        [
            [1.0, 3.0, 3.0, 9.0, 0.5, 0.5, 2.0, 1.0, 4.0],  # ties 1 = 2 keep pool order
            [0.0, 1.0, 2.0, 9.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        ]
    )
    scores = np.empty((2, len(universe)))
    scores[:, col_of[universe]] = dense[:, universe]
    scores[1, col_of[5]] = -np.inf  # item 5 is not for user 1
    cands = generate(
        catalog=catalog,
        item_scores=scores,
        col_of=col_of,
        cat_affinity=np.array([[0.9, 0.1, 5.0], [0.1, 0.2, 5.0]]),
        cat_eta=np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]),
        buy_again=[np.array([3, 8, 1]), np.array([2])],
        curated=[
            CuratedCarousel("ed", "Editors", "editorial", np.array([8, 3, 0]), True),
            CuratedCarousel("deals", "Deals", "deals", np.array([0, 6, 3, 2]), False),
        ],
        n_items=3,
        min_items=3,
        n_category=2,
        n_discover_cats=2,
    )
    assert _rows(cands, 3) == [
        (0, "ed", "Editors", "editorial", "curated", True, [8, 3, 0]),  # 3 has no column: kept
        (0, "deals", "Deals", "deals", "curated", False, [2, 6, 0]),  # 3 has no column: dropped
        (0, "buy_again", "Buy it again", "buy_again", "buy_again", False, [3, 8, 1]),
        (0, "trending", "Trending now", "trending", "trending", False, [6, 7]),
        (0, "category:cA", "More in Apples", "category", "category_affinity", False, [1, 2, 0]),
        (0, "category:cB", "More in cB", "category", "category_affinity", False, [6, 7, 4]),
        (1, "ed", "Editors", "editorial", "curated", True, [8, 3, 0]),
        (1, "deals", "Deals", "deals", "curated", False, [6, 2, 0]),  # 6 = 2: list order
        (1, "trending", "Trending now", "trending", "trending", False, [6, 7]),
        (1, "category:cB", "More in cB", "category", "category_affinity", False, [4, 6, 7]),
        (1, "category:cA", "More in Apples", "category", "category_affinity", False, [2, 1, 0]),
        (1, "discover", "Discover something new", "discover", "discover", True, [4, 6, 7]),
    ]
    assert cands.item_matrix(2).tolist()[3] == [6, 7]
    assert cands.item_matrix(5).tolist()[3] == [6, 7, PAD, PAD, PAD]
    assert cands.item_matrix(0).shape == (12, 0)


def test_generate_edge_cases():
    kwargs = _world(np.random.default_rng(7))
    kwargs["n_items"] = 4
    catalog = kwargs["catalog"]
    n_cats = len(catalog.cat_ids)
    empty = generate(
        **{
            **kwargs,
            "item_scores": np.empty((0, kwargs["item_scores"].shape[1])),
            "cat_affinity": np.empty((0, n_cats)),
            "cat_eta": np.empty((0, n_cats)),
            "buy_again": [],
        }
    )
    assert len(empty) == 0 and empty.items.shape == (0, 4)
    # no score column at all: only the lists in their own order are left
    b = kwargs["item_scores"].shape[0]
    no_cols = {
        **kwargs,
        "item_scores": np.empty((b, 0)),
        "col_of": np.full(len(catalog.item_ids), -1, dtype=np.int64),
    }
    assert _rows(generate(**no_cols), 4) == reference_generate(**no_cols)
    assert set(generate(**no_cols).family) <= {"buy_again"} | {c.family for c in no_cols["curated"]}
    # float32 scores
    f32 = {**kwargs, "item_scores": kwargs["item_scores"].astype(np.float32)}
    assert _rows(generate(**f32), 4) == reference_generate(**f32)
    with pytest.raises(ValueError, match="col_of"):
        generate(**{**kwargs, "col_of": kwargs["col_of"][:-1]})


# ---------------------------------------------------------------------------------------------
# catalogue


def _catalog(**extra) -> Catalog:
    # cA: 0..5 (2 out of stock), cB: 6..8; popularity falls with the index, ties at 4 = 5
    pop = np.array([10, 9, 8, 7, 6, 6, 5, 4, 3], dtype=float)
    return hand_catalog(
        ["cA"] * 6 + ["cB"] * 3,
        cat_names={},
        in_stock=np.array([1, 0, 1, 1, 1, 1, 1, 1, 1], dtype=bool),
        pop_total=pop,
        pop_recent=np.array([0, 0, 0, 0, 0, 1, 0, 0, 2], dtype=float),
        trend=np.ones(9),
        trending_n=3,
        **extra,
    )


def test_category_pool_keeps_the_most_popular_in_stock_items():
    full = _catalog()
    assert [c.tolist() for c in full.cat_items] == [[0, 2, 3, 4, 5], [6, 7, 8]]
    two = _catalog(category_pool=2)
    assert [c.tolist() for c in two.cat_items] == [[0, 2], [6, 7]]
    assert two.pool_matrix().tolist() == [[0, 2], [6, 7]]
    zero = _catalog(category_pool=0)
    assert [len(c) for c in zero.cat_items] == [0, 0]
    assert zero.pool_matrix().tolist() == [[PAD], [PAD]]
    assert _catalog(category_pool=4).pool_matrix().tolist() == [[0, 2, 3, 4], [6, 7, 8, PAD]]
    with pytest.raises(ValueError, match="category_pool"):
        _catalog(category_pool=-1)


def test_universe_is_pools_and_trending():
    full = _catalog()
    assert full.trending.tolist() == [8, 5]
    assert full.universe().tolist() == [0, 2, 3, 4, 5, 6, 7, 8]
    two = _catalog(category_pool=2)
    assert two.universe().tolist() == [0, 2, 5, 6, 7, 8]
    assert two.universe().dtype == np.int64
    assert _catalog(category_pool=0).universe().tolist() == [5, 8]


def test_score_items_cover_the_universe_pool_by_pool():
    cat = _catalog(category_pool=2)
    assert cat.score_items().tolist() == [0, 2, 6, 7, 5, 8]
    assert cat.score_items(np.array([3, 0, 1, 3])).tolist() == [0, 2, 6, 7, 1, 3, 5, 8]
    assert sorted(cat.score_items()) == cat.universe().tolist()


def test_item_brand_codes():
    brands = np.array(
        ["Zeta", None, "Acme", "", float("nan"), "  ", "Acme", "Beta", "Zeta"], object
    )
    cat = _catalog(brands=brands)
    assert cat.brand_names.tolist() == ["Acme", "Beta", "Zeta"]
    assert cat.brand_names.dtype == object
    assert cat.item_brand.tolist() == [2, -1, 0, -1, -1, -1, 0, 1, 2]
    assert cat.item_brand.dtype == np.int64
    none = _catalog()
    assert none.item_brand.tolist() == [-1] * 9 and len(none.brand_names) == 0
    with pytest.raises(ValueError, match="brands"):
        _catalog(brands=brands[:-1])


def _unscored_two_users(catalog: Catalog, *, buy_again: list[np.ndarray]) -> dict:
    """`generate` arguments for two users with no item scores, no category or discovery rows and
    no curated carousels: pools of 3 items (at least 2), 2 shown per carousel."""
    return dict(
        catalog=catalog,
        item_scores=np.full((2, 1), -np.inf),
        col_of=np.full(len(catalog.item_ids), -1, dtype=np.int64),
        cat_affinity=np.zeros((2, 1)),
        cat_eta=np.ones((2, 1)),
        buy_again=buy_again,
        curated=[],
        n_items=3,
        min_items=2,
        n_category=0,
        n_discover_cats=0,
        per_carousel=2,
    )


def test_several_buy_again_rows_take_successive_blocks():
    catalog = hand_catalog(
        ["cA"] * 12,
        cat_names={},
        in_stock=np.ones(12, dtype=bool),
        pop_total=np.arange(12, 0, -1, dtype=float),
        pop_recent=np.zeros(12),
        trend=np.zeros(12),
        trending_n=0,
    )
    bought = np.array([5, 3, 9, 1, 0, 7, 2])  # most bought first
    kwargs = _unscored_two_users(catalog, buy_again=[bought, bought[:4]])
    rows = [(r[0], r[1], r[6]) for r in _rows(generate(**kwargs, buy_again_carousels=3), 3)]
    # row k starts at item k*M (M = 2) and holds the next n_items (3) as its pool;
    # user 1 has 4 purchases: a third row would start at item 5 and have none (< min_items)
    assert rows == [
        (0, "buy_again", [5, 3, 9]),
        (0, "buy_again:2", [9, 1, 0]),
        (0, "buy_again:3", [0, 7, 2]),
        (1, "buy_again", [5, 3, 9]),
        (1, "buy_again:2", [9, 1]),
    ]
    one = [(r[0], r[1]) for r in _rows(generate(**kwargs), 3)]
    assert one == [(0, "buy_again"), (1, "buy_again")]
    with pytest.raises(ValueError, match="buy_again_carousels must be >= 1"):
        generate(**kwargs, buy_again_carousels=0)


def test_best_seller_rows_take_successive_blocks_of_recent_engagement():
    in_stock = np.ones(8, dtype=bool)
    in_stock[2] = False  # never a best seller, however popular
    recent = np.array([0.0, 5.0, 9.0, 5.0, 7.0, 1.0, 0.0, 3.0])
    catalog = hand_catalog(
        ["cA"] * 8,
        cat_names={},
        in_stock=in_stock,
        pop_total=np.array([9.0, 1.0, 9.0, 2.0, 0.0, 0.0, 0.0, 0.0]),
        pop_recent=np.zeros(8),
        trend=np.zeros(8),
        trending_n=0,
        pop_window=recent,
        best_sellers_n=4,
    )
    # by 30-day engagement, ties (1 and 3) by all-time popularity; zero-engagement items out
    assert catalog.best_sellers.tolist() == [4, 3, 1, 7]
    kwargs = _unscored_two_users(catalog, buy_again=[np.empty(0, dtype=np.int64)] * 2)
    rows = [(r[0], r[1], r[6]) for r in _rows(generate(**kwargs, best_seller_carousels=3), 3)]
    # the same rows for every user; a third row (from item 5 on) would be empty
    assert rows == [
        (0, "best_sellers", [4, 3, 1]),
        (0, "best_sellers:2", [1, 7]),
        (1, "best_sellers", [4, 3, 1]),
        (1, "best_sellers:2", [1, 7]),
    ]
    assert {r[1] for r in _rows(generate(**kwargs), 3)} == set()
    with pytest.raises(ValueError, match="best_seller_carousels must be >= 0"):
        generate(**kwargs, best_seller_carousels=-1)
