"""Item-level policy: the vectorised MMR and brand-run rule against per-row pure-Python
references on random batches, hand-worked known answers, and the relevance, penalty and
clustering helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.ranking.candidates import PAD
from models.ranking.item_policy import (
    apply_penalties,
    brand_run_rule,
    item_clusters,
    mmr_order,
    relevance,
)

N_ITEMS = 40


# --- per-row references -------------------------------------------------------------------


def ref_mmr_row(
    items: list[int],
    rel: list[float],
    lam: float,
    m: int,
    cat: list[int],
    brand: list[int],
    cluster: list[int],
    weights: tuple[float, float, float],
) -> list[int]:
    """MMR on one row, straight from the definition; returns the column order."""
    w_cat, w_brand, w_emb = weights

    def sim(a: int, b: int) -> float:
        ia, ib = items[a], items[b]
        same_cat = cat[ia] == cat[ib]
        same_brand = brand[ia] >= 0 and brand[ia] == brand[ib]
        same_emb = cluster[ia] >= 0 and cluster[ia] == cluster[ib]
        return w_cat * float(same_cat) + w_brand * float(same_brand) + w_emb * float(same_emb)

    cols = range(len(items))
    valid = [c for c in cols if items[c] != PAD]
    remaining = [c for c in valid if math.isfinite(rel[c])]
    chosen: list[int] = []
    for step in range(m):
        if not remaining:
            break
        if step == 0:
            best = max(remaining, key=lambda c: rel[c])  # max keeps the first of equal keys
        else:
            best = max(
                remaining,
                key=lambda c: lam * rel[c] - (1 - lam) * max(sim(i, c) for i in chosen),
            )
        chosen.append(best)
        remaining.remove(best)
    tail = sorted(remaining, key=lambda c: -rel[c])
    unscored = [c for c in valid if not math.isfinite(rel[c])]
    return chosen + tail + unscored + [c for c in cols if items[c] == PAD]


def ref_brand_row(items: list[int], brand: list[int], k: int) -> list[int]:
    """Brand-run rule on one row, by moving list elements; returns the column order."""
    order = list(range(len(items)))
    if k == 0:
        return order

    def brand_at(p: int) -> int:
        return brand[items[order[p]]]

    run_brand, run_len = -1, 0
    for p in range(len(order)):
        if items[order[p]] == PAD:
            break
        b = brand_at(p)
        if run_len >= k and b == run_brand:
            q = next(
                (
                    q
                    for q in range(p + 1, len(order))
                    if items[order[q]] != PAD and brand_at(q) != run_brand
                ),
                None,
            )
            if q is None:
                break
            order.insert(p, order.pop(q))
            b = brand_at(p)
        if b >= 0 and b == run_brand:
            run_len += 1
        else:
            run_brand, run_len = b, int(b >= 0)
    return order


# --- random batches -----------------------------------------------------------------------


def random_batch(
    rng: np.random.Generator, n: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items, rel, movable): PAD tails of random length (empty rows too), tie-heavy or
    continuous relevance, sometimes a valid item without a finite relevance."""
    items = rng.integers(0, N_ITEMS, (n, width))
    if rng.random() < 0.5:  # distinct items per row, as real carousels
        items = np.argsort(rng.random((n, N_ITEMS)), axis=1)[:, :width]
    lens = rng.integers(0, width + 1, n)
    items = np.where(np.arange(width)[None, :] < lens[:, None], items, PAD)
    if rng.random() < 0.5:
        rel = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], (n, width))
    else:
        rel = rng.random((n, width))
    if rng.random() < 0.3:
        rel[rng.random((n, width)) < 0.1] = np.nan
    rel[items == PAD] = np.nan
    movable = rng.random(n) < 0.8
    return items.astype(np.int64), rel, movable


