"""Off-policy estimators (models/evaluation/ope.py) on a synthetic contextual bandit with a known value."""

from __future__ import annotations

import time

import numpy as np
import pytest

from models.evaluation import ope

# A contextual bandit: 4 contexts, 5 actions, known click probabilities.
P_X = np.array([0.4, 0.3, 0.2, 0.1])
Q = np.array(
    [
        [0.05, 0.10, 0.20, 0.02, 0.08],
        [0.30, 0.05, 0.10, 0.15, 0.02],
        [0.01, 0.25, 0.05, 0.40, 0.10],
        [0.12, 0.12, 0.50, 0.05, 0.20],
    ]
)
# logging policy: softmax of fixed scores (every action has support)
_SCORES = np.array(
    [
        [0.0, 0.5, -0.5, 1.0, 0.2],
        [0.3, 0.0, 0.8, -1.0, 0.1],
        [1.0, -0.2, 0.0, 0.0, 0.5],
        [0, 0, 0, 0, 0],
    ]
)
PI0 = np.exp(_SCORES) / np.exp(_SCORES).sum(axis=1, keepdims=True)
# target: deterministic best action in contexts 0-1, stochastic in 2-3
PIE = np.zeros_like(Q)
PIE[0, 2] = PIE[1, 0] = 1.0
PIE[2] = [0.0, 0.3, 0.0, 0.7, 0.0]
PIE[3] = [0.1, 0.1, 0.6, 0.1, 0.1]
TRUE_VALUE = float((P_X[:, None] * PIE * Q).sum())
WRONG_Q = np.clip(Q * 0.5 + 0.05, 0, 1)  # a badly wrong reward model


def simulate(n: int, seed: int, q_model: np.ndarray = Q) -> ope.RoundSums:
    rng = np.random.default_rng(seed)
    x = rng.choice(len(P_X), size=n, p=P_X)
    cum = PI0[x].cumsum(axis=1)
    a = (rng.random(n)[:, None] > cum).sum(axis=1)
    y = (rng.random(n) < Q[x, a]).astype(float)
    w = ope.importance_weights(PIE[x, a], PI0[x, a])
    v = (PIE[x] * q_model[x]).sum(axis=1)
    return ope.rounds(y, w, q_model[x, a], v)


def point(sums: ope.RoundSums, name: str) -> float:
    return ope.estimate(sums, resamples=2)["estimators"][name]["estimate"]


def test_true_value_is_what_the_target_earns():
    assert 0.1 < TRUE_VALUE < 0.3
    # the target beats the logging policy: the check below would be vacuous otherwise
    logging_value = float((P_X[:, None] * PI0 * Q).sum())
    assert logging_value + 0.05 < TRUE_VALUE


@pytest.mark.parametrize("name", ["ips", "dr"])
def test_ips_and_dr_are_unbiased(name):
    est = np.array([point(simulate(2000, seed), name) for seed in range(150)])
    # mean of 150 independent estimates: within 4 standard errors of the truth
    assert abs(est.mean() - TRUE_VALUE) < 4 * est.std(ddof=1) / np.sqrt(est.size)


def test_dr_is_unbiased_with_a_wrong_model_but_dm_is_not():
    dr = np.array([point(simulate(2000, s, WRONG_Q), "dr") for s in range(150)])
    dm = np.array([point(simulate(2000, s, WRONG_Q), "dm") for s in range(20)])
    assert abs(dr.mean() - TRUE_VALUE) < 4 * dr.std(ddof=1) / np.sqrt(dr.size)
    dm_truth = float((P_X[:, None] * PIE * WRONG_Q).sum())
    assert abs(dm.mean() - dm_truth) < 0.005  # DM estimates the wrong model's value
    assert abs(dm.mean() - TRUE_VALUE) > 0.03


def test_dm_is_exact_with_the_true_model():
    # contexts exactly in proportion: DM = Σ_x p(x) Σ_a π_e(a|x) q(x,a), whatever was logged
    x = np.repeat(np.arange(4), [40, 30, 20, 10])
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, x.size)
    y = (rng.random(x.size) < Q[x, a]).astype(float)
    w = ope.importance_weights(PIE[x, a], PI0[x, a])
    sums = ope.rounds(y, w, Q[x, a], (PIE[x] * Q[x]).sum(axis=1))
    assert point(sums, "dm") == pytest.approx(TRUE_VALUE, rel=1e-12)


def test_snips_equals_ips_when_weights_average_one():
    sums = simulate(3000, 1)
    w = sums.weight / sums.weight.mean()
    y = sums.reward
    fixed = ope.rounds(y, w, np.zeros_like(y), np.zeros_like(y))
    res = ope.estimate(fixed, resamples=2)["estimators"]
    assert res["snips"]["estimate"] == pytest.approx(res["ips"]["estimate"], rel=1e-12)


