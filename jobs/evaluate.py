"""Evaluate job: the engagement models on a strict time split, with and without calibration.

`homepage evaluate --lake DIR --split-ds DATE`:

- train: examples labelled in `[split − label_days, split)`, features as of the window start
  (exactly what the train step does for ds = split);
- test: examples labelled in `[split, split + test_days)`, features as of `split`, users and
  days the models never saw in training;
- per objective, AUC, PR-AUC, log loss and expected calibration error on the test window, of
  the raw tree scores (trained on downsampled, reweighted negatives) and of the isotonic-
  calibrated probabilities; a reliability diagram per objective; all logged to MLflow
  (experiment `<mlflow.experiment>-evaluate`) and written to `warehouse/reports/`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd

from jobs import io
from jobs.config import Config
from jobs.lake import Lake, join, local_path, parse_ds, shift_ds

log = logging.getLogger(__name__)


def run(lake: Lake, split_ds: str, cfg: Config, test_days: int | None = None) -> dict[str, Any]:
    import mlflow

    from jobs import training_data as td
    from jobs.tracking import experiment
    from jobs.train import _booster_trainer, engagement_params, trainable_objectives, window_dataset
    from models.engagement import fit_engagement, score_predictions
    from models.item_features import FEATURES, PLACEMENT_COLUMNS
    from models.plots import reliability_diagram

    parse_ds(split_ds)
    days = io.partitions(lake.events)
    if not days:
        raise FileNotFoundError(f"no accepted events under {lake.events}: run ingest first")
    last = shift_ds(days[-1], 1)
    end = min(shift_ds(split_ds, test_days), last) if test_days else last
    if end <= split_ds:
        raise td.TrainingDataError(
            f"no accepted events on or after the split {split_ds} (last day {days[-1]})"
        )
    start = td.cutoff_for(split_ds, cfg)
    train = window_dataset(lake, start, split_ds, cfg)
    test = window_dataset(lake, split_ds, end, cfg)
    if train.source != test.source:
        raise td.TrainingDataError(
            f"the train window has {train.source} examples but the test window {test.source}: "
            "choose a split where both windows log impressions (or neither does)"
        )
    objectives = tuple(
        o for o in trainable_objectives(train.examples, cfg) if test.examples[o].any()
    )
    positions = train.source == "logged_impressions"
    params = engagement_params(cfg, objectives, positions)
    features = [f for f in FEATURES if positions or f not in PLACEMENT_COLUMNS]
    model = fit_engagement(
        train.examples,
        features=features,
        labels={o: o for o in objectives},
        group="user_id",
        params=params,
        booster_trainer=_booster_trainer(cfg),
    )
    ex = test.examples
    raw = model.predict(ex, calibrated=False, position_override=None)
    cal = model.predict(ex, calibrated=True, position_override=None)
    rows = []
    for o in objectives:
        y = ex[o].to_numpy().astype(np.int8)
        for stage, p in (("raw", raw[o]), ("calibrated", cal[o])):
            rows.append({"objective": o, "stage": stage, **score_predictions(y, p)})
    table = pd.DataFrame(rows)
    out_dir = local_path(join(lake.reports(split_ds), "evaluate"))
    os.makedirs(out_dir, exist_ok=True)
    table.to_csv(os.path.join(out_dir, "engagement.csv"), index=False)
    plots = [
        reliability_diagram(
            ex[o].to_numpy().astype(np.int8),
            raw[o],
            cal[o],
            os.path.join(out_dir, f"reliability_{o}.png"),
            title=f"{o}: test window {split_ds}..{shift_ds(end, -1)}, raw vs calibrated",
        )
        for o in objectives
    ]
    exp_id = experiment(lake, cfg, name=f"{cfg.mlflow.experiment}-evaluate")
    with mlflow.start_run(experiment_id=exp_id, run_name=f"evaluate-{split_ds}") as run:
        mlflow.set_tags({"split_ds": split_ds, "step": "evaluate", "config_hash": cfg.hash()})
        mlflow.log_params(
            {
                "split_ds": split_ds,
                "train_window": f"{start}..{shift_ds(split_ds, -1)}",
                "test_window": f"{split_ds}..{shift_ds(end, -1)}",
                "source": train.source,
                "objectives": ",".join(objectives),
                "config_hash": cfg.hash(),
            }
        )
        mlflow.log_metrics(
            {
                f"test.{r.objective}.{r.stage}.{m}": float(getattr(r, m))
                for r in table.itertuples()
                for m in ("auc", "pr_auc", "log_loss", "ece")
                if np.isfinite(getattr(r, m))
            }
        )
        for p in plots:
            mlflow.log_artifact(str(p), artifact_path="plots")
        mlflow.log_artifact(os.path.join(out_dir, "engagement.csv"))
        run_id = run.info.run_id
    result = {
        "split_ds": split_ds,
        "train_window": [start, split_ds],
        "test_window": [split_ds, end],
        "source": train.source,
        "train_examples": int(len(train.examples)),
        "test_examples": int(len(ex)),
        "run_id": run_id,
        "engagement": table.to_dict(orient="records"),
        "report": out_dir,
    }
    io.write_json(join(lake.reports(split_ds), "evaluate.json"), result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The engagement table as aligned text, raw and calibrated side by side."""
    t = pd.DataFrame(result["engagement"])
    lines = [
        f"split {result['split_ds']}: train {result['train_examples']:,} examples "
        f"({result['source']}), test {result['test_examples']:,} examples "
        f"[{result['test_window'][0]}, {result['test_window'][1]})",
        f"{'objective':<12} {'stage':<11} {'AUC':>7} {'PR-AUC':>7} {'logloss':>8} {'ECE':>7} "
        f"{'mean p':>7} {'rate':>7}",
    ]
    for r in t.itertuples():
        lines.append(
            f"{r.objective:<12} {r.stage:<11} {r.auc:7.4f} {r.pr_auc:7.4f} {r.log_loss:8.4f} "
            f"{r.ece:7.4f} {r.mean_prediction:7.4f} {r.observed_rate:7.4f}"
        )
    return "\n".join(lines)