def random_attributes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Few categories, brands (-1 unknown) and clusters (-1 none): many collisions."""
    cat = rng.integers(0, 4, N_ITEMS)
    brand = rng.integers(-1, 4, N_ITEMS)
    cluster = rng.integers(-1, 4, N_ITEMS).astype(np.int32)
    return cat, brand, cluster


def assert_permutations(order: np.ndarray, items: np.ndarray, movable: np.ndarray) -> None:
    width = items.shape[1]
    assert order.dtype == np.int64 and order.shape == items.shape
    assert (np.sort(order, axis=1) == np.arange(width)[None, :]).all()
    assert (order[~movable] == np.arange(width)[None, :]).all()
    out = np.take_along_axis(items, order, axis=1)
    n_valid = (items != PAD).sum(axis=1)
    assert ((out != PAD) == (np.arange(width)[None, :] < n_valid[:, None])).all()


DEFAULT_WEIGHTS = (0.25, 0.25, 0.5)  # mmr_order's similarity weights (category, brand, cluster)


def check_mmr_against_reference(
    items: np.ndarray,
    rel: np.ndarray,
    movable: np.ndarray,
    attributes: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    lam: float,
    m: int,
    weights: tuple[float, float, float] | None = None,
    context: tuple = (),
) -> None:
    """mmr_order (with its default weights when `weights` is None) gives permutations, and each
    movable row is the reference's order."""
    cat, brand, cluster = attributes
    chosen = {} if weights is None else {"weights": weights}
    order = mmr_order(
        items,
        rel,
        lam=lam,
        m=m,
        movable=movable,
        item_cat=cat,
        item_brand=brand,
        item_cluster=cluster,
        **chosen,
    )
    assert_permutations(order, items, movable)
    got = np.take_along_axis(items, order, axis=1)
    for row in np.flatnonzero(movable):
        ref = ref_mmr_row(
            items[row].tolist(),
            rel[row].tolist(),
            lam,
            m,
            cat.tolist(),
            brand.tolist(),
            cluster.tolist(),
            DEFAULT_WEIGHTS if weights is None else weights,
        )
        assert got[row].tolist() == items[row][ref].tolist(), (*context, row)


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_mmr_matches_reference_on_random_batches(lam: float) -> None:
    rng = np.random.default_rng(int(lam * 10))
    weight_sets = [(0.25, 0.25, 0.5), (1.0, 0.0, 0.0), (0.2, 0.3, 0.5), (0.0, 0.5, 0.5)]
    for trial in range(60):
        width = int(rng.choice([1, 2, 3, 5, 8, 12]))
        m = int(rng.choice([0, 1, 2, 3, width, width + 2]))
        weights = weight_sets[trial % len(weight_sets)]
        items, rel, movable = random_batch(rng, 12, width)
        check_mmr_against_reference(
            items,
            rel,
            movable,
            random_attributes(rng),
            lam=lam,
            m=m,
            weights=weights,
            context=(trial, width, m, weights),
        )


@pytest.mark.parametrize("k", [1, 2, 3])
def test_brand_run_matches_reference_on_random_batches(k: int) -> None:
    rng = np.random.default_rng(100 + k)
    for trial in range(60):
        width = int(rng.choice([1, 2, 3, 5, 8, 12, 20]))
        items, _, movable = random_batch(rng, 15, width)
        # few brands, so runs are common; sometimes a single brand everywhere
        brand = rng.integers(-1, 1 if trial % 7 == 0 else 3, N_ITEMS)
        order = brand_run_rule(items, item_brand=brand, k=k, movable=movable)
        assert_permutations(order, items, movable)
        got = np.take_along_axis(items, order, axis=1)
        for row in range(len(items)):
            if movable[row]:
                ref = ref_brand_row(items[row].tolist(), brand.tolist(), k)
                assert got[row].tolist() == items[row][ref].tolist(), (trial, width, row)


def test_wide_rows_match_references() -> None:
    # W beyond int8 range for the per-column "unknown" keys, few MMR steps to keep it quick
    rng = np.random.default_rng(11)
    width = 150
    items, rel, movable = random_batch(rng, 6, width)
    cat, brand, cluster = random_attributes(rng)
    for lam, m in [(0.5, 4), (0.0, 3)]:
        check_mmr_against_reference(items, rel, movable, (cat, brand, cluster), lam=lam, m=m)
    order = brand_run_rule(items, item_brand=brand, k=1, movable=movable)
    got = np.take_along_axis(items, order, axis=1)
    for row in np.flatnonzero(movable):
        ref = ref_brand_row(items[row].tolist(), brand.tolist(), 1)
        assert got[row].tolist() == items[row][ref].tolist()


