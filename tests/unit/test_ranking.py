"""Ranking (score_batch / build_pages), held-out metrics and the training user sample, on tiny
hand-built inputs whose answers are known."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from jobs.daily.training_data import sample_users
from models.evaluation import metrics as m
from models.evaluation.holdout import holdout_metrics, page_ndcg, ranking_ndcg
from models.ranking.batch_scoring import personal_pool, score_batch
from models.ranking.catalog import PAD, Catalog, CuratedCarousel
from models.ranking.item_features import FEATURES, FeatureSource
from models.ranking.mf import MFModel
from models.ranking.pages import PAGE_COLUMNS, build_pages, pages
from models.ranking.rank_inputs import BatchMatrices, PageParams, RankInputs

# ---------------------------------------------------------------------------------------------
# a 12-item, 3-category world with 2-D factors, so r̂ and ŝ are read off the tables below
#
# items 0-3 -> cA, 4-7 -> cB, 8-11 -> cC
# u1 = (1, 0): r̂_u1,i = V[i, 0] (likes cA), ŝ_u1 = S[:, 0]
# u2 = (0, 1): r̂_u2,i = V[i, 1],             ŝ_u2 = S[:, 1]

ITEM_IDS = np.array([f"i{i:02d}" for i in range(12)], dtype=object)
CATS = np.array(["cA"] * 4 + ["cB"] * 4 + ["cC"] * 4, dtype=object)
V = np.array(
    [
        [0.9, 0.1],
        [0.8, 0.2],
        [0.7, 0.3],
        [0.6, 0.4],
        [0.5, 0.5],
        [0.4, 0.6],
        [0.3, 0.7],
        [0.2, 0.8],
        [0.1, 0.9],
        [0.05, 1.0],
        [0.02, 1.1],
        [0.01, 1.2],
    ]
)
S = np.array([[0.2, 0.6], [0.5, 0.3], [0.9, 0.1]])  # categories × factors
USERS = np.array(["u1", "u2"], dtype=object)
ETA = {"u1": [3.0, 1.0, 0.1], "u2": [0.5, 0.0, 0.0]}  # u2 never engaged with cB, cC
R_HAT = {"u1": V[:, 0], "u2": V[:, 1]}
S_HAT = {"u1": S[:, 0], "u2": S[:, 1]}
G = {u: S_HAT[u] * np.exp(-np.array(ETA[u])) for u in USERS}  # discovery per category
POP_TOTAL = np.array([10, 20, 5, 0, 3, 8, 1, 2, 6, 4, 9, 7], dtype=float)
POP = np.log1p(POP_TOTAL) / np.log1p(20.0)  # the catalogue's popularity
POP_7D = np.array([3, 11, 7, 1, 9, 5, 12, 2, 8, 10, 4, 6], dtype=float)  # a permutation
TRENDING = (5, 6, 10)  # the only items with recent engagement and growth
PRIORS = {("u1", "category:cA"): 0.5, ("u1", "editors"): 0.4, ("u2", "trending"): 0.9}
CAROUSEL_LAM = {"category:cB": 0.3, "trending": 0.25, "deals": 0.2}
P_GLOBAL = 0.1
BUY_AGAIN = {"u1": np.array([4, 6, 0]), "u2": np.array([1])}  # u2's list is too short
# Diversity switched off: items keep their source's order (fixed mode) and carousels are
# placed greedily by φ under the family rule (beam width 1, no MMR), as in the pre-policy code.
PARAMS = PageParams(
    slots=10,
    items_per_carousel=3,
    candidate_items=4,
    min_items=2,
    category_carousels=3,
    item_lambda=1.0,
    carousel_lambda=1.0,
    brand_run=0,
    no_image_penalty=0.0,
    beam_width=1,
)
# the library defaults for diversity, on the same small pages
DIVERSE = PageParams(
    slots=10, items_per_carousel=3, candidate_items=4, min_items=2, category_carousels=3
)
D = 1.0 / np.log1p(np.arange(1, 5))  # position discounts 1/log(1+l)
IMMUTABLE = {"editors", "discover"}  # carousels whose item order is fixed
NEW = (2, 3, 6, 7, 10, 11)  # the new items of the catalogues that have some


def _catalog(
    *,
    in_stock: np.ndarray | None = None,
    has_image: np.ndarray | None = None,
    is_new: tuple[int, ...] = (),
    brands: list[str | None] | None = None,
    category_pool: int | None = None,
) -> Catalog:
    pop_recent = np.zeros(12)
    trend = np.zeros(12)
    pop_recent[list(TRENDING)] = [3.0, 2.0, 1.0]
    trend[list(TRENDING)] = 1.0
    new = np.zeros(12, dtype=bool)
    new[list(is_new)] = True
    return Catalog.build(
        item_ids=ITEM_IDS,
        categories=CATS,
        cat_names={"cA": "Apples", "cB": "Bread", "cC": "Cheese"},
        in_stock=np.ones(12, dtype=bool) if in_stock is None else in_stock,
        has_image=np.ones(12, dtype=bool) if has_image is None else has_image,
        is_new=new,
        pop_total=POP_TOTAL,
        pop_recent=pop_recent,
        trend=trend,
        trending_n=6,
        category_pool=category_pool,
        brands=None if brands is None else np.array(brands, dtype=object),
    )


def _curated() -> list[CuratedCarousel]:
    return [
        CuratedCarousel("editors", "Editors' picks", "editorial", np.array([11, 7, 3, 0]), True),
        CuratedCarousel("deals", "Deals", "deals", np.array([9, 1, 5]), False),
    ]


def _mf(factors: np.ndarray, ids: np.ndarray) -> MFModel:
    return MFModel(USERS.copy(), ids, np.eye(2, dtype=np.float32), factors.astype(np.float32))


def _feature_source(catalog: Catalog, bought: dict[str, list[int]] | None = None) -> FeatureSource:
    """`bought`: user -> items with one purchase each in user_item_counts (none by default)."""
    pairs = [(u, ITEM_IDS[i]) for u, items in (bought or {}).items() for i in items]
    empty_ui = pd.DataFrame(
        {
            "user_id": pd.Series([u for u, _ in pairs], dtype=object),
            "item_id": pd.Series([i for _, i in pairs], dtype=object),
            "n_click": pd.Series([0.0] * len(pairs), dtype=float),
            "n_add_to_cart": pd.Series([0.0] * len(pairs), dtype=float),
            "n_purchase": pd.Series([1.0] * len(pairs), dtype=float),
            "eta": pd.Series([1.0] * len(pairs), dtype=float),
            "last_ts": pd.Series([pd.Timestamp("2024-03-01")] * len(pairs)),
        }
    )
    return FeatureSource.build(
        as_of="2024-03-10",
        item_ids=catalog.item_ids,
        item_cat=catalog.item_cat,
        cat_ids=catalog.cat_ids,
        item_stats=pd.DataFrame({"item_id": ITEM_IDS[::-1], "pop_7d": POP_7D[::-1]}),
        user_aggregates=pd.DataFrame({"user_id": ["u1", "u2"], "clicks_7d": [1.0, 2.0]}),
        user_activity=pd.DataFrame({"user_id": ["u1", "u2"], "n_events": [5, 6]}),
        user_item_counts=empty_ui,
        user_category_counts=pd.DataFrame(columns=["user_id", "category_id", "eta", "n_purchase"]),
        user_category_frequency=pd.DataFrame(
            columns=["user_id", "category_id", "day_share", "active_days"]
        ),
    )


class FakeEngagement:
    """Stands in for EngagementModel: click = item_pop_7d / 100, purchase = mf_score."""

    def __init__(self) -> None:
        self.params = SimpleNamespace(weights={"click": 1.0, "purchase": 0.5})
        self.frames: list[pd.DataFrame] = []
        self.overrides: list[object] = []
        self.weights_seen: list[object] = []

    def predict(self, frame: pd.DataFrame, *, position_override) -> dict[str, np.ndarray]:
        self.frames.append(frame.copy())
        self.overrides.append(position_override)
        return {
            "click": frame["item_pop_7d"].to_numpy(np.float64) / 100.0,
            "purchase": frame["mf_score"].to_numpy(np.float64),
        }

    def combined_score(self, preds, weights=None) -> np.ndarray:
        self.weights_seen.append(weights)
        w = self.params.weights if weights is None else weights
        return sum(float(v) * preds[o] for o, v in w.items())


RERANK_WEIGHTS = {"click": 1.0, "purchase": 0.05}


def _fake_score(u: str, i: int) -> float:
    return POP_7D[i] / 100.0 + RERANK_WEIGHTS["purchase"] * R_HAT[u][i]


def _inputs(
    *, engagement=None, features: bool = False, catalog: Catalog | None = None, **fields
) -> RankInputs:
    catalog = catalog or _catalog()
    assert list(catalog.cat_ids) == ["cA", "cB", "cC"]
    cat_eta = pd.DataFrame(
        [(u, c, e) for u in ("u2", "u1") for c, e in enumerate(ETA[u]) if e > 0],
        columns=["user_id", "c", "eta"],
    )  # unsorted on purpose; RankInputs sorts it
    priors = pd.Series(
        list(PRIORS.values()), index=pd.MultiIndex.from_tuples(list(PRIORS), names=["u", "k"])
    )
    kwargs = {
        "catalog": catalog,
        "curated": _curated(),
        "mf_item": _mf(V, ITEM_IDS),
        "mf_cat": _mf(S, catalog.cat_ids),
        "v_items": V.astype(np.float32),
        "v_cats": S.astype(np.float32),
        "buy_again": BUY_AGAIN,
        "cat_eta": cat_eta,
        "priors": priors,
        "carousel_lam": CAROUSEL_LAM,
        "p_global": P_GLOBAL,
        "features": _feature_source(catalog) if features or engagement is not None else None,
        "engagement": engagement,
        "objective_weights": RERANK_WEIGHTS if engagement is not None else None,
        "params": PARAMS,
    }
    kwargs.update(fields)
    return RankInputs(**kwargs)


def _score(mode: str = "fixed", inputs: RankInputs | None = None, params: PageParams = PARAMS):
    inputs = inputs or _inputs()
    return score_batch(inputs, USERS, inputs.user_matrices(USERS), params, mode)


def _rows(scored) -> dict[tuple[str, str], int]:
    cu = np.asarray(scored.cands.user)
    return {
        (scored.users[u], c): j
        for j, (u, c) in enumerate(zip(cu, scored.cands.carousel_id, strict=True))
    }


def _items(scored, j: int) -> list[int]:
    row = scored.items[j]
    return row[row != PAD].tolist()


def _expected_lam(u: str, cid: str) -> float:
    return PRIORS.get((u, cid), CAROUSEL_LAM.get(cid, P_GLOBAL))


def _alpha_gamma_by_hand(u: str, cid: str, items: list[int]) -> tuple[float, float]:
    shown = items[: PARAMS.items_per_carousel]
    cat_of = [int(i) // 4 for i in shown]  # 4 items per category, in order
    a = sum(R_HAT[u][i] / np.log(1 + pos) for pos, i in enumerate(shown, start=1))
    g = sum(G[u][c] / np.log(1 + pos) for pos, c in enumerate(cat_of, start=1))
    return _expected_lam(u, cid) * a, g


def _both(per_user: dict[str, np.ndarray]) -> np.ndarray:
    return np.vstack([per_user["u1"], per_user["u2"]])


# ---------------------------------------------------------------------------------------------
# RankInputs and BatchMatrices


def test_user_matrices_match_the_factors_and_cat_eta():
    inputs = _inputs()
    mats = inputs.user_matrices(USERS)
    assert isinstance(mats, BatchMatrices)
    # every item sits in a category pool: the scored universe is the whole catalogue
    assert inputs.universe.tolist() == list(range(12))
    items = np.arange(12)
    assert mats.col_of.shape == (12,) and (mats.col_of >= 0).all()
    np.testing.assert_allclose(mats.r_hat[:, mats.col_of[items]], _both(R_HAT), rtol=1e-6)
    np.testing.assert_allclose(
        mats.affinity(np.arange(2), np.tile(items, (2, 1))), _both(R_HAT), rtol=1e-6
    )
    np.testing.assert_allclose(mats.aff, _both(S_HAT), rtol=1e-6)
    np.testing.assert_allclose(mats.eta, np.array([ETA["u1"], ETA["u2"]]))
    assert [b.tolist() for b in mats.buy] == [[4, 6, 0], [1]]
    # no top brands (padded to params.brand_carousels = 1 with -1), no recent purchases
    assert mats.top_brands.tolist() == [[-1], [-1]]
    assert [r.tolist() for r in mats.recent] == [[], []]
    # a single user, and a user without buy-again history
    single = _inputs().user_matrices(np.array(["u2"], dtype=object))
    np.testing.assert_allclose(single.eta, [ETA["u2"]])
    np.testing.assert_allclose(single.affinity(np.array([0]), np.array([[11, 0]])), [[1.2, 0.1]])
    inputs = _inputs(buy_again={})
    assert inputs.user_matrices(np.array(["u1"], dtype=object)).buy[0].tolist() == []


def test_user_matrices_raise_for_cold_users():
    inputs = _inputs()
    assert inputs.warm(np.array(["u1", "cold", "u2"], dtype=object)).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="warm users"):
        inputs.user_matrices(np.array(["u1", "cold"], dtype=object))


def _small_universe_inputs() -> RankInputs:
    # category pools of 2 in-stock items: cA [1, 0], cB [5, 4], cC [10, 11]; trending 5, 6, 10;
    # curated 11, 7, 3, 0 and 9, 1, 5. Items 2 and 8 are in no source; 3 and 8 are out of stock.
    in_stock = np.ones(12, dtype=bool)
    in_stock[[3, 8]] = False
    return _inputs(catalog=_catalog(in_stock=in_stock, category_pool=2))


def test_affinity_scores_items_outside_the_universe():
    inputs = _small_universe_inputs()
    assert inputs.universe.tolist() == [0, 1, 3, 4, 5, 6, 7, 9, 10, 11]
    mats = inputs.user_matrices(USERS)
    assert mats.r_hat.shape == (2, 10)
    assert mats.col_of[[2, 8]].tolist() == [-1, -1]
    assert mats.col_of[inputs.universe].tolist() == list(range(10))
    # out of stock inside the universe: -inf in r̂
    assert np.isneginf(mats.r_hat[:, mats.col_of[3]]).all()
    items = np.array([[2, 8, 3, PAD, 0], [0, 2, PAD, 11, 8]])
    got = mats.affinity(np.array([0, 1]), items)
    want = np.array(
        [
            [0.7, -np.inf, -np.inf, np.nan, 0.9],  # 2 from its factors, 8 and 3 out of stock
            [0.1, 0.3, np.nan, 1.2, -np.inf],
        ]
    )
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # rows may repeat and come in any order
    got = mats.affinity(np.array([1, 1, 0]), np.array([[2], [10], [2]]))
    np.testing.assert_allclose(got, [[0.3], [1.1], [0.7]], rtol=1e-6)


def test_default_matrices_are_popularity():
    inputs = _inputs()
    mats = inputs.default_matrices()
    np.testing.assert_allclose(mats.r_hat[:, mats.col_of[np.arange(12)]], POP[None, :])
    cat_pop = np.array([POP[0:4].sum(), POP[4:8].sum(), POP[8:12].sum()])
    np.testing.assert_allclose(mats.aff, (cat_pop / cat_pop.max())[None, :])
    assert mats.aff.max() == 1.0 and mats.aff.argmax() == 2  # cC has the most popularity mass
    np.testing.assert_array_equal(mats.eta, np.zeros((1, 3)))
    assert len(mats.buy) == 1 and len(mats.buy[0]) == 0
    assert mats.top_brands.shape == (1, 0) and len(mats.recent) == 1
    # pseudo-users with popularity of their own: one row each
    pop = np.zeros((2, 12))
    pop[0, 0] = 1.0  # only item 0 (cA)
    pop[1, [9, 4]] = [0.5, 0.25]  # cC twice the mass of cB
    mats = inputs.default_matrices(pop)
    np.testing.assert_allclose(mats.affinity(np.array([0, 1]), np.tile(np.arange(12), (2, 1))), pop)
    np.testing.assert_allclose(mats.aff, [[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    # items outside the universe read the popularity row; out of stock is -inf
    small = _small_universe_inputs().default_matrices()
    got = small.affinity(np.array([0]), np.array([[2, 8, 3, PAD]]))
    np.testing.assert_allclose(got, [[POP[2], -np.inf, -np.inf, np.nan]])


def test_top_brands_are_padded_to_the_brand_carousels_and_recent_passes_through():
    brands = ["Acme", "Zest", None, "Acme"] + [None] * 8
    catalog = _catalog(brands=brands)
    assert catalog.brand_names.tolist() == ["Acme", "Zest"]
    top = {"u1": np.array([1, 0])}
    recent = {"u2": np.array([3, 9])}
    one = _inputs(catalog=catalog, top_brands=top, recent=recent).user_matrices(USERS)
    assert one.top_brands.tolist() == [[1], [-1]]
    assert [r.tolist() for r in one.recent] == [[], [3, 9]]
    inputs = _inputs(catalog=catalog, top_brands=top, params=replace(PARAMS, brand_carousels=2))
    assert inputs.user_matrices(USERS).top_brands.tolist() == [[1, 0], [-1, -1]]


# ---------------------------------------------------------------------------------------------
# score_batch, fixed mode


def test_fixed_mode_candidates_and_item_order():
    scored = _score("fixed")
    rows = _rows(scored)
    # no brands and nothing new in this catalogue: no "your top brands" or "new in" rows
    assert sorted(c for u, c in rows if u == "u1") == sorted(
        ["editors", "deals", "buy_again", "trending", "category:cA", "category:cB", "category:cC"]
    )
    # u2: no buy-again (1 item < min_items), a discover row for the never-engaged cB and cC
    assert sorted(c for u, c in rows if u == "u2") == sorted(
        ["editors", "deals", "trending", "category:cA", "category:cB", "category:cC", "discover"]
    )
    assert _items(scored, rows["u1", "editors"]) == [11, 7, 3, 0]  # immutable: operator's order
    assert _items(scored, rows["u1", "deals"]) == [1, 5, 9]  # by r̂_u1
    assert _items(scored, rows["u2", "deals"]) == [9, 5, 1]  # by r̂_u2
    assert _items(scored, rows["u1", "category:cA"]) == [0, 1, 2, 3]
    assert _items(scored, rows["u2", "category:cA"]) == [3, 2, 1, 0]
    assert _items(scored, rows["u1", "trending"]) == [5, 6, 10]
    assert _items(scored, rows["u1", "buy_again"]) == [4, 6, 0]
    assert _items(scored, rows["u2", "discover"]) == [7, 11, 6, 10]  # cB, cC interleaved
    fixed = {k for k, j in rows.items() if scored.cands.fixed_order[j]}
    assert fixed == {(u, c) for u, c in rows if c in IMMUTABLE}
    # the item score shown in fixed mode is r̂
    for (u, _), j in rows.items():
        items = _items(scored, j)
        np.testing.assert_allclose(scored.item_scores[j][: len(items)], R_HAT[u][items], rtol=1e-6)
        assert np.isnan(scored.item_scores[j][len(items) :]).all()


def test_fixed_mode_lambda_alpha_gamma_follow_the_formula():
    scored = _score("fixed")
    rows = _rows(scored)
    for (u, cid), j in rows.items():
        assert scored.lam[j] == pytest.approx(_expected_lam(u, cid)), (u, cid)
        a, g = _alpha_gamma_by_hand(u, cid, _items(scored, j))
        assert scored.alpha[j] == pytest.approx(a, rel=1e-6), (u, cid)
        assert scored.gamma[j] == pytest.approx(g, rel=1e-6), (u, cid)
    # λ: the user's prior, else the carousel's mean, else p_global
    lam = {k: scored.lam[j] for k, j in rows.items()}
    assert lam["u1", "category:cA"] == 0.5  # user prior
    assert lam["u2", "category:cA"] == P_GLOBAL  # no prior, no carousel mean
    assert lam["u1", "category:cB"] == 0.3  # carousel mean
    assert lam["u2", "trending"] == 0.9 and lam["u1", "trending"] == 0.25
    assert lam["u1", "buy_again"] == P_GLOBAL
    # two written out in full
    j = rows["u1", "category:cA"]
    assert scored.alpha[j] == pytest.approx(0.5 * (0.9 * D[0] + 0.8 * D[1] + 0.7 * D[2]))
    assert scored.gamma[j] == pytest.approx(0.2 * np.exp(-3.0) * D[:3].sum())
    j = rows["u1", "editors"]  # items 11 (cC), 7 (cB), 3 (cA)
    assert scored.alpha[j] == pytest.approx(0.4 * (0.01 * D[0] + 0.2 * D[1] + 0.6 * D[2]))
    g = 0.9 * np.exp(-0.1) * D[0] + 0.5 * np.exp(-1.0) * D[1] + 0.2 * np.exp(-3.0) * D[2]
    assert scored.gamma[j] == pytest.approx(g)
    frame = scored.candidates_frame(0.3)
    np.testing.assert_allclose(frame["phi"], 0.3 * scored.alpha + 0.7 * scored.gamma)


def test_beta_priors_come_from_the_frame_else_the_carousel_else_p_global():
    idx = pd.MultiIndex.from_tuples(
        [("u1", "category:cA"), ("u1", "editors"), ("u2", "trending")],
        names=["user_id", "carousel_id"],
    )
    priors = pd.DataFrame(
        {"lam": [0.5, 0.4, 0.9], "a": [5.0, np.nan, 9.0], "b": [5.0, np.nan, 1.0]}, index=idx
    )
    inputs = _inputs(priors=priors, carousel_ab={"trending": (2.0, 6.0), "editors": (3.0, 7.0)})
    scored = _score("fixed", inputs)
    rows = _rows(scored)

    def lab(u: str, cid: str) -> tuple[float, float, float]:
        j = rows[u, cid]
        return scored.lam[j], scored.a[j], scored.b[j]

    assert lab("u1", "category:cA") == (0.5, 5.0, 5.0)  # the user's posterior
    assert lab("u2", "trending") == (0.9, 9.0, 1.0)
    assert lab("u1", "editors") == (0.4, 3.0, 7.0)  # λ of the user, a and b of the carousel
    assert lab("u1", "trending") == (0.25, 2.0, 6.0)  # the carousel's mean and prior
    # nothing known: λ = p_global and a prior of 10 pseudo-trials at p_global
    assert lab("u2", "category:cA") == pytest.approx((P_GLOBAL, 1.0, 9.0))
    frame = scored.candidates_frame(0.5)
    np.testing.assert_allclose(frame["a"], scored.a)
    np.testing.assert_allclose(frame["b"], scored.b)
    # a Series of λ still works: every a, b is then the carousel's or the global prior
    series = _score("fixed", _inputs(carousel_ab={"trending": (2.0, 6.0)}))
    assert series.lam.tolist() == scored.lam.tolist()
    j = rows["u2", "trending"]
    assert (series.a[j], series.b[j]) == (2.0, 6.0)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="item mode"):
        _score("by_magic")


# ---------------------------------------------------------------------------------------------
# score_batch: the extra candidate sources


def test_top_brands_make_a_brand_carousel():
    # brands: Acme 0, 4; Solo 7; Zest 1, 5, 9 (codes by name: Acme 0, Solo 1, Zest 2)
    brands = [None] * 12
    for i, b in ((0, "Acme"), (4, "Acme"), (7, "Solo"), (1, "Zest"), (5, "Zest"), (9, "Zest")):
        brands[i] = b
    catalog = _catalog(brands=brands)
    assert catalog.brand_names.tolist() == ["Acme", "Solo", "Zest"]
    top = {"u1": np.array([2, 0]), "u2": np.array([1])}  # u2's brand has one item only
    one = _score("fixed", _inputs(catalog=catalog, top_brands=top))
    rows = _rows(one)
    assert [c for u, c in rows if c.startswith("brand:")] == ["brand:Zest"]  # first brand only
    j = rows["u1", "brand:Zest"]
    assert _items(one, j) == [1, 5, 9]  # the brand's in-stock items by r̂_u1
    assert one.cands.title[j] == "More from Zest"
    assert one.cands.family[j] == "brand"
    assert one.cands.reason[j] == "top_brands"
    assert not one.cands.fixed_order[j]
    assert one.lam[j] == P_GLOBAL
    assert one.alpha[j] == pytest.approx(P_GLOBAL * (0.8 * D[0] + 0.4 * D[1] + 0.05 * D[2]))
    # two brand carousels per user, after the other sources (candidates stay sorted by user)
    params = replace(PARAMS, brand_carousels=2)
    two = _score("fixed", _inputs(catalog=catalog, top_brands=top, params=params), params)
    ids = two.cands.carousel_id[np.asarray(two.cands.user) == 0].tolist()
    assert ids[-2:] == ["brand:Zest", "brand:Acme"]
    assert _items(two, _rows(two)["u1", "brand:Acme"]) == [0, 4]
    assert not any(c.startswith("brand:") for u, c in _rows(two) if u == "u2")
    assert np.all(np.diff(np.asarray(two.cands.user)) >= 0)


def test_new_in_categories_carousel_and_the_exploration_pool():
    inputs = _inputs(catalog=_catalog(is_new=NEW))
    scored = _score("fixed", inputs)
    rows = _rows(scored)
    # u1's categories by ŝ: cC, cB, cA; all three have new items: 10, 11 | 6, 7 | 2, 3
    j = rows["u1", "new_in_categories"]
    assert _items(scored, j) == [2, 3, 6, 7]  # by r̂_u1, the first 4
    assert scored.cands.title[j] == "New in your categories"
    assert scored.cands.family[j] == "new"
    assert scored.cands.reason[j] == "new_in_categories"
    assert not scored.cands.fixed_order[j]
    assert _items(scored, rows["u2", "new_in_categories"]) == [11, 10, 7, 6]
    # every new in-stock item is an exploration candidate, by r̂, with r̂ as its weight
    assert scored.new_pool.tolist() == [[2, 3, 6, 7, 10, 11], [11, 10, 7, 6, 3, 2]]
    np.testing.assert_allclose(scored.new_score[0], R_HAT["u1"][[2, 3, 6, 7, 10, 11]], rtol=1e-6)
    # one category only: the user's best category with new items
    params = replace(PARAMS, new_categories=1)
    one = _score("fixed", inputs, params)
    assert _items(one, _rows(one)["u1", "new_in_categories"]) == [10, 11]  # cC
    assert _items(one, _rows(one)["u2", "new_in_categories"]) == [3, 2]  # cA
    # nothing new: no such carousel and an empty exploration pool
    plain = _score("fixed")
    assert "new_in_categories" not in set(plain.cands.carousel_id)
    assert (plain.new_pool == PAD).all()


# ---------------------------------------------------------------------------------------------
# score_batch: the item policy (penalties, MMR, brand runs)


def test_an_item_without_an_image_moves_down():
    has_image = np.ones(12, dtype=bool)
    has_image[1] = False
    inputs = _inputs(catalog=_catalog(has_image=has_image))
    params = replace(PARAMS, no_image_penalty=0.6)
    scored = _score("fixed", inputs, params)
    rows = _rows(scored)
    # fixed-mode relevance 1, 0.75, 0.5, 0.25 by source position; item 1's is multiplied by 0.4
    assert _items(scored, rows["u1", "category:cA"]) == [0, 2, 1, 3]  # 1 -> 0.3
    assert _items(scored, rows["u1", "deals"]) == [5, 9, 1]  # 1 -> 0.4
    assert _items(scored, rows["u2", "category:cA"]) == [3, 2, 0, 1]  # 1 -> 0.2
    assert _items(scored, rows["u2", "deals"]) == [9, 5, 1]  # last already
    assert _items(scored, rows["u1", "editors"]) == [11, 7, 3, 0]
    # scores and α follow the new order
    j = rows["u1", "category:cA"]
    np.testing.assert_allclose(scored.item_scores[j], R_HAT["u1"][[0, 2, 1, 3]], rtol=1e-6)
    assert scored.alpha[j] == pytest.approx(0.5 * (0.9 * D[0] + 0.7 * D[1] + 0.8 * D[2]))
    # without the penalty the source order stays
    plain = _score("fixed", inputs)
    assert _items(plain, _rows(plain)["u1", "category:cA"]) == [0, 1, 2, 3]


def test_recent_purchases_move_down_outside_buy_again():
    recent = {"u1": np.array([0, 4])}  # bought lately, in a category not bought again soon
    params = replace(PARAMS, non_repeat_categories=("cA", "cB"), repeat_penalty=0.9)
    scored = _score("fixed", _inputs(recent=recent), params)
    rows = _rows(scored)
    assert _items(scored, rows["u1", "category:cA"]) == [1, 2, 3, 0]  # 0 -> 0.1
    assert _items(scored, rows["u1", "category:cB"]) == [5, 6, 7, 4]  # 4 -> 0.1
    assert _items(scored, rows["u1", "buy_again"]) == [4, 6, 0]  # buy it again keeps them
    assert _items(scored, rows["u1", "editors"]) == [11, 7, 3, 0]  # immutable
    assert _items(scored, rows["u2", "category:cA"]) == [3, 2, 1, 0]  # another user's purchases
    assert _items(scored, rows["u2", "category:cB"]) == [7, 6, 5, 4]
    # no non-repeat categories configured: no down-ranking
    off = _score("fixed", _inputs(recent=recent), replace(params, non_repeat_categories=()))
    assert _items(off, _rows(off)["u1", "category:cA"]) == [0, 1, 2, 3]
    assert _items(off, _rows(off)["u1", "category:cB"]) == [4, 5, 6, 7]


def test_item_mmr_spreads_embedding_clusters():
    cluster = np.full(12, -1)
    cluster[:4] = [0, 0, 1, 1]  # cA: items 0, 1 alike, 2, 3 alike
    inputs = _inputs(item_cluster=cluster)
    scored = _score("fixed", inputs, replace(PARAMS, item_lambda=0.5))
    rows = _rows(scored)
    # u1, relevance 1, .75, .5, .25 for 0..3; sim = .25 (same category) + .5 (same cluster):
    # pick 0; then 1: .375 - .375, 2: .25 - .125, 3: .125 - .125 -> 2; then 1: 0, 3: -.25 -> 1
    assert _items(scored, rows["u1", "category:cA"]) == [0, 2, 1, 3]
    # u2 sees 3, 2, 1, 0: pick 3; 2: .375 - .375, 1: .25 - .125, 0: .125 - .125 -> 1; then 2
    assert _items(scored, rows["u2", "category:cA"]) == [3, 1, 2, 0]
    # no unknown-cluster item is similar by embedding: cB keeps its order
    assert _items(scored, rows["u1", "category:cB"]) == [4, 5, 6, 7]
    plain = _score("fixed", inputs)  # item_lambda = 1: relevance only
    assert _items(plain, _rows(plain)["u1", "category:cA"]) == [0, 1, 2, 3]


@pytest.mark.parametrize(("k", "want"), [(0, [0, 1, 2, 3]), (1, [0, 3, 1, 2]), (2, [0, 1, 3, 2])])
def test_brand_run_rule_pulls_another_brand_forward(k, want):
    brands = ["Acme", "Acme", "Acme", "Zest"] + [None] * 8
    scored = _score("fixed", _inputs(catalog=_catalog(brands=brands)), replace(PARAMS, brand_run=k))
    rows = _rows(scored)
    assert _items(scored, rows["u1", "category:cA"]) == want
    # u2 sees Zest, Acme, Acme, Acme: no other brand is left to pull forward
    assert _items(scored, rows["u2", "category:cA"]) == [3, 2, 1, 0]


# ---------------------------------------------------------------------------------------------
# pages


def _page(df: pd.DataFrame, user: str) -> pd.DataFrame:
    return df[df["user_id"] == user].sort_values(["slot", "item_rank"])


def _slot_order(df: pd.DataFrame, user: str) -> list[str]:
    p = _page(df, user)
    return p.drop_duplicates("slot").sort_values("slot")["carousel_id"].tolist()


def _reference_pages(scored, w: float, params: PageParams) -> dict[str, list[tuple[str, list]]]:
    """Each user's page by the rules, for beam width 1 and no carousel MMR: the plan takes, slot
    by slot, the highest φ whose family differs from the slot above; assembly walks the plan,
    then the other candidates by φ, and gives each slot the first carousel of another family
    than the slot above that still has >= min_items items not shown higher up (its first
    items_per_carousel such items, in its order)."""
    phi = w * scored.alpha + (1 - w) * scored.gamma
    cu = np.asarray(scored.cands.user)
    fam = scored.cands.family
    out = {}
    for b, u in enumerate(scored.users):
        mine = sorted(np.flatnonzero(cu == b).tolist(), key=lambda j: -phi[j])
        plan, prev, left = [], None, list(mine)
        while len(plan) < params.slots:
            nxt = next((j for j in left if fam[j] != prev), None)
            if nxt is None:
                break
            plan.append(nxt)
            left.remove(nxt)
            prev = fam[nxt]
        prefs = plan + [j for j in mine if j not in plan]
        shown: set[int] = set()
        page: list[tuple[str, list]] = []
        prev = None
        for _ in range(params.slots):
            pick = None
            for j in prefs:
                fresh = [i for i in _items(scored, j) if i not in shown]
                if fam[j] != prev and len(fresh) >= params.min_items:
                    pick = j, fresh[: params.items_per_carousel]
                    break
            if pick is None:
                break
            j, items = pick
            prefs.remove(j)
            shown.update(items)
            prev = fam[j]
            page.append((scored.cands.carousel_id[j], [ITEM_IDS[i] for i in items]))
        out[u] = page
    return out


def _page_as_list(df: pd.DataFrame, user: str) -> list[tuple[str, list]]:
    p = _page(df, user)
    return [(g["carousel_id"].iloc[0], g["item_id"].tolist()) for _, g in p.groupby("slot")]


def _assert_page_rules(df: pd.DataFrame, scored, w: float, params: PageParams) -> None:
    """Rules every page obeys, whatever the slot policy: contiguous slots, no family twice in a
    row, no item twice, min_items..items_per_carousel items each, the first items of its
    carousel not shown higher up, and φ as the carousel score."""
    assert list(df.columns) == list(PAGE_COLUMNS)
    frame = scored.candidates_frame(w)
    phi = dict(
        zip(zip(frame["user_id"], frame["carousel_id"], strict=True), frame["phi"], strict=True)
    )
    rows = _rows(scored)
    for u in scored.users:
        p = _page(df, u)
        assert not p["item_id"].duplicated().any(), "an item twice on a page"
        slots = p.drop_duplicates("slot")
        assert slots["slot"].tolist() == list(range(1, len(slots) + 1))
        fams = slots["family"].tolist()
        assert all(a != b for a, b in zip(fams[:-1], fams[1:], strict=False)), fams
        shown: set[str] = set()
        for _, g in p.groupby("slot"):
            cid = g["carousel_id"].iloc[0]
            assert (g["carousel_id"] == cid).all()
            assert g["item_rank"].tolist() == list(range(1, len(g) + 1))
            assert params.min_items <= len(g) <= params.items_per_carousel
            np.testing.assert_allclose(g["carousel_score"], phi[u, cid])
            pool = [ITEM_IDS[i] for i in _items(scored, rows[u, cid])]
            fresh = [i for i in pool if i not in shown]
            assert g["item_id"].tolist() == fresh[: params.items_per_carousel], (u, cid)
            shown.update(g["item_id"])


def test_pages_order_carousels_by_alpha_at_w1_and_by_gamma_at_w0():
    scored = _score("fixed")
    top = pages(scored, 1.0, PARAMS, ITEM_IDS)
    bottom = pages(scored, 0.0, PARAMS, ITEM_IDS)
    # α: cA 1.27 > cB 0.39 > deals 0.31 > editors 0.25 > trending 0.22 > buy_again 0.16 > cC 0.02
    # cB cannot sit under cA (same family); trending and buy_again have < 2 fresh items left
    assert _slot_order(top, "u1") == [
        "category:cA",
        "deals",
        "category:cB",
        "editors",
        "category:cC",
    ]
    # γ: cC 2.50 > editors 1.35 > trending 1.02 > deals 0.77 > cB 0.57 > buy_again 0.44 > cA 0.03
    # deals ([1, 5, 9] with 5, 9 shown) and cB ([4, 5, 6, 7], only 4 fresh) are skipped
    assert _slot_order(bottom, "u1") == [
        "category:cC",
        "editors",
        "trending",
        "buy_again",
        "category:cA",
    ]
    p = _page(top, "u1")
    assert p[p["slot"] == 2]["item_id"].tolist() == ["i05", "i09"]  # i01 already shown in slot 1
    # u2 at w = 1, α: trending 2.39 > cB 0.67 > deals 0.43 > cC 0.35 > discover 0.275 >
    # editors 0.275 > cA 0.10; discover (7, 11, 6, 10) and cA (2 only) have < 2 fresh items
    assert _slot_order(top, "u2") == [
        "trending",
        "category:cB",
        "deals",
        "category:cC",
        "editors",
    ]


@pytest.mark.parametrize("w", [0.0, 0.3, 0.75, 1.0])
def test_pages_follow_the_greedy_plan_and_the_page_rules(w):
    scored = _score("fixed")
    df = pages(scored, w, PARAMS, ITEM_IDS)
    assert set(df["user_id"]) == {"u1", "u2"}
    _assert_page_rules(df, scored, w, PARAMS)
    want = _reference_pages(scored, w, PARAMS)
    for u in USERS:
        assert _page_as_list(df, u) == want[u], u
    # the top slot is the best φ overall (beam width 1, no family above slot 1)
    frame = scored.candidates_frame(w)
    for u in USERS:
        p = _page(df, u)
        assert p["carousel_score"].iloc[0] == pytest.approx(
            frame[frame["user_id"] == u]["phi"].max()
        )


def test_pages_at_w03_skip_a_planned_carousel_that_ran_out_of_items():
    # u1 at w = 0.3, φ: cC 1.76 > editors 1.02 > trending 0.78 > deals 0.63 > cB 0.51 >
    # cA 0.40 > buy_again 0.36. The plan is cC, editors, trending, deals, cB, buy_again, cA
    # (cA cannot follow cB). In slot 4 deals (1 fresh) and cB (4 fresh) are short, so the
    # plan's next one, buy_again, comes before cA although its φ is lower.
    df = pages(_score("fixed"), 0.3, PARAMS, ITEM_IDS)
    assert _page_as_list(df, "u1") == [
        ("category:cC", ["i08", "i09", "i10"]),
        ("editors", ["i11", "i07", "i03"]),
        ("trending", ["i05", "i06"]),
        ("buy_again", ["i04", "i00"]),
        ("category:cA", ["i01", "i02"]),
    ]


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_page_rules_hold_with_diversity_on(w):
    inputs = _inputs(
        catalog=_catalog(is_new=NEW, brands=["Acme", "Zest"] * 6),
        top_brands={"u1": np.array([0]), "u2": np.array([1])},
        params=DIVERSE,
    )
    scored = _score("fixed", inputs, DIVERSE)
    assert {"brand:Acme", "brand:Zest", "new_in_categories"} <= set(scored.cands.carousel_id)
    built = build_pages(scored, w, DIVERSE, ITEM_IDS)
    _assert_page_rules(built.frame, scored, w, DIVERSE)
    assert (built.frame["propensity"] == 1.0).all()
    assert built.stats["slots"].tolist() == [_page(built.frame, u)["slot"].nunique() for u in USERS]


def test_page_rows_carry_scores_titles_reasons_and_propensity():
    scored = _score("fixed")
    df = pages(scored, 1.0, PARAMS, ITEM_IDS)
    assert list(df.columns) == list(PAGE_COLUMNS)
    p = _page(df, "u1")
    idx = {i: n for n, i in enumerate(ITEM_IDS)}
    np.testing.assert_allclose(
        p["item_score"], [R_HAT["u1"][idx[i]] for i in p["item_id"]], rtol=1e-6
    )
    first = p[p["slot"] == 1]
    assert first["carousel_title"].iloc[0] == "More in Apples"
    assert first["reason"].iloc[0] == "category_affinity"
    assert first["family"].iloc[0] == "category"
    # nothing randomised: every placement is certain, whatever the exploration settings
    assert (df["propensity"] == 1.0).all()
    eager = replace(PARAMS, explore_epsilon=1.0, explore_from=1, thompson_share=1.0)
    scored_new = _score("fixed", _inputs(catalog=_catalog(is_new=NEW)), eager)
    calm = pages(scored_new, 1.0, eager, ITEM_IDS)
    assert (calm["propensity"] == 1.0).all() and "explore" not in set(calm["reason"])
    with pytest.raises(ValueError, match="w must be in"):
        pages(scored, 1.5, PARAMS, ITEM_IDS)


def test_a_calibration_sets_q_and_the_assembly_skips_short_carousels():
    # q = exp(-φ) falls with φ: the greedy plan now takes the lowest φ first.
    # u1 by ascending α: cC, buy_again, trending, editors, deals, cB (cA cannot follow cB).
    # Assembly: cC 8, 9, 10; buy_again 4, 6, 0; trending has only 5 fresh -> editors 11, 7, 3;
    # trending still short -> deals 1, 5; then trending, cB and cA have < 2 fresh items.
    scored = _score("fixed")
    df = pages(scored, 1.0, PARAMS, ITEM_IDS, calibration=lambda phi: np.exp(-phi))
    assert _page_as_list(df, "u1") == [
        ("category:cC", ["i08", "i09", "i10"]),
        ("buy_again", ["i04", "i06", "i00"]),
        ("editors", ["i11", "i07", "i03"]),
        ("deals", ["i01", "i05"]),
    ]
    # u2 by ascending α: cA, editors, discover, cC, deals, cB, trending
    assert _slot_order(df, "u2") == ["category:cA", "editors", "discover", "category:cC"]
    _assert_page_rules(df, scored, 1.0, PARAMS)
    # a constant q ties everything: ties go to the higher φ, i.e. the uncalibrated order
    flat = pages(scored, 1.0, PARAMS, ITEM_IDS, calibration=lambda phi: np.full_like(phi, 0.5))
    plain = pages(scored, 1.0, PARAMS, ITEM_IDS)
    for u in USERS:
        assert _page_as_list(flat, u) == _page_as_list(plain, u)


def test_with_a_calibration_a_users_page_does_not_depend_on_the_batch():
    inputs = _inputs(params=DIVERSE)
    both = _score("fixed", inputs, DIVERSE)

    def calibration(phi):
        return 1.0 - np.exp(-phi)

    for w in (0.0, 0.5, 0.75, 1.0):
        together = pages(both, w, DIVERSE, ITEM_IDS, calibration=calibration)
        for u in USERS:
            one = np.array([u], dtype=object)
            alone = score_batch(inputs, one, inputs.user_matrices(one), DIVERSE, "fixed")
            by_itself = pages(alone, w, DIVERSE, ITEM_IDS, calibration=calibration)
            assert _page_as_list(by_itself, u) == _page_as_list(together, u), (w, u)


def test_page_stats_count_slots_and_flag_exhausted_pages():
    scored = _score("fixed")
    built = build_pages(scored, 1.0, PARAMS, ITEM_IDS)
    # both pages run out of feasible carousels after 5 of 10 slots (see the test above)
    assert built.stats["user_id"].tolist() == ["u1", "u2"]
    assert built.stats["slots"].tolist() == [5, 5]
    assert built.stats["exhausted"].tolist() == [True, True]
    pd.testing.assert_frame_equal(built.frame, pages(scored, 1.0, PARAMS, ITEM_IDS))
    short = build_pages(scored, 1.0, replace(PARAMS, slots=3), ITEM_IDS)
    assert short.stats["slots"].tolist() == [3, 3]
    assert short.stats["exhausted"].tolist() == [False, False]
    assert short.frame.groupby("user_id")["slot"].max().tolist() == [3, 3]
    # a batch without a single candidate: an empty page, zero slots, exhausted
    inputs = _inputs(catalog=_catalog(in_stock=np.zeros(12, dtype=bool)), curated=[])
    empty = score_batch(
        inputs, np.array(["__default__"], dtype=object), inputs.default_matrices(), PARAMS, "fixed"
    )
    assert len(empty.cands) == 0
    built = build_pages(empty, 0.5, PARAMS, ITEM_IDS)
    assert len(built.frame) == 0 and list(built.frame.columns) == list(PAGE_COLUMNS)
    assert built.stats.to_dict("list") == {
        "user_id": ["__default__"],
        "slots": [0],
        "exhausted": [True],
    }


def _many_curated(n: int) -> RankInputs:
    """n curated carousels c000.. of distinct families over all 12 items, with carousel prior
    λ_k = 0.5 + k / 1000, and every other candidate at λ = p_global = 0.001: carousel k's φ
    grows with k and beats every other source, so c(n-1), c(n-2), ... are each user's best."""
    every = np.arange(12)
    curated = [
        CuratedCarousel(f"c{k:03d}", f"Promo {k}", f"promo{k}", every, False) for k in range(n)
    ]
    lam = {f"c{k:03d}": 0.5 + k / 1000 for k in range(n)}
    priors = pd.Series([0.5], index=pd.MultiIndex.from_tuples([("u1", "none")]))
    return _inputs(curated=curated, carousel_lam=lam, priors=priors, p_global=0.001)


