"""Distributed twins of the single-node trainers, on a Spark session passed in.

- `fit_mf_spark`: Spark MLlib implicit ALS, the twin of `models.ranking.mf.fit_mf` (algorithm "als"):
  same inputs, same `MFModel` out (sorted id arrays, factor rows aligned to them), same errors.
- `spark_booster_trainer`: a `models.ranking.engagement.BoosterTrainer` that fits one head's trees with
  `xgboost.spark.SparkXGBClassifier`; `fit_engagement(..., booster_trainer=...)` keeps the
  downsampling, calibration and metrics, so both trainers give the same kind of model.

The two libraries parameterise implicit ALS differently, so equal `MFParams` give similar, not
equal, factors: Spark weighs a cell by confidence 1 + alpha·weight (implicit: alpha·weight) and scales
the regularisation by each row's number of interactions (ALS-WR; implicit does not).

Pure apart from the session: no files of its own, no session creation. What the session must
provide is the session owner's business:
- ALS beyond ~10 iterations needs a checkpoint directory (`spark.checkpoint.dir`; ALS then
  checkpoints every 5 iterations) or larger JVM thread stacks (`-Xss16m` in the driver and
  executor extraJavaOptions): its lineage overflows the default 1 MB stack otherwise, so
  `fit_mf_spark` refuses such a run with `MFFitError` instead of letting the JVM crash.
- Spark's Python workers must import xgboost/pandas/pyarrow (for `spark_booster_trainer`), so
  they must run this interpreter: set `PYSPARK_PYTHON` (or `spark.pyspark.python`) accordingly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from jobs.core.errors import TrainingError
from models.ranking.engagement import BoosterTrainer
from models.ranking.engagement_model import EngagementParams
from models.ranking.mf import MFFitError, MFModel, MFParams, build_matrix

if TYPE_CHECKING:
    import xgboost
    from pyspark.sql import DataFrame, SparkSession

_USER, _ITEM, _RATING = "user", "item", "rating"
_LABEL, _WEIGHT = "label", "weight"
# ALS's RDD lineage grows with every iteration and is (de)serialised recursively with each task:
# without checkpoints, 15 iterations overflow a cold JVM's default 1 MB thread stack
# (StackOverflowError; at 20 the local driver JVM exits). 10-12 pass; 10 leaves a margin.
_UNCHECKPOINTED_ITERATIONS = 10
_CHECKPOINT_INTERVAL = 5


def fit_mf_spark(
    spark: SparkSession,
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    params: MFParams,
    *,
    num_blocks: int | None = None,
) -> MFModel:
    """Fit implicit ALS with Spark MLlib on (user, entity, η) triples; the twin of `fit_mf`.

    Ids become the row/column indices of `build_matrix` (sorted unique ids, duplicate cells
    summed) before they reach Spark, so the returned factors line up with the sorted id arrays;
    an id ALS leaves without factors gets a zero row. `num_blocks` (users and items each) sets
    ALS's partitioning, default the session's parallelism; the factors depend on it (the random
    initialisation is seeded per block), so fix it to reproduce a run on another cluster.
    More than 10 iterations need a checkpoint directory or -Xss on the session (module doc).
    """
    if params.algorithm != "als":
        raise ValueError(
            f"fit_mf_spark supports algorithm 'als' only (Spark MLlib has no BPR), got "
            f"{params.algorithm!r}; use models.ranking.mf.fit_mf for it"
        )
    _check_interactions(users, weights)
    _check_lineage(spark, params)
    matrix, user_ids, item_ids = build_matrix(users, items, weights)
    cells = matrix.tocoo()
    ratings = pd.DataFrame(
        {
            _USER: cells.row.astype(np.int32),
            _ITEM: cells.col.astype(np.int32),
            _RATING: cells.data.astype(np.float32),
        }
    )
    blocks = num_blocks or max(1, spark.sparkContext.defaultParallelism)
    uf, itf = _fit_als(spark.createDataFrame(ratings), params, blocks)
    user_factors = _aligned(uf, len(user_ids), params.factors)
    item_factors = _aligned(itf, len(item_ids), params.factors)
    if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
        raise MFFitError(
            "spark als produced NaN/inf factors; lower mf.alpha or raise mf.regularization"
        )
    return MFModel(user_ids, item_ids, user_factors, item_factors)


def _check_interactions(users: np.ndarray, weights: np.ndarray) -> None:
    """The input contract of `fit_mf`."""
    if len(users) == 0:
        raise MFFitError("no interactions to factorise")
    sample_weight = np.asarray(weights, dtype=np.float64)
    if np.any(~np.isfinite(sample_weight)) or np.any(sample_weight < 0):
        raise MFFitError("interaction weights must be finite and >= 0")


def _check_lineage(spark: SparkSession, params: MFParams) -> None:
    """Refuse an ALS run whose lineage would overflow the JVM stack (and may take the JVM down)."""
    if params.iterations <= _UNCHECKPOINTED_ITERATIONS:
        return
    sc = spark.sparkContext
    if sc.getCheckpointDir() is not None:
        return
    conf = sc.getConf()
    options = [conf.get(f"spark.{r}.extraJavaOptions", "") or "" for r in ("driver", "executor")]
    if any("-Xss" in o for o in options):
        return
    raise MFFitError(
        f"spark als with {params.iterations} iterations needs a checkpoint directory (its "
        f"lineage overflows the JVM stack beyond ~{_UNCHECKPOINTED_ITERATIONS} iterations "
        "otherwise): set spark.checkpoint.dir (checkpointed every "
        f"{_CHECKPOINT_INTERVAL} iterations), or -Xss16m in spark.driver.extraJavaOptions and "
        f"spark.executor.extraJavaOptions, or mf.iterations <= {_UNCHECKPOINTED_ITERATIONS}"
    )


def _fit_als(
    ratings: DataFrame, params: MFParams, blocks: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """userFactors and itemFactors (columns id, features) of an implicit ALS fit."""
    from pyspark.ml.recommendation import ALS

    als = ALS(
        userCol=_USER,
        itemCol=_ITEM,
        ratingCol=_RATING,
        implicitPrefs=True,
        rank=params.factors,
        maxIter=params.iterations,
        regParam=params.regularization,
        alpha=params.alpha,
        seed=params.seed,
        nonnegative=False,
        coldStartStrategy="drop",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        checkpointInterval=_CHECKPOINT_INTERVAL,  # used only if the session has a checkpoint dir
    )
    model = als.fit(ratings)
    return model.userFactors.toPandas(), model.itemFactors.toPandas()


def _aligned(factors: pd.DataFrame, n: int, k: int) -> np.ndarray:
    """(n, k) float32 matrix with row `id` holding that id's features; rows without one are 0."""
    out = np.zeros((n, k), dtype=np.float32)
    if len(factors):
        ids = factors["id"].to_numpy(dtype=np.int64)
        if ids.min() < 0 or ids.max() >= n:
            raise MFFitError(f"spark als returned factor ids outside [0, {n}); cannot align them")
        out[ids] = np.stack(factors["features"].to_numpy()).astype(np.float32)
    return out


