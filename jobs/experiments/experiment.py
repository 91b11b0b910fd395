"""Experiment job (`homepage experiment`, DAG `homepage_experiment`): config overrides against
the champion config, evaluated on the same time split and compared in one MLflow experiment.

1. Plan (`jobs.experiments.plan`): the champion config is the config file alone (`--config`,
   else `conf/default.yaml` and `$HOMEPAGE_CONF`); the experiment config is the same plus the
   overrides. Refused, with the reason, when the overrides are empty, unknown or badly typed
   (`ConfigError`), change nothing, change only settings that cannot move a metric (`spark.*`,
   `serve.*`, `export.*`), set `scoring.w` while `scoring.choose_w` is true (the grid search
   would replace it), or touch `eval.*` / `mlflow.*` (those define how and where both sides are
   scored and logged: set them in the config file so both sides share them).
2. Evaluate (`jobs.experiments.sides.evaluate_side`): each side runs
   `jobs.experiments.evaluate.run` (train before the split, pages as of it, scores on
   `[split, split + test_days)`) in its own evaluation lake:
       champion    <lake>/_eval/<split>-<champion hash[:8]>   (shared with `homepage evaluate`
                                                               and every experiment on it)
       experiment  <lake>/_experiments/<name>/experiment
   A side is not re-run when its record (`_experiment_eval.json` in its evaluation lake) says it
   was evaluated with the same config, split, test window, source-lake input files (paths, sizes,
   modification times) and code (`rerun=True` / `--rerun` forces it). An exclusive file lock per
   evaluation lake keeps concurrent runs (CLI and DAG) from writing one lake at once; an
   experiment lake last evaluated with another config (a reused name) is emptied first. The
   champion goes first: a new experiment lake starts from copies of its accepted events and
   feature tables when the overrides leave `ingest.*` and `features.*` alone
   (`seed_lake`), which saves the ingest and the training cutoff's features.
3. Compare (`jobs.experiments.compare`): the page metrics are recomputed per user for both
   sides against the champion side's truth (`jobs.experiments.evaluation_pages.page_frames`), so
   each page metric gets the paired bootstrap lift of experiment over champion
   (`models.evaluation.page_eval.lift`). On generated lakes a simulated A/B test puts the
   champion's pages (control) against the experiment's (treatment). Engagement metrics and
   off-policy estimates are compared as they are. Written to
   `warehouse/reports/ds=<split>/experiments/<name>/comparison.{csv,md,json}` and `lift.png`,
   and logged (`jobs.experiments.comparison_report`) to the MLflow experiment
   `<mlflow.experiment>-experiments` of the source lake: a parent run named after the
   experiment (overrides, config hashes, the comparison table as artifacts and as an MLflow
   table, differences and lifts as metrics) with two nested runs, `champion` and `experiment`
   (each side's metrics, params and plots).
4. Replicate (`seeds` or `splits`): each seed adds a replicate plan (`plan(...)["replicates"]`)
   in which both sides are trained again with `mf.seed` and `engagement.seed` set to it (a
   replicate's champion lake starts from the first champion lake's tables); each split date
   adds one of the same experiment on that split. `evaluate_all` and `compare_all` do steps 2-3
   for the plan and then each replicate, and `jobs.experiments.replicates` summarises the
   differences across the replicates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jobs.core.errors import EvaluationError
from jobs.core.lake import Lake
from jobs.experiments.compare import compare
from jobs.experiments.comparison_report import format_comparison
from jobs.experiments.plan import SIDES, overrides_from_params, plan
from jobs.experiments.sides import evaluate_side

log = logging.getLogger(__name__)


def run(
    lake: Lake | str,
    split_ds: str,
    overrides: list[str] | tuple[str, ...] | Mapping[str, Any] | None,
    *,
    name: str | None = None,
    config_path: str | None = None,
    test_days: int | None = None,
    rerun: bool = False,
    seeds: Sequence[int] = (),
    splits: Sequence[str] = (),
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Plan, evaluate the champion and the experiment, compare and log (module doc). Returns
    the comparison: both sides' `jobs.experiments.evaluate.run` results (`champion`, `experiment`), the rows
    (`comparison`), the simulated A/B (`ab_test`), files, plots, MLflow run ids (`mlflow`),
    whether each side's evaluation was reused (`reused`), the champion tables a new experiment
    lake started from (`seeded`) and the plan (`plan`); with `seeds` or `splits`, also each
    replicate's comparison (`replicates`) and the summary across them (`seeds` or `splits`, see
    `jobs.experiments.replicates.summarise`)."""
    p = plan(
        lake,
        split_ds,
        overrides,
        name=name,
        config_path=config_path,
        test_days=test_days,
        seeds=seeds,
        splits=splits,
    )
    say(
        f"[experiment {p['name']}] split {split_ds}, test window [{split_ds}, {p['test_end']}), "
        f"changed: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in p["changed"].items())
    )
    done = {side: evaluate_all(p, side, rerun=rerun, say=say) for side in SIDES}
    result = compare_all(p, done["champion"], done["experiment"], say=say)
    result["reused"] = {side: done[side]["reused"] for side in SIDES}
    result["seeded"] = done["experiment"]["seeded"]
    result["plan"] = dict(p)
    return result


def evaluate_all(
    p: Mapping[str, Any],
    side: str,
    *,
    rerun: bool = False,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """`evaluate_side` for the plan and then for each of its replicates (other training seeds;
    their facts in `replicates`, in the plan's order)."""
    out = evaluate_side(p, side, rerun=rerun, say=say)
    reps = []
    for rp in p.get("replicates") or []:
        what = ", ".join(
            ([f"split {rp['split_ds']}"] if "replicate_split" in rp else [])
            + ([f"training seed {rp['seed']}"] if "seed" in rp else [])
        )
        say(f"[experiment {p['name']}] {side}, {what}")
        reps.append(evaluate_side(rp, side, rerun=rerun, say=say))
    return {**out, "replicates": reps} if reps else out


def compare_all(
    p: Mapping[str, Any],
    champion: Mapping[str, Any],
    experiment: Mapping[str, Any],
    *,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """`compare` the plan's sides (the facts `evaluate_all` returned) and each replicate's; with
    replicates, also the differences across them (`seeds` or `splits`,
    `jobs.experiments.replicates`)."""
    from jobs.experiments import replicates as experiment_replicates

    result = compare(p, champion["record"], experiment["record"], say=say)
    reps = p.get("replicates") or []
    if not reps:
        return result
    if len(champion.get("replicates") or []) != len(reps) or len(
        experiment.get("replicates") or []
    ) != len(reps):
        raise EvaluationError("each replicate needs both sides evaluated: evaluate them first")
    replicates = [
        compare(rp, c["record"], e["record"], say=say)
        for rp, c, e in zip(reps, champion["replicates"], experiment["replicates"], strict=True)
    ]
    result["replicates"] = replicates
    summary = experiment_replicates.summarise(p, result, replicates, say=say)
    result[summary["kind"]] = summary
    return result


__all__ = [
    "compare_all",
    "evaluate_all",
    "format_comparison",
    "overrides_from_params",
    "plan",
    "run",
]