# --- MMR known answers --------------------------------------------------------------------

# items 0 and 1 are near-duplicates (same category, brand and cluster), item 2 differs in all
CAT = np.array([0, 0, 1])
BRAND = np.array([0, 0, 1])
CLUSTER = np.array([0, 0, 1], dtype=np.int32)


def _mmr(items: np.ndarray, rel: np.ndarray, **kw: object) -> np.ndarray:
    params: dict = {
        "lam": 0.5,
        "m": 3,
        "movable": np.ones(len(items), dtype=bool),
        "item_cat": CAT,
        "item_brand": BRAND,
        "item_cluster": CLUSTER,
    } | kw
    return np.take_along_axis(items, mmr_order(items, rel, **params), axis=1)


def test_mmr_moves_different_item_ahead_of_near_duplicate() -> None:
    items = np.array([[0, 1, 2]])
    rel = np.array([[1.0, 0.9, 0.5]])
    # pick 1: item 0; then item 1: .5*.9 - .5*1 = -.05 < item 2: .5*.5 - 0 = .25
    assert _mmr(items, rel).tolist() == [[0, 2, 1]]
    # lam = 1 is the plain relevance order; one MMR pick leaves the rest to relevance
    assert _mmr(items, rel, lam=1.0).tolist() == [[0, 1, 2]]
    assert _mmr(items, rel, m=1).tolist() == [[0, 1, 2]]
    # only the category counts: item 1 is then .45 - .5*.25 = .325 > .25
    assert _mmr(
        items, rel, weights=(0.25, 0.0, 0.75), item_cluster=np.array([0, 1, 2])
    ).tolist() == [[0, 1, 2]]


def test_mmr_unknown_brand_and_cluster_are_never_similar() -> None:
    items = np.array([[0, 1, 2]])
    rel = np.array([[1.0, 0.9, 0.5]])
    # items 0 and 1 differ in category; brand and cluster unknown (-1) for both
    out = _mmr(
        items,
        rel,
        lam=0.1,
        item_cat=np.array([0, 1, 2]),
        item_brand=np.array([-1, -1, 1]),
        item_cluster=np.array([-1, -1, 1]),
    )
    assert out.tolist() == [[0, 1, 2]]


def test_mmr_ties_follow_incoming_order_and_pad_stays_last() -> None:
    items = np.array([[2, 1, 0, PAD, PAD], [0, 1, 2, PAD, PAD], [PAD] * 5])
    rel = np.array([[0.5, 0.5, 0.5] + [np.nan] * 2] * 2 + [[np.nan] * 5])
    cat = np.array([0, 1, 2])
    out = _mmr(items, rel, lam=0.3, item_cat=cat, item_brand=cat, item_cluster=cat)
    assert out.tolist() == [[2, 1, 0, PAD, PAD], [0, 1, 2, PAD, PAD], [PAD] * 5]


def test_mmr_lam_one_is_stable_relevance_sort() -> None:
    rng = np.random.default_rng(7)
    items, rel, _ = random_batch(rng, 200, 10)
    rel = np.where(items == PAD, np.nan, np.round(np.nan_to_num(rel, nan=0.3), 1))
    cat, brand, cluster = random_attributes(rng)
    order = mmr_order(
        items,
        rel,
        lam=1.0,
        m=4,
        movable=np.ones(len(items), dtype=bool),
        item_cat=cat,
        item_brand=brand,
        item_cluster=cluster,
    )
    key = np.where(items == PAD, np.inf, -rel)
    assert (order == np.argsort(key, axis=1, kind="stable")).all()


def test_mmr_unscored_valid_items_go_after_scored_ones() -> None:
    items = np.array([[0, 1, 2, PAD]])
    rel = np.array([[np.nan, 0.2, 0.9, np.nan]])
    assert _mmr(items, rel).tolist() == [[2, 1, 0, PAD]]