def test_snips_is_a_weighted_mean_and_logging_rate_is_observed():
    y = np.array([1.0, 0.0, 1.0, 0.0])
    w = np.array([2.0, 2.0, 0.0, 4.0])
    res = ope.estimate(ope.rounds(y, w, np.zeros(4), np.zeros(4)), resamples=10)
    assert res["estimators"]["ips"]["estimate"] == pytest.approx(0.5)
    assert res["estimators"]["snips"]["estimate"] == pytest.approx(2.0 / 8.0)
    assert res["logging"]["estimate"] == pytest.approx(0.5)
    assert res["match_share"] == pytest.approx(0.75)
    assert res["ess"] == pytest.approx(64.0 / 24.0)
    assert res["mean_weight"] == pytest.approx(2.0)


def test_confidence_intervals_cover_the_truth_in_most_seeds():
    covered = {"ips": 0, "snips": 0, "dr": 0}
    seeds = 40
    for seed in range(seeds):
        res = ope.estimate(simulate(3000, 100 + seed), resamples=300, seed=seed)
        for name in covered:
            e = res["estimators"][name]
            assert e["ci_low"] <= e["estimate"] <= e["ci_high"]
            covered[name] += e["ci_low"] <= TRUE_VALUE <= e["ci_high"]
    for name, n in covered.items():
        assert n >= 0.85 * seeds, f"{name} covered the truth in {n}/{seeds} seeds"


def test_bootstrap_is_seeded_and_its_se_matches_the_analytic_one():
    sums = simulate(5000, 3)
    a = ope.estimate(sums, resamples=500, seed=7)
    b = ope.estimate(sums, resamples=500, seed=7)
    c = ope.estimate(sums, resamples=500, seed=8)
    assert a["estimators"] == b["estimators"]
    assert a["estimators"]["ips"]["ci_low"] != c["estimators"]["ips"]["ci_low"]
    wy = sums.w_reward
    analytic = wy.std(ddof=1) / np.sqrt(wy.size)
    assert a["estimators"]["ips"]["se"] == pytest.approx(analytic, rel=0.15)


def test_poisson_weights_have_mean_and_variance_one():
    rng = np.random.default_rng(0)
    w = ope.poisson_weights(rng, 400_000)
    assert w.mean() == pytest.approx(1.0, abs=0.01)
    assert w.var() == pytest.approx(1.0, abs=0.01)
    assert (w >= 0).all() and np.array_equal(w, np.round(w))
    sums = ope.poisson_bootstrap_sums(np.ones((1000, 1)), 200, 0)
    assert sums.shape == (200, 1)
    assert sums.mean() == pytest.approx(1000, rel=0.01)


def test_bootstrap_is_fast_on_many_rounds_and_grouping_keeps_the_se():
    rng = np.random.default_rng(0)
    n = ope.MAX_GROUPS + 40_000  # above the threshold: resamples random groups of rounds
    y = (rng.random(n) < 0.05).astype(float)
    sums = ope.rounds(y, rng.exponential(1.0, n), np.full(n, 0.05), np.full(n, 0.05))
    t0 = time.perf_counter()
    res = ope.estimate(sums, resamples=1000)
    assert time.perf_counter() - t0 < 15.0  # ~1.5 s on one idle core
    assert res["rounds"] == n
    analytic = sums.w_reward.std(ddof=1) / np.sqrt(n)
    assert res["estimators"]["ips"]["se"] == pytest.approx(analytic, rel=0.1)
    assert res["logging"]["se"] == pytest.approx(y.std(ddof=1) / np.sqrt(n), rel=0.1)


def test_rounds_from_placements_sums_per_page():
    index = np.array([0, 0, 0, 1, 1])
    y = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    w = np.array([6.0, 0.0, 6.0, 0.0, 0.0])
    q = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    v = np.array([0.5, 0.5, 0.5, 0.2, 0.2])  # q̂ at the target's placements
    s = ope.rounds_from_placements(index, y, w, q, v_target=v)
    np.testing.assert_allclose(s.reward, [2.0, 1.0])
    np.testing.assert_allclose(s.w_reward, [12.0, 0.0])
    np.testing.assert_allclose(s.weight, [12.0, 0.0])
    np.testing.assert_allclose(s.weight_sq, [72.0, 0.0])
    np.testing.assert_allclose(s.w_pred, [6 * 0.1 + 6 * 0.3, 0.0])
    np.testing.assert_allclose(s.target_pred, [1.5, 0.4])
    np.testing.assert_allclose(s.units, [3, 2])
    res = ope.estimate(s, resamples=10)
    est = res["estimators"]
    assert est["ips"]["estimate"] == pytest.approx(6.0)
    # SNIPS: IPS / mean weight per placement (12 / 5)
    assert est["snips"]["estimate"] == pytest.approx(6.0 / (12.0 / 5.0))
    assert est["dm"]["estimate"] == pytest.approx(0.95)
    assert est["dr"]["estimate"] == pytest.approx(0.95 + (12.0 - 2.4) / 2)
    assert res["per_unit"]["snips"]["estimate"] == pytest.approx(1.0)  # Σwy / Σw
    assert res["per_unit"]["logging"]["estimate"] == pytest.approx(3.0 / 5.0)
    assert res["match_share"] == pytest.approx(0.5)
    assert res["placement_match_share"] == pytest.approx(0.4)
    # target placements with their own round index
    s2 = ope.rounds_from_placements(
        index, y, w, q, v_target=[0.7, 0.1], v_index=np.array([1, 0]), n_rounds=2
    )
    np.testing.assert_allclose(s2.target_pred, [0.1, 0.7])


