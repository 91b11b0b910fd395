"""Evaluate job (`homepage evaluate --lake DIR --split-ds DATE`): honest offline evidence.

1. An isolated evaluation lake (`<lake>/_eval/<split>-<config hash>`, or `work_dir`): links to
   the source lake's input tables, its own warehouse, models and MLflow store. In it the daily
   steps run as of the split (ingest, features, train, promote, rank), so the models and pages
   only ever see events before the split. The test window's events are ingested (validated)
   too, but no feature reads them. A re-run with the same config re-uses what the lake holds
   (ingested days, feature tables), but only if the same code wrote it: the lake records the
   code's fingerprint (`CODE_STAMP`), and outputs written by other code are removed first.
2. Pages: the pipeline's pages of the split (`__default__` for users without one) and three
   baselines built from the same pre-split events (`models.evaluation.baselines`): static, popularity,
   personal top frequency. All are scored against what each user did in
   `[split, split + eval.test_days)` (`eval.relevant_events`) with `models.evaluation.page_eval`, and the
   pipeline's relative lift over each baseline gets a paired bootstrap interval.
3. Engagement heads: AUC, PR-AUC, log loss and ECE on the test window, raw and calibrated,
   with reliability diagrams (`engagement_eval`). The same heads' own ranked list, each user's
   candidate items as of the split by the combined calibrated score on the pipeline's cells
   without carousels, is scored next to the pipeline and the baselines on the same users
   (`ranked_list_evaluation`): whether the page layout or the model limits the pipeline.
4. Generated lakes (with `_truth/`): a simulated A/B test on the ground-truth user model, the
   static page (control) against the pipeline's pages (treatment), `eval.ab_days` days.
5. Lakes with logged propensities: off-policy estimates (`jobs.experiments.ope`) of the pipeline's pages.

Everything lands in `warehouse/reports/ds=<split>/evaluate/` of the source lake (tables as CSV,
plots as PNG, `evaluate.json`) and in one MLflow run of experiment `<mlflow.experiment>-evaluate`
in the source lake's tracking store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import Lake, join, local_path, parse_ds, shift_ds
from jobs.core.locks import file_lock

if TYPE_CHECKING:
    from models.evaluation.page_eval import PageEvaluation

log = logging.getLogger(__name__)

BASELINES = ("static", "popularity", "top_freq")
INPUT_TABLES = ("events", "items", "users", "carousels", "_truth")
CODE_STAMP = "CODE_FINGERPRINT"  # in an evaluation lake: the fingerprint of the code that wrote it
CODE_DIRS = ("jobs", "models", "features", "validation")
# modules no evaluation runs: editing them keeps recorded evaluations valid
NOT_EVALUATION_CODE = ("cli.py", "experiment.py", "bench.py", "bench_serve.py", "airflow_run.py")
REPO = Path(__file__).resolve().parents[2]
EVAL_STEPS = ("build_features", "train", "promote", "rank")
LIFT_METRICS = ("ndcg_2d", "page_recall", "repeat_recall", "explore_recall", "carousel_ndcg")


# ---------------------------------------------------------------- the evaluation lake


def code_fingerprint() -> str:
    """sha256 of the code an evaluation runs (the pipeline's modules and conf/*.yaml)."""
    h = hashlib.sha256()
    files = [
        p
        for d in CODE_DIRS
        for p in sorted((REPO / d).rglob("*.py"))
        if not (d == "jobs" and p.name in NOT_EVALUATION_CODE)
    ]
    files += sorted((REPO / "conf").glob("*.yaml"))
    for f in files:
        h.update(str(f.relative_to(REPO)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def stamp_code(work_dir: str, code: str | None = None) -> None:
    """Record that the current code (fingerprint `code`, computed if None) wrote `work_dir`'s
    outputs."""
    with open(os.path.join(work_dir, CODE_STAMP), "w") as f:
        f.write((code or code_fingerprint()) + "\n")


def _outputs_of_other_code(work_dir: str, code: str) -> list[str]:
    """`work_dir`'s outputs (entries that are not links to input tables) when the code that
    wrote them is not `code` (another fingerprint, or none recorded); else []."""
    outputs = [
        e
        for e in sorted(os.listdir(work_dir))
        if e != CODE_STAMP and not os.path.islink(os.path.join(work_dir, e))
    ]
    if not outputs:
        return []
    try:
        with open(os.path.join(work_dir, CODE_STAMP)) as f:
            written_by = f.read().strip()
    except FileNotFoundError:
        written_by = ""
    return [] if written_by == code else outputs


def evaluation_lake(lake: Lake, work_dir: str, *, say: Callable[[str], None] = log.info) -> Lake:
    """A lake at `work_dir` whose input tables are symlinks to `lake`'s (outputs are its own).

    Outputs another version of the code wrote (ingested days, feature tables, factorisation
    caches, models) are removed first: an evaluation must measure the code that runs it."""
    if not lake.root.startswith("/") or not work_dir.startswith("/"):
        raise ValueError("evaluation lakes are local directories (absolute paths)")
    os.makedirs(work_dir, exist_ok=True)
    real = [
        n
        for n in INPUT_TABLES
        if os.path.lexists(os.path.join(work_dir, n))
        and not os.path.islink(os.path.join(work_dir, n))
    ]
    if real:
        raise ValueError(
            f"{work_dir} is not an evaluation lake: its input table(s) {', '.join(real)} are not "
            "links to the source lake's"
        )
    code = code_fingerprint()
    stale = _outputs_of_other_code(work_dir, code)
    if stale:
        say(
            f"{work_dir} holds outputs written by other code ({', '.join(stale)}): "
            "removing them, the evaluation starts afresh"
        )
        for e in stale:
            path = os.path.join(work_dir, e)
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    stamp_code(work_dir, code)
    for name in INPUT_TABLES:
        src, dst = os.path.join(lake.root, name), os.path.join(work_dir, name)
        if os.path.exists(src) and not os.path.lexists(dst):
            os.symlink(src, dst)
    return Lake(work_dir)


@contextlib.contextmanager
def locked(path: str, *, shared: bool = False, say: Callable[[str], None] = log.info) -> Iterator:
    """An advisory lock on `<path>.lock` (exclusive to write an evaluation lake, shared to
    read it), so two runs (CLI, DAG, experiments) never write one evaluation lake at once."""
    with file_lock(
        path + ".lock",
        shared=shared,
        waiting=lambda _: say(f"waiting for another run using {path} ..."),
    ):
        yield


def window_end(lake: Lake, split_ds: str, test_days: int) -> str:
    """The exclusive end of `[split, split + test_days)`, cut at the day after the last events."""
    parse_ds(split_ds)
    days = io.partitions(lake.raw_events)
    if not days:
        raise FileNotFoundError(f"no event partitions under {lake.raw_events}")
    end = min(shift_ds(split_ds, test_days), shift_ds(days[-1], 1))
    if end <= split_ds:
        raise ValueError(
            f"no events on or after the split {split_ds} (last day {days[-1]}): "
            "choose an earlier --split-ds"
        )
    if days[0] >= split_ds:
        raise ValueError(f"no events before the split {split_ds} (first day {days[0]})")
    return end


def run_pipeline_at(
    lake: Lake, split_ds: str, end: str, cfg: Config, say: Callable[[str], None]
) -> dict[str, Any]:
    """Ingest everything before `end`, then the daily steps as of `split_ds`, in `lake`."""
    import importlib

    from jobs.daily.pipeline import STEPS

    steps = dict(STEPS)
    out: dict[str, Any] = {}
    plan = [("ingest", split_ds), ("ingest", end)] + [(s, split_ds) for s in EVAL_STEPS]
    for name, ds in plan:
        say(f"[evaluate {split_ds}] {name} as of {ds} ...")
        module, func = steps[name].split(":")
        out[f"{name}@{ds}"] = getattr(importlib.import_module(module), func)(lake, ds, cfg)
    return out


def _eval_config(cfg: Config) -> Config:
    """The run's config for the evaluation lake: with a shared tracking server each evaluated
    config registers its own model name, so an evaluation never touches the production model
    nor another evaluation's champion alias."""
    if not cfg.mlflow.tracking_uri:
        return cfg
    name = f"{cfg.gate.model_name}-eval-{cfg.hash()[:8]}"  # one per config: no shared alias
    gate = dataclasses.replace(cfg.gate, model_name=name)
    return dataclasses.replace(cfg, gate=gate)


# ---------------------------------------------------------------- frames


def read_events(lake: Lake, start: str | None, end: str, columns: list[str]) -> pd.DataFrame:
    """Accepted events with start <= ds < end (start None: all before end)."""
    import pyarrow.dataset as pads

    days = [d for d in io.partitions(lake.events) if (start is None or d >= start) and d < end]
    if not days:
        return pd.DataFrame(columns=columns)
    import pyarrow as pa

    cols = [c for c in columns if c != "ds"]
    parts = []
    for d in days:
        t = pads.dataset(local_path(join(lake.events, f"ds={d}")), format="parquet").to_table(
            columns=cols
        )
        if "ds" in columns:
            t = t.append_column("ds", pa.array([d] * t.num_rows, pa.string()))
        parts.append(t)
    return pa.concat_tables(parts, promote_options="permissive").to_pandas()


def _sample_users(users: pd.Index, max_users: int, seed: int) -> pd.Index:
    if len(users) <= max_users:
        return users
    h = pd.util.hash_array(users.to_numpy(object).astype(str), hash_key=f"{seed:016d}")
    return users[np.argsort(h, kind="stable")[:max_users]].sort_values()


class PageFrames(NamedTuple):
    pages: dict[str, pd.DataFrame]  # by policy: the pipeline and the baselines
    truth: pd.DataFrame
    history: pd.DataFrame
    items: pd.DataFrame
    mixed: Callable[[int], pd.DataFrame]  # history cells k -> the baselines mixed (frontier)


def relevant_pairs(after: pd.DataFrame, relevant: Sequence[str], window: str) -> pd.DataFrame:
    """The distinct (user_id, item_id) of the test window's `relevant` events; a ValueError that
    names the event types the window does log when it has none of them."""
    rel = after[after["event_type"].isin(relevant) & after["item_id"].notna()]
    if rel.empty:
        logged = sorted(after["event_type"].dropna().unique())
        raise ValueError(
            f"no {'/'.join(relevant)} events with an item in the test window {window}: nothing "
            f"to score pages against; it logs {', '.join(logged) or 'no events'}: set "
            "eval.relevant_events to what it logs (e.g. --set 'eval.relevant_events=[click]') "
            "or move the split"
        )
    return rel[["user_id", "item_id"]].drop_duplicates()


def page_frames(elake: Lake, split_ds: str, end: str, cfg: Config) -> PageFrames:
    """(pages by policy, truth, history, items, the mixed baselines) for the evaluated users."""
    from models.evaluation import baselines as bl

    ec = cfg.eval
    items = pd.read_parquet(local_path(join(elake.warehouse, "items", f"ds={split_ds}")))
    before = read_events(elake, None, split_ds, ["user_id", "item_id", "event_type", "ts", "ds"])
    after = read_events(elake, split_ds, end, ["user_id", "item_id", "event_type"])
    truth = relevant_pairs(after, ec.relevant_events, f"[{split_ds}, {end})")
    users = _sample_users(pd.Index(truth["user_id"].unique()), ec.max_users, ec.seed)
    truth = truth[truth["user_id"].isin(users)]
    bought = before[(before["event_type"] == "purchase") & before["user_id"].isin(users)]
    history = bought[["user_id", "item_id"]].drop_duplicates()

    # every user's page: the metrics select the evaluated users, the A/B test serves them all
    pipe = pd.read_parquet(
        local_path(join(elake.warehouse, "pages", f"ds={split_ds}", "pages.parquet"))
    )
    from models.evaluation.page_eval import pages_for_users

    shown = pages_for_users(pipe, users).groupby("user_id").size().reindex(users)
    recent = before[before["ds"] >= shift_ds(split_ds, -ec.popularity_days)]
    popular = bl.item_popularity(recent, items)
    if popular.empty:
        popular = bl.item_popularity(before, items)
    slots, per_row = cfg.page.slots, cfg.page.items_per_carousel
    in_stock = pd.Index(items.loc[items["in_stock"].astype(bool), "item_id"])
    purchases = bought[["user_id", "item_id", "ts"]]

    def mixed(history_cells: int | None) -> pd.DataFrame:
        return bl.top_frequency_pages(
            purchases, popular, shown, per_row, in_stock, history_cells=history_cells
        )

    pages = {
        "pipeline": pipe,
        "static": bl.static_page(popular, items, slots, per_row),
        "popularity": bl.popularity_page(popular, slots, per_row),
        "top_freq": mixed(None),
    }
    return PageFrames(pages, truth, history, items, mixed)


# ---------------------------------------------------------------- the parts


def page_evaluation(
    pages: dict[str, pd.DataFrame],
    truth: pd.DataFrame,
    history: pd.DataFrame,
    items: pd.DataFrame,
    split_ds: str,
    cfg: Config,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(metrics table: one column per policy, lift table, per-policy evaluations)."""
    from models.evaluation.page_eval import evaluate_pages, lift

    ec = cfg.eval
    evals = {
        name: evaluate_pages(
            p, truth, history, items, split_ds=split_ds, ks=ec.recall_k, new_days=ec.new_days
        )
        for name, p in pages.items()
    }
    table = pd.DataFrame({name: e.summary for name, e in evals.items()})
    metrics = [*LIFT_METRICS, *(f"recall@{k}" for k in ec.recall_k), "mrr", "new_recall"]
    lifts = []
    for b in BASELINES:
        t = lift(
            evals["pipeline"].per_user,
            evals[b].per_user,
            metrics,
            resamples=ec.resamples,
            seed=ec.seed,
        )
        t.insert(0, "baseline", b)
        lifts.append(t)
    return table, pd.concat(lifts, ignore_index=True), evals


BAR = (("top_freq", "popularity"), ("page_recall", "explore_recall"))  # issue 7's bar


def recall_frontier(
    frames: PageFrames, table: pd.DataFrame, split_ds: str, cfg: Config
) -> dict[str, Any]:
    """The baselines mixed (k most-bought items, then popular never-bought ones, for k = 0, M,
    2M, ... up to the pipeline's cells: `models.evaluation.frontier`), the frontier's explore recall at the
    pipeline's page recall, and whether the pipeline beats top frequency and popularity on both
    page and explore recall (`BAR`)."""
    from models.evaluation import frontier as fr
    from models.evaluation.page_eval import evaluate_pages

    ec = cfg.eval
    cells = int(frames.pages["top_freq"].groupby("user_id").size().max())
    front = fr.frontier(
        frames.mixed,
        lambda page: evaluate_pages(
            page, frames.truth, frames.history, frames.items, split_ds=split_ds,
            ks=ec.recall_k, new_days=ec.new_days,
        ).summary,
        fr.history_steps(cells, cfg.page.items_per_carousel),
    )  # fmt: skip
    page, explore = (float(table.loc[m, "pipeline"]) for m in ("page_recall", "explore_recall"))
    at = fr.explore_at(front, page)
    summary = {c: table[c].to_dict() for c in table.columns}
    return {
        "frontier": front.to_dict(orient="records"),
        "pipeline": {"page_recall": page, "explore_recall": explore},
        "frontier_explore_at_pipeline": at,
        "margin_over_frontier": explore - at if np.isfinite(at) else float("nan"),
        "bar": fr.dominance(summary, "pipeline", *BAR),
    }


RANKED_LIST_POLICIES = ("ranked_list", "pipeline", "top_freq", "popularity")
RANKED_LIST_METRICS = ("page_recall", "repeat_recall", "explore_recall", "ndcg_2d")


def ranked_list_evaluation(
    frames: PageFrames,
    evals: Mapping[str, PageEvaluation],
    scored: pd.DataFrame,
    split_ds: str,
    cfg: Config,
    source: str,
) -> dict[str, Any]:
    """The engagement heads' own ranked list (`scored`: each user's candidate items as of the
    split with the combined calibrated score) on the pipeline's cells, one row of M after
    another (`models.evaluation.baselines.ranked_list_pages`), next to the pipeline and the baselines
    (`evals`, from `page_evaluation`) on the users both the test window's examples and the page
    evaluation hold; and whether that list beats top frequency and popularity on page and
    explore recall (`BAR`).

    Only where the examples are the candidates as of the split (`source`
    "time_window_candidates"): logged impressions of the test window are the items the logging
    policy showed in it, which a list built at the split could not know."""
    if source != "time_window_candidates":
        return {"users": 0, "skipped": f"the test window's examples are {source}"}
    from models.evaluation import baselines as bl
    from models.evaluation import frontier as fr
    from models.evaluation.page_eval import evaluate_pages, summarise

    ec = cfg.eval
    shown = frames.pages["top_freq"].groupby("user_id").size()  # the pipeline's cells per user
    in_stock = pd.Index(frames.items.loc[frames.items["in_stock"].astype(bool), "item_id"])
    listed = bl.ranked_list_pages(scored, shown, cfg.page.items_per_carousel, in_stock)
    users = pd.Index(listed["user_id"].unique()).intersection(frames.truth["user_id"].unique())
    if users.empty:
        return {"users": 0}
    truth = frames.truth[frames.truth["user_id"].isin(users)]
    summary = {
        "ranked_list": evaluate_pages(
            listed, truth, frames.history, frames.items, split_ds=split_ds, ks=ec.recall_k,
            new_days=ec.new_days,
        ).summary,
        # per-user metrics: the policies' evaluations restricted to these users
        **{p: summarise(evals[p].per_user.loc[users], evals[p].per_page.loc[users])
           for p in RANKED_LIST_POLICIES[1:]},
    }  # fmt: skip
    return {
        "users": int(len(users)),
        "pages": {p: {m: summary[p][m] for m in RANKED_LIST_METRICS} for p in summary},
        "bar": fr.dominance(summary, "ranked_list", *BAR),
    }


def engagement_eval(
    elake: Lake, split_ds: str, end: str, cfg: Config, out_dir: str
) -> tuple[pd.DataFrame, list[str], dict[str, Any], pd.DataFrame]:
    """AUC, PR-AUC, log loss, ECE of heads trained before the split, on the test window; and
    the test window's candidate rows (user_id, item_id) with the combined calibrated score."""
    from jobs.daily import training_data as td
    from jobs.daily.engagement_fit import (
        booster_trainer,
        engagement_params,
        trainable_objectives,
    )
    from jobs.daily.train import window_dataset
    from models.evaluation.plots import reliability_diagram
    from models.ranking.engagement import fit_engagement, score_predictions
    from models.ranking.item_features import FEATURES, PLACEMENT_COLUMNS

    start = td.cutoff_for(split_ds, cfg)
    train = window_dataset(elake, start, split_ds, cfg)
    test = window_dataset(elake, split_ds, end, cfg)
    if train.source != test.source:
        raise td.TrainingDataError(
            f"the train window has {train.source} examples but the test window {test.source}: "
            "choose a split where both windows log impressions (or neither does)"
        )
    objectives = tuple(
        o for o in trainable_objectives(train.examples, cfg) if test.examples[o].any()
    )
    positions = train.source == "logged_impressions"
    model = fit_engagement(
        train.examples,
        features=[f for f in FEATURES if positions or f not in PLACEMENT_COLUMNS],
        labels={o: o for o in objectives},
        group="user_id",
        params=engagement_params(cfg, objectives, positions),
        booster_trainer=booster_trainer(cfg),
    )
    ex = test.examples
    raw = model.predict(ex, calibrated=False, position_override=None)
    cal = model.predict(ex, calibrated=True, position_override=None)
    scored = pd.DataFrame(
        {"user_id": ex["user_id"], "item_id": ex["item_id"], "score": model.combined_score(cal)}
    )
    rows = []
    for o in objectives:
        y = ex[o].to_numpy().astype(np.int8)
        for stage, p in (("raw", raw[o]), ("calibrated", cal[o])):
            rows.append({"objective": o, "stage": stage, **score_predictions(y, p)})
    plots = [
        str(
            reliability_diagram(
                ex[o].to_numpy().astype(np.int8),
                raw[o],
                cal[o],
                os.path.join(out_dir, f"calibration_{o}.png"),
                title=f"{o}: test window {split_ds}..{shift_ds(end, -1)}, raw vs calibrated",
            )
        )
        for o in objectives
    ]
    info = {
        "train_window": [start, split_ds],
        "source": train.source,
        "train_examples": int(len(train.examples)),
        "test_examples": int(len(ex)),
        "by_item_kind": item_kind_ranking(ex, cal, objectives),
    }
    return pd.DataFrame(rows), plots, info, scored


def item_kind_ranking(
    examples: pd.DataFrame, predictions: dict[str, np.ndarray], objectives: Sequence[str]
) -> list[dict[str, Any]]:
    """AUC and PR-AUC of the calibrated heads on the test window's rows of items the user
    bought before (`ui_n_purchase` > 0 as of the split) and never bought, next to the item's
    30-day popularity (`item_pop_30d`) ranking the same rows, and on bought rows the user's
    purchase count (top frequency's order): whether the model ranks each kind better than the
    baseline that owns it."""
    from models.evaluation import metrics as m

    def unit(col: str) -> np.ndarray:  # the metrics take scores in [0, 1]; AUC ignores scale
        x = np.maximum(examples[col].fillna(0).to_numpy(np.float64), 0.0)
        return x / x.max() if len(x) and x.max() > 0 else x

    freq = unit("ui_n_purchase")
    bought = freq > 0
    pop = unit("item_pop_30d")
    out = []
    for o in objectives:
        y = examples[o].to_numpy().astype(np.int8)
        for items, mask in (("bought before", bought), ("never bought", ~bought)):
            if not mask.any() or y[mask].min() == y[mask].max():
                continue  # no rows of this kind (a lake without purchases), or one class only
            scorers = [("model", predictions[o]), ("popularity", pop)]
            if items == "bought before":
                scorers.append(("frequency", freq))  # top frequency's order
            for scorer, score in scorers:
                out.append(
                    {
                        "objective": o,
                        "items": items,
                        "scorer": scorer,
                        "rows": int(mask.sum()),
                        "positives": int(y[mask].sum()),
                        "auc": m.auc(y[mask], score[mask]),
                        "pr_auc": m.pr_auc(y[mask], score[mask]),
                    }
                )
    return _jsonable(out)


def ab_evaluation(
    lake: Lake, pages: dict[str, pd.DataFrame], split_ds: str, cfg: Config
) -> dict[str, Any] | None:
    """Simulated A/B test on a generated lake: static page (control) vs the pipeline's pages."""
    if not os.path.exists(os.path.join(local_path(lake.truth), "truth.npz")):
        return None
    from jobs.experiments.simulate import ab_test
    from jobs.inputs.generate import load_truth

    truth = load_truth(lake.root)
    return ab_test(
        truth,
        pages["static"],
        pages["pipeline"],
        users=None,
        days=cfg.eval.ab_days,
        seed=cfg.eval.seed,
        visits_per_user=None,
        start=parse_ds(split_ds),
        resamples=cfg.eval.resamples,
        salt=f"evaluate-{split_ds}",
    )


# ---------------------------------------------------------------- the job


def run(
    lake: Lake,
    split_ds: str,
    cfg: Config,
    test_days: int | None = None,
    *,
    work_dir: str | None = None,
    label: str = "pipeline",
    log_mlflow: bool = True,
    lock: bool = True,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Train before the split, build pages, score them and the baselines after it (module doc).

    The evaluation lake is locked while this runs (`lock=False`: the caller holds the lock)."""
    end = window_end(lake, split_ds, test_days or cfg.eval.test_days)
    work = work_dir or os.path.join(local_path(lake.root), "_eval", f"{split_ds}-{cfg.hash()[:8]}")
    work = os.path.abspath(work)
    with locked(work, say=say) if lock else contextlib.nullcontext():
        return _run(lake, split_ds, end, cfg, work, label, log_mlflow, say)


def _run(
    lake: Lake,
    split_ds: str,
    end: str,
    cfg: Config,
    work: str,
    label: str,
    log_mlflow: bool,
    say: Callable[[str], None],
) -> dict[str, Any]:
    import mlflow

    from jobs.core.tracking import experiment

    elake = evaluation_lake(lake, work, say=say)
    ecfg = _eval_config(cfg)
    steps = run_pipeline_at(elake, split_ds, end, ecfg, say)
    out_dir = local_path(join(lake.reports(split_ds), "evaluate", label))
    os.makedirs(out_dir, exist_ok=True)

    say(f"[evaluate {split_ds}] scoring pages against [{split_ds}, {end})")
    frames = page_frames(elake, split_ds, end, ecfg)
    pages, truth, history, items = frames.pages, frames.truth, frames.history, frames.items
    table, lifts, evals = page_evaluation(pages, truth, history, items, split_ds, ecfg)
    say(f"[evaluate {split_ds}] the recall frontier of the baselines mixed")
    frontier = recall_frontier(frames, table, split_ds, ecfg)
    from models.evaluation.page_eval import cell_yield

    cells = cell_yield(pages["pipeline"], truth, history)
    say(f"[evaluate {split_ds}] engagement heads on the test window")
    engagement, plots, eng_info, scored = engagement_eval(elake, split_ds, end, ecfg, out_dir)
    ranked_list = ranked_list_evaluation(frames, evals, scored, split_ds, ecfg, eng_info["source"])
    ab = ab_evaluation(elake, pages, split_ds, ecfg)
    ope = _ope(elake, split_ds, end, ecfg, say)
    plots += _plots(elake, split_ds, ecfg, lifts, ab, out_dir, table, frontier)

    table.to_csv(os.path.join(out_dir, "pages.csv"))
    lifts.to_csv(os.path.join(out_dir, "lift.csv"), index=False)
    engagement.to_csv(os.path.join(out_dir, "engagement.csv"), index=False)
    pd.DataFrame(frontier["frontier"]).to_csv(os.path.join(out_dir, "frontier.csv"), index=False)
    cells.to_csv(os.path.join(out_dir, "cell_yield.csv"), index=False)
    result: dict[str, Any] = {
        "label": label,
        "split_ds": split_ds,
        "test_window": [split_ds, end],
        "eval_lake": elake.root,
        "config_hash": cfg.hash(),
        "users": int(table.loc["users", "pipeline"]),
        "relevant_events": list(cfg.eval.relevant_events),
        "pages": _jsonable(table.to_dict()),
        "lift": _jsonable(lifts.to_dict(orient="records")),
        "engagement": _jsonable(engagement.to_dict(orient="records")),
        **eng_info,
        "frontier": _jsonable(frontier),
        "ranked_list": _jsonable(ranked_list),
        "cell_yield": _jsonable(cells.to_dict(orient="records")),
        "ab_test": ab,
        "ope": ope,
        "promoted": bool(steps.get(f"promote@{split_ds}", {}).get("promoted", True)),
        "plots": plots,
        "report": out_dir,
    }
    if log_mlflow:
        exp_id = experiment(lake, cfg, name=f"{cfg.mlflow.experiment}-evaluate")
        with mlflow.start_run(experiment_id=exp_id, run_name=f"{label}-{split_ds}") as run:
            mlflow.set_tags({"split_ds": split_ds, "step": "evaluate", "label": label})
            mlflow.log_params(
                {"split_ds": split_ds, "test_window": f"{split_ds}..{shift_ds(end, -1)}"}
                | {"config_hash": cfg.hash(), "label": label}
            )
            mlflow.log_metrics(flat_metrics(result))
            for p in plots:
                mlflow.log_artifact(p, artifact_path="plots")
            for f in ("pages.csv", "lift.csv", "engagement.csv", "frontier.csv", "cell_yield.csv"):
                mlflow.log_artifact(os.path.join(out_dir, f))
            result["run_id"] = run.info.run_id
    io.write_json(os.path.join(out_dir, "evaluate.json"), result)
    return result


def flat_metrics(result: dict[str, Any]) -> dict[str, float]:
    """`page.<policy>.<metric>`, `lift.<baseline>.<metric>`, `engagement.*`, `frontier.*`,
    `ranked_list.*`, `ab.*` as floats."""
    out: dict[str, float] = {}
    for policy, metrics in result["pages"].items():
        for m, v in metrics.items():
            out[f"page.{policy}.{m}"] = v
    for r in result["lift"]:
        out[f"lift.{r['baseline']}.{r['metric']}"] = r["lift"]
    for r in result["engagement"]:
        for m in ("auc", "pr_auc", "log_loss", "ece"):
            out[f"engagement.{r['objective']}.{r['stage']}.{m}"] = r[m]
    for r in result.get("by_item_kind") or []:
        kind = "repeat" if r["items"] == "bought before" else "explore"
        for m in ("auc", "pr_auc"):
            out[f"engagement.{r['objective']}.{kind}.{r['scorer']}.{m}"] = r[m]
    fr = result.get("frontier")
    if fr:
        for r in fr["frontier"]:
            for m in ("page_recall", "explore_recall"):
                out[f"frontier.k{r['history_cells']}.{m}"] = r[m]
        out["frontier.explore_at_pipeline"] = fr["frontier_explore_at_pipeline"]
        out["frontier.margin_over_frontier"] = fr["margin_over_frontier"]
        out["frontier.bar_met"] = float(fr["bar"]["met"])
    rl = result.get("ranked_list")
    if rl and rl.get("users"):
        for policy, metrics in rl["pages"].items():
            for m, v in metrics.items():
                out[f"ranked_list.{policy}.{m}"] = v
        out["ranked_list.users"] = rl["users"]
        out["ranked_list.bar_met"] = float(rl["bar"]["met"])
    ab = result.get("ab_test")
    if ab:
        for m, v in ab["lift"].items():
            out[f"ab.lift.{m}"] = v["lift"]
        for arm, vals in ab["arms"].items():
            for m in ("ctr", "add_to_carts_per_visitor"):
                out[f"ab.{arm}.{m}"] = vals[m]
    if result.get("ope"):
        _flatten("ope", result["ope"], out)
    return {  # MLflow metric names take no "@"
        k.replace("@", "_at_"): float(v) for k, v in out.items() if v is not None and np.isfinite(v)
    }


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    """Numeric leaves of nested dicts as `prefix.key.key...` (estimates, intervals, counts)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{re.sub(r'[^A-Za-z0-9_.:/ -]', '_', str(k))}", v, out)
    elif isinstance(obj, int | float | np.number) and not isinstance(obj, bool):
        out[prefix] = obj


def _ope(elake: Lake, split_ds: str, end: str, cfg: Config, say: Callable[[str], None]) -> Any:
    """Off-policy estimates when the test window logs propensities (else None)."""
    ev = read_events(elake, split_ds, end, ["propensity"])
    if ev.empty or ev["propensity"].isna().all():
        return None
    from jobs.experiments import ope

    say(f"[evaluate {split_ds}] off-policy estimates on the logged propensities")
    pages = local_path(join(elake.warehouse, "pages", f"ds={split_ds}", "pages.parquet"))
    return ope.run(
        elake.root,
        split_ds,
        pages_path=pages,
        test_days=(parse_ds(end) - parse_ds(split_ds)).days,
        resamples=cfg.eval.resamples,
        seed=cfg.eval.seed,
    )


def _plots(
    elake: Lake,
    split_ds: str,
    cfg: Config,
    lifts: pd.DataFrame,
    ab: dict[str, Any] | None,
    out_dir: str,
    table: pd.DataFrame | None = None,
    frontier: dict[str, Any] | None = None,
) -> list[str]:
    """Lift with intervals, the recall frontier, the examination curve, metric vs w (from the
    train step)."""
    import glob
    import shutil

    from models.evaluation.plots import examination_plot, frontier_plot, lift_plot

    paths = [str(lift_plot(lifts, os.path.join(out_dir, "lift.png"), title=f"split {split_ds}"))]
    if frontier is not None and table is not None:
        points = {
            name: (float(table.loc["page_recall", name]), float(table.loc["explore_recall", name]))
            for name in ("pipeline", *BASELINES)
        }
        paths.append(
            str(
                frontier_plot(
                    pd.DataFrame(frontier["frontier"]),
                    points,
                    os.path.join(out_dir, "frontier.png"),
                    title=f"split {split_ds}: recall frontier of the baselines mixed",
                    bar=(
                        max(points[b][0] for b in BAR[0]),
                        max(points[b][1] for b in BAR[0]),
                    ),
                )
            )
        )
    if ab:
        ab_rows = pd.DataFrame(
            [{"baseline": "A/B vs static", "metric": m, **v} for m, v in ab["lift"].items()]
        )
        paths.append(str(lift_plot(ab_rows, os.path.join(out_dir, "ab_lift.png"))))
    exam = local_path(elake.feature("examination", split_ds))
    if os.path.exists(exam):
        curve = pd.read_parquet(exam)
        if len(curve):
            paths.append(str(examination_plot(curve, os.path.join(out_dir, "examination.png"))))
    for src in glob.glob(
        os.path.join(local_path(elake.models(split_ds)), "*", "plots", "*_vs_w.png")
    ):
        dst = os.path.join(out_dir, os.path.basename(src))
        shutil.copyfile(src, dst)
        paths.append(dst)
    return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def format_table(result: dict[str, Any]) -> str:
    """The page metrics per policy, the lifts with intervals and the engagement heads."""
    pages = pd.DataFrame(result["pages"])
    lines = [
        f"split {result['split_ds']}: {result['users']:,} users with "
        f"{'/'.join(result['relevant_events'])} in [{result['test_window'][0]}, "
        f"{result['test_window'][1]})",
        "",
        f"{'metric':<30}" + "".join(f"{c:>12}" for c in pages.columns),
    ]
    for m, row in pages.iterrows():
        lines.append(
            f"{m:<30}"
            + "".join(f"{'—':>12}" if v is None or pd.isna(v) else f"{v:12.4f}" for v in row)
        )
    lines += ["", "pipeline vs baseline: relative lift [95% bootstrap interval]"]
    for r in result["lift"]:
        if r["lift"] is None:
            continue
        lines.append(
            f"  {r['baseline']:<11} {r['metric']:<15} {r['lift']:+8.1%} "
            f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]  ({r['a']:.4f} vs {r['b']:.4f}, "
            f"{r['users']:,} users)"
        )
    if result["engagement"]:
        repeats = repeated_objectives(result["engagement"], lambda r: _objective_rows(r, "stage"))
        lines += ["", f"{'objective':<12} {'stage':<11} {'AUC':>7} {'PR-AUC':>7} {'logloss':>8} "
                  f"{'ECE':>7}"]  # fmt: skip
        for r in result["engagement"]:
            if r["objective"] in repeats:
                continue
            lines.append(
                f"{r['objective']:<12} {r['stage']:<11} {_num(r['auc'])} {_num(r['pr_auc'])} "
                f"{_num(r['log_loss'], 8)} {_num(r['ece'])}"
            )
        if repeats:
            lines.append(repeated_note(repeats, "engagement.csv"))
    if result.get("frontier"):
        lines += ["", *format_frontier(result["frontier"])]
    if (result.get("ranked_list") or {}).get("users"):
        lines += ["", *format_ranked_list(result["ranked_list"])]
    if result.get("cell_yield"):
        lines += [
            "",
            "the pipeline's cells by carousel kind: hits per cell (repeat: bought before)",
        ]
        lines.append(
            f"  {'carousel':<20} {'items':<8} {'cells/page':>10} {'hits':>7} {'per cell':>9}"
        )
        for r in result["cell_yield"]:
            lines.append(
                f"  {r['kind']:<20} {r['item']:<8} {r['cells_per_page']:10.2f} {r['hits']:7d} "
                f"{r['hit_rate']:9.2%}"
            )
    if result.get("by_item_kind"):
        lines += [
            "",
            "calibrated heads vs 30-day popularity on the test window's rows, by item kind",
        ]
        repeats = repeated_objectives(
            result["by_item_kind"], lambda r: _objective_rows(r, "items", "scorer")
        )
        lines.append(f"  {'objective':<12} {'items':<14} {'scorer':<11} {'rows':>9} {'pos':>6} "
                     f"{'AUC':>7} {'PR-AUC':>7}")  # fmt: skip
        for r in result["by_item_kind"]:
            if r["objective"] in repeats:
                continue
            lines.append(
                f"  {r['objective']:<12} {r['items']:<14} {r['scorer']:<11} {r['rows']:9d} "
                f"{r['positives']:6d} {_num(r['auc'])} {_num(r['pr_auc'])}"
            )
        if repeats:
            lines.append("  " + repeated_note(repeats, "evaluate.json"))
    ab = result.get("ab_test")
    if ab:
        c, t = ab["arms"]["control"], ab["arms"]["treatment"]
        lines += [
            "",
            f"simulated A/B ({ab['days']} days from {ab['start']}): static page (control) vs "
            "pipeline (treatment)",
            f"  add-to-carts per visitor {c['add_to_carts_per_visitor']:.4f} -> "
            f"{t['add_to_carts_per_visitor']:.4f}: "
            + _lift_str(ab["lift"]["add_to_carts_per_visitor"]),
            f"  click-through rate       {c['ctr']:.4f} -> {t['ctr']:.4f}: "
            + _lift_str(ab["lift"]["ctr"]),
        ]
    if result.get("ope"):
        from jobs.experiments import ope

        lines += ["", ope.format_report(result["ope"])]
    return "\n".join(lines)


def format_frontier(fr: dict[str, Any]) -> list[str]:
    """The frontier table, the pipeline against it, and the bar's verdict."""
    rows = fr["frontier"]
    lines = [
        "recall frontier of the baselines mixed (k most-bought items, then the most popular "
        "never-bought; the pipeline's cells)",
        f"  {'history cells k':<16}" + "".join(f"{r['history_cells']:>7}" for r in rows),
        f"  {'page recall':<16}" + "".join(f"{r['page_recall']:7.3f}" for r in rows),
        f"  {'explore recall':<16}" + "".join(f"{r['explore_recall']:7.3f}" for r in rows),
    ]
    p, at = fr["pipeline"], fr["frontier_explore_at_pipeline"]
    top = max((r["page_recall"] for r in rows), default=float("nan"))
    if at is not None and np.isfinite(at):
        where = f"the frontier there has {at:.4f} ({fr['margin_over_frontier']:+.4f})"
    elif p["page_recall"] > top:
        where = f"page recall beyond the frontier's end (top frequency, {top:.4f})"
    else:
        where = "below the frontier's page recall range"
    lines.append(
        f"  pipeline: page recall {p['page_recall']:.4f}, explore recall "
        f"{p['explore_recall']:.4f}; {where}"
    )
    lines.append(
        f"  beats top_freq and popularity on page and explore recall: {_verdict(fr['bar'])}"
    )
    return lines


def _verdict(bar: dict[str, Any]) -> str:
    """`models.evaluation.frontier.dominance`'s answer in words, naming each shortfall."""
    short = [f"{s['metric']} {s['policy']:.4f} <= {s['baseline']} {s['value']:.4f}"
             for s in bar["short"]]  # fmt: skip
    return "met" if bar["met"] else "not met: " + "; ".join(short)


def format_ranked_list(rl: dict[str, Any]) -> list[str]:
    """The heads' own ranked list next to the pipeline and the baselines, and its verdict."""
    lines = [
        "the engagement heads' own ranked list on the pipeline's cells, no carousels "
        f"({rl['users']:,} users with test-window examples)",
        f"  {'policy':<13}" + "".join(f"{m:>16}" for m in RANKED_LIST_METRICS),
    ]
    for policy, metrics in rl["pages"].items():
        lines.append(
            f"  {policy:<13}" + "".join(f"{metrics[m]:16.4f}" for m in RANKED_LIST_METRICS)
        )
    lines.append(f"  the ranked list beats top_freq and popularity on page and explore recall: "
                 f"{_verdict(rl['bar'])}")  # fmt: skip
    return lines


def _lift_str(v: dict[str, float]) -> str:
    return f"{v['lift']:+.1%} [{_pct(v['ci_low'])}, {_pct(v['ci_high'])}]"


def _pct(v: float | None) -> str:
    return "—" if v is None or not np.isfinite(v) else f"{v:+.1%}"


def _num(v: float | None, width: int = 7) -> str:
    return f"{'—':>{width}}" if v is None or not np.isfinite(v) else f"{v:{width}.4f}"


# ---------------------------------------------------------------- shared heads in printouts

RowSplit = Callable[[Mapping[str, Any]], "tuple[str, Any, Any] | None"]


def _plain(v: Any) -> Any:
    """A figure made comparable: non-finite floats are None (NaN never equals itself)."""
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return tuple(_plain(x) for x in v)
    return v


def repeated_objectives(rows: Sequence[Mapping[str, Any]], split: RowSplit) -> dict[str, str]:
    """{objective: the objective whose figures it repeats} among engagement rows.

    Objectives whose labels are equal on every row share one head (on purchase-only logs a
    purchase is also the click and the add-to-cart), so every figure of theirs is the same and
    a printout needs them once. `split(row)` gives (objective, the row's key within the
    objective, its figures), or None for a row of no objective. An objective repeats another
    when it has the same keys with the same figures; the one kept is the last in
    `OBJECTIVES` order (purchase, the label the shared head is about). Display only: files and
    MLflow keep every objective."""
    from jobs.daily.training_data import OBJECTIVES

    groups: dict[str, dict[Any, Any]] = {}
    for r in rows:
        s = split(r)
        if s is not None:
            objective, key, figures = s
            groups.setdefault(objective, {})[key] = _plain(figures)
    rank = {o: i for i, o in enumerate(OBJECTIVES)}
    kept: list[str] = []
    out: dict[str, str] = {}
    for o in sorted(groups, key=lambda o: (rank.get(o, len(rank)), o), reverse=True):
        twin = next((k for k in kept if groups[k] == groups[o]), None)
        if twin is None:
            kept.append(o)
        else:
            out[o] = twin
    return out


def repeated_note(repeats: Mapping[str, str], where: str) -> str:
    """'click and add_to_cart repeat purchase's figures ...' for `repeated_objectives`' result
    ('' when nothing repeats)."""
    by_twin: dict[str, list[str]] = {}
    for o, twin in repeats.items():
        by_twin.setdefault(twin, []).append(o)
    parts = [
        f"{' and '.join(sorted(os_))} repeat {twin}'s figures (labels equal on every row: one "
        "shared head)"
        for twin, os_ in sorted(by_twin.items())
    ]
    return f"{'; '.join(parts)}: left out here, {where} keeps them" if parts else ""


def _objective_rows(r: Mapping[str, Any], *key: str) -> tuple[str, Any, Any]:
    """`repeated_objectives`' split for rows with an `objective` field keyed by `key`."""
    rest = {k: v for k, v in r.items() if k != "objective" and k not in key}
    return r["objective"], tuple(r[k] for k in key), tuple(sorted(rest.items()))
