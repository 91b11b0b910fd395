"""Train job: MF factors, calibrated engagement heads and w, logged to MLflow as a challenger.

For `ds`, with the label window `[cutoff, ds)` (see jobs/daily/training_data.py):

1. MF (implicit ALS/BPR, or Spark MLlib ALS) on user–item and user–category counts as of
   cutoff: features for the engagement models and the pages of the validation split.
2. The engagement training set (logged impressions, else the pipeline's own candidates with
   time-window labels), checked by Great Expectations; one calibrated XGBoost head per
   objective with enough positives (models/ranking/engagement.py).
3. The grid search over w: pages as of cutoff for held-out users (the engagement model's
   evaluation split), in both item modes, scored by NDCG_2D against the label window.
4. The factors the rank step serves with (jobs/daily/factorisations.py): by default the
   cutoff fit's item and category factors with every user folded in from the counts as of
   `ds`, the space the heads and w were trained in (`mf.serving=refit`: a new fit on all data
   before `ds`).
5. The bundle (jobs/daily/bundle.py) and an MLflow run with params, metrics, PNG plots and a
   registered pyfunc model version holding the `challenger` alias. The promote step decides.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io, remote
from jobs.core.config import Config
from jobs.core.lake import Lake, join, local_path, shift_ds
from jobs.daily.carousel_weight import choose_item_mode, w_grid_search
from jobs.daily.engagement_fit import fit_engagement_model, holdout_split
from jobs.daily.factorisations import serving_factorisations, window_factorisations
from jobs.daily.page_inputs import load_inputs, page_params, slot_examination
from jobs.daily.train_tracking import Trained, log_training, model_info

log = logging.getLogger(__name__)


def build_examples(
    lake: Lake, ds: str, cfg: Config, inputs: Any, users: np.ndarray, events: Any
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(examples, window engagement, source) for the sampled users."""
    from jobs.daily import training_data as td

    engaged, impressions = td.window_labels(events, users)
    source = cfg.training.source
    if source == "impressions" and len(impressions) < cfg.training.min_impressions:
        raise td.TrainingDataError(
            f"training.source=impressions, but the label window logs only {len(impressions):,} "
            f"item impressions of sampled users (training.min_impressions="
            f"{cfg.training.min_impressions:,})"
        )
    if source == "impressions" or (
        source == "auto" and len(impressions) >= cfg.training.min_impressions
    ):
        if cfg.engagement.intent_labels:  # clicks are logged: their purchase-intent credit
            impressions = td.with_intent_labels(
                impressions, td.intent_labels(events, users, ds, cfg)
            )
        return td.impression_examples(inputs, impressions), engaged, "logged_impressions"
    return (
        td.candidate_examples(inputs, users, engaged, page_params(cfg)),
        engaged,
        "time_window_candidates",
    )


@dataclasses.dataclass
class WindowData:
    """Examples labelled in `[start, end)` with features as of `start`."""

    inputs: Any  # models.ranking.rank_inputs.RankInputs as of start (with the feature lookups)
    examples: pd.DataFrame
    engaged: pd.DataFrame
    source: str
    mf_seconds: float
    features: str  # "existing" or "built": where the as-of-start feature tables came from
    features_seconds: float


def window_dataset(lake: Lake, start: str, end: str, cfg: Config) -> WindowData:
    """The engagement examples of one label window (see jobs/daily/training_data.py)."""
    from jobs.daily import training_data as td

    t0 = time.perf_counter()
    features = td.ensure_cutoff_features(lake, start, cfg)
    features_seconds = time.perf_counter() - t0
    mf_item, mf_cat, mf_seconds = window_factorisations(lake, start, cfg)
    events = td.window_events(lake, start, end, cfg)
    active = events.select("user_id").distinct().toPandas()["user_id"].to_numpy(object)
    users = td.sample_users(active, cfg.training.max_users, cfg.engagement.seed)
    inputs = load_inputs(lake, start, cfg, mf_item, mf_cat, with_features=True, feature_users=users)
    examples, engaged, source = build_examples(lake, end, cfg, inputs, users, events)
    return WindowData(inputs, examples, engaged, source, mf_seconds, features, features_seconds)