def test_mmr_immovable_rows_unchanged() -> None:
    items = np.array([[0, 1, 2], [0, 1, 2]])
    rel = np.array([[0.1, 0.2, 0.9], [0.1, 0.2, 0.9]])
    out = _mmr(items, rel, movable=np.array([False, True]))
    assert out.tolist() == [[0, 1, 2], [2, 1, 0]]


@pytest.mark.parametrize(
    ("kw", "bad"),
    [
        ({"lam": -0.1}, "lam"),
        ({"lam": 1.5}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"m": -1}, "m"),
        ({"weights": (0.5, 0.5, 0.5)}, "weights"),
        ({"weights": (-0.5, 0.5, 1.0)}, "weights"),
    ],
)
def test_mmr_validates_parameters(kw: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        _mmr(np.array([[0, 1]]), np.array([[0.5, 0.4]]), **kw)


def test_mmr_empty_batch() -> None:
    items = np.empty((0, 5), dtype=np.int64)
    assert _mmr(items, np.empty((0, 5))).shape == (0, 5)


# --- brand-run known answers --------------------------------------------------------------

A, B, C = 0, 1, 2
BRANDS = np.array([A, A, A, A, B, C, -1, B])  # item i has brand BRANDS[i]


def _brand(row: list[int], k: int, movable: bool = True) -> list[int]:
    items = np.array([row])
    order = brand_run_rule(items, item_brand=BRANDS, k=k, movable=np.array([movable]))
    return np.take_along_axis(items, order, axis=1)[0].tolist()


def test_brand_run_known_answers() -> None:
    # brands [A, A, A, B, C] with k = 2 -> [A, A, B, A, C]
    assert _brand([0, 1, 2, 4, 5], k=2) == [0, 1, 4, 2, 5]
    # k = 1: no two neighbours share a brand while another brand remains -> A B A C A
    assert _brand([0, 1, 2, 4, 5], k=1) == [0, 4, 1, 5, 2]
    # k = 3 allows the run of three
    assert _brand([0, 1, 2, 4, 5], k=3) == [0, 1, 2, 4, 5]
    # unknown brand (-1) breaks a run and is pulled like any other brand
    assert _brand([0, 1, 2, 6, 4], k=2) == [0, 1, 6, 2, 4]
    # the pulled item is the first other brand: A A A A B B -> A A B A A B
    assert _brand([0, 1, 2, 3, 4, 7], k=2) == [0, 1, 4, 2, 3, 7]


def test_brand_run_stops_when_no_other_brand_remains() -> None:
    # A A A B A A A, k = 2: B is pulled to position 2, then nothing but A is left
    assert _brand([0, 1, 2, 4, 3, 0, 1], k=2) == [0, 1, 4, 2, 3, 0, 1]
    assert _brand([0, 1, 2, 3], k=1) == [0, 1, 2, 3]
    # PAD is never pulled forward
    assert _brand([0, 1, 2, PAD, PAD], k=2) == [0, 1, 2, PAD, PAD]


def test_brand_run_disabled_immovable_and_invalid() -> None:
    assert _brand([0, 1, 2, 4, 5], k=0) == [0, 1, 2, 4, 5]
    assert _brand([0, 1, 2, 4, 5], k=1, movable=False) == [0, 1, 2, 4, 5]
    with pytest.raises(ValueError, match="k"):
        _brand([0, 1], k=-1)


def test_movable_must_match_rows() -> None:
    items = np.array([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="movable"):
        brand_run_rule(items, item_brand=BRANDS, k=1, movable=np.array([True]))
    with pytest.raises(ValueError, match="movable"):
        _mmr(items, np.ones((2, 2)), movable=np.array([True, False, True]))


def test_item_index_outside_the_catalogue_raises() -> None:
    items = np.array([[0, len(BRANDS)]])
    with pytest.raises(IndexError, match="item indices"):
        brand_run_rule(items, item_brand=BRANDS, k=1, movable=np.array([True]))


# --- relevance and penalties --------------------------------------------------------------


def test_relevance_min_max_per_row() -> None:
    nan = np.nan
    scores = np.array(
        [
            [3.0, 1.0, 2.0, nan],
            [-2.0, -2.0, -2.0, nan],  # constant row -> 1.0
            [5.0, nan, nan, nan],  # a single score is a constant row
            [nan, nan, nan, nan],  # all PAD
            [0.0, np.inf, 4.0, -np.inf],  # infinities carry no relevance
        ]
    )
    out = relevance(scores)
    expected = np.array(
        [
            [1.0, 0.0, 0.5, nan],
            [1.0, 1.0, 1.0, nan],
            [1.0, nan, nan, nan],
            [nan, nan, nan, nan],
            [0.0, nan, 1.0, nan],
        ]
    )
    np.testing.assert_array_equal(out, expected)


def test_apply_penalties() -> None:
    items = np.array([[0, 1, 2, PAD]])
    rel = np.array([[1.0, 0.5, 0.8, np.nan]])
    has_image = np.array([True, False, False])
    recent = np.array([[True, False, True, False]])
    out = apply_penalties(
        rel, items, has_image=has_image, no_image_penalty=0.5, recent=recent, repeat_penalty=0.25
    )
    np.testing.assert_allclose(out, [[0.75, 0.25, 0.8 * 0.5 * 0.75, np.nan]])
    zero = apply_penalties(
        rel, items, has_image=has_image, no_image_penalty=0.0, recent=recent, repeat_penalty=0.0
    )
    np.testing.assert_array_equal(zero, rel)
    full = apply_penalties(
        rel, items, has_image=has_image, no_image_penalty=1.0, recent=recent, repeat_penalty=0.0
    )
    np.testing.assert_array_equal(full, [[1.0, 0.0, 0.0, np.nan]])


@pytest.mark.parametrize(
    ("name", "value"),
    [("no_image_penalty", -0.1), ("no_image_penalty", 1.5), ("repeat_penalty", float("nan"))],
)
def test_apply_penalties_validates(name: str, value: float) -> None:
    kw = {"no_image_penalty": 0.1, "repeat_penalty": 0.1} | {name: value}
    with pytest.raises(ValueError, match=name):
        apply_penalties(
            np.array([[0.5]]),
            np.array([[0]]),
            has_image=np.array([True]),
            recent=np.array([[False]]),
            **kw,
        )


# --- item clusters ------------------------------------------------------------------------


def test_item_clusters_recovers_separated_directions() -> None:
    rng = np.random.default_rng(3)
    n_true, per, dim = 6, 80, 16
    centres = np.linalg.qr(rng.normal(size=(dim, n_true)))[0].T  # orthonormal directions
    truth = np.repeat(np.arange(n_true), per)
    scale = rng.uniform(0.1, 10.0, len(truth))[:, None]  # the norm must not matter
    factors = scale * (centres[truth] + 0.05 * rng.normal(size=(len(truth), dim)))
    factors[::37] = 0.0  # items the MF never saw
    labels = item_clusters(factors, n_clusters=n_true, seed=1)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    unseen = np.zeros(len(truth), dtype=bool)
    unseen[::37] = True
    assert (labels[unseen] == -1).all()
    seen = ~unseen
    pairs = {(t, lab) for t, lab in zip(truth[seen], labels[seen], strict=True)}
    assert len(pairs) == n_true  # one id per true cluster...
    assert len({lab for _, lab in pairs}) == n_true  # ...and a different one for each
    assert (labels[seen] >= 0).all() and (labels[seen] < n_true).all()


def test_item_clusters_deterministic_and_capped() -> None:
    rng = np.random.default_rng(4)
    factors = rng.normal(size=(300, 8))
    a = item_clusters(factors, n_clusters=10, seed=5)
    assert (a == item_clusters(factors, n_clusters=10, seed=5)).all()
    assert set(a.tolist()) <= set(range(10))
    few = np.zeros((5, 3))
    few[[1, 3]] = [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
    out = item_clusters(few, n_clusters=64)
    assert out.tolist()[0::2] == [-1, -1, -1]
    assert sorted(out[[1, 3]].tolist()) == [0, 1]
    assert (item_clusters(np.zeros((4, 3))) == -1).all()
    with pytest.raises(ValueError, match="n_clusters"):
        item_clusters(factors, n_clusters=0)