def test_500_curated_carousels_build_pages_from_each_users_best_candidates(monkeypatch):
    import models.ranking.pages as ranking

    plans = []
    real = ranking.beam_plan

    def spy(q, *args, **kwargs):
        plans.append(np.asarray(q).copy())
        return real(q, *args, **kwargs)

    monkeypatch.setattr(ranking, "beam_plan", spy)
    keep = 12
    # pools of all 12 items: a carousel shows 3 items not shown higher up, 4 slots of them
    params = replace(PARAMS, candidate_items=12, candidate_carousels=keep)
    scored = _score("fixed", _many_curated(500), params)
    assert np.bincount(scored.cands.user).min() > 500  # every curated carousel for every user

    def calibration(phi):
        return 1.0 - np.exp(-phi)

    built = build_pages(scored, 1.0, params, ITEM_IDS, calibration=calibration)
    # exactly `keep` candidates per user reach the plan: the ones of highest q (and φ)
    (q,) = plans
    assert q.shape == (2, keep) and np.isfinite(q).all()
    phi = scored.alpha  # w = 1
    cu = np.asarray(scored.cands.user)
    for b in range(2):
        best = np.sort(calibration(phi[cu == b]))[::-1][:keep]
        np.testing.assert_allclose(np.sort(q[b])[::-1], best)
    # the best are the curated carousels of highest λ: c499, c498, ... in slot order, as many
    # as the 12 items fill (3 each), then the page runs out of items
    for u in USERS:
        assert _slot_order(built.frame, u) == ["c499", "c498", "c497", "c496"]
    _assert_page_rules(built.frame, scored, 1.0, params)
    assert built.stats["slots"].tolist() == [4, 4]
    # the default keeps 48, with Thompson sampling and exploration on: pages all the same
    diverse = replace(DIVERSE, candidate_items=12)
    scored = _score("fixed", _many_curated(500), diverse)
    df = pages(scored, 0.5, diverse, ITEM_IDS, randomise=True, seed=1, calibration=calibration)
    assert plans[-1].shape == (2, 48)
    assert df.groupby("user_id")["slot"].max().tolist() == [4, 4]


