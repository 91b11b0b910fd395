"""Train job: MF factors, calibrated engagement heads and w, logged to MLflow as a challenger.

For `ds`, with the label window `[cutoff, ds)` (see jobs/daily/training_data.py):

1. MF (implicit ALS/BPR, or Spark MLlib ALS) on user–item and user–category counts as of
   cutoff: features for the engagement models and the pages of the validation split.
2. The engagement training set (logged impressions, else the pipeline's own candidates with
   time-window labels), checked by Great Expectations; one calibrated XGBoost head per
   objective with enough positives (models/ranking/engagement.py).
3. The grid search over w: pages as of cutoff for held-out users (the engagement model's
   evaluation split), in both item modes, scored by NDCG_2D against the label window.
4. MF again on all data before `ds`: the factors the rank step serves with.
5. The bundle (jobs/daily/bundle.py) and an MLflow run with params, metrics, PNG plots and a
   registered pyfunc model version holding the `challenger` alias. The promote step decides.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import Lake, join, local_path, shift_ds

log = logging.getLogger(__name__)

PIP_REQUIREMENTS = ["mlflow", "xgboost-cpu", "scikit-learn", "pandas", "numpy"]


def mf_params(cfg: Config) -> Any:
    """The model's own params from the job config (models/ never imports jobs/)."""
    from models.ranking.mf import MFParams

    fields = {f.name for f in dataclasses.fields(MFParams)}
    return MFParams(**{k: v for k, v in dataclasses.asdict(cfg.mf).items() if k in fields})


def engagement_params(cfg: Config, objectives: tuple[str, ...], positions: bool) -> Any:
    from models.ranking.engagement_model import EngagementParams

    ec = cfg.engagement
    return EngagementParams(
        objectives=objectives,
        weights={o: ec.weights()[o] for o in objectives},
        n_estimators=ec.n_estimators,
        max_depth=ec.max_depth,
        learning_rate=ec.learning_rate,
        negative_rate=ec.negative_rate,
        calibration_share=ec.calibration_share,
        evaluation_share=ec.evaluation_share,
        position_columns=("slot", "position") if positions else (),
        inverse_propensity=ec.inverse_propensity,
        n_jobs=ec.n_jobs,
        seed=ec.seed,
    )


MF_CACHE = "mf_cache"


