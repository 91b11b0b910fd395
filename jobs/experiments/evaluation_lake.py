"""The isolated evaluation lake of `homepage evaluate` and of experiments: links to the source
lake's input tables, outputs of its own stamped with the code's fingerprint, the lock that keeps
two runs from writing it at once, the test window, and the daily steps run as of the split."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import INPUT_TABLES, Lake, parse_ds, shift_ds
from jobs.core.locks import file_lock

log = logging.getLogger(__name__)


CODE_STAMP = "CODE_FINGERPRINT"  # in an evaluation lake: the fingerprint of the code that wrote it
CODE_DIRS = ("jobs", "models", "features", "validation")
# modules no evaluation runs: editing them keeps recorded evaluations valid (the experiment job
# is experiment.py and the modules split from it: plan, sides, compare, comparison_report)
# code that cannot change an evaluation's outputs (the CLI, benchmarks, the Airflow runner, the
# experiment's planning and reporting): editing it keeps recorded evaluations valid
NOT_EVALUATION_CODE = (
    "jobs/cli/",
    "jobs/bench/",
    "jobs/runner/",
    "jobs/experiments/experiment.py",
    "jobs/experiments/plan.py",
    "jobs/experiments/sides.py",
    "jobs/experiments/compare.py",
    "jobs/experiments/comparison_report.py",
)
REPO = Path(__file__).resolve().parents[2]
EVAL_STEPS = ("build_features", "train", "promote", "rank")


def code_fingerprint() -> str:
    """sha256 of the code an evaluation runs (the pipeline's modules and conf/*.yaml)."""
    h = hashlib.sha256()
    files = [
        p
        for d in CODE_DIRS
        for p in sorted((REPO / d).rglob("*.py"))
        if not str(p.relative_to(REPO)).startswith(NOT_EVALUATION_CODE)
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


def eval_config(cfg: Config) -> Config:
    """The run's config for the evaluation lake: with a shared tracking server each evaluated
    config registers its own model name, so an evaluation never touches the production model
    nor another evaluation's champion alias."""
    if not cfg.mlflow.tracking_uri:
        return cfg
    name = f"{cfg.gate.model_name}-eval-{cfg.hash()[:8]}"  # one per config: no shared alias
    gate = dataclasses.replace(cfg.gate, model_name=name)
    return dataclasses.replace(cfg, gate=gate)