def _older_windows(
    lake: Lake,
    cutoff: str,
    cfg: Config,
    examples: pd.DataFrame,
    source: str,
    timings: dict[str, float],
) -> tuple[pd.DataFrame, list[str]]:
    """The examples of the `training.label_windows` − 1 label windows before the newest one,
    each as of its own start (its features, MF factors and candidates), appended to `examples`.
    A user's rows of every window land in one train/calibration/evaluation split (the split
    hashes the user). An older window the lake cannot give (too little history, too few labels)
    or that learns from another source ends the list, with a log line."""
    from jobs.daily import training_data as td

    frames, starts = [examples], [cutoff]
    days = cfg.training.label_days
    for k in range(1, cfg.training.label_windows):
        start, end = shift_ds(cutoff, -k * days), shift_ds(cutoff, -(k - 1) * days)
        try:
            older = window_dataset(lake, start, end, cfg)
        except td.TrainingDataError as exc:
            log.info("label window %s..%s left out: %s", start, end, exc)
            break
        if older.source != source:
            log.info(
                "label window %s..%s left out: it has %s, not %s", start, end, older.source, source
            )
            break
        frames.append(older.examples)
        starts.append(start)
        timings["cutoff_features_s"] += older.features_seconds
        timings["mf_cutoff_s"] += older.mf_seconds
    return pd.concat(frames, ignore_index=True), starts


def _label_window_examples(
    lake: Lake, cutoff: str, ds: str, cfg: Config, timings: dict[str, float]
) -> tuple[WindowData, pd.DataFrame, list[str]]:
    """The newest label window's data, and the examples of all label windows with their starts."""
    t0 = time.perf_counter()
    data = window_dataset(lake, cutoff, ds, cfg)
    timings["cutoff_features_s"] = data.features_seconds
    timings["mf_cutoff_s"] = data.mf_seconds
    examples, windows = _older_windows(lake, cutoff, cfg, data.examples, data.source, timings)
    timings["examples_s"] = (
        time.perf_counter() - t0 - timings["mf_cutoff_s"] - timings["cutoff_features_s"]
    )
    return data, examples, windows


def _choose_w(
    lake: Lake,
    cutoff: str,
    cfg: Config,
    data: WindowData,
    holdout: pd.DataFrame,
    timings: dict[str, float],
) -> tuple[pd.DataFrame, dict[tuple[str, float], Any], str, dict[str, Any], float, float]:
    """w on held-out users' pages as of cutoff, both item modes: (grid, calibrations, item
    mode, the mode's evidence, w, its page NDCG). `data.inputs` holds the engagement model."""
    from jobs.daily import training_data as td

    t0 = time.perf_counter()
    val_users = np.unique(holdout["user_id"].to_numpy(object))
    val_users = td.sample_users(val_users, cfg.training.validation_users, cfg.engagement.seed)
    exam = slot_examination(lake, cutoff)
    grid, calibrations, by_user = w_grid_search(
        data.inputs, val_users, data.engaged, cfg, ("fixed", "rerank"), exam=exam
    )
    timings["w_grid_s"] = time.perf_counter() - t0
    mode_evidence: dict[str, Any] = {}
    mode = choose_item_mode(
        grid, cfg.scoring.item_mode, cfg.scoring.choose_w, cfg.scoring.w, by_user, mode_evidence
    )
    chosen = grid[grid["mode"] == mode].dropna(subset=["page_ndcg"])
    if cfg.scoring.choose_w and len(chosen):
        best = chosen.loc[chosen["page_ndcg"].idxmax()]
        w, w_ndcg = float(best["w"]), float(best["page_ndcg"])
    else:
        w = cfg.scoring.w
        hit = chosen[np.isclose(chosen["w"], w)]
        w_ndcg = float(hit["page_ndcg"].iloc[0]) if len(hit) else float("nan")
    return grid, calibrations, mode, mode_evidence, w, w_ndcg


def train_model(lake: Lake, ds: str, cfg: Config, timings: dict[str, float]) -> Trained:
    """Steps 1-3 of the module docstring: examples, engagement heads, w and the item mode."""
    from jobs.daily import training_data as td

    cutoff = td.cutoff_for(ds, cfg)
    data, examples, windows = _label_window_examples(lake, cutoff, ds, cfg, timings)
    objectives, checks, params, model = fit_engagement_model(
        lake, cutoff, cfg, examples, data.source, timings
    )
    holdout, gate_metrics = holdout_split(examples, params, model, objectives)
    data.inputs.engagement = model
    data.inputs.objective_weights = params.weights
    grid, calibrations, mode, evidence, w, w_ndcg = _choose_w(
        lake, cutoff, cfg, data, holdout, timings
    )
    return Trained(
        cutoff=cutoff,
        cutoff_features=data.features,
        windows=windows,
        source=data.source,
        examples=examples,
        objectives=objectives,
        params=params,
        model=model,
        checks=checks,
        holdout=holdout,
        gate_metrics=gate_metrics,
        grid=grid,
        calibrations=calibrations,
        mode=mode,
        mode_evidence=evidence,
        w=w,
        w_ndcg=w_ndcg,
        timings=timings,
        mf_item=data.inputs.mf_item,
        mf_cat=data.inputs.mf_cat,
    )