def test_candidate_carousels_must_fit_the_beam_plan():
    for bad in (0, 64):
        with pytest.raises(ValueError, match=f"candidate_carousels must be in \\[1, 63\\].*{bad}"):
            PageParams(candidate_carousels=bad)


EXPLORE = replace(
    PARAMS,
    slots=2,
    items_per_carousel=2,
    explore_epsilon=1.0,
    explore_from=2,
    thompson_share=0.0,
)


@pytest.mark.parametrize("w", [0.0, 1.0])
def test_exploration_shows_new_items_from_position_2_of_movable_carousels(w):
    scored = _score("fixed", _inputs(catalog=_catalog(is_new=NEW)), EXPLORE)
    organic = pages(scored, w, EXPLORE, ITEM_IDS)
    explored = pages(scored, w, EXPLORE, ITEM_IDS, randomise=True, seed=3)
    key = ["user_id", "slot", "item_rank"]
    # exploration changes items, not carousels or page shape
    pd.testing.assert_frame_equal(
        organic[[*key, "carousel_id"]].reset_index(drop=True),
        explored[[*key, "carousel_id"]].reset_index(drop=True),
    )
    assert (organic["propensity"] == 1.0).all()
    n_explored = 0
    for u in USERS:
        o, e = _page(organic, u), _page(explored, u)
        assert not e["item_id"].duplicated().any()
        # the pool: new items not on the organic page, drawn ∝ r̂ without replacement (ε = 1)
        on_page = set(o["item_id"])
        pool = {ITEM_IDS[i]: R_HAT[u][i] for i in NEW if ITEM_IDS[i] not in on_page}
        movable = ~e["carousel_id"].isin(IMMUTABLE)
        draws = int((movable & (e["item_rank"] >= 2)).sum())
        assert 0 < draws < len(pool)  # the pool never runs dry: every draw has a choice
        for (_, org), (_, row) in zip(o.iterrows(), e.iterrows(), strict=True):
            if row["item_rank"] == 1 or row["carousel_id"] in IMMUTABLE:
                assert row["item_id"] == org["item_id"]
                assert row["reason"] == org["reason"]
                assert row["propensity"] == 1.0
                continue
            item = row["item_id"]
            assert row["reason"] == "explore"
            assert item in pool, (u, item)
            want = pool[item] / sum(pool.values())
            assert row["propensity"] == pytest.approx(want)
            assert 0.0 < row["propensity"] < 1.0
            assert row["item_score"] == pytest.approx(pool[item], rel=1e-6)
            del pool[item]
            n_explored += 1
    assert n_explored > 0
    # the same seed gives the same page
    again = pages(scored, w, EXPLORE, ITEM_IDS, randomise=True, seed=3)
    pd.testing.assert_frame_equal(explored, again)


