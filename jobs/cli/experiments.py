"""Evaluation and experiments: evaluate, ope, experiment, simulate."""

from __future__ import annotations

import argparse
from typing import Any

from jobs.cli.common import Subparsers, add_common_options, say


def _cmd_evaluate(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.experiments import evaluate

    res = evaluate.run(Lake(a.lake), a.split_ds, load_config(a.config, a.set), a.test_days)
    say(evaluate.format_table(res))
    say(f"report: {res['report']} (MLflow run {res['run_id']})")
    return res


def _cmd_ope(a: argparse.Namespace) -> Any:
    from jobs.experiments import ope

    res = ope.run(
        a.lake,
        a.split_ds,
        pages_path=a.pages,
        test_days=a.test_days,
        resamples=a.resamples,
        seed=a.seed,
    )
    say(ope.format_report(res))
    return res


def _cmd_experiment(a: argparse.Namespace) -> Any:
    from jobs.core.lake import Lake
    from jobs.experiments import experiment

    res = experiment.run(
        Lake(a.lake),
        a.split_ds,
        a.set,
        name=a.name,
        config_path=a.config,
        test_days=a.test_days,
        rerun=a.rerun,
        seeds=a.seeds or (),
        splits=a.splits or (),
        say=say,
    )
    say(experiment.format_comparison(res))
    for kind in ("seeds", "splits", "grid"):
        if kind in res:
            from jobs.experiments.replicates import format_replicates

            summary = res[kind]
            say("")
            say(format_replicates(summary))
            say(f"across {kind}: {summary['files']['md']} (MLflow run {summary['run_id']})")
    ids = res["mlflow"]
    say(
        f"report: {res['report_dir']} (MLflow experiment {ids['mlflow_experiment']}: run "
        f"{ids['parent_run_id']}, champion {ids['champion_run_id']}, experiment "
        f"{ids['experiment_run_id']})"
    )
    return res


def _cmd_simulate(a: argparse.Namespace) -> Any:
    from jobs.experiments.simulate import simulate_day

    stats = simulate_day(
        a.lake, a.ds, export_ds=a.export_ds, seed=a.seed, visits_per_user=a.visits_per_user
    )
    say(
        f"simulated ds={stats['ds']} on the export of {stats['export_ds']}: "
        f"{stats['visits']:,} visits by {stats['users']:,} users, "
        f"{stats['impressions']:,} impressions, {stats['clicks']:,} clicks "
        f"(CTR {stats['ctr']:.2%}), {stats['add_to_carts']:,} add-to-carts "
        f"({stats['add_to_carts_per_visitor']:.3f} per visitor), {stats['purchases']:,} "
        f"purchases in {stats['seconds']:.1f}s -> {stats['path']}"
    )
    return stats


def _add_evaluate(sub: Subparsers) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="train before a split, score the pages and baselines after it (and the engagement "
        "heads, off-policy estimates, a simulated A/B test where the lake allows)",
    )
    add_common_options(ev)
    ev.add_argument("--split-ds", required=True, help="first day of the test window (YYYY-MM-DD)")
    ev.add_argument("--test-days", type=int, help="test window length (default: eval.test_days)")
    ev.set_defaults(fn=_cmd_evaluate)


def _add_ope(sub: Subparsers) -> None:
    op = sub.add_parser(
        "ope",
        help="off-policy estimates (IPS, SNIPS, DM, DR) of a page table on logged propensities",
    )
    op.add_argument("--lake", required=True)
    op.add_argument("--split-ds", required=True, help="first day of the logged window")
    op.add_argument("--test-days", type=int, help="window length (default: to the end)")
    op.add_argument("--pages", help="pages.parquet (default: warehouse/pages/ds=<split-ds>)")
    op.add_argument("--resamples", type=int, default=1000)
    op.add_argument("--seed", type=int, default=0)
    op.set_defaults(fn=_cmd_ope)


def _add_experiment(sub: Subparsers) -> None:
    xp = sub.add_parser(
        "experiment",
        help="config overrides (--set) against the champion config on one time split: both "
        "evaluated, compared with paired intervals, logged to one MLflow experiment",
        description="The champion is the config file alone (--config, else conf/default.yaml); "
        "the experiment is the same config plus the --set overrides. Both are trained before "
        "--split-ds and scored on the test window after it; an up-to-date evaluation of either "
        "side is reused. Prints the comparison; writes warehouse/reports/ds=<split>/experiments/"
        "<name>/ and one MLflow parent run with a child run per side.",
    )
    add_common_options(xp)
    xp.add_argument("--split-ds", required=True, help="first day of the test window (YYYY-MM-DD)")
    xp.add_argument(
        "--name", help="experiment name (default exp-<config hash>); names its lake and report"
    )
    xp.add_argument("--test-days", type=int, help="test window length (default eval.test_days)")
    xp.add_argument(
        "--rerun",
        action="store_true",
        help="evaluate both sides again even when an up-to-date evaluation exists",
    )
    xp.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="also train both sides again with each of these training seeds (mf.seed and "
        "engagement.seed) and summarise the differences across seeds: is the change larger "
        "than what a retrain alone moves?",
    )
    xp.add_argument(
        "--splits",
        nargs="+",
        metavar="DATE",
        help="also run the same experiment on each of these split dates (each with its own test "
        "window) and summarise the differences across splits; with --seeds, every split with "
        "every seed (each split's figures averaged over its seeds first)",
    )
    xp.set_defaults(fn=_cmd_experiment)


def _add_simulate(sub: Subparsers) -> None:
    sm = sub.add_parser(
        "simulate",
        help="serve the published pages to the generator's simulated users for one day "
        "(writes events/ds=DATE of a generated lake, with the pages' propensities)",
    )
    sm.add_argument("--lake", required=True, help="a lake written by `homepage generate`")
    sm.add_argument(
        "--ds", required=True, help="day to simulate (YYYY-MM-DD); its events must not exist"
    )
    sm.add_argument(
        "--export-ds", help="export to serve (default: the published one, exports/CURRENT)"
    )
    sm.add_argument("--seed", type=int, default=7)
    sm.add_argument(
        "--visits-per-user",
        type=float,
        help="Poisson mean of each user's homepage visits (default: the generator's rates)",
    )
    sm.set_defaults(fn=_cmd_simulate)


PARSERS = {
    "evaluate": _add_evaluate,
    "ope": _add_ope,
    "experiment": _add_experiment,
    "simulate": _add_simulate,
}