def _register_bundle(
    lake: Lake, ds: str, cfg: Config, bundle: str, content: str, run_id: str, model_uri: str
) -> str:
    """The registry version of the bundle: the existing one (made the challenger again) or a
    newly registered one."""
    from jobs.daily.registry import find_version, register, set_challenger

    # Re-training a day (a retry, a re-run, a backfill over it) with the same data and config
    # gives the same bundle: re-use its version (now the challenger again) instead of
    # registering a copy, so the gate, the promotion log and the export's manifest see the same
    # version as the first time. A different bundle at the same path is a new version.
    registry_version = find_version(lake, cfg, {"bundle": bundle, "bundle_sha256": content})
    if registry_version is not None:
        set_challenger(lake, cfg, registry_version)
        return registry_version
    version = f"{ds}.{cfg.hash()[:8]}"
    return register(
        lake,
        cfg,
        run_id=run_id,
        model_uri=model_uri,
        tags={"bundle": bundle, "ds": ds, "model_version": version, "bundle_sha256": content},
    )


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Train everything for `ds` and register it as the challenger."""
    import mlflow

    from jobs.core.tracking import experiment
    from jobs.daily.bundle import fingerprint

    # the tracking store first: when it is down the task fails in seconds, not after training
    exp_id = experiment(lake, cfg)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    t = train_model(lake, ds, cfg, timings)

    # serving factors: the cutoff's factor space with users as of ds (mf.serving=fold_in)
    t0 = time.perf_counter()
    mf_item, mf_cat, mf_seconds = serving_factorisations(lake, ds, cfg, t.mf_item, t.mf_cat)
    timings["mf_serving_s"] = time.perf_counter() - t0

    # one bundle per (ds, config): a rejected or rolled-back model never overwrites the files of
    # the version that serves; the same config for the same ds reproduces the same bundle
    version = f"{ds}.{cfg.hash()[:8]}"
    bundle = join(lake.models(ds), cfg.hash()[:8])
    # on a remote lake the bundle is built and swapped in the same way in a local scratch
    # directory, then uploaded with its completion marker last (jobs/core/remote.py upload_dir)
    scratch = remote.scratch_dir("bundle") if io.is_remote(bundle) else None
    final_dir = os.path.join(scratch, cfg.hash()[:8]) if scratch else local_path(bundle)
    # written aside and swapped in whole once the MLflow run has logged it (jobs/core/io.py): a
    # train killed half-way leaves no partial bundle and never touches the one being served
    out_dir = io.staging_dir(final_dir)
    mf_item.save(os.path.join(out_dir, "mf_item.npz"))
    mf_cat.save(os.path.join(out_dir, "mf_category.npz"))
    t.model.save(os.path.join(out_dir, "engagement"))
    t.holdout.to_parquet(os.path.join(out_dir, "holdout.parquet"), index=False)
    t.grid.to_csv(os.path.join(out_dir, "w_grid.csv"), index=False)

    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{ds}") as mlflow_run:
        run_id = mlflow_run.info.run_id
        info = model_info(
            t, ds, cfg, run_id=run_id, version=version, bundle=bundle, mf_seconds=mf_seconds
        )
        io.write_json(os.path.join(out_dir, "MODEL.json"), info)
        model_uri = log_training(t, ds, cfg, out_dir)
    io.replace_dir(out_dir, final_dir)
    if scratch:
        content = fingerprint(final_dir)
        remote.upload_dir(final_dir, bundle)  # complete on the store before it is registered
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        content = fingerprint(bundle)
    registry_version = _register_bundle(lake, ds, cfg, bundle, content, run_id, model_uri)
    info["registry_version"] = registry_version
    io.write_json(join(bundle, "MODEL.json"), info)
    timings["total_s"] = time.perf_counter() - t_all
    log.info("trained %s for %s: %s", version, ds, info)
    return {
        "ds": ds,
        "run_id": run_id,
        "model_version": version,
        "registry_version": registry_version,
        "training_source": t.source,
        "examples": int(len(t.examples)),
        "w": t.w,
        "path": bundle,
        **{f"holdout_{k}": v for k, v in t.gate_metrics.items()},
    }