def test_exploration_leaves_buy_it_again_alone():
    # ε = 1: each movable position from 2 on would show a new item (before this rule, u1's
    # "Buy it again" row here showed one)
    params = replace(EXPLORE, slots=4, items_per_carousel=2)
    scored = _score("fixed", _inputs(catalog=_catalog(is_new=NEW)), params)
    organic = pages(scored, 0.0, params, ITEM_IDS)
    explored = pages(scored, 0.0, params, ITEM_IDS, randomise=True, seed=3)
    e = _page(explored, "u1")
    assert "buy_again" in set(e["carousel_id"])  # u1 has a history row to protect
    mine = explored["carousel_id"] == "buy_again"
    pd.testing.assert_frame_equal(
        organic[mine].reset_index(drop=True), explored[mine].reset_index(drop=True)
    )
    assert (explored.loc[mine, "propensity"] == 1.0).all()
    assert (explored.loc[mine, "reason"] == "buy_again").all()
    # the other movable rows still explore
    assert (explored.loc[~mine, "reason"] == "explore").any()


def test_thompson_sampling_logs_slot_propensities():
    params = replace(PARAMS, thompson_share=1.0, explore_epsilon=0.0, thompson_draws=64)
    scored = _score("fixed")
    for w in (0.3, 1.0):
        df = pages(scored, w, params, ITEM_IDS, randomise=True, seed=5)
        _assert_page_rules(df, scored, w, params)
        assert ((df["propensity"] > 0.0) & (df["propensity"] <= 1.0)).all()
        # one choice per slot: every item of a slot carries the slot's propensity
        assert (df.groupby(["user_id", "slot"])["propensity"].nunique() == 1).all()
        assert (df["propensity"] < 1.0).any()  # the draws do not always agree
        assert "explore" not in set(df["reason"])
        again = pages(scored, w, params, ITEM_IDS, randomise=True, seed=5)
        pd.testing.assert_frame_equal(df, again)


