"""The paired bootstrap behind the gate: batch metrics with known answers, and intervals that
reject a clear drop and let a noisy small one pass."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from models.evaluation import metrics as m
from models.evaluation import paired_bootstrap as pb
from models.evaluation.holdout import holdout_metrics, paired_holdout_metrics
from validation.gate import Tolerances, decide


class FixedScores:
    """An engagement model whose click predictions are given (one per held-out row)."""

    objectives = ("click",)

    def __init__(self, p: np.ndarray) -> None:
        self.p = np.asarray(p, dtype=np.float64)
        self.params = SimpleNamespace(weights={"click": 1.0})

    def predict(self, frame: pd.DataFrame, position_override: object = None) -> dict:
        assert len(frame) == len(self.p)
        return {"click": self.p}

    def combined_score(self, preds: dict, weights: dict) -> np.ndarray:
        return sum(w * preds[o] for o, w in weights.items())


def test_auc_batch_known_answers_with_ties_and_weights() -> None:
    y = np.array([1, 0, 1, 0, 1])
    p = np.array([0.9, 0.1, 0.4, 0.6, 0.6])
    w = np.array(
        [
            [1, 1, 1, 1, 0],  # pairs: 0.9>0.1, 0.9>0.6, 0.4>0.1, 0.4<0.6 -> 3/4
            [1, 1, 0, 1, 0],  # the one positive beats both negatives -> 1
            [0, 1, 1, 2, 0],  # 0.4 beats 0.1 (weight 1) but not 0.6 (weight 2) -> 1/3
            [0, 0, 0, 1, 1],  # a tie: ½
            [1, 0, 1, 0, 1],  # no negative: undefined
        ],
        dtype=np.float64,
    )
    got = pb.auc_batch(y, p, w)
    np.testing.assert_allclose(got[:4], [0.75, 1.0, 1 / 3, 0.5])
    assert np.isnan(got[4])


def test_batch_metrics_equal_the_weighted_metrics() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.3).astype(int)
    p = np.round(rng.random(400), 2)  # many ties
    w = rng.poisson(1.0, size=(5, 400)).astype(np.float64)
    w[0] = 1.0
    for b in range(5):
        assert pb.auc_batch(y, p, w)[b] == pytest.approx(m.auc(y, p, sample_weight=w[b]))
        assert pb.ece_batch(y, p, w)[b] == pytest.approx(
            m.expected_calibration_error(y, p, sample_weight=w[b])
        )
    values = rng.random(400)
    np.testing.assert_allclose(pb.mean_batch(values, w), (w @ values) / w.sum(axis=1))


def test_user_weights_are_seeded_and_chunked() -> None:
    a = np.vstack(list(pb.user_weight_chunks(7, 50, seed=1, n_rows=1 << 20)))
    b = np.vstack(list(pb.user_weight_chunks(7, 50, seed=1)))
    assert a.shape == (50, 7) and np.array_equal(a, b)
    assert not np.array_equal(a, np.vstack(list(pb.user_weight_chunks(7, 50, seed=2))))
    assert pb.percentile_interval(np.array([np.nan, 1.0, 2.0, 3.0]), 0.5) == (1.5, 2.5)
    with pytest.raises(ValueError, match="resamples"):
        next(pb.user_weight_chunks(7, 1, seed=1))


def _holdout(users: int, rows: int, seed: int) -> tuple[pd.DataFrame, np.random.Generator]:
    rng = np.random.default_rng(seed)
    y = (rng.random(users * rows) < 0.3).astype(int)
    ids = np.repeat([f"u{i:03d}" for i in range(users)], rows)
    return pd.DataFrame({"user_id": ids, "click": y}), rng


def test_a_clear_drop_is_rejected_beyond_the_noise() -> None:
    holdout, rng = _holdout(300, 8, seed=1)
    y = holdout["click"].to_numpy()
    champion = np.clip(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.15, len(y)), 0, 1)
    challenger = rng.random(len(y))  # no signal: AUC ~0.5 against ~0.92
    mine, theirs, intervals = paired_holdout_metrics(
        FixedScores(challenger), FixedScores(champion), holdout, objectives=["click"],
        resamples=500, seed=0,
    )  # fmt: skip
    # the point metrics are each model's own holdout metrics
    assert mine == pytest.approx(holdout_metrics(FixedScores(challenger), holdout))
    assert theirs == pytest.approx(holdout_metrics(FixedScores(champion), holdout))
    assert set(intervals) == {"click.auc", "click.ece", "ndcg"}
    lo, hi = intervals["click.auc"]
    assert lo <= mine["click.auc"] - theirs["click.auc"] <= hi and hi < -0.3
    d = decide(mine, theirs, Tolerances(), data_checks_passed=True, intervals=intervals)
    assert not d.promote
    assert {"click.auc", "ndcg"} <= {c.name for c in d.failed}
    # the same seed gives the same intervals (a re-run decides the same)
    again = paired_holdout_metrics(
        FixedScores(challenger), FixedScores(champion), holdout, objectives=["click"],
        resamples=500, seed=0,
    )  # fmt: skip
    assert again[2] == intervals


def test_a_noisy_small_drop_passes() -> None:
    holdout, rng = _holdout(12, 6, seed=12)  # 12 held-out users: a small, noisy sample
    y = holdout["click"].to_numpy()
    champion = np.clip(0.3 + 0.2 * (y - 0.3) + rng.normal(0, 0.15, len(y)), 0, 1)
    challenger = np.clip(champion + rng.normal(0, 0.05, len(y)), 0, 1)
    mine, theirs, intervals = paired_holdout_metrics(
        FixedScores(challenger), FixedScores(champion), holdout, objectives=["click"],
        resamples=1000, seed=0,
    )  # fmt: skip
    drop = theirs["click.auc"] - mine["click.auc"]
    assert drop > 0.03  # beyond the 0.01 tolerance on the point estimates ...
    assert not decide(mine, theirs, Tolerances(), data_checks_passed=True).promote
    lo, hi = intervals["click.auc"]
    assert lo < -0.01 < hi  # ... but well inside the noise of 12 users
    d = decide(mine, theirs, Tolerances(), data_checks_passed=True, intervals=intervals)
    assert d.promote, d.reason
