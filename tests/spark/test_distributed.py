"""The Spark twins of the trainers on local Spark: known answers, named errors, and agreement
with the single-node trainers on the same data."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest
from support.interactions import checkerboard_ids

from models.evaluation import metrics as m
from models.ranking.distributed import _aligned, _check_lineage, fit_mf_spark, spark_booster_trainer
from models.ranking.engagement import fit_engagement
from models.ranking.engagement_model import EngagementParams
from models.ranking.mf import MFFitError, MFModel, MFParams, fit_mf, fold_in

# xgboost.spark trains in Spark's Python workers, which start `PYSPARK_PYTHON` (default: the
# `python3` on PATH, not this venv). Collection imports this module before the session fixture
# creates the SparkContext, which reads the variable once.
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

N_USERS, N_ITEMS = 40, 20
# Spark scales regParam by each row's count (ALS-WR); 1.0 suits both libraries here. 10
# iterations: the test session has no checkpoint directory (see test_spark_als_lineage_guard)
ALS = MFParams(factors=2, iterations=10, regularization=1.0, seed=3)


def _checkerboard() -> tuple[np.ndarray, np.ndarray]:
    return checkerboard_ids(N_USERS, N_ITEMS)


def _blocks(model: MFModel, u: int) -> tuple[np.ndarray, np.ndarray]:
    """Item rows of user u's colour and of the other colour."""
    same = [f"i{i:02d}" for i in range(N_ITEMS) if (u + i) % 2 == 0]
    other = [f"i{i:02d}" for i in range(N_ITEMS) if (u + i) % 2 == 1]
    return model.item_index(np.array(same, dtype=object)), model.item_index(
        np.array(other, dtype=object)
    )


def _scores(model: MFModel, u: int) -> np.ndarray:
    row = model.user_index(np.array([f"u{u:02d}"], dtype=object))[0]
    return model.item_factors @ model.user_factors[row]


@pytest.fixture(scope="module")
def spark_mf(spark) -> MFModel:
    users, items = _checkerboard()
    return fit_mf_spark(spark, users, items, np.ones(len(users)), ALS)


def test_spark_als_recovers_the_checkerboard(spark_mf):
    for u in range(N_USERS):
        same, other = _blocks(spark_mf, u)
        s = _scores(spark_mf, u)
        # held-out cells of the user's colour must still outrank every cell of the other colour
        assert s[same].min() > s[other].max(), f"user {u}"


# model shape, sorted ids, unknowns, named errors on bad interactions and determinism: the
# trainer contract shared with fit_mf (tests/spark/test_trainer_contracts.py)


def test_spark_als_gets_sorted_indices_and_summed_duplicates(spark, monkeypatch):
    """What reaches ALS: int indices into the sorted ids, one row per cell, weights summed."""
    seen = {}

    def fake_als(ratings, params, blocks):
        seen["ratings"] = ratings.toPandas()
        ids = pd.DataFrame({"id": [0], "features": [np.ones(params.factors, np.float32)]})
        return ids, ids

    monkeypatch.setattr("models.ranking.distributed._fit_als", fake_als)
    users = np.array(["ub", "ua", "ub", "uc", "ub"], dtype=object)
    items = np.array(["x", "y", "x", "x", "z"], dtype=object)
    model = fit_mf_spark(spark, users, items, np.array([0.5, 1.0, 2.0, 0.0, 3.0]), ALS)
    got = seen["ratings"].sort_values(["user", "item"]).reset_index(drop=True)
    want = pd.DataFrame(
        {"user": [0, 1, 1, 2], "item": [1, 0, 2, 0], "rating": [1.0, 2.5, 3.0, 0.0]}
    )
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert list(model.user_ids) == ["ua", "ub", "uc"] and list(model.item_ids) == ["x", "y", "z"]
    # only id 0 came back: the others get zero rows, aligned to the sorted ids
    np.testing.assert_array_equal(model.user_factors, [[1, 1], [0, 0], [0, 0]])