def mf_cache_key(rows: pd.DataFrame, table: str, params: Any, backend: str) -> str:
    """What a factorisation depends on: the MF settings, the backend, the table and its rows
    (user, key, eta) as a multiset: Spark writes the same rows in a different order or split
    from run to run, so neither the files' bytes nor their names and times identify them (a
    key of those gave a backfill and seven single runs different cache entries)."""
    h = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    # two order-free sums of the rows' 64-bit hashes (wrapping): the rows, in any order
    content = [len(h), int(h.sum(dtype=np.uint64)), int((h * h).sum(dtype=np.uint64))]
    blob = json.dumps(
        {
            "params": dataclasses.asdict(params),
            "backend": backend,
            "table": table,
            "columns": list(rows.columns),
            "rows": content,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prune_mf_cache(lake: Lake, ds: str, cfg: Config) -> None:
    """Drop factorisations no later run reads: the run of a day d fits as of d and as of its
    cutoff d - training.label_days, so runs from the newest day on need none older than the
    newest day's cutoff. Measured from the newest day, not from `ds`: a re-run of a past day
    (a backfill reprocessing it) then leaves the cache as it found it."""
    base = join(lake.warehouse, MF_CACHE)
    days = io.partitions(base)
    oldest = shift_ds(max([ds, *days]), -cfg.training.label_days * cfg.training.label_windows)
    for day in days:
        if day < oldest:
            io.delete_dir(join(base, f"ds={day}"))


def fit_factorisations(lake: Lake, ds: str, cfg: Config) -> tuple[Any, Any, dict[str, float]]:
    """User–item and user–category MF on the counts as of `ds`, with the configured backend.

    Each fit is kept in `warehouse/mf_cache/ds=<ds>/` under a key of its inputs
    (`mf_cache_key`). The serving fit of day d and the cutoff fit of day d + training.label_days
    factorise the same counts, so a daily run reads one of its two fits from the run of
    label_days earlier instead of repeating it (ALS is deterministic here: same factors)."""
    from models.ranking.mf import MFModel, fit_mf

    params = mf_params(cfg)
    fit = fit_mf
    if cfg.mf.backend == "spark":
        from jobs.core.spark import get_spark
        from models.ranking.distributed import fit_mf_spark

        spark = get_spark(cfg.spark)

        def fit(u: np.ndarray, i: np.ndarray, w: np.ndarray, p: Any) -> Any:
            return fit_mf_spark(spark, u, i, w, p)

    models, seconds = [], {}
    for name, table, key in (
        ("item", "user_item_counts", "item_id"),
        ("category", "user_category_counts", "category_id"),
    ):
        t0 = time.perf_counter()
        df = io.read_parquet(lake.feature(table, ds), ["user_id", key, "eta"], marker="_SUCCESS")
        df = df[df["eta"] > 0]
        cached = join(
            lake.warehouse,
            MF_CACHE,
            f"ds={ds}",
            f"{name}-{mf_cache_key(df, table, params, cfg.mf.backend)}.npz",
        )
        if io.exists(cached):
            models.append(MFModel.from_bytes(io.read_bytes(cached)))
            seconds[name] = time.perf_counter() - t0
            seconds[f"{name}_cached"] = 1.0
            log.info("MF %s as of %s read from %s", name, ds, cached)
            continue
        t0 = time.perf_counter()
        model = fit(df["user_id"].to_numpy(), df[key].to_numpy(), df["eta"].to_numpy(), params)
        seconds[name] = time.perf_counter() - t0
        seconds[f"{name}_nnz"] = float(len(df))
        io.write_bytes(cached, model.to_bytes())  # read back once, days later: speed over size
        models.append(model)
    _prune_mf_cache(lake, ds, cfg)
    return models[0], models[1], seconds


def booster_trainer(cfg: Config) -> Any:
    if cfg.engagement.backend == "xgboost_spark":
        from jobs.core.spark import get_spark
        from models.ranking.distributed import spark_booster_trainer

        return spark_booster_trainer(get_spark(cfg.spark))
    return None


def build_examples(
    lake: Lake, ds: str, cfg: Config, inputs: Any, users: np.ndarray, events: Any
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(examples, window engagement, source) for the sampled users."""
    from jobs.daily import training_data as td
    from jobs.daily.rank import page_params

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
    from jobs.daily.rank import load_inputs

    t0 = time.perf_counter()
    features = td.ensure_cutoff_features(lake, start, cfg)
    features_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    mf_item, mf_cat, _ = fit_factorisations(lake, start, cfg)
    mf_seconds = time.perf_counter() - t0
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


def trainable_objectives(examples: pd.DataFrame, cfg: Config) -> tuple[str, ...]:
    from jobs.daily.training_data import OBJECTIVES

    kept = tuple(o for o in OBJECTIVES if int(examples[o].sum()) >= cfg.training.min_positives)
    if not kept:
        from jobs.daily.training_data import TrainingDataError

        raise TrainingDataError(
            f"no objective has {cfg.training.min_positives} positives among "
            f"{len(examples):,} examples: lengthen training.label_days or lower "
            "training.min_positives"
        )
    return kept


def carousel_labels(
    scored: Any, item_ids: np.ndarray, engaged: pd.DataFrame, per_carousel: int
) -> np.ndarray:
    """1 per candidate carousel whose first M items hold one the user engaged with in the
    label window (click, add-to-cart or purchase), else 0."""
    from models.ranking.candidates import PAD

    cu = np.asarray(scored.cands.user, dtype=np.int64)
    top = scored.items[:, :per_carousel]
    n = np.int64(len(item_ids) + 1)  # the last key value stands for PAD
    pairs = engaged[engaged["user_id"].isin(set(scored.users))]
    if not len(pairs) or not len(cu):
        return np.zeros(len(cu), dtype=np.int8)
    row_of = pd.Series(np.arange(len(scored.users)), index=scored.users)
    ids = pd.Series(np.arange(len(item_ids)), index=item_ids)
    it = ids.reindex(pairs["item_id"].to_numpy()).to_numpy()
    ok = ~np.isnan(it)
    keys = np.unique(
        row_of.reindex(pairs["user_id"].to_numpy()).to_numpy()[ok].astype(np.int64) * n
        + it[ok].astype(np.int64)
    )
    if not len(keys):
        return np.zeros(len(cu), dtype=np.int8)
    probe = cu[:, None] * n + np.where(top != PAD, top, n - 1)
    pos = np.minimum(np.searchsorted(keys, probe), len(keys) - 1)
    return ((keys[pos] == probe) & (top != PAD)).any(axis=1).astype(np.int8)


def fit_carousel_calibration(phi: np.ndarray, labels: np.ndarray) -> dict[str, list[float]] | None:
    """Isotonic map φ -> P(user engages with the carousel in the label window), or None when
    the labels hold a single class."""
    from sklearn.isotonic import IsotonicRegression

    if len(np.unique(labels)) < 2:
        return None
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(phi, labels)
    return {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}


def w_grid_search(
    inputs: Any,
    users: np.ndarray,
    engaged: pd.DataFrame,
    cfg: Config,
    modes: tuple[str, ...],
    exam: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict[tuple[str, float], Any], dict[tuple[str, float], pd.Series]]:
    """NDCG_2D of the pages of `users` (as of cutoff) for each w and item mode, the carousel
    calibration (φ -> engagement probability) fitted at each w, and each user's NDCG_2D at
    each (mode, w) (what `choose_item_mode` compares the modes on).

    The pages are built the way rank builds them (beam search over the calibrated q, page
    rules) without the randomised exploration.
    """
    from jobs.daily.rank import page_params
    from models.evaluation.holdout import page_ndcg_by_user
    from models.ranking.batch_scoring import score_batch
    from models.ranking.pages import pages
    from models.ranking.scoring import carousel_score

    params = page_params(cfg)
    rel = engaged.assign(rel=engaged[["click", "add_to_cart", "purchase"]].sum(axis=1))
    users = np.sort(users[inputs.warm(users)])
    if len(users) == 0:  # no held-out user known to the cutoff's MF: keep scoring.w
        return pd.DataFrame(columns=["mode", "w", "page_ndcg", "users"]), {}, {}
    coarse = np.linspace(0.0, 1.0, cfg.scoring.w_grid_steps)
    step = coarse[1] - coarse[0]
    scored = {
        mode: [
            score_batch(
                inputs, users[s : s + 1024], inputs.user_matrices(users[s : s + 1024]), params, mode
            )
            for s in range(0, len(users), 1024)
        ]
        for mode in modes
    }
    labels = {
        mode: [
            carousel_labels(b, inputs.catalog.item_ids, engaged, params.items_per_carousel)
            for b in scored[mode]
        ]
        for mode in modes
    }
    seen: dict[str, dict[float, float]] = {mode: {} for mode in modes}
    calibrations: dict[tuple[str, float], Any] = {}
    by_user: dict[tuple[str, float], pd.Series] = {}

    def evaluate(ws: np.ndarray) -> None:
        from jobs.daily.rank import carousel_calibration

        for mode in modes:
            for w in (round(float(x), 6) for x in ws):
                if w in seen[mode]:
                    continue
                phi = np.concatenate([carousel_score(b.alpha, b.gamma, w) for b in scored[mode]])
                cal = fit_carousel_calibration(phi, np.concatenate(labels[mode]))
                calibrations[(mode, w)] = cal
                fn = carousel_calibration({"carousel_calibration": cal})
                built = pd.concat(
                    [
                        pages(b, w, params, inputs.catalog.item_ids, exam=exam, calibration=fn)
                        for b in scored[mode]
                    ],
                    ignore_index=True,
                )
                scores = page_ndcg_by_user(built, rel, params.slots, params.items_per_carousel)
                by_user[(mode, w)] = scores
                seen[mode][w] = float(np.mean(scores.to_numpy())) if len(scores) else np.nan

    evaluate(coarse)
    # α and γ live on different scales, so the best w can sit between two coarse points:
    # refine once around each mode's coarse optimum (pages only; the scores are reused)
    for mode in modes:
        best = max(seen[mode], key=lambda w: np.nan_to_num(seen[mode][w], nan=-1.0))
        evaluate(np.linspace(max(0.0, best - step), min(1.0, best + step), 11))
    grid = pd.DataFrame(
        [
            {"mode": mode, "w": w, "page_ndcg": v, "users": len(users)}
            for mode in modes
            for w, v in sorted(seen[mode].items())
        ]
    )
    return grid, calibrations, by_user


MODE_RESAMPLES = 2000


def choose_item_mode(
    grid: pd.DataFrame,
    configured: str,
    choose_w: bool,
    w: float,
    by_user: dict[tuple[str, float], pd.Series] | None = None,
    evidence: dict[str, Any] | None = None,
) -> str:
    """The item mode to serve: the configured one, or for "auto" the mode whose validation page
    NDCG_2D is higher (at its best w when w is searched, else at the configured w). Ties and an
    empty grid give "fixed", the cheaper mode (no engagement predictions at rank time).

    With each user's scores (`by_user`, from `w_grid_search`), "rerank" must also be better
    beyond chance: the 5th percentile of a paired bootstrap of the mean per-user difference
    (rerank − fixed, users scored in both) must be above 0. Validation sets are small (tens of
    users on the real grocery datasets), and a higher mean there is often noise that costs
    page recall on the test split. `evidence` (if given) receives the comparison."""
    if configured != "auto":
        return configured
    best: dict[str, tuple[float, float]] = {}
    for mode in ("fixed", "rerank"):
        rows = grid[grid["mode"] == mode].dropna(subset=["page_ndcg"]) if len(grid) else grid
        if not choose_w and len(rows):
            rows = rows[np.isclose(rows["w"].astype(float), w)]
        if len(rows):
            top = rows.loc[rows["page_ndcg"].astype(float).idxmax()]
            best[mode] = (float(top["page_ndcg"]), float(top["w"]))
    if "rerank" not in best or best["rerank"][0] <= best.get("fixed", (-np.inf, 0.0))[0]:
        return "fixed"
    if "fixed" not in best or not by_user:
        return "rerank"
    fixed = by_user.get(("fixed", round(best["fixed"][1], 6)))
    rerank = by_user.get(("rerank", round(best["rerank"][1], 6)))
    if fixed is None or rerank is None:
        return "rerank"
    from models.evaluation.page_eval import lift

    # the paired bootstrap `homepage evaluate` uses; a 90% interval's low end is the 5th percentile
    cmp = lift(
        pd.DataFrame({"ndcg": rerank}),
        pd.DataFrame({"ndcg": fixed}),
        ["ndcg"],
        resamples=MODE_RESAMPLES,
        confidence=0.90,
    ).iloc[0]
    if cmp["users"] < 2:
        return "fixed"
    low = float(cmp["diff_low"])
    if evidence is not None:
        evidence.update(
            {"rerank_minus_fixed": float(cmp["diff"]), "p05": low, "users": int(cmp["users"])}
        )
    return "rerank" if low > 0 else "fixed"


def _plots(model: Any, holdout: pd.DataFrame, grid: pd.DataFrame, out: str) -> list[str]:
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


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Train everything for `ds` and register it as the challenger."""
    import mlflow

    from jobs.core.tracking import experiment
    from jobs.daily import training_data as td
    from models.evaluation.holdout import holdout_metrics
    from models.ranking.engagement import assign_splits, fit_engagement
    from validation.gx import run_suite
    from validation.suites import training_examples

    # the tracking store first: when it is down the task fails in seconds, not after training
    exp_id = experiment(lake, cfg)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    cutoff = td.cutoff_for(ds, cfg)
    t0 = time.perf_counter()
    data = window_dataset(lake, cutoff, ds, cfg)
    inputs, examples, engaged, source = data.inputs, data.examples, data.engaged, data.source
    cutoff_features = data.features
    timings["cutoff_features_s"] = data.features_seconds
    timings["mf_cutoff_s"] = data.mf_seconds
    examples, windows = _older_windows(lake, cutoff, cfg, examples, source, timings)
    timings["examples_s"] = (
        time.perf_counter() - t0 - timings["mf_cutoff_s"] - timings["cutoff_features_s"]
    )
    objectives = trainable_objectives(examples, cfg)
    checks = run_suite("training_examples", examples, training_examples, engine="pandas")
    positions = source == "logged_impressions"
    params = engagement_params(cfg, objectives, positions)
    propensity = None
    if params.inverse_propensity:
        if not positions:
            raise td.TrainingDataError(
                "engagement.inverse_propensity needs logged impressions (slot and position); "
                "this lake trains on time-window candidates"
            )
        examples["theta"] = td.examination_propensity(lake, cutoff, examples)
        propensity = "theta"
    from models.ranking.item_features import FEATURES, PLACEMENT_COLUMNS

    features = [f for f in FEATURES if positions or f not in PLACEMENT_COLUMNS]
    t0 = time.perf_counter()
    model = fit_engagement(
        examples,
        features=features,
        labels={o: o for o in objectives},
        group="user_id",
        params=params,
        propensity=propensity,
        booster_trainer=booster_trainer(cfg),
    )
    timings["engagement_fit_s"] = time.perf_counter() - t0
    if model.shared:
        log.info(
            "objectives %s have the same labels as %s on every example: they share its head",
            ", ".join(model.shared),
            ", ".join(sorted(set(model.shared.values()))),
        )
    timings["engagement_rows_per_s"] = len(examples) / max(timings["engagement_fit_s"], 1e-9)
    split = assign_splits(
        examples["user_id"],
        calibration_share=params.calibration_share,
        evaluation_share=params.evaluation_share,
        seed=params.seed,
    )
    holdout = examples[split == 2].reset_index(drop=True)
    gate_metrics = holdout_metrics(model, holdout, objectives=objectives)

    # w on held-out users' pages as of cutoff, both item modes
    t0 = time.perf_counter()
    val_users = np.unique(holdout["user_id"].to_numpy(object))
    val_users = td.sample_users(val_users, cfg.training.validation_users, cfg.engagement.seed)
    inputs.engagement = model
    inputs.objective_weights = params.weights
    from jobs.daily.rank import slot_examination

    exam = slot_examination(lake, cutoff)
    grid, calibrations, by_user = w_grid_search(
        inputs, val_users, engaged, cfg, ("fixed", "rerank"), exam=exam
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

    # serving factors on everything before ds
    t0 = time.perf_counter()
    mf_item, mf_cat, mf_seconds = fit_factorisations(lake, ds, cfg)
    timings["mf_serving_s"] = time.perf_counter() - t0

    # one bundle per (ds, config): a rejected or rolled-back model never overwrites the files of
    # the version that serves; the same config for the same ds reproduces the same bundle
    version = f"{ds}.{cfg.hash()[:8]}"
    bundle = join(lake.models(ds), cfg.hash()[:8])
    # on a remote lake the bundle is built and swapped in the same way in a local scratch
    # directory, then uploaded with its completion marker last (jobs/io.upload_dir)
    scratch = io.scratch_dir("bundle") if io.is_remote(bundle) else None
    final_dir = os.path.join(scratch, cfg.hash()[:8]) if scratch else local_path(bundle)
    # written aside and swapped in whole once the MLflow run has logged it (jobs/core/io.py): a train
    # killed half-way leaves no partial bundle and never touches the one being served
    out_dir = io.staging_dir(final_dir)
    mf_item.save(os.path.join(out_dir, "mf_item.npz"))
    mf_cat.save(os.path.join(out_dir, "mf_category.npz"))
    model.save(os.path.join(out_dir, "engagement"))
    holdout.to_parquet(os.path.join(out_dir, "holdout.parquet"), index=False)
    grid.to_csv(os.path.join(out_dir, "w_grid.csv"), index=False)

    with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{ds}") as run:
        run_id = run.info.run_id
        info = {
            "ds": ds,
            "run_id": run_id,
            "model_version": version,
            "path": bundle,
            "cutoff": cutoff,
            "cutoff_features": cutoff_features,
            "label_windows": windows,
            "training_source": source,
            "objectives": list(objectives),
            "shared_heads": dict(model.shared),
            "weights": dict(params.weights),
            "w": w,
            "w_page_ndcg": w_ndcg,
            "item_mode": mode,
            "item_mode_evidence": mode_evidence,
            "carousel_calibration": calibrations.get((mode, round(w, 6))),
            "examples": int(len(examples)),
            "holdout_rows": int(len(holdout)),
            "gate_metrics": gate_metrics,
            "data_checks": {"passed": True, "expectations": int(checks["expectations"])},
            "config_hash": cfg.hash(),
            "timings": {k: round(v, 3) for k, v in timings.items()},
            "mf_fit_seconds": mf_seconds,
        }
        io.write_json(os.path.join(out_dir, "MODEL.json"), info)
        mlflow.set_tags(
            {
                "ds": ds,
                "step": "train",
                "config_hash": cfg.hash(),
                "training_source": source,
                "data_checks": "passed",
            }
        )
        mlflow.log_params(
            {f"mf.{k}": v for k, v in dataclasses.asdict(cfg.mf).items()}
            | {f"engagement.{k}": v for k, v in dataclasses.asdict(cfg.engagement).items()}
            | {f"training.{k}": v for k, v in dataclasses.asdict(cfg.training).items()}
            | {
                "ds": ds,
                "cutoff": cutoff,
                "config_hash": cfg.hash(),
                "objectives": ",".join(objectives),
                "engagement_heads": ",".join(model.heads),
                "item_mode": mode,
                "w_chosen": w,
                "training_source": source,
            }
        )
        metrics = {f"holdout.{k}": v for k, v in gate_metrics.items() if np.isfinite(v)}
        for r in model.metrics.itertuples():
            metrics[f"{r.objective}.{r.split}.{r.stage}.{r.metric}"] = r.value
        metrics |= {f"time.{k}": v for k, v in timings.items()}
        metrics |= {"examples": len(examples), "w": w, "page_ndcg": w_ndcg}
        metrics |= {f"item_mode.{k}": v for k, v in mode_evidence.items()}
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
        for r in grid.itertuples():
            if np.isfinite(r.page_ndcg):
                mlflow.log_metric(f"page_ndcg.{r.mode}", r.page_ndcg, step=int(round(r.w * 100)))
        plot_dir = os.path.join(out_dir, "plots")
        for p in _plots(model, holdout, grid, plot_dir):
            mlflow.log_artifact(p, artifact_path="plots")
        from jobs.daily.ranker_model import log_ranker

        model_uri = log_ranker(out_dir, PIP_REQUIREMENTS)
    io.replace_dir(out_dir, final_dir)
    from jobs.daily.bundle import fingerprint
    from jobs.daily.registry import find_version, register, set_challenger

    if scratch:
        content = fingerprint(final_dir)
        io.upload_dir(final_dir, bundle)  # complete on the store before it is registered
        shutil.rmtree(scratch, ignore_errors=True)
    else:
        content = fingerprint(bundle)

    # Re-training a day (a retry, a re-run, a backfill over it) with the same data and config
    # gives the same bundle: re-use its version (now the challenger again) instead of
    # registering a copy, so the gate, the promotion log and the export's manifest see the same
    # version as the first time. A different bundle at the same path is a new version.
    registry_version = find_version(lake, cfg, {"bundle": bundle, "bundle_sha256": content})
    if registry_version is not None:
        set_challenger(lake, cfg, registry_version)
    else:
        registry_version = register(
            lake,
            cfg,
            run_id=run_id,
            model_uri=model_uri,
            tags={"bundle": bundle, "ds": ds, "model_version": version, "bundle_sha256": content},
        )
    info["registry_version"] = registry_version
    io.write_json(join(bundle, "MODEL.json"), info)
    timings["total_s"] = time.perf_counter() - t_all
    log.info("trained %s for %s: %s", version, ds, info)
    return {
        "ds": ds,
        "run_id": run_id,
        "model_version": version,
        "registry_version": registry_version,
        "training_source": source,
        "examples": int(len(examples)),
        "w": w,
        "path": bundle,
        **{f"holdout_{k}": v for k, v in gate_metrics.items()},
    }