def test_default_pages_are_never_randomised():
    inputs = _inputs(catalog=_catalog(is_new=NEW))
    eager = replace(PARAMS, explore_epsilon=1.0, explore_from=1, thompson_share=1.0)
    users = np.array(["__default__"], dtype=object)
    scored = score_batch(inputs, users, inputs.default_matrices(), eager, "fixed", "popular")
    df = pages(scored, 0.5, eager, ITEM_IDS, randomise=True, seed=1)
    assert len(df) and set(df["reason"]) == {"popular"}
    assert (df["propensity"] == 1.0).all()
    pd.testing.assert_frame_equal(df, pages(scored, 0.5, eager, ITEM_IDS))
    # items ranked by popularity: cA by POP is 1, 0, 2, 3
    rows = _rows(scored)
    assert _items(scored, rows["__default__", "category:cA"]) == [1, 0, 2, 3]


# ---------------------------------------------------------------------------------------------
# score_batch, rerank mode


def test_rerank_sorts_items_by_the_engagement_score_except_fixed_rows():
    fake = FakeEngagement()
    inputs = _inputs(engagement=fake)
    fixed = _score("fixed", _inputs())
    scored = _score("rerank", inputs)
    assert fake.overrides == ["first"]  # position debiasing: first slot, first position
    assert fake.weights_seen == [RERANK_WEIGHTS]  # the inputs' objective weights steer
    rows = _rows(scored)
    assert rows == _rows(fixed)  # same candidates
    for (u, cid), j in rows.items():
        items = _items(scored, j)
        before = _items(fixed, j)
        assert sorted(items) == sorted(before), (u, cid)
        want_scores = [_fake_score(u, i) for i in items]
        np.testing.assert_allclose(scored.item_scores[j][: len(items)], want_scores, rtol=1e-5)
        if scored.cands.fixed_order[j]:
            assert items == before, (u, cid)
        else:
            assert items == sorted(before, key=lambda i: -_fake_score(u, i)), (u, cid)
            assert np.all(np.diff(want_scores) < 0), (u, cid)
        # α and γ use the reranked order
        a, g = _alpha_gamma_by_hand(u, cid, items)
        assert scored.alpha[j] == pytest.approx(a, rel=1e-6)
        assert scored.gamma[j] == pytest.approx(g, rel=1e-6)
    # by hand: deals for u1 score 1: 0.11 + 0.04, 5: 0.05 + 0.02, 9: 0.10 + 0.0025
    assert _items(scored, rows["u1", "deals"]) == [1, 9, 5]
    assert _items(fixed, rows["u1", "deals"]) == [1, 5, 9]
    # the immutable curated carousel keeps the operator's order for everyone
    assert _items(scored, rows["u1", "editors"]) == [11, 7, 3, 0]
    assert _items(scored, rows["u2", "editors"]) == [11, 7, 3, 0]
    # category cA for u1: pop_7d 3, 11, 7, 1 -> 1, 2, 0, 3
    assert _items(scored, rows["u1", "category:cA"]) == [1, 2, 0, 3]