def test_spark_als_and_implicit_agree_on_the_ranking(spark_mf):
    users, items = _checkerboard()
    local = fit_mf(users, items, np.ones(len(users)), ALS)
    k = 5
    for u in range(N_USERS):
        for name, model in (("spark", spark_mf), ("implicit", local)):
            same, _ = _blocks(model, u)
            top = np.argsort(-_scores(model, u))[:k]
            assert set(top) <= set(same), f"{name}, user {u}: top {k} {top} not all in {same}"
        # both put the user's colour first: the two rankings agree on the block split
        agree = np.corrcoef(_scores(spark_mf, u), _scores(local, u))[0, 1]
        assert agree > 0.9, f"user {u}: correlation {agree:.3f}"


def test_spark_style_fold_in_is_spark_als_own_user_step(spark_mf):
    # MLlib ends each iteration with the user step on the new item factors: folding the same
    # rows into its item factors (mf.serving=fold_in with mf.backend=spark) gives its users back
    users, items = _checkerboard()
    folded = fold_in(spark_mf, users, items, np.ones(len(users)), ALS, "spark")
    rows = spark_mf.user_index(folded.user_ids)
    assert len(folded.user_ids) == N_USERS and (rows >= 0).all()
    np.testing.assert_allclose(
        folded.user_factors, spark_mf.user_factors[rows], rtol=1e-3, atol=1e-4
    )


def test_spark_als_refuses_bpr(spark):
    one_u, one_i = np.array(["a"], dtype=object), np.array(["x"], dtype=object)
    with pytest.raises(ValueError, match="'als' only.*'bpr'"):
        fit_mf_spark(spark, one_u, one_i, np.array([1.0]), MFParams(algorithm="bpr"))


def test_spark_als_nan_factors_are_a_named_error(spark, monkeypatch):
    nan = pd.DataFrame({"id": [0], "features": [np.array([np.nan, 1.0], dtype=np.float32)]})
    monkeypatch.setattr(
        "models.ranking.distributed._fit_als", lambda ratings, params, blocks: (nan, nan)
    )
    with pytest.raises(MFFitError, match="spark als produced NaN/inf.*mf.regularization"):
        fit_mf_spark(
            spark,
            np.array(["a"], dtype=object),
            np.array(["x"], dtype=object),
            np.array([1.0]),
            ALS,
        )


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _Context:
    def __init__(self, checkpoint_dir=None, **conf):
        self._dir, self._conf = checkpoint_dir, _Conf(conf)

    def getCheckpointDir(self):
        return self._dir

    def getConf(self):
        return self._conf


class _Session:
    def __init__(self, **kw):
        self.sparkContext = _Context(**kw)


def test_spark_als_lineage_guard():
    """Long uncheckpointed ALS runs overflow the JVM stack: refused unless the session copes."""
    long = MFParams(iterations=15)
    with pytest.raises(MFFitError, match="15 iterations needs a checkpoint directory"):
        _check_lineage(_Session(), long)
    _check_lineage(_Session(), MFParams(iterations=10))
    _check_lineage(_Session(checkpoint_dir="file:/tmp/ckpt"), long)
    _check_lineage(_Session(**{"spark.driver.extraJavaOptions": "-Xss16m"}), long)


def test_spark_als_runs_15_iterations_on_a_pipeline_session(spark):
    """jobs.core.spark gives the JVM 16 MB thread stacks, so the default 15 iterations run (and
    still recover the checkerboard) without a checkpoint directory."""
    opts = spark.sparkContext.getConf().get("spark.driver.extraJavaOptions", "")
    assert "-Xss16m" in opts
    users, items = _checkerboard()
    model = fit_mf_spark(spark, users, items, np.ones(len(users)), MFParams(iterations=15))
    for u in (0, 1):
        row = model.user_factors[model.user_index(np.array([f"u{u:02d}"], dtype=object))[0]]
        same, other = _blocks(model, u)
        scores = model.item_factors @ row
        assert scores[same].min() > scores[other].max()


def test_aligned_puts_rows_by_id_and_zeros_the_missing():
    factors = pd.DataFrame({"id": [2, 0], "features": [np.array([1.0, 2.0]), np.array([3.0, 4.0])]})
    np.testing.assert_array_equal(_aligned(factors, 3, 2), [[3, 4], [0, 0], [1, 2]])
    assert _aligned(factors.iloc[:0], 2, 2).shape == (2, 2)
    with pytest.raises(MFFitError, match="outside"):
        _aligned(factors, 2, 2)


