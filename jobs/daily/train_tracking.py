"""What the train step records of a trained model: `Trained` (everything a train run decided),
the MODEL.json record of the bundle, and the MLflow run's tags, params, metrics and plots."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pandas as pd

from jobs.core.config import Config

PIP_REQUIREMENTS = ["mlflow", "xgboost-cpu", "scikit-learn", "pandas", "numpy"]


@dataclasses.dataclass
class Trained:
    """A train run's data, engagement model and choices, before the bundle is written."""

    cutoff: str
    cutoff_features: str
    windows: list[str]
    source: str
    examples: pd.DataFrame
    objectives: tuple[str, ...]
    params: Any  # models.ranking.engagement.EngagementParams
    model: Any  # the fitted engagement model
    checks: dict[str, Any]
    holdout: pd.DataFrame
    gate_metrics: dict[str, float]
    grid: pd.DataFrame
    calibrations: dict[tuple[str, float], Any]
    mode: str
    mode_evidence: dict[str, Any]
    w: float
    w_ndcg: float
    timings: dict[str, float]
    mf_item: Any = None  # the newest label window's factors (models.ranking.mf.MFModel)
    mf_cat: Any = None


def model_info(
    t: Trained, ds: str, cfg: Config, *, run_id: str, version: str, bundle: str, mf_seconds: Any
) -> dict[str, Any]:
    """The bundle's MODEL.json record (before registration adds `registry_version`)."""
    return {
        "ds": ds,
        "run_id": run_id,
        "model_version": version,
        "path": bundle,
        "cutoff": t.cutoff,
        "cutoff_features": t.cutoff_features,
        "label_windows": t.windows,
        "training_source": t.source,
        "objectives": list(t.objectives),
        "shared_heads": dict(t.model.shared),
        "weights": dict(t.params.weights),
        "w": t.w,
        "w_page_ndcg": t.w_ndcg,
        "item_mode": t.mode,
        "item_mode_evidence": t.mode_evidence,
        "carousel_calibration": t.calibrations.get((t.mode, round(t.w, 6))),
        "examples": int(len(t.examples)),
        "holdout_rows": int(len(t.holdout)),
        "gate_metrics": t.gate_metrics,
        "data_checks": {"passed": True, "expectations": int(t.checks["expectations"])},
        "config_hash": cfg.hash(),
        "timings": {k: round(v, 3) for k, v in t.timings.items()},
        "mf_fit_seconds": mf_seconds,
    }


def log_training(t: Trained, ds: str, cfg: Config, out_dir: str) -> str:
    """Tags, params, metrics and plots of the active MLflow run, and the pyfunc model logged
    from the bundle in `out_dir`; returns the model's URI."""
    import mlflow

    from jobs.daily.ranker_model import log_ranker

    mlflow.set_tags(
        {
            "ds": ds,
            "step": "train",
            "config_hash": cfg.hash(),
            "training_source": t.source,
            "data_checks": "passed",
        }
    )
    mlflow.log_params(
        {f"mf.{k}": v for k, v in dataclasses.asdict(cfg.mf).items()}
        | {f"engagement.{k}": v for k, v in dataclasses.asdict(cfg.engagement).items()}
        | {f"training.{k}": v for k, v in dataclasses.asdict(cfg.training).items()}
        | {
            "ds": ds,
            "cutoff": t.cutoff,
            "config_hash": cfg.hash(),
            "objectives": ",".join(t.objectives),
            "engagement_heads": ",".join(t.model.heads),
            "item_mode": t.mode,
            "w_chosen": t.w,
            "training_source": t.source,
        }
    )
    metrics = {f"holdout.{k}": v for k, v in t.gate_metrics.items() if np.isfinite(v)}
    for r in t.model.metrics.itertuples():
        metrics[f"{r.objective}.{r.split}.{r.stage}.{r.metric}"] = r.value
    metrics |= {f"time.{k}": v for k, v in t.timings.items()}
    metrics |= {"examples": len(t.examples), "w": t.w, "page_ndcg": t.w_ndcg}
    metrics |= {f"item_mode.{k}": v for k, v in t.mode_evidence.items()}
    mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
    for r in t.grid.itertuples():
        if np.isfinite(r.page_ndcg):
            mlflow.log_metric(f"page_ndcg.{r.mode}", r.page_ndcg, step=int(round(r.w * 100)))
    plot_dir = os.path.join(out_dir, "plots")
    for p in training_plots(t.model, t.holdout, t.grid, plot_dir):
        mlflow.log_artifact(p, artifact_path="plots")
    return log_ranker(out_dir, PIP_REQUIREMENTS)


def training_plots(model: Any, holdout: pd.DataFrame, grid: pd.DataFrame, out: str) -> list[str]:
    from models.evaluation.plots import (
        feature_importance_plot,
        metric_vs_parameter,
        reliability_diagram,
    )

    paths = []
    raw = model.predict(holdout, calibrated=False, position_override=None)
    cal = model.predict(holdout, calibrated=True, position_override=None)
    for o in model.objectives:
        y = holdout[o].to_numpy().astype(np.int8)
        paths.append(
            reliability_diagram(
                y,
                raw[o],
                cal[o],
                os.path.join(out, f"reliability_{o}.png"),
                title=f"{o}: held-out users, before and after isotonic calibration",
            )
        )
    paths.append(
        feature_importance_plot(model.feature_importance(), os.path.join(out, "importance.png"))
    )
    if len(grid):
        paths.append(
            metric_vs_parameter(
                grid["w"].unique(),
                {m: g["page_ndcg"].to_numpy() for m, g in grid.groupby("mode")},
                os.path.join(out, "page_ndcg_vs_w.png"),
                xlabel="w (weight of affinity α against discovery γ)",
                ylabel="page NDCG_2D (validation users)",
                title="Carousel score φ = w·α + (1 − w)·γ: validation NDCG against w",
            )
        )
    return [str(p) for p in paths]
