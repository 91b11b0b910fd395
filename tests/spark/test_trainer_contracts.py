"""One contract for the twin trainers: the single-node and the Spark implementation of each
model promise the same things (cf. implicit's shared test mixin).

- Matrix factorisation: `models.ranking.mf.fit_mf` (implicit ALS, in-process) and
  `models.ranking.distributed.fit_mf_spark` (Spark ML ALS): an `MFModel` with sorted id arrays,
  float32 factors of the asked shape, -1 for unknown ids, named errors on bad interactions, the
  same factors again for the same seed.
- Engagement heads: `fit_engagement` with the local XGBoost trainer (the default) and with
  `spark_booster_trainer` (xgboost.spark): the same objectives, logistic boosters of the asked
  size on the given features, probabilities in [0, 1], named errors on bad labels, the same
  predictions again for the same seed.

What only one of them promises (the Spark ALS lineage guard, implicit's BPR, calibration, ...)
is tested next to it (tests/spark/test_distributed.py, tests/unit/test_models.py,
tests/unit/test_engagement.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support.interactions import checkerboard_ids

from models.ranking.distributed import fit_mf_spark, spark_booster_trainer
from models.ranking.engagement import EngagementFitError, fit_engagement
from models.ranking.engagement_model import EngagementModel, EngagementParams
from models.ranking.mf import MFFitError, MFModel, MFParams, fit_mf

# xgboost.spark trains in Spark's Python workers, which start `PYSPARK_PYTHON` (see
# test_distributed): set before the session fixture creates the SparkContext.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

N_USERS, N_ITEMS = 40, 20
# 10 iterations: the test session has no checkpoint directory (Spark's lineage guard)
ALS = MFParams(factors=2, iterations=10, regularization=1.0, seed=3)

MFTrainer = Callable[[np.ndarray, np.ndarray, np.ndarray, MFParams], MFModel]


@pytest.fixture(params=["implicit", "spark"])
def fit(request: pytest.FixtureRequest) -> MFTrainer:
    """Each MF trainer as (users, items, weights, params) -> MFModel."""
    if request.param == "implicit":
        return fit_mf
    spark = request.getfixturevalue("spark")
    return lambda users, items, weights, params: fit_mf_spark(spark, users, items, weights, params)


def _checkerboard() -> tuple[np.ndarray, np.ndarray]:
    return checkerboard_ids(N_USERS, N_ITEMS)


def test_mf_model_has_sorted_ids_float32_factors_and_unknowns(fit):
    users, items = _checkerboard()
    model = fit(users, items, np.ones(len(users)), ALS)
    assert isinstance(model, MFModel)
    assert model.user_factors.shape == (N_USERS, ALS.factors)
    assert model.item_factors.shape == (N_ITEMS, ALS.factors)
    assert model.user_factors.dtype == np.float32 and model.item_factors.dtype == np.float32
    assert list(model.user_ids) == sorted(f"u{u:02d}" for u in range(N_USERS))
    assert list(model.item_ids) == sorted(f"i{i:02d}" for i in range(N_ITEMS))
    assert list(model.user_index(np.array(["u00", "zzz", "u39"], dtype=object))) == [0, -1, 39]
    assert list(model.item_index(np.array(["nope", "i05"], dtype=object))) == [-1, 5]
    assert np.isfinite(model.user_factors).all() and np.isfinite(model.item_factors).all()
    assert (np.abs(model.user_factors).sum(axis=1) > 0).all()  # no user was dropped


def test_mf_rejects_bad_interactions(fit):
    empty = np.array([], dtype=object)
    with pytest.raises(MFFitError, match="no interactions"):
        fit(empty, empty, np.array([]), ALS)
    one_u, one_i = np.array(["a"], dtype=object), np.array(["x"], dtype=object)
    for bad in (np.nan, np.inf, -1.0):
        with pytest.raises(MFFitError, match="finite and >= 0"):
            fit(one_u, one_i, np.array([bad]), ALS)


def test_mf_is_reproducible_for_a_seed(fit):
    users, items = _checkerboard()
    params = MFParams(factors=4, iterations=5, seed=11)
    a = fit(users, items, np.ones(len(users)), params)
    b = fit(users, items, np.ones(len(users)), params)
    np.testing.assert_allclose(a.user_factors, b.user_factors)
    np.testing.assert_allclose(a.item_factors, b.item_factors)
    c = fit(users, items, np.ones(len(users)), replace(params, seed=12))
    assert not np.allclose(a.user_factors, c.user_factors)


# --- engagement heads ------------------------------------------------------------------------

FEATURES = ["x0", "x1", "x2"]
ENGAGEMENT = EngagementParams(
    objectives=("click", "purchase"),
    weights={"click": 1.0, "purchase": 5.0},
    n_estimators=20,
    max_depth=3,
    position_columns=(),
    seed=5,
)


@pytest.fixture(params=["local", "spark"])
def booster_trainer(request: pytest.FixtureRequest) -> Any:
    """Each booster trainer `fit_engagement` takes: None (the local default) or the Spark twin."""
    if request.param == "local":
        return None
    return spark_booster_trainer(request.getfixturevalue("spark"))


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Click ~ logistic in x0, purchase ~ logistic in x0 + x1 (a rarer label); x2 is noise."""
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=(n, 3))
    click = rng.random(n) < 1.0 / (1.0 + np.exp(-(3.0 * x[:, 0] - 1.0)))
    purchase = rng.random(n) < 1.0 / (1.0 + np.exp(-(2.0 * x[:, 0] + 2.0 * x[:, 1] - 2.0)))
    return pd.DataFrame(x, columns=FEATURES).assign(
        user=rng.integers(0, 300, n).astype(str),
        click=click.astype(int),
        purchase=purchase.astype(int),
    )