# --- engagement heads trained with xgboost.spark ---------------------------------------------

FEATURES = ["x0", "x1", "x2"]
ENGAGEMENT = EngagementParams(
    objectives=("click",),
    weights={"click": 1.0},
    n_estimators=30,
    max_depth=3,
    position_columns=(),
    seed=5,
)


def _engagement_frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Click ~ logistic in x0 only; x1, x2 are noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    click = rng.random(n) < 1.0 / (1.0 + np.exp(-(3.0 * x[:, 0] - 1.0)))
    return pd.DataFrame(x, columns=FEATURES).assign(
        user=rng.integers(0, 400, n).astype(str), click=click.astype(int)
    )


def _fit(frame: pd.DataFrame, trainer=None):
    return fit_engagement(
        frame,
        features=FEATURES,
        labels={"click": "click"},
        group="user",
        params=ENGAGEMENT,
        booster_trainer=trainer,
    )


def test_spark_booster_trainer_fits_a_head_like_the_local_one(spark):
    frame = _engagement_frame()
    distributed = _fit(frame, spark_booster_trainer(spark))
    local = _fit(frame)

    met = distributed.metrics
    auc = met.query(
        "split == 'evaluation' and stage == 'calibrated' and metric == 'auc'"
    ).value.item()
    assert auc > 0.8

    # (logistic objective, rounds, feature names, probabilities: the trainer contract)
    assert set(distributed.feature_importance().query("gain > 0").feature) >= {"x0"}

    p_spark = distributed.predict(frame, calibrated=False)["click"]
    p_local = local.predict(frame, calibrated=False)["click"]
    assert np.corrcoef(p_spark, p_local)[0, 1] > 0.95
    y = frame["click"].to_numpy()
    assert abs(m.auc(y, p_spark) - m.auc(y, p_local)) < 0.02


def test_spark_booster_trainer_rejects_no_workers(spark):
    with pytest.raises(ValueError, match="num_workers"):
        spark_booster_trainer(spark, num_workers=0)


def test_train_job_picks_the_twins_from_config(spark, tmp_path):
    """`mf.backend=spark` and `engagement.backend=xgboost_spark` reach the distributed trainers."""
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.daily.engagement_fit import booster_trainer
    from jobs.daily.factorisations import fit_factorisations

    lake = Lake(str(tmp_path))
    ds = "2026-01-05"
    users, items = _checkerboard()
    for table, key, ids in (
        ("user_item_counts", "item_id", items),
        ("user_category_counts", "category_id", np.array([f"c{i[-1]}" for i in items])),
    ):
        path = lake.feature(table, ds)
        os.makedirs(path)
        pd.DataFrame({"user_id": users, key: ids, "eta": 1.0}).to_parquet(f"{path}/part-0.parquet")
    cfg = load_config(
        overrides=["mf.backend=spark", "mf.iterations=5", "engagement.backend=xgboost_spark"]
    )
    item_model, cat_model, seconds = fit_factorisations(lake, ds, cfg)
    assert item_model.user_factors.shape == (N_USERS, cfg.mf.factors)
    assert len(cat_model.item_ids) == 10 and seconds["item_nnz"] == len(users)
    same, other = _blocks(item_model, 0)
    row = item_model.user_factors[item_model.user_index(np.array(["u00"], dtype=object))[0]]
    assert (item_model.item_factors @ row)[same].min() > (item_model.item_factors @ row)[
        other
    ].max()
    # mf.serving=fold_in: the heads' factors (and the served ones) fold the users into the
    # Spark fit with MLlib's own user step, so they are the fit's users again
    from jobs.daily.factorisations import serving_factorisations, window_factorisations

    train_item, train_cat, _ = window_factorisations(lake, ds, cfg)
    serve_item, _, _ = serving_factorisations(lake, ds, cfg, train_item, train_cat)
    np.testing.assert_allclose(
        train_item.user_factors,
        item_model.user_factors[item_model.user_index(train_item.user_ids)],
        rtol=1e-3,
        atol=1e-4,
    )
    np.testing.assert_array_equal(serve_item.user_factors, train_item.user_factors)
    trainer = booster_trainer(cfg)
    assert trainer is not None and trainer.__module__ == "models.ranking.distributed"
    assert booster_trainer(load_config()) is None  # the local default
