"""Engagement models: one calibrated XGBoost classifier per objective (docs/methods.md §3–5).

Per objective (click, add-to-cart, purchase, ...) a pointwise head P(objective | features):

1. Rows are split by a hash of a group column (user), so one user's rows land in one split:
   train / calibration / evaluation (default 65 / 20 / 15). The split is the same for every
   objective and changes with the seed.
2. Train: keep every positive and a `negative_rate` share of the negatives (Walmart DSP). With
   `reweight_negatives` the kept negatives weigh 1/negative_rate, which keeps the raw scores
   roughly calibrated; without it the raw scores are inflated by ~1/negative_rate on rare events.
3. Isotonic regression on the calibration split's raw scores (rows the trees never saw) maps
   raw scores to probabilities: monotone, so the ranking is kept up to ties.
4. Metrics (AUC, PR-AUC, log loss, ECE; raw and calibrated) on the calibration split, which is
   optimistic for the calibrated scores (fitted there), and on the evaluation split (honest).

Position debiasing (Zalando, collections case): slot/position are training features and are
fixed to the first slot/position at serving (`predict`'s default `position_override="first"`).
Optionally (eBay) engaged rows are weighted by 1 / examination propensity of their placement
(`inverse_propensity`): under a position-based model E[y/θ] = P(engage | examined), so this
removes the examination factor from the positives; see `fit_engagement`.

Heads are combined at serving with configurable weights, Σ_o weight_o · p_o (`models.ranking.engagement_model`) (docs/methods.md §4–5).

Objectives whose labels are equal on every row share one head (`EngagementModel.shared`): on
purchase-only logs (the grocery datasets) a purchase is also the click and the add-to-cart, and
three heads would fit the same label three times and predict every candidate three times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from jobs.core.errors import TrainingError
from models.evaluation import metrics as m
from models.ranking.engagement_model import (
    METRIC_COLUMNS,
    EngagementModel,
    EngagementParams,
    IsotonicCalibrator,
    raw_scores,
)

if TYPE_CHECKING:
    import xgboost

SPLITS: tuple[str, ...] = ("train", "calibration", "evaluation")


class EngagementFitError(TrainingError):
    """An objective cannot be fitted: a split lacks positives or negatives, or is empty."""


def assign_splits(
    groups: pd.Series | np.ndarray,
    *,
    calibration_share: float,
    evaluation_share: float,
    seed: int,
) -> np.ndarray:
    """0 = train, 1 = calibration, 2 = evaluation for each row, by a seeded hash of its group.

    Deterministic across runs and machines (pandas' fixed-key hash); rows of one group always
    share a split, so the splits are disjoint in groups."""
    h = pd.util.hash_array(np.asarray(groups))
    salt = pd.util.hash_array(np.array([seed], dtype=np.uint64))[0]
    u = (pd.util.hash_array(h ^ salt) >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.where(
        u < calibration_share, 1, np.where(u < calibration_share + evaluation_share, 2, 0)
    ).astype(np.int8)


def fit_engagement(
    frame: pd.DataFrame,
    *,
    features: list[str],
    labels: Mapping[str, str],
    group: str,
    params: EngagementParams,
    propensity: str | None = None,
    booster_trainer: BoosterTrainer | None = None,
) -> EngagementModel:
    """Fit one calibrated XGBoost head per objective. Pure: frame and params in, model out.

    `booster_trainer(x, y, weight, params, seed)` fits the trees of one head and returns the
    Booster; the default trains in-process (`xgboost.XGBClassifier`), a distributed twin
    (`models.ranking.distributed.spark_booster_trainer`) trains the same model with `xgboost.spark`.
    Downsampling, calibration and metrics stay here, so both give the same kind of model.

    `labels` maps each objective to its label column, 0/1 or soft in [0, 1] (eBay's
    purchase-intent credit; see `expand_soft_labels`); `group` (e.g. user id) decides the
    split. With `params.inverse_propensity`, `propensity` names a column with each row's
    examination propensity θ in (0, 1] relative to the first slot/position, and each engaged
    row weighs 1/θ in training, calibration and metrics. Only positives are reweighted: under a
    position-based model E[y/θ] = P(engage | examined) = r, and the weighted log loss is
    minimised at r / (1 + r(1 − θ)) ≈ r for rare engagement; weighting every row by 1/θ would
    leave each position's engagement rate, and so the bias, unchanged.
    """
    trainer = booster_trainer or local_booster
    features = list(features)
    _check_inputs(frame, features, labels, group, params, propensity)
    split = assign_splits(
        frame[group],
        calibration_share=params.calibration_share,
        evaluation_share=params.evaluation_share,
        seed=params.seed,
    )
    x = frame[features].to_numpy(dtype=np.float32)
    theta = frame[propensity].to_numpy(np.float64) if params.inverse_propensity else None
    used = SPLITS if params.evaluation_share > 0 else SPLITS[:2]
    boosters: dict[str, xgboost.Booster] = {}
    calibrators: dict[str, IsotonicCalibrator] = {}
    records: list[dict[str, Any]] = []
    ys: dict[str, np.ndarray] = {}
    shared: dict[str, str] = {}
    for k, obj in enumerate(params.objectives):
        label = frame[labels[obj]].to_numpy(np.float64)
        twin = next((o for o, yo in ys.items() if np.array_equal(yo, label)), None)
        if twin is not None:  # the same label on every row: the same head
            boosters[obj], calibrators[obj], shared[obj] = boosters[twin], calibrators[twin], twin
            records += [{**r, "objective": obj} for r in records if r["objective"] == twin]
            continue
        ys[obj] = label
        rows, y, credit = expand_soft_labels(label)
        xo, so = (x, split) if rows is None else (x[rows], split[rows])
        ips = credit if theta is None else credit * np.where(y == 1, 1.0 / _at(theta, rows), 1.0)
        records += _split_records(obj, labels[obj], y, so, used)
        train, sample_weight = _downsampled_train(obj, k, y, so, ips, params)
        records.append(_rec(obj, "train", "data", "rows_after_downsampling", len(train)))
        booster = trainer(xo[train], y[train], sample_weight, params, params.seed)
        booster.feature_names = features
        calibrator, raw_cal = _calibrate(booster, xo, y, so, ips)
        records += _heldout_records(obj, booster, calibrator, raw_cal, xo, y, so, ips, used)
        boosters[obj] = booster
        calibrators[obj] = calibrator
    return EngagementModel(
        params=params,
        features=tuple(features),
        labels=dict(labels),
        boosters=boosters,
        calibrators=calibrators,
        metrics=pd.DataFrame.from_records(records, columns=METRIC_COLUMNS),
        shared=shared,
    )


def expand_soft_labels(label: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(rows, y, weight): a label column in [0, 1] as 0/1 rows with weights. A soft label s
    strictly between 0 and 1 becomes two copies of its row, y = 1 weighing s and y = 0 weighing
    1 − s, whose weighted log loss is the row's cross-entropy against s; so every trainer,
    the isotonic calibration and the metrics stay on binary labels. `rows` indexes the frame
    (None when every label is 0 or 1: the frame's own rows, weight 1)."""
    soft = np.flatnonzero((label > 0) & (label < 1))
    if not len(soft):
        return None, label.astype(np.int8), np.ones(len(label))
    rows = np.concatenate([np.arange(len(label)), soft])
    y = np.concatenate([(label > 0).astype(np.int8), np.zeros(len(soft), np.int8)])
    weight = np.concatenate([np.where(label > 0, label, 1.0), 1.0 - label[soft]])
    return rows, y, weight


def _at(values: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return values if rows is None else values[rows]


def _split_records(
    obj: str, label: str, y: np.ndarray, split: np.ndarray, used: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Rows and positives per split of one objective; raises when a split lacks either class."""
    records: list[dict[str, Any]] = []
    for s, name in enumerate(used):
        pos = int(y[split == s].sum())
        neg = int((split == s).sum()) - pos
        records += [
            _rec(obj, name, "data", "rows", pos + neg),
            _rec(obj, name, "data", "positives", pos),
        ]
        for what, count in (("positives", pos), ("negatives", neg)):
            if count == 0:
                raise EngagementFitError(
                    f"objective {obj!r} (label {label!r}) has no {what} in the {name} "
                    f"split ({pos + neg} rows); add data or change the split shares/seed"
                )
    return records


def _downsampled_train(
    obj: str,
    k: int,
    y: np.ndarray,
    split: np.ndarray,
    ips: np.ndarray,
    params: EngagementParams,
) -> tuple[np.ndarray, np.ndarray]:
    """The train rows of the k-th objective (every positive, a `negative_rate` share of the
    negatives) and their sample weights (inverse propensity, kept negatives reweighted)."""
    train = np.flatnonzero(split == 0)
    rng = np.random.default_rng([params.seed, k])
    keep = (y[train] == 1) | (rng.random(len(train)) < params.negative_rate)
    train = train[keep]
    if (y[train] == 0).sum() == 0:
        raise EngagementFitError(
            f"objective {obj!r}: no negatives left in the train split after downsampling "
            f"(negative_rate={params.negative_rate})"
        )
    sample_weight = ips[train].copy()
    if params.reweight_negatives:
        sample_weight[y[train] == 0] /= params.negative_rate
    return train, sample_weight


def _calibrate(
    booster: xgboost.Booster, x: np.ndarray, y: np.ndarray, split: np.ndarray, ips: np.ndarray
) -> tuple[IsotonicCalibrator, np.ndarray]:
    """Isotonic regression on the calibration split's raw scores; (calibrator, those scores)."""
    from sklearn.isotonic import IsotonicRegression

    cal = split == 1
    raw_cal = raw_scores(booster, x[cal])
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(raw_cal, y[cal], sample_weight=ips[cal])
    calibrator = IsotonicCalibrator(
        np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
    )
    return calibrator, raw_cal


def _heldout_records(
    obj: str,
    booster: xgboost.Booster,
    calibrator: IsotonicCalibrator,
    raw_cal: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    split: np.ndarray,
    ips: np.ndarray,
    used: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Raw and calibrated metrics of one head on the calibration and evaluation splits."""
    records: list[dict[str, Any]] = []
    for s, name in enumerate(used[1:], start=1):
        rows = split == s
        raw = raw_cal if s == 1 else raw_scores(booster, x[rows])
        for stage, p in (("raw", raw), ("calibrated", calibrator(raw))):
            for metric, value in score_predictions(y[rows], p, ips[rows]).items():
                records.append(_rec(obj, name, stage, metric, value))
    return records


BoosterTrainer = Callable[
    [np.ndarray, np.ndarray, np.ndarray, EngagementParams, int], "xgboost.Booster"
]


def local_booster(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, params: EngagementParams, seed: int
) -> xgboost.Booster:
    """The trees of one head, trained in this process on all its cores (`params.n_jobs`)."""
    import xgboost as xgb

    clf = xgb.XGBClassifier(
        n_estimators=params.n_estimators,
        max_depth=params.max_depth,
        learning_rate=params.learning_rate,
        subsample=params.subsample,
        colsample_bytree=params.colsample_bytree,
        tree_method=params.tree_method,
        n_jobs=params.n_jobs,
        random_state=seed,
        objective="binary:logistic",
    )
    clf.fit(x, y, sample_weight=weight)
    return clf.get_booster()


def score_predictions(
    y: np.ndarray, p: np.ndarray, sample_weight: np.ndarray | None = None
) -> dict[str, float]:
    """The offline metrics of one head: ranking, calibration and concentration (spread)."""
    return {
        "auc": m.auc(y, p, sample_weight),
        "pr_auc": m.pr_auc(y, p, sample_weight),
        "log_loss": m.log_loss(y, p, sample_weight),
        "ece": m.expected_calibration_error(y, p, sample_weight=sample_weight),
        "mean_prediction": float(np.average(p, weights=sample_weight)),
        "observed_rate": float(np.average(y, weights=sample_weight)),
        "prediction_std": float(np.std(p)),  # "concentration": scores that barely vary
    }


def _rec(objective: str, split: str, stage: str, metric: str, value: float) -> dict[str, Any]:
    return dict(zip(METRIC_COLUMNS, (objective, split, stage, metric, float(value)), strict=True))


def _check_inputs(
    frame: pd.DataFrame,
    features: list[str],
    labels: Mapping[str, str],
    group: str,
    params: EngagementParams,
    propensity: str | None,
) -> None:
    if not features or len(set(features)) != len(features):
        raise ValueError(f"features must be a non-empty list of unique columns, got {features}")
    if set(labels) != set(params.objectives):
        raise ValueError(
            f"labels must map each objective {params.objectives} to a column, got {dict(labels)}"
        )
    if params.inverse_propensity != (propensity is not None):
        raise ValueError(
            "pass a propensity column exactly when params.inverse_propensity is True "
            f"(inverse_propensity={params.inverse_propensity}, propensity={propensity!r})"
        )
    required = [*features, *labels.values(), group, *([propensity] if propensity else [])]
    missing = [c for c in dict.fromkeys(required) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame is missing required columns: {missing}")
    not_features = [c for c in params.position_columns if c not in features]
    if not_features:
        raise ValueError(
            f"position columns {not_features} are not among the features; add them to features "
            "or set params.position_columns to the ones you use (() for none)"
        )
    bad = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(f"features must be numeric (or bool), got non-numeric columns {bad}")
    for obj, col in labels.items():
        value = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        if not ((value >= 0) & (value <= 1)).all():
            raise ValueError(
                f"label {col!r} of objective {obj!r} must lie in [0, 1] without NaN (0/1, or a "
                "soft label such as the purchase-intent credit)"
            )
    if frame[group].isna().any():
        raise ValueError(f"group column {group!r} has missing values")
    if propensity is not None:
        theta = frame[propensity].to_numpy(np.float64)
        if not (np.isfinite(theta).all() and (theta > 0).all() and (theta <= 1).all()):
            raise ValueError(f"propensity column {propensity!r} must lie in (0, 1]")
