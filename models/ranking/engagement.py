"""Engagement models: one calibrated XGBoost classifier per objective (METHODS §3–5).

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

Heads are combined at serving with configurable weights, Σ_o w_o · p_o (METHODS §4–5).

Objectives whose labels are equal on every row share one head (`EngagementModel.shared`): on
purchase-only logs (the grocery datasets) a purchase is also the click and the add-to-cart, and
three heads would fit the same label three times and predict every candidate three times.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from jobs.core.errors import TrainingError
from models.evaluation import metrics as m

if TYPE_CHECKING:
    import xgboost

FORMAT = "homepage.engagement/2"  # /2: shared heads (one booster file per distinct head)
READABLE_FORMATS: tuple[str, ...] = ("homepage.engagement/1", FORMAT)
SPLITS: tuple[str, ...] = ("train", "calibration", "evaluation")
TREE_METHODS: tuple[str, ...] = ("hist", "approx", "exact")
DEFAULT_WEIGHTS: Mapping[str, float] = {"click": 1.0, "add_to_cart": 3.0, "purchase": 10.0}
_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # objective names become file names


class EngagementFitError(TrainingError):
    """An objective cannot be fitted: a split lacks positives or negatives, or is empty."""


@dataclass(frozen=True)
class EngagementParams:
    objectives: tuple[str, ...] = ("click", "add_to_cart", "purchase")
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    n_estimators: int = 200
    max_depth: int = 6
    learning_rate: float = 0.1
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    tree_method: str = "hist"
    n_jobs: int = 2
    negative_rate: float = 0.2
    reweight_negatives: bool = True
    calibration_share: float = 0.2
    evaluation_share: float = 0.15
    position_columns: tuple[str, ...] = ("slot", "position")
    inverse_propensity: bool = False
    seed: int = 42

    def __post_init__(self) -> None:
        # normalise so lists from YAML/JSON compare and serialise like the defaults
        object.__setattr__(self, "objectives", tuple(self.objectives))
        object.__setattr__(self, "position_columns", tuple(self.position_columns))
        object.__setattr__(self, "weights", {k: float(v) for k, v in dict(self.weights).items()})
        obj = self.objectives
        if not obj or len(set(obj)) != len(obj) or not all(_NAME.match(o) for o in obj):
            raise ValueError(
                f"objectives must be unique non-empty names of [A-Za-z0-9_], got {obj}"
            )
        if set(self.weights) != set(obj):
            raise ValueError(
                f"weights must give each objective a weight (0 leaves one out): objectives {obj}, "
                f"weights for {tuple(self.weights)}"
            )
        w = np.array(list(self.weights.values()))
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be finite, >= 0 and not all 0, got {self.weights}")
        for name in ("n_estimators", "max_depth", "n_jobs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "subsample", "colsample_bytree", "negative_rate"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.tree_method not in TREE_METHODS:
            raise ValueError(f"tree_method must be one of {TREE_METHODS}, got {self.tree_method!r}")
        if not 0.0 < self.calibration_share < 1.0:
            raise ValueError(f"calibration_share must be in (0, 1), got {self.calibration_share}")
        if not 0.0 <= self.evaluation_share < 1.0:
            raise ValueError(f"evaluation_share must be in [0, 1), got {self.evaluation_share}")
        if self.calibration_share + self.evaluation_share > 0.9:
            raise ValueError(
                "calibration_share + evaluation_share must be <= 0.9 (leave rows to train on), "
                f"got {self.calibration_share} + {self.evaluation_share}"
            )
        if len(set(self.position_columns)) != len(self.position_columns):
            raise ValueError(f"position_columns must be unique, got {self.position_columns}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EngagementParams:
        return cls(**d)


# An isotonic fit is flat over whole stretches of raw scores (few positives: few steps), and
# every row of a stretch would get the same probability: rankings by the calibrated score lose
# the trees' order there (measured: Complete Journey's click head, test AUC 0.821 raw and 0.806
# calibrated). This slope on the raw score keeps the map strictly increasing and moves no
# probability by more than it.
TIE_SLOPE = 1e-6


@dataclass(frozen=True)
class IsotonicCalibrator:
    """Piecewise-linear isotonic map, clipped to its end values outside [x[0], x[-1]], plus
    TIE_SLOPE · raw so that it is strictly increasing (ties of the fit keep the raw order)."""

    x: np.ndarray  # increasing raw-score thresholds
    y: np.ndarray  # non-decreasing probabilities at x

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        p = np.interp(raw, self.x, self.y) + TIE_SLOPE * np.clip(raw, 0.0, 1.0)
        return np.clip(p, 0.0, 1.0)


def combined_score(preds: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Σ_o w_o · p_o over the weighted objectives (METHODS §4: steerable at serving)."""
    missing = sorted(set(weights) - set(preds))
    if missing:
        raise ValueError(f"weights name objectives without predictions: {missing}")
    if any(not math.isfinite(w) or w < 0 for w in weights.values()):
        raise ValueError(f"weights must be finite and >= 0, got {dict(weights)}")
    n = len(next(iter(preds.values())))
    total = np.zeros(n, dtype=np.float64)
    for o, w in weights.items():
        total += float(w) * np.asarray(preds[o], dtype=np.float64)
    return total


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

    `labels` maps each objective to its 0/1 label column; `group` (e.g. user id) decides the
    split. With `params.inverse_propensity`, `propensity` names a column with each row's
    examination propensity θ in (0, 1] relative to the first slot/position, and each engaged
    row weighs 1/θ in training, calibration and metrics. Only positives are reweighted: under a
    position-based model E[y/θ] = P(engage | examined) = r, and the weighted log loss is
    minimised at r / (1 + r(1 − θ)) ≈ r for rare engagement; weighting every row by 1/θ would
    leave each position's engagement rate, and so the bias, unchanged.
    """
    from sklearn.isotonic import IsotonicRegression

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
        y = frame[labels[obj]].to_numpy().astype(np.int8)
        twin = next((o for o, yo in ys.items() if np.array_equal(yo, y)), None)
        if twin is not None:  # the same label on every row: the same head
            boosters[obj], calibrators[obj], shared[obj] = boosters[twin], calibrators[twin], twin
            records += [{**r, "objective": obj} for r in records if r["objective"] == twin]
            continue
        ys[obj] = y
        ips = np.where(y == 1, 1.0 / theta, 1.0) if theta is not None else np.ones(len(y))
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
                        f"objective {obj!r} (label {labels[obj]!r}) has no {what} in the {name} "
                        f"split ({pos + neg} rows); add data or change the split shares/seed"
                    )
        train = np.flatnonzero(split == 0)
        rng = np.random.default_rng([params.seed, k])
        keep = (y[train] == 1) | (rng.random(len(train)) < params.negative_rate)
        train = train[keep]
        if (y[train] == 0).sum() == 0:
            raise EngagementFitError(
                f"objective {obj!r}: no negatives left in the train split after downsampling "
                f"(negative_rate={params.negative_rate})"
            )
        w = ips[train].copy()
        if params.reweight_negatives:
            w[y[train] == 0] /= params.negative_rate
        records.append(_rec(obj, "train", "data", "rows_after_downsampling", len(train)))
        booster = trainer(x[train], y[train], w, params, params.seed)
        booster.feature_names = features
        cal = split == 1
        raw_cal = _raw(booster, x[cal])
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(raw_cal, y[cal], sample_weight=ips[cal])
        calibrator = IsotonicCalibrator(
            np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
        )
        for s, name in enumerate(used[1:], start=1):
            rows = split == s
            raw = raw_cal if s == 1 else _raw(booster, x[rows])
            for stage, p in (("raw", raw), ("calibrated", calibrator(raw))):
                for metric, value in score_predictions(y[rows], p, ips[rows]).items():
                    records.append(_rec(obj, name, stage, metric, value))
        boosters[obj] = booster
        calibrators[obj] = calibrator
    return EngagementModel(
        params=params,
        features=tuple(features),
        labels=dict(labels),
        boosters=boosters,
        calibrators=calibrators,
        metrics=pd.DataFrame.from_records(records, columns=_METRIC_COLUMNS),
        shared=shared,
    )


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
    y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None
) -> dict[str, float]:
    """The offline metrics of one head: ranking, calibration and concentration (spread)."""
    return {
        "auc": m.auc(y, p, w),
        "pr_auc": m.pr_auc(y, p, w),
        "log_loss": m.log_loss(y, p, w),
        "ece": m.expected_calibration_error(y, p, sample_weight=w),
        "mean_prediction": float(np.average(p, weights=w)),
        "observed_rate": float(np.average(y, weights=w)),
        "prediction_std": float(np.std(p)),  # "concentration": scores that barely vary
    }


_METRIC_COLUMNS = ["objective", "split", "stage", "metric", "value"]


def _rec(objective: str, split: str, stage: str, metric: str, value: float) -> dict[str, Any]:
    return dict(zip(_METRIC_COLUMNS, (objective, split, stage, metric, float(value)), strict=True))


def _raw(booster: xgboost.Booster, x: np.ndarray) -> np.ndarray:
    return np.asarray(booster.inplace_predict(x), dtype=np.float64)


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
        if not frame[col].isin([0, 1]).all():
            raise ValueError(f"label {col!r} of objective {obj!r} must be 0/1 without NaN")
    if frame[group].isna().any():
        raise ValueError(f"group column {group!r} has missing values")
    if propensity is not None:
        theta = frame[propensity].to_numpy(np.float64)
        if not (np.isfinite(theta).all() and (theta > 0).all() and (theta <= 1).all()):
            raise ValueError(f"propensity column {propensity!r} must lie in (0, 1]")


@dataclass(frozen=True)
class EngagementModel:
    """Fitted heads. `metrics` is long: objective, split, stage (data/raw/calibrated), metric, value."""

    params: EngagementParams
    features: tuple[str, ...]
    labels: Mapping[str, str]
    boosters: Mapping[str, xgboost.Booster]
    calibrators: Mapping[str, IsotonicCalibrator]
    metrics: pd.DataFrame
    # objective -> the objective whose head it uses (their labels were equal on every row)
    shared: Mapping[str, str] = field(default_factory=dict)

    @property
    def objectives(self) -> tuple[str, ...]:
        return self.params.objectives

    @property
    def heads(self) -> tuple[str, ...]:
        """The objectives with a head of their own (the rest share one of these)."""
        return tuple(o for o in self.objectives if o not in self.shared)

    def predict(
        self,
        frame: pd.DataFrame,
        *,
        calibrated: bool = True,
        position_override: Mapping[str, float] | Literal["first"] | None = "first",
    ) -> dict[str, np.ndarray]:
        """P(objective) per row. `position_override="first"` sets every position column to 1
        (first slot, first position); a mapping sets the columns it names; None uses the frame's
        values (for evaluating logged placements). Overridden columns may be absent from frame."""
        x = self._matrix(frame, position_override)
        out = {}
        for obj in self.heads:
            raw = _raw(self.boosters[obj], x)
            out[obj] = self.calibrators[obj](raw) if calibrated else raw
        for obj, twin in self.shared.items():
            out[obj] = out[twin]
        return {obj: out[obj] for obj in self.objectives}

    def combined_score(
        self, preds: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """Σ_o w_o · p_o, with the params' weights unless others are given."""
        return combined_score(preds, self.params.weights if weights is None else weights)

    def feature_importance(self) -> pd.DataFrame:
        """objective, feature, gain (mean per split), total_gain; unused features have 0."""
        rows = []
        for obj in self.objectives:
            b = self.boosters[obj]
            gain = b.get_score(importance_type="gain")
            total = b.get_score(importance_type="total_gain")
            rows += [(obj, f, gain.get(f, 0.0), total.get(f, 0.0)) for f in self.features]
        df = pd.DataFrame(rows, columns=["objective", "feature", "gain", "total_gain"])
        order = {o: i for i, o in enumerate(self.objectives)}
        df = df.sort_values(["objective", "total_gain"], key=lambda s: _sort_key(s, order))
        return df.reset_index(drop=True)

    def save(self, directory: str | Path) -> Path:
        """`model.json` (params, features, labels, shared heads, metrics), `<objective>.json`
        (XGBoost JSON) and the isotonic thresholds in `calibration.npz` for each objective with
        a head of its own. No pickle."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for obj in self.heads:
            self.boosters[obj].save_model(d / f"{obj}.json")
            c = self.calibrators[obj]
            arrays[f"{obj}.x"], arrays[f"{obj}.y"] = c.x, c.y
        np.savez(d / "calibration.npz", **arrays)
        meta = {
            "format": FORMAT,
            "params": self.params.to_dict(),
            "features": list(self.features),
            "labels": dict(self.labels),
            "shared_heads": dict(self.shared),
            "metrics": self.metrics.to_dict(orient="records"),
        }
        (d / "model.json").write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> EngagementModel:
        import xgboost as xgb

        d = Path(directory)
        meta = json.loads((d / "model.json").read_text())
        if meta.get("format") not in READABLE_FORMATS:
            raise ValueError(
                f"{d} holds format {meta.get('format')!r}, expected one of {READABLE_FORMATS}"
            )
        params = EngagementParams.from_dict(meta["params"])
        shared = dict(meta.get("shared_heads") or {})
        boosters, calibrators = {}, {}
        with np.load(d / "calibration.npz", allow_pickle=False) as z:
            for obj in (o for o in params.objectives if o not in shared):
                b = xgb.Booster()
                b.load_model(d / f"{obj}.json")
                b.set_param({"nthread": params.n_jobs})
                boosters[obj] = b
                calibrators[obj] = IsotonicCalibrator(z[f"{obj}.x"], z[f"{obj}.y"])
        for obj, twin in shared.items():
            boosters[obj], calibrators[obj] = boosters[twin], calibrators[twin]
        return cls(
            params=params,
            features=tuple(meta["features"]),
            labels=meta["labels"],
            boosters=boosters,
            calibrators=calibrators,
            metrics=pd.DataFrame.from_records(meta["metrics"], columns=_METRIC_COLUMNS),
            shared=shared,
        )

    def _matrix(
        self, frame: pd.DataFrame, override: Mapping[str, float] | Literal["first"] | None
    ) -> np.ndarray:
        if override == "first":
            override = dict.fromkeys(self.params.position_columns, 1.0)
        override = dict(override or {})
        unknown = [c for c in override if c not in self.params.position_columns]
        if unknown:
            raise ValueError(
                f"position_override names {unknown}, which are not position columns of this "
                f"model {self.params.position_columns}"
            )
        missing = [c for c in self.features if c not in override and c not in frame.columns]
        if missing:
            raise ValueError(f"frame is missing feature columns: {missing}")
        x = np.empty((len(frame), len(self.features)), dtype=np.float32)
        for j, c in enumerate(self.features):
            x[:, j] = override[c] if c in override else frame[c].to_numpy(np.float32)
        return x


def _sort_key(s: pd.Series, order: Mapping[str, int]) -> pd.Series:
    return s.map(order) if s.name == "objective" else -s
