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
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import Lake, join, local_path, parse_ds, shift_ds
from jobs.experiments.evaluation_heads import engagement_eval
from jobs.experiments.evaluation_lake import (
    eval_config,
    evaluation_lake,
    locked,
    run_pipeline_at,
    window_end,
)
from jobs.experiments.evaluation_pages import (
    BAR,
    BASELINES,
    page_evaluation,
    page_frames,
    ranked_list_evaluation,
    read_events,
    recall_frontier,
)
from jobs.experiments.evaluation_report import flat_metrics, format_table, jsonable

log = logging.getLogger(__name__)


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
    ecfg = eval_config(cfg)
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
        "pages": jsonable(table.to_dict()),
        "lift": jsonable(lifts.to_dict(orient="records")),
        "engagement": jsonable(engagement.to_dict(orient="records")),
        **eng_info,
        "frontier": jsonable(frontier),
        "ranked_list": jsonable(ranked_list),
        "cell_yield": jsonable(cells.to_dict(orient="records")),
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


__all__ = ["ab_evaluation", "flat_metrics", "format_table", "run"]