def test_rerank_scores_each_user_item_pair_once_with_the_feature_frame():
    fake = FakeEngagement()
    scored = _score("rerank", _inputs(engagement=fake))
    (frame,) = fake.frames
    assert list(frame.columns) == list(FEATURES)
    cu = np.asarray(scored.cands.user)
    pairs = {
        (scored.users[cu[j]], i) for j in range(len(cu)) for i in _items(scored, j)
    }  # distinct (user, item) pairs among all candidates
    assert len(frame) == len(pairs)
    assert frame["slot"].isna().all()  # placement left to the model's override
    # each row's mf_score is r̂ of its pair and item_pop_7d the item's popularity
    by_item = {float(POP_7D[i]): i for i in range(12)}
    by_user = {1.0: "u1", 2.0: "u2"}  # user_clicks_7d identifies the user
    got = set()
    for pop, clicks, mf in zip(
        frame["item_pop_7d"], frame["user_clicks_7d"], frame["mf_score"], strict=True
    ):
        i, u = by_item[float(pop)], by_user[float(clicks)]
        assert mf == pytest.approx(R_HAT[u][i], rel=1e-6), (u, i)
        got.add((u, i))
    assert got == pairs


def test_rerank_without_an_engagement_model_raises():
    with pytest.raises(ValueError, match="engagement model"):
        _score("rerank", _inputs(features=True))
    with pytest.raises(ValueError, match="engagement model"):
        _score("rerank", _inputs())


