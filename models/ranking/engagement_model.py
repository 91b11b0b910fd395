"""The engagement model's parameters and the fitted model: one calibrated head per objective
(XGBoost booster + isotonic calibrator), their combined score Σ_o weight_o · p_o, and its
on-disk format (save/load, no pickle). Fitting lives in `models.ranking.engagement`."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import xgboost

FORMAT = "homepage.engagement/2"  # /2: shared heads (one booster file per distinct head)
READABLE_FORMATS: tuple[str, ...] = ("homepage.engagement/1", FORMAT)
TREE_METHODS: tuple[str, ...] = ("hist", "approx", "exact")
DEFAULT_WEIGHTS: Mapping[str, float] = {"click": 1.0, "add_to_cart": 3.0, "purchase": 10.0}
_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # objective names become file names
METRIC_COLUMNS = ["objective", "split", "stage", "metric", "value"]


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
        objective_weights = np.array(list(self.weights.values()))
        if (
            not np.isfinite(objective_weights).all()
            or (objective_weights < 0).any()
            or objective_weights.sum() <= 0
        ):
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
    """Σ_o weight_o · p_o over the weighted objectives (docs/methods.md §4: steerable at serving)."""
    missing = sorted(set(weights) - set(preds))
    if missing:
        raise ValueError(f"weights name objectives without predictions: {missing}")
    if any(not math.isfinite(weight) or weight < 0 for weight in weights.values()):
        raise ValueError(f"weights must be finite and >= 0, got {dict(weights)}")
    n = len(next(iter(preds.values())))
    total = np.zeros(n, dtype=np.float64)
    for o, weight in weights.items():
        total += float(weight) * np.asarray(preds[o], dtype=np.float64)
    return total


def raw_scores(booster: xgboost.Booster, x: np.ndarray) -> np.ndarray:
    """A head's uncalibrated scores of the rows of x."""
    return np.asarray(booster.inplace_predict(x), dtype=np.float64)


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
            raw = raw_scores(self.boosters[obj], x)
            out[obj] = self.calibrators[obj](raw) if calibrated else raw
        for obj, twin in self.shared.items():
            out[obj] = out[twin]
        return {obj: out[obj] for obj in self.objectives}

    def combined_score(
        self, preds: Mapping[str, np.ndarray], weights: Mapping[str, float] | None = None
    ) -> np.ndarray:
        """Σ_o weight_o · p_o, with the params' weights unless others are given."""
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
            metrics=pd.DataFrame.from_records(meta["metrics"], columns=METRIC_COLUMNS),
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