def _fit_heads(frame: pd.DataFrame, trainer: Any, params: EngagementParams = ENGAGEMENT):
    return fit_engagement(
        frame,
        features=FEATURES,
        labels={"click": "click", "purchase": "purchase"},
        group="user",
        params=params,
        booster_trainer=trainer,
    )


def test_heads_are_logistic_boosters_giving_probabilities(frame, booster_trainer):
    model = _fit_heads(frame, booster_trainer)
    assert isinstance(model, EngagementModel)
    assert model.objectives == ENGAGEMENT.objectives and model.heads == ENGAGEMENT.objectives
    for obj in ENGAGEMENT.objectives:
        booster = model.boosters[obj]
        config = json.loads(booster.save_config())["learner"]
        assert config["objective"]["name"] == "binary:logistic"
        assert booster.num_boosted_rounds() == ENGAGEMENT.n_estimators
        assert booster.feature_names == FEATURES
    for calibrated in (True, False):
        preds = model.predict(frame, calibrated=calibrated)
        assert list(preds) == list(ENGAGEMENT.objectives)
        for p in preds.values():
            assert p.shape == (len(frame),) and p.dtype == np.float64
            assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert set(model.metrics["objective"]) == set(ENGAGEMENT.objectives)


def test_heads_reject_a_label_without_positives(frame, booster_trainer):
    with pytest.raises(EngagementFitError, match="'purchase'.*has no positives"):
        _fit_heads(frame.assign(purchase=0), booster_trainer)


def test_heads_are_reproducible_for_a_seed(frame, booster_trainer):
    a = _fit_heads(frame, booster_trainer)
    b = _fit_heads(frame, booster_trainer)
    c = _fit_heads(frame, booster_trainer, replace(ENGAGEMENT, seed=6))
    pa, pb, pc = a.predict(frame), b.predict(frame), c.predict(frame)
    for obj in ENGAGEMENT.objectives:
        np.testing.assert_array_equal(pa[obj], pb[obj])
    pd.testing.assert_frame_equal(a.metrics, b.metrics)
    assert not np.array_equal(pa["click"], pc["click"])