FY_WEIGHTS = {"click": 1.0, "purchase": 0.0513}  # no two items of a user score alike


def _for_you_expected(
    scored, u: str, params: PageParams, explore_weight: float, bought, best_sellers=()
):
    """u's "picked for you" list by hand: the distinct items of its other candidates, its
    most-bought items, its top-r̂ items and the first best sellers, by fake score (never bought
    ones boosted)."""
    cu = np.asarray(scored.cands.user)
    pool = {
        i
        for j in range(len(cu))
        if scored.users[cu[j]] == u and scored.cands.reason[j] != "for_you"
        for i in _items(scored, j)
    }
    pool |= set(BUY_AGAIN[u][: params.for_you_history].tolist())
    pool |= set(np.argsort(-R_HAT[u], kind="stable")[: params.for_you_pool].tolist())
    pool |= set(list(best_sellers)[: params.for_you_popular])
    p = {i: POP_7D[i] / 100.0 + FY_WEIGHTS["purchase"] * R_HAT[u][i] for i in pool}
    total = sum(p.values())
    fresh = sum(v for i, v in p.items() if i not in bought)
    value = {
        i: v * (1 + explore_weight * total / fresh) if i not in bought and fresh else v
        for i, v in p.items()
    }
    return sorted(pool, key=lambda i: (-value[i], i)), p


def test_personal_pool_is_history_then_top_r_hat_then_best_sellers():
    inputs = _inputs()
    m = inputs.user_matrices(USERS)
    params = replace(PARAMS, for_you_history=2, for_you_pool=3, for_you_popular=2)
    best = np.array([7, 3, 9])  # only the first for_you_popular are weighed
    pool = personal_pool(m, params, best)
    plain = personal_pool(m, replace(params, for_you_popular=0), best)
    np.testing.assert_array_equal(pool[:, : plain.shape[1]], plain)
    np.testing.assert_array_equal(pool[:, plain.shape[1] :], [[7, 3], [7, 3]])
    for k, u in enumerate(USERS):
        hist = [i for i in plain[k, :2].tolist() if i != PAD]
        assert hist == BUY_AGAIN[u][:2].tolist()
        assert sorted(plain[k, 2:].tolist()) == sorted(np.argsort(-R_HAT[u])[:3].tolist())
    # no best sellers (a lake without 30-day popularity): the pool is left as it is
    np.testing.assert_array_equal(personal_pool(m, params, np.empty(0, np.int64)), plain)


@pytest.mark.parametrize(("explore_weight", "popular"), [(0.0, 0), (2.0, 0), (0.0, 2)])
def test_picked_for_you_rows_rank_the_users_whole_pool_by_engagement(explore_weight, popular):
    bought = {"u1": [4, 6, 0], "u2": [1]}
    catalog = _catalog()
    catalog.best_sellers = np.array([11, 2, 8])  # the first `popular` join every user's pool
    inputs = _inputs(engagement=FakeEngagement(), objective_weights=FY_WEIGHTS, catalog=catalog)
    inputs.features = _feature_source(inputs.catalog, bought)
    params = replace(
        PARAMS,
        best_seller_carousels=0,
        for_you_carousels=2,
        for_you_history=2,
        for_you_pool=2,
        for_you_popular=popular,
        for_you_explore_weight=explore_weight,
    )
    scored = _score("rerank", inputs, params)
    plain = _score(
        "rerank",
        _inputs(engagement=FakeEngagement(), objective_weights=FY_WEIGHTS, catalog=catalog),
        replace(PARAMS, best_seller_carousels=0),
    )
    rows = _rows(scored)
    # the other candidates are untouched
    for key, j in _rows(plain).items():
        assert _items(scored, rows[key]) == _items(plain, j), key
    assert np.all(np.diff(np.asarray(scored.cands.user)) >= 0)  # still sorted by user
    m, width = params.items_per_carousel, params.candidate_items
    for u in USERS:
        want, p = _for_you_expected(
            scored, u, params, explore_weight, set(bought[u]), catalog.best_sellers
        )
        for k, cid in enumerate(("for_you", "for_you:2")):
            j = rows[u, cid]
            assert scored.cands.family[j] == "for_you" and scored.cands.reason[j] == "for_you"
            got = _items(scored, j)
            assert got == want[k * m : k * m + width], (u, cid, explore_weight)
            # the score shown is the engagement score, not the boosted value
            np.testing.assert_allclose(
                scored.item_scores[j][: len(got)], [p[i] for i in got], rtol=1e-6
            )
    if explore_weight:  # the boost moves never-bought items ahead of some bought ones
        want0, _ = _for_you_expected(scored, "u1", params, 0.0, {4, 6, 0})
        assert _items(scored, rows["u1", "for_you"]) != want0[:width]


def test_picked_for_you_needs_the_rerank_mode():
    params = replace(PARAMS, for_you_carousels=2)
    fixed = _score("fixed", _inputs(), params)
    assert "for_you" not in set(fixed.cands.reason)  # fixed mode has no engagement scores
    scored = _score("rerank", _inputs(engagement=FakeEngagement()), params)
    assert "for_you" in set(scored.cands.reason)


def _worth(scored, j: int, shown: set[str], m: int) -> float:
    """Total score of the first m items of candidate j not in `shown`."""
    fresh = [k for k, i in enumerate(_items(scored, j)) if ITEM_IDS[i] not in shown][:m]
    return float(np.nansum(scored.item_scores[j][fresh]))


def test_value_slot_order_fills_each_slot_with_the_most_valuable_unshown_items():
    params = replace(PARAMS, for_you_carousels=2, slot_order="value")
    scored = _score("rerank", _inputs(engagement=FakeEngagement()), params)
    df = pages(scored, 0.5, params, ITEM_IDS)
    _assert_page_rules(df, scored, 0.5, params)
    rows = _rows(scored)
    m = params.items_per_carousel
    for u in USERS:
        p = _page(df, u)
        shown: set[str] = set()
        placed: set[str] = set()
        prev = None
        for _, g in p.groupby("slot"):
            # the placed carousel's unshown items are worth the most among the feasible ones

            feasible = [
                j
                for (uu, cid), j in rows.items()
                if uu == u
                and scored.cands.family[j] != prev
                and cid not in placed
                and sum(ITEM_IDS[i] not in shown for i in _items(scored, j)) >= params.min_items
            ]
            got = _worth(scored, rows[u, g["carousel_id"].iloc[0]], shown, m)
            assert len(feasible) > 1 or placed  # a real choice at least at the top
            assert all(got >= _worth(scored, j, shown, m) - 1e-12 for j in feasible)
            shown.update(g["item_id"])
            placed.add(g["carousel_id"].iloc[0])
            prev = g["family"].iloc[0]
    # the beam's order differs on these pages
    beam = pages(scored, 0.5, replace(params, slot_order="beam"), ITEM_IDS)
    assert not beam[["user_id", "slot", "carousel_id"]].equals(
        df[["user_id", "slot", "carousel_id"]]
    )