def spark_booster_trainer(spark: SparkSession, num_workers: int = 1) -> BoosterTrainer:
    """A `BoosterTrainer` (see `models.ranking.engagement.local_booster`) training on `num_workers`
    Spark tasks with `xgboost.spark`: same trees and hyper-parameters, objective
    binary:logistic. The returned Booster behaves like the local one (no feature names,
    `params.n_jobs` prediction threads)."""
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")

    def train(
        x: np.ndarray, y: np.ndarray, weight: np.ndarray, params: EngagementParams, seed: int
    ) -> xgboost.Booster:
        frame, columns = _training_frame(spark, x, y, weight)
        booster = _fit_spark_xgb(frame, columns, params, seed, num_workers)
        booster.feature_names = None  # generated column names; fit_engagement sets the real ones
        booster.set_param({"nthread": params.n_jobs})  # Spark trains with spark.task.cpus
        return booster

    return train


def _training_frame(
    spark: SparkSession, x: np.ndarray, y: np.ndarray, weight: np.ndarray
) -> tuple[DataFrame, list[str]]:
    """One float column per feature plus label and weight. xgboost.spark repartitions it into
    `num_workers` partitions itself (a coalesce here would break its barrier stage)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or not len(x) == len(y) == len(weight):
        raise ValueError(
            f"x must be 2-d with one row per label and weight, got shapes {x.shape}, "
            f"{np.shape(y)}, {np.shape(weight)}"
        )
    columns = [f"f{j}" for j in range(x.shape[1])]
    pdf = pd.DataFrame(x, columns=columns).assign(
        **{
            _LABEL: np.asarray(y, dtype=np.int32),
            _WEIGHT: np.asarray(weight, dtype=np.float64),
        }
    )
    return spark.createDataFrame(pdf), columns


def _fit_spark_xgb(
    frame: DataFrame, columns: list[str], params: EngagementParams, seed: int, num_workers: int
) -> xgboost.Booster:
    from xgboost.spark import SparkXGBClassifier

    # the objective is not a parameter here: SparkXGBClassifier sets binary:logistic itself
    # for a 0/1 label (and refuses an explicit one); n_jobs comes from spark.task.cpus
    clf = SparkXGBClassifier(
        features_col=columns,
        label_col=_LABEL,
        weight_col=_WEIGHT,
        num_workers=num_workers,
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        learning_rate=params.learning_rate,
        subsample=params.subsample,
        colsample_bytree=params.colsample_bytree,
        tree_method=params.tree_method,
        random_state=seed,
        verbose=False,  # else every worker logs the training loss of every round
    )
    try:
        model = clf.fit(frame)
    except Exception as exc:
        if "ModuleNotFoundError" in str(exc):
            raise TrainingError(
                "Spark's Python workers cannot import the training stack (xgboost, pandas, "
                "pyarrow); point PYSPARK_PYTHON or spark.pyspark.python at an interpreter that "
                "has them (e.g. this process's sys.executable)"
            ) from exc
        raise
    return model.get_booster()
