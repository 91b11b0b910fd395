"""Evaluating one side of an experiment (champion or experiment) in its evaluation lake: the
record that lets an up-to-date evaluation be reused, the fingerprint it is checked against,
and the copies of another evaluation lake's tables a new lake starts from (`seed_lake`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

from jobs.core.errors import EvaluationError
from jobs.core.lake import Lake, local_path
from jobs.experiments.plan import side_config

log = logging.getLogger(__name__)


RECORD = "_experiment_eval.json"
# a new experiment lake starts from copies of the champion lake's ingested events and features
# (`seed_lake`) unless the overrides touch what ingest and the features depend on
SEED_TABLES = (
    "events",
    "quarantine",
    "items",
    "quarantine_items",
    "quarantine_item_changes",
    "features",
)
SEED_BLOCKERS = ("ingest", "features")


def _input_fingerprint(lake_root: str) -> str:
    """Paths, sizes and modification times of the source lake's input files."""
    from jobs.core.lake import INPUT_TABLES

    h = hashlib.sha256()
    for table in INPUT_TABLES:
        top = os.path.join(lake_root, table)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for fn in sorted(filenames):
                st = os.stat(os.path.join(dirpath, fn))
                rel = os.path.relpath(os.path.join(dirpath, fn), lake_root)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def fingerprint(p: Mapping[str, Any], side: str) -> str:
    """What an evaluation of one side depends on: config, split, test window, inputs, code."""
    return _fingerprint(p, p[f"{side}_hash"])


def _fingerprint(p: Mapping[str, Any], config_hash: str) -> str:
    from jobs.experiments.evaluation_lake import code_fingerprint

    blob = json.dumps(
        {
            "config": config_hash,
            "split_ds": p["split_ds"],
            "test_days": p["test_days"],
            "test_end": p["test_end"],
            "inputs": _input_fingerprint(local_path(p["lake"])),
            "code": code_fingerprint(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _reusable(record_path: str, fp: str) -> dict[str, Any] | None:
    if not os.path.exists(record_path):
        return None
    try:
        with open(record_path) as f:
            rec = json.load(f)
    except (OSError, ValueError):
        return None
    res = rec.get("result") or {}
    pages = os.path.join(str(res.get("eval_lake", "")), "warehouse", "pages")
    if rec.get("fingerprint") != fp or not os.path.isdir(pages):
        return None
    return rec


def _empty_experiment_lake(work: str, lake_root: str) -> None:
    """Remove an experiment lake's outputs (keep the links to the source's input tables)."""
    base = os.path.join(local_path(lake_root), "_experiments") + os.sep
    if not os.path.abspath(work).startswith(base):  # never anything but an experiment lake
        raise EvaluationError(f"refusing to empty {work}: not under {base}")
    for entry in os.listdir(work):
        path = os.path.join(work, entry)
        if os.path.islink(path):
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def evaluate_side(
    p: Mapping[str, Any],
    side: str,
    *,
    rerun: bool = False,
    say: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Evaluate one side of a plan in its evaluation lake (or reuse an up-to-date evaluation).
    Returns small facts for XCom: the record's path, the evaluation lake, whether reused."""
    from jobs.core import io
    from jobs.experiments import evaluate
    from jobs.experiments.evaluation_lake import locked

    cfg = side_config(p, side)
    lake = Lake(p["lake"])
    work = p[f"{side}_dir"]
    record_path = os.path.join(work, RECORD)
    label = (
        f"champion-{p['champion_hash'][:8]}" if side == "champion" else f"experiment-{p['name']}"
    )
    if side == "experiment" and "seed" in p:
        label += f"-seed{p['seed']}"  # (a split replicate reports under its own split)
    t0 = time.perf_counter()
    with locked(work, say=say):
        fp = fingerprint(p, side)
        rec = None if rerun else _reusable(record_path, fp)
        if rec is not None:
            say(f"[experiment {p['name']}] {side}: reusing the evaluation in {work}")
            return {"record": record_path, "eval_lake": work, "reused": True, "seeded": []}
        old = _read_record_hash(record_path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(record_path)  # a run that dies half-way leaves no record claiming the lake
        if side == "experiment" and os.path.isdir(work) and old != p["experiment_hash"]:
            say(f"[experiment {p['name']}] emptying {work} (last evaluated config: {old})")
            _empty_experiment_lake(work, lake.root)
        seeded = seed_lake(p, side, say=say)
        if seeded:
            say(f"[experiment {p['name']}] the {side} starts from the tables {', '.join(seeded)}")
        say(f"[experiment {p['name']}] evaluating the {side} in {work}")
        result = evaluate.run(
            lake,
            p["split_ds"],
            cfg,
            p["test_days"],
            work_dir=work,
            label=label,
            log_mlflow=False,
            lock=False,  # this side holds the lake's lock already
            say=say,
        )
        seconds = round(time.perf_counter() - t0, 1)
        io.write_json(
            record_path,
            {
                "fingerprint": fp,
                "side": side,
                "config_hash": cfg.hash(),
                "overrides": p["overrides"] if side == "experiment" else [],
                "seconds": seconds,
                "seeded": seeded,
                "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "result": result,
            },
        )
    say(f"[experiment {p['name']}] {side} evaluated in {seconds:.0f}s")
    return {
        "record": record_path,
        "eval_lake": work,
        "reused": False,
        "seeded": seeded,
        "seconds": seconds,
    }


def seed_lake(p: Mapping[str, Any], side: str, *, say: Callable[[str], None] = log.info) -> list:
    """Start a new evaluation lake from copies of an up-to-date evaluation lake's accepted
    events and feature tables, where what ingest and the features depend on is the same: the
    experiment lake from the champion lake when the overrides leave `ingest.*` and `features.*`
    alone, and a replicate's lakes (another training seed) from the first champion lake, or,
    where the overrides do touch ingest or the features, its experiment lake from the first
    experiment lake. The new lake then skips re-ingesting and rebuilding the training cutoff's
    features. (The evaluation still rebuilds the split's features.) Returns the tables copied."""
    from jobs.experiments.evaluation_lake import locked, stamp_code

    if side == "experiment":
        if not any(k.split(".", 1)[0] in SEED_BLOCKERS for k in p["changed"]):
            src_dir, src_hash = p["champion_dir"], p["champion_hash"]
        elif p.get("experiment_seed_source"):  # a replicate: the same ingest and features
            src_dir, src_hash = (p["experiment_seed_source"][k] for k in ("dir", "hash"))
        else:
            return []
    elif p.get("seed_source"):
        src_dir, src_hash = p["seed_source"]["dir"], p["seed_source"]["hash"]
    else:
        return []
    work = p[f"{side}_dir"]
    dst = os.path.join(work, "warehouse")
    if os.path.exists(dst):
        return []  # not a new lake: it keeps its own outputs
    src = os.path.join(src_dir, "warehouse")
    copied = []
    with locked(src_dir, shared=True, say=say):
        if _reusable(os.path.join(src_dir, RECORD), _fingerprint(p, src_hash)) is None:
            return []
        for table in SEED_TABLES:
            if os.path.isdir(os.path.join(src, table)):
                shutil.copytree(os.path.join(src, table), os.path.join(dst, table))
                copied.append(table)
    if copied:  # the source's evaluation is up to date: the current code wrote these
        stamp_code(work)
    return copied


def _read_record_hash(record_path: str) -> str | None:
    try:
        with open(record_path) as f:
            return json.load(f).get("config_hash")
    except (OSError, ValueError):
        return None


def load_record(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)