def test_dm_replicates_replace_the_round_bootstrap():
    sums = simulate(2000, 4)
    reps = np.random.default_rng(0).normal(0.2, 0.01, 100)
    res = ope.estimate(sums, resamples=50, dm_replicates=reps)
    assert res["estimators"]["dm"]["se"] == pytest.approx(reps.std(ddof=1))
    assert "refitting" in res["dm_interval"]


def test_mean_with_ci():
    res = ope.mean_with_ci(np.r_[np.ones(30), np.zeros(70)], resamples=500)
    assert res["estimate"] == pytest.approx(0.3)
    assert res["ci_low"] < 0.3 < res["ci_high"]
    assert res["n"] == 100


def test_position_based_model_recovers_rates_and_weights_duplicate_rows():
    rng = np.random.default_rng(0)
    n = 200_000
    cell = rng.integers(0, 3, n)
    item = rng.integers(0, 4, n)
    exam = np.array([1.0, 0.6, 0.3])
    attract = np.array([0.05, 0.1, 0.2, 0.02])
    y = (rng.random(n) < exam[cell] * attract[item]).astype(float)
    m = ope.fit_position_based_ctr(cell, item, y, n_cells=3, n_items=5)
    grid_c, grid_i = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    truth = exam[grid_c] * attract[grid_i]
    np.testing.assert_allclose(m.predict(grid_c, grid_i), truth, rtol=0.12)
    assert m.item_factor[4] == 1.0  # never seen: no correction
    with_exam = ope.fit_position_based_ctr(cell, item, y, n_cells=3, n_items=5, cell_exam=exam)
    np.testing.assert_allclose(with_exam.predict(grid_c, grid_i), truth, rtol=0.12)
    # the same fit from per-item sums (vectorised over leading axes)
    a0, factor = ope.exam_item_factors(
        np.bincount(item, weights=y, minlength=5)[None].repeat(2, 0),
        np.bincount(item, weights=exam[cell], minlength=5)[None].repeat(2, 0),
    )
    assert a0.shape == (2,)
    expected = with_exam.item_factor * with_exam.cell_rate[0]  # e_1 = 1
    np.testing.assert_allclose(a0[:, None] * factor, np.vstack([expected, expected]))
    # integer weights = duplicated rows
    k = rng.integers(0, 3, 1000).astype(float)
    sub = slice(0, 1000)
    a = ope.fit_position_based_ctr(cell[sub], item[sub], y[sub], n_cells=3, n_items=5, weights=k)
    rep = np.repeat(np.arange(1000), k.astype(int))
    b = ope.fit_position_based_ctr(cell[rep], item[rep], y[rep], n_cells=3, n_items=5)
    np.testing.assert_allclose(a.cell_rate, b.cell_rate)
    np.testing.assert_allclose(a.item_factor, b.item_factor)


@pytest.mark.parametrize(
    ("target", "propensity", "message"),
    [
        ([0.5, 0.5], [0.5, -0.1], "logging propensities must be in"),
        ([0.5, 0.5], [0.5, 0.0], "logging propensities must be in"),
        ([0.5, 0.5], [0.5, 1.5], "logging propensities must be in"),
        ([0.5, -1.0], [0.5, 0.5], "target probabilities"),
        ([0.5], [0.5, 0.5], "length mismatch"),
        ([], [], "empty"),
        ([0.5, np.nan], [0.5, 0.5], "NaN"),
    ],
)
def test_importance_weights_reject_bad_input(target, propensity, message):
    with pytest.raises(ValueError, match=message):
        ope.importance_weights(target, propensity)


def test_rounds_reject_bad_input():
    with pytest.raises(ValueError, match="empty"):
        ope.rounds([], [], [], [])
    with pytest.raises(ValueError, match="length mismatch"):
        ope.rounds([1.0, 0.0], [1.0], [0.1, 0.1], [0.1, 0.1])
    with pytest.raises(ValueError, match="weights must be >= 0"):
        ope.rounds([1.0], [-1.0], [0.1], [0.1])
    with pytest.raises(ValueError, match="empty"):
        ope.rounds_from_placements(np.array([], int), [], [], [], v_target=[])
    with pytest.raises(ValueError, match="no logged placement"):
        ope.rounds_from_placements(np.array([0, 2]), [1, 0], [1, 1], [0, 0], v_target=[0, 0])
    with pytest.raises(ValueError, match="length mismatch"):
        ope.rounds_from_placements(np.array([0, 1]), [1], [1, 1], [0, 0], v_target=[0, 0])
    with pytest.raises(ValueError, match="resamples"):
        ope.estimate(simulate(10, 0), resamples=1)
    with pytest.raises(ValueError, match="confidence"):
        ope.estimate(simulate(10, 0), confidence=1.5)
