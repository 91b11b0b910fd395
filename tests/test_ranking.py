"""Ranking (score_batch / pages), held-out metrics and the training user sample, on tiny
hand-built inputs whose answers are known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from jobs.training_data import sample_users
from models import metrics as m
from models.candidates import PAD, Catalog, CuratedCarousel
from models.holdout import holdout_metrics, page_ndcg, ranking_ndcg
from models.item_features import FEATURES, FeatureSource
from models.mf import MFModel
from models.ranking import PageParams, RankInputs, pages, score_batch

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
POP_7D = np.array([3, 11, 7, 1, 9, 5, 12, 2, 8, 10, 4, 6], dtype=float)  # a permutation
TRENDING = (5, 6, 10)  # the only items with recent engagement and growth
PRIORS = {("u1", "category:cA"): 0.5, ("u1", "editors"): 0.4, ("u2", "trending"): 0.9}
CAROUSEL_LAM = {"category:cB": 0.3, "trending": 0.25, "deals": 0.2}
P_GLOBAL = 0.1
BUY_AGAIN = {"u1": np.array([4, 6, 0]), "u2": np.array([1])}  # u2's list is too short
PARAMS = PageParams(
    slots=10, items_per_carousel=3, candidate_items=4, min_items=2, category_carousels=3
)
D = 1.0 / np.log1p(np.arange(1, 5))  # position discounts 1/log(1+l)


def _catalog() -> Catalog:
    pop_recent = np.zeros(12)
    trend = np.zeros(12)
    pop_recent[list(TRENDING)] = [3.0, 2.0, 1.0]
    trend[list(TRENDING)] = 1.0
    return Catalog.build(
        item_ids=ITEM_IDS,
        categories=CATS,
        cat_names={"cA": "Apples", "cB": "Bread", "cC": "Cheese"},
        in_stock=np.ones(12, dtype=bool),
        has_image=np.ones(12, dtype=bool),
        is_new=np.zeros(12, dtype=bool),
        pop_total=POP_TOTAL,
        pop_recent=pop_recent,
        trend=trend,
        trending_n=6,
    )


def _curated() -> list[CuratedCarousel]:
    return [
        CuratedCarousel("editors", "Editors' picks", "editorial", np.array([11, 7, 3, 0]), True),
        CuratedCarousel("deals", "Deals", "deals", np.array([9, 1, 5]), False),
    ]


def _mf(factors: np.ndarray, ids: np.ndarray) -> MFModel:
    return MFModel(USERS.copy(), ids, np.eye(2, dtype=np.float32), factors.astype(np.float32))


def _feature_source(catalog: Catalog) -> FeatureSource:
    empty_ui = pd.DataFrame(
        {
            "user_id": pd.Series(dtype=object),
            "item_id": pd.Series(dtype=object),
            **{c: pd.Series(dtype=float) for c in ("n_click", "n_add_to_cart", "n_purchase")},
            "eta": pd.Series(dtype=float),
            "last_ts": pd.Series(dtype="datetime64[ns]"),
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


def _inputs(*, engagement=None, features: bool = False) -> RankInputs:
    catalog = _catalog()
    assert list(catalog.cat_ids) == ["cA", "cB", "cC"]
    cat_eta = pd.DataFrame(
        [(u, c, e) for u in ("u2", "u1") for c, e in enumerate(ETA[u]) if e > 0],
        columns=["user_id", "c", "eta"],
    )  # unsorted on purpose; RankInputs sorts it
    priors = pd.Series(
        list(PRIORS.values()), index=pd.MultiIndex.from_tuples(list(PRIORS), names=["u", "k"])
    )
    return RankInputs(
        catalog=catalog,
        curated=_curated(),
        mf_item=_mf(V, ITEM_IDS),
        mf_cat=_mf(S, catalog.cat_ids),
        v_items=V.astype(np.float32),
        v_cats=S.astype(np.float32),
        buy_again=BUY_AGAIN,
        cat_eta=cat_eta,
        priors=priors,
        carousel_lam=CAROUSEL_LAM,
        p_global=P_GLOBAL,
        features=_feature_source(catalog) if features or engagement is not None else None,
        engagement=engagement,
        objective_weights=RERANK_WEIGHTS if engagement is not None else None,
    )


def _score(mode: str = "fixed", inputs: RankInputs | None = None):
    inputs = inputs or _inputs()
    return score_batch(inputs, USERS, inputs.user_matrices(USERS), PARAMS, mode)


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


# ---------------------------------------------------------------------------------------------
# RankInputs


def test_user_matrices_match_the_factors_and_cat_eta():
    r_hat, aff, eta, buy = _inputs().user_matrices(USERS)
    np.testing.assert_allclose(r_hat, np.vstack([V[:, 0], V[:, 1]]), rtol=1e-6)
    np.testing.assert_allclose(aff, np.vstack([S[:, 0], S[:, 1]]), rtol=1e-6)
    np.testing.assert_allclose(eta, np.array([ETA["u1"], ETA["u2"]]))
    assert [b.tolist() for b in buy] == [[4, 6, 0], [1]]
    # a single user, and a user without buy-again history
    _, _, eta2, buy2 = _inputs().user_matrices(np.array(["u2"], dtype=object))
    np.testing.assert_allclose(eta2, [ETA["u2"]])
    inputs = _inputs()
    inputs.buy_again = {}
    assert inputs.user_matrices(np.array(["u1"], dtype=object))[3][0].tolist() == []


def test_user_matrices_raise_for_cold_users():
    inputs = _inputs()
    assert inputs.warm(np.array(["u1", "cold", "u2"], dtype=object)).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="warm users"):
        inputs.user_matrices(np.array(["u1", "cold"], dtype=object))


def test_default_matrices_are_popularity():
    r_hat, aff, eta, buy = _inputs().default_matrices()
    pop = np.log1p(POP_TOTAL) / np.log1p(20.0)
    np.testing.assert_allclose(r_hat, pop[None, :])
    cat_pop = np.array([pop[0:4].sum(), pop[4:8].sum(), pop[8:12].sum()])
    np.testing.assert_allclose(aff, (cat_pop / cat_pop.max())[None, :])
    assert aff.max() == 1.0 and aff.argmax() == 2  # cC has the most popularity mass
    np.testing.assert_array_equal(eta, np.zeros((1, 3)))
    assert len(buy) == 1 and len(buy[0]) == 0


# ---------------------------------------------------------------------------------------------
# score_batch, fixed mode


def test_fixed_mode_candidates_and_item_order():
    scored = _score("fixed")
    rows = _rows(scored)
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


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="item mode"):
        _score("by_magic")


# ---------------------------------------------------------------------------------------------
# pages


def _page(df: pd.DataFrame, user: str) -> pd.DataFrame:
    return df[df["user_id"] == user]


def _slot_order(df: pd.DataFrame, user: str) -> list[str]:
    p = _page(df, user)
    return p.drop_duplicates("slot").sort_values("slot")["carousel_id"].tolist()


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
    assert _slot_order(bottom, "u1") == [
        "category:cC",
        "editors",
        "trending",
        "buy_again",
        "category:cA",
    ]
    p = _page(top, "u1")
    assert p[p["slot"] == 2]["item_id"].tolist() == ["i05", "i09"]  # i01 already shown in slot 1


@pytest.mark.parametrize("w", [0.0, 0.3, 1.0])
def test_page_rules_hold(w):
    scored = _score("fixed")
    frame = scored.candidates_frame(w)
    keys = list(zip(frame["user_id"], frame["carousel_id"], strict=True))
    phi = dict(zip(keys, frame["phi"], strict=True))
    alpha = dict(zip(keys, frame["alpha"], strict=True))
    gamma = dict(zip(keys, frame["gamma"], strict=True))
    df = pages(scored, w, PARAMS, ITEM_IDS)
    assert set(df["user_id"]) == {"u1", "u2"}
    for u in ("u1", "u2"):
        p = _page(df, u)
        assert not p["item_id"].duplicated().any(), "an item twice on a page"
        slots = p.drop_duplicates("slot").sort_values("slot")
        assert slots["slot"].tolist() == list(range(1, len(slots) + 1))
        fams = slots["family"].tolist()
        assert all(a != b for a, b in zip(fams[:-1], fams[1:], strict=True)), fams
        for _, g in p.groupby("slot"):
            assert g["item_rank"].tolist() == list(range(1, len(g) + 1))
            assert PARAMS.min_items <= len(g) <= PARAMS.items_per_carousel
            cid = g["carousel_id"].iloc[0]
            want = w * alpha[u, cid] + (1 - w) * gamma[u, cid]
            np.testing.assert_allclose(g["carousel_score"], want)
            assert g["carousel_score"].iloc[0] == pytest.approx(phi[u, cid])
        # greedy by φ: a carousel placed lower could also have gone to an earlier slot whenever
        # its family differs from that slot's upper neighbour, so it cannot have a higher φ
        cids = slots["carousel_id"].tolist()
        for s in range(len(cids)):
            for t in range(s + 1, len(cids)):
                if s == 0 or fams[t] != fams[s - 1]:
                    assert phi[u, cids[s]] >= phi[u, cids[t]], (u, cids[s], cids[t])
        # the top slot is the best φ overall
        assert phi[u, cids[0]] == max(v for (uu, _), v in phi.items() if uu == u)


def test_page_rows_carry_scores_titles_and_reasons():
    scored = _score("fixed")
    df = pages(scored, 1.0, PARAMS, ITEM_IDS)
    p = _page(df, "u1")
    idx = {i: n for n, i in enumerate(ITEM_IDS)}
    np.testing.assert_allclose(
        p["item_score"], [R_HAT["u1"][idx[i]] for i in p["item_id"]], rtol=1e-6
    )
    first = p[p["slot"] == 1]
    assert first["carousel_title"].iloc[0] == "More in Apples"
    assert first["reason"].iloc[0] == "category_affinity"
    assert first["family"].iloc[0] == "category"
    with pytest.raises(ValueError, match="w must be in"):
        pages(scored, 1.5, PARAMS, ITEM_IDS)


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


# ---------------------------------------------------------------------------------------------
# models.holdout


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
# jobs.training_data.sample_users

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