def test_thompson_users_of_value_ordered_pages_sample_the_value(monkeypatch):
    import models.ranking.pages as ranking

    seen = []
    real = ranking.assemble

    def spy(*args, **kwargs):
        seen.append((kwargs["thompson"], kwargs["values"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(ranking, "assemble", spy)
    params = replace(
        PARAMS, for_you_carousels=2, slot_order="value", thompson_share=1.0, explore_epsilon=0.0
    )
    scored = _score("rerank", _inputs(engagement=FakeEngagement()), params)
    df = pages(scored, 0.3, params, ITEM_IDS, randomise=True, seed=4)
    _assert_page_rules(df, scored, 0.3, params)
    assert ((df["propensity"] > 0.0) & (df["propensity"] <= 1.0)).all()
    ts, values = seen[-1]
    assert values is not None and ts.value_scale is not None
    # 1 / λ̄ of each candidate: a draw of λ scales its value by λ / λ̄
    worth = values.sum(axis=2) > 0
    assert worth.any()
    lam = np.sort(np.unique(np.maximum(scored.lam, 1e-12)))
    got = 1.0 / ts.value_scale[worth]
    assert np.allclose(lam[np.clip(np.searchsorted(lam, got), 0, len(lam) - 1)], got)
    # beam order (or uncalibrated scores): the draws rank φ, as the beam does
    pages(scored, 0.3, replace(params, slot_order="beam"), ITEM_IDS, randomise=True, seed=4)
    assert seen[-1][0].value_scale is None and seen[-1][1] is None


def test_value_slot_order_keeps_the_beam_order_without_calibrated_scores():
    # fixed mode: the item scores are r̂, not probabilities
    params = replace(PARAMS, slot_order="value")
    scored = _score("fixed", _inputs(), params)
    assert not scored.calibrated
    beam = pages(scored, 0.5, replace(params, slot_order="beam"), ITEM_IDS)
    pd.testing.assert_frame_equal(pages(scored, 0.5, params, ITEM_IDS), beam)
    assert _score("rerank", _inputs(engagement=FakeEngagement()), params).calibrated
    with pytest.raises(ValueError, match="slot_order"):
        pages(scored, 0.5, replace(params, slot_order="best"), ITEM_IDS)


# ---------------------------------------------------------------------------------------------
# models.evaluation.holdout


def test_ranking_ndcg_hand_case():
    # a: perfect order; b: reversed; c: no positives (left out of the mean)
    users = np.array(["b", "a", "c", "a", "b", "a", "c", "b"], dtype=object)
    score = np.array([0.9, 0.1, 0.5, 0.5, 0.5, 0.9, 0.7, 0.1])
    rel = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 0.0, 2.0])
    reversed_ = (1 / np.log2(3) + 2 / np.log2(4)) / (2 + 1 / np.log2(3))
    assert m.ndcg_at_k(np.array([0.0, 1.0, 2.0]), 10) == pytest.approx(reversed_)
    assert ranking_ndcg(users, score, rel) == pytest.approx((1.0 + reversed_) / 2)
    only_a = users == "a"
    assert ranking_ndcg(users[only_a], score[only_a], rel[only_a]) == 1.0
    # k = 1: a's top row is its best, b's top row is irrelevant
    assert ranking_ndcg(users, score, rel, k=1) == pytest.approx(0.5)
    assert np.isnan(ranking_ndcg(users, score, np.zeros(len(users))))


class FakeHoldoutModel:
    objectives = ("click", "purchase")
    params = SimpleNamespace(weights={"click": 1.0, "purchase": 10.0})

    def __init__(self, preds: dict[str, np.ndarray]) -> None:
        self.preds = preds
        self.overrides: list[object] = []

    def predict(self, frame, *, position_override):
        self.overrides.append(position_override)
        return self.preds

    def combined_score(self, preds, weights):
        return sum(w * preds[o] for o, w in weights.items())


def test_holdout_metrics_use_logged_placements_and_graded_relevance():
    holdout = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b"],
            "click": [1, 1, 0, 0, 1],
            "purchase": [0, 1, 0, 0, 0],
        }
    )
    preds = {
        "click": np.array([0.8, 0.3, 0.1, 0.6, 0.2]),
        "purchase": np.array([0.0, 0.1, 0.0, 0.0, 0.0]),
    }
    model = FakeHoldoutModel(preds)
    out = holdout_metrics(model, holdout)
    assert model.overrides == [None]
    y = holdout["click"].to_numpy()
    assert out["click.auc"] == pytest.approx(m.auc(y, preds["click"]))
    assert out["click.log_loss"] == pytest.approx(m.log_loss(y, preds["click"]))
    assert out["purchase.auc"] == pytest.approx(1.0)
    # combined = click + 10·purchase: a ranks rows 2 (1.3, rel 2), 1 (0.8, rel 1), 3 (rel 0);
    # b ranks row 4 (0.6, rel 0) above row 5 (0.2, rel 1)
    b = (1 / np.log2(3)) / 1.0
    assert out["ndcg"] == pytest.approx((1.0 + b) / 2)


def _page_rows(user: str, cells: list[tuple[int, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": user,
            "slot": [s for s, _, _ in cells],
            "item_rank": [r for _, r, _ in cells],
            "item_id": [i for _, _, i in cells],
        }
    )


def test_page_ndcg_relevant_item_first_is_perfect():
    page = _page_rows("x", [(1, 1, "hit"), (1, 2, "a"), (2, 1, "b"), (2, 2, "c")])
    rel = pd.DataFrame({"user_id": ["x", "x"], "item_id": ["hit", "a"], "rel": [1.0, 0.0]})
    assert page_ndcg(page, rel, slots=2, per_carousel=3) == 1.0


def test_page_ndcg_counts_unshown_relevant_items_in_the_ideal():
    cells = [(s, r, f"p{s}{r}") for s in (1, 2) for r in (1, 2, 3)]
    page = _page_rows("y", cells)
    rel = pd.DataFrame(
        {"user_id": ["y", "y"], "item_id": ["p23", "never_shown"], "rel": [1.0, 1.0]}
    )
    got = page_ndcg(page, rel, slots=2, per_carousel=3)
    # DCG: one hit at slot 2, position 3 -> 1/log2(5); ideal: the two gains on (1,1), (1,2)
    want = (1 / np.log2(5)) / (1 / np.log2(2) + 1 / np.log2(3))
    assert got == pytest.approx(want)
    assert want == pytest.approx(0.2641, abs=1e-4)
    # without the unshown item the page would score 1/log2(5), not `want`
    assert got < (1 / np.log2(5)) - 0.1


def test_page_ndcg_averages_only_users_with_relevant_items():
    page = pd.concat(
        [
            _page_rows("x", [(1, 1, "hit"), (1, 2, "a")]),
            _page_rows("z", [(1, 1, "a"), (1, 2, "hit")]),  # nothing relevant for z
            _page_rows("y", [(1, 1, "a"), (1, 2, "hit")]),
        ]
    )
    rel = pd.DataFrame(
        {
            "user_id": ["x", "y", "z", "gone"],
            "item_id": ["hit", "hit", "hit", "q"],
            "rel": [2, 2, 0, 1],
        }
    )
    got = page_ndcg(page, rel, slots=2, per_carousel=2)
    # x: 1.0; y: hit at (1,2) -> (2/log2 3) / (2/log2 2); z (rel 0) and "gone" (no page) excluded
    assert got == pytest.approx((1.0 + 1 / np.log2(3)) / 2)
    empty = rel.assign(rel=0.0)
    assert np.isnan(page_ndcg(page, empty, slots=2, per_carousel=2))


# ---------------------------------------------------------------------------------------------
# jobs.daily.training_data.sample_users

POOL = np.array([f"user{i:03d}" for i in range(200)] + ["user007", "user042"], dtype=object)


def test_sample_users_is_deterministic_sorted_unique_and_from_the_input():
    a = sample_users(POOL, 20, seed=7)
    b = sample_users(POOL[::-1].copy(), 20, seed=7)  # input order does not matter
    assert a.tolist() == b.tolist()
    assert len(a) == 20
    assert len(set(a.tolist())) == 20
    assert a.tolist() == sorted(a.tolist())
    assert set(a.tolist()) <= set(POOL.tolist())


def test_sample_users_changes_with_the_seed():
    samples = {tuple(sample_users(POOL, 20, seed=s).tolist()) for s in range(5)}
    assert len(samples) == 5


def test_sample_users_keeps_everyone_when_n_covers_them():
    users = np.array(["c", "a", "b", "a"], dtype=object)
    assert sample_users(users, 3, seed=1).tolist() == ["a", "b", "c"]
    assert sample_users(users, 10, seed=1).tolist() == ["a", "b", "c"]
    assert sample_users(users, 2, seed=1).tolist() != ["a", "b", "c"]
    assert len(sample_users(users, 2, seed=1)) == 2
