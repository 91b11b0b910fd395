"""`homepage bench pipeline`: the whole daily run, stage by stage, at several lake sizes.

For each size a generated lake is made once (`var/bench/u<N>-i<M>-d<D>-s<S>`), then the
benchmark works in `<lake>/_bench_pipeline`, whose input tables are symlinks to the lake's.

Steady state, not a first run: a daily schedule has already ingested every day before
yesterday and has the feature store as of the training label window's start (the run of three
days ago wrote it). The set-up makes exactly that state once (timed, reported apart) and keeps
it. The measured run is then the DAG's seven tasks for `ds` (the day after the latest event),
each in its own process as an Airflow task runs it (`homepage step <task>`), on a state reset to
the set-up (yesterday's accepted events, every `ds=<ds>` output and the MLflow store removed, so
promote makes the first champion of the store).

Per stage it reports wall time and the peak memory of the step's process tree (the Python
process, its Spark JVM and Python workers), sampled every 0.5 s as the sum of proportional set
sizes (PSS), so pages shared between the processes are counted once. Between consecutive sizes it reports the scaling exponent
b in time ∝ users^b (1 = linear).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.core.errors import BenchError
from jobs.core.lake import Lake, shift_ds

STAGES = ("ingest", "build_features", "train", "promote", "rank", "export", "publish")
WORK_DIR = "_bench_pipeline"


def _rollup(pid: int) -> tuple[int, int] | None:
    """(PSS, anonymous PSS) in bytes from /proc/<pid>/smaps_rollup, or None where unreadable.

    One read of the rollup: psutil's `memory_full_info` walks the whole `smaps` (every mapping
    of a JVM with a 12 GB heap), which at two samples a second took a sixth of a core and
    slowed the measured process (the kernel holds its memory map lock while walking)."""
    pss = anon = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Pss_Anon:"):
                    anon = int(line.split()[1]) * 1024
    except OSError:
        return None
    if pss is None:
        return None
    return pss, pss if anon is None else anon


def tree_memory(pid: int) -> tuple[int, int]:
    """(PSS, anonymous PSS) of a process and its descendants, in bytes.

    PSS splits shared pages (a forked Python worker's copy-on-write heap, shared libraries)
    between the processes that map them, so the sum is what the tree costs the machine; it
    also counts the pages of files a process maps, such as an LMDB file being written, which
    the kernel can drop at will. Anonymous PSS is the heap alone (PSS where the kernel does not
    split it out; RSS where PSS is unreadable)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = anon = 0
    for p in procs:
        got = _rollup(p.pid)
        if got is None:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                rss = p.memory_info().rss
                got = (rss, rss)
        if got is not None:
            total += got[0]
            anon += got[1]
    return total, anon


def run_measured(cmd: list[str], log_path: str, interval_s: float = 1.0) -> dict[str, Any]:
    """Run `cmd` (output to `log_path`); wall seconds, peak process-tree PSS and anonymous
    PSS (GiB), exit code."""
    peak = peak_anon = 0
    with open(log_path, "ab") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, peak_anon
            while not done.is_set():
                pss, anon = tree_memory(proc.pid)
                peak, peak_anon = max(peak, pss), max(peak_anon, anon)
                done.wait(interval_s)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
    return {
        "s": round(wall, 1),
        "peak_gb": round(peak / 1024**3, 2),
        "peak_anon_gb": round(peak_anon / 1024**3, 2),
        "exit": code,
    }


def _step_cmd(step: str, root: str, ds: str, overrides: list[str], config: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "jobs.cli.main", "step", step, "--lake", root, "--ds", ds]
    if config:
        cmd += ["--config", config]
    for kv in overrides:
        cmd += ["--set", kv]
    return cmd


def _mf_cmd(root: str, ds: str, overrides: list[str], config: str | None) -> list[str]:
    """The factorisations the train step of `ds` fits on all data before it (and caches)."""
    code = (
        "import sys; from jobs.core.config import load_config; from jobs.core.lake import Lake; "
        "from jobs.daily.factorisations import fit_factorisations; "
        "fit_factorisations(Lake(sys.argv[1]), sys.argv[2], "
        "load_config(sys.argv[3] or None, sys.argv[4:]))"
    )
    return [sys.executable, "-c", code, root, ds, config or "", *overrides]


def _reset_measured_outputs(work: Lake, ds: str) -> None:
    """Back to the set-up state: remove what the measured run writes."""
    yesterday = shift_ds(ds, -1)
    wh = work.warehouse
    if os.path.isdir(wh):
        for table in os.listdir(wh):
            for part in (
                (f"ds={ds}", f"ds={yesterday}")
                if table.startswith(("events", "quarantine"))
                else (f"ds={ds}",)
            ):
                shutil.rmtree(os.path.join(wh, table, part), ignore_errors=True)
    shutil.rmtree(os.path.join(work.root, "exports"), ignore_errors=True)
    shutil.rmtree(os.path.join(work.root, "_mlflow"), ignore_errors=True)


def bench_pipeline(
    *,
    users: int,
    items: int,
    days: int,
    seed: int,
    root: str,
    overrides: list[str],
    config: str | None = None,
    setup_only: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate (once), set up the steady state (once), then time the seven daily tasks
    (unless `setup_only`)."""
    from jobs.bench.stages import ensure_lake
    from jobs.core.config import load_config
    from jobs.daily.pipeline import default_ds
    from jobs.daily.training_data import cutoff_for
    from jobs.experiments.evaluation_lake import evaluation_lake

    gen = ensure_lake(root, users=users, items=items, days=days, seed=seed, say=say)
    lake = Lake(root)
    work = evaluation_lake(lake, os.path.join(lake.root, WORK_DIR))
    ds = default_ds(lake)
    cfg = load_config(config, overrides)
    cutoff = cutoff_for(ds, cfg)
    log_path = os.path.join(work.root, f"bench-{ds}.log")
    label = f"[{users:,} users]"
    prefit = cfg.mf.serving == "refit"
    setup = _set_up(work, ds, cutoff, overrides, config, log_path, label, say, prefit)
    if setup_only:
        return {"users": users, "items": items, "ds": ds, "setup": setup}
    _reset_measured_outputs(work, ds)
    stages = _run_stages(work, ds, overrides, config, log_path, label, say)
    report = read_json_or_empty(os.path.join(work.reports(ds), "rank.json"))
    return {
        "users": users,
        "items": items,
        "days": days,
        "events": gen["events"],
        "ds": ds,
        "overrides": overrides,
        "setup": setup,
        "stages": stages,
        "total_s": round(sum(s["s"] for s in stages.values()), 1),
        "peak_gb": max(s["peak_gb"] for s in stages.values()),
        "rank": {k: report.get(k) for k in ("warm_users", "rows", "item_mode")} if report else {},
        "log": log_path,
    }


def _set_up(
    work: Lake,
    ds: str,
    cutoff: str,
    overrides: list[str],
    config: str | None,
    log_path: str,
    label: str,
    say: Callable[[str], None],
    prefit: bool = False,
) -> dict[str, Any]:
    """The steady state before `ds`, each set-up step run once (recorded in _setup.json)."""
    setup_path = os.path.join(work.root, "_setup.json")
    setup: dict[str, Any] = {}
    if os.path.exists(setup_path):
        with open(setup_path) as f:
            setup = json.load(f)
    # yesterday's run ingested up to the day before yesterday and built features (so today's
    # Beta prior state advances from yesterday's, as in a daily steady state); the run of
    # `cutoff` built the features the models train on and, with `prefit` (mf.serving=refit),
    # fitted its serving factorisations, which today's train reads as its cutoff fit (with
    # fold_in today's train fits as of cutoff itself)
    setup_steps = [("ingest", shift_ds(ds, -1)), ("build_features", cutoff)]
    if shift_ds(ds, -1) != cutoff:
        setup_steps.append(("build_features", shift_ds(ds, -1)))
    if prefit:
        setup_steps.append(("mf", cutoff))
    for step, at in setup_steps:
        key = f"{step}@{at}"
        if key in setup:
            continue
        _reset_measured_outputs(work, ds)
        say(f"{label} set-up: {step} as of {at} ...")
        cmd = (
            _mf_cmd(work.root, at, overrides, config)
            if step == "mf"
            else _step_cmd(step, work.root, at, overrides, config)
        )
        res = run_measured(cmd, log_path)
        if res["exit"] != 0:
            raise BenchError(f"set-up step {step} as of {at} failed; see {log_path}")
        setup[key] = res
        with open(setup_path, "w") as f:
            json.dump(setup, f)
    return setup


def _run_stages(
    work: Lake,
    ds: str,
    overrides: list[str],
    config: str | None,
    log_path: str,
    label: str,
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """The seven daily tasks for `ds`, each in its own process, measured."""
    stages: dict[str, dict[str, Any]] = {}
    for step in STAGES:
        say(f"{label} {step} ...")
        res = run_measured(_step_cmd(step, work.root, ds, overrides, config), log_path)
        stages[step] = res
        say(
            f"{label} {step}: {res['s']} s, peak {res['peak_gb']} GiB "
            f"(anonymous {res['peak_anon_gb']} GiB)"
        )
        if res["exit"] != 0:
            raise BenchError(f"{step} for {ds} failed (exit {res['exit']}); see {log_path}")
    return stages


def read_json_or_empty(path: str) -> dict[str, Any]:
    """A local JSON report, or {} when it is missing or unreadable (a step that did not write it)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def exponent(t_small: float, t_large: float, n_small: int, n_large: int) -> float | None:
    """b in t ∝ n^b between two sizes (1 = linear); None when a time is not positive."""
    if t_small <= 0 or t_large <= 0 or n_small == n_large:
        return None
    return round(math.log(t_large / t_small) / math.log(n_large / n_small), 2)


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per stage, wall s and peak GiB per size, exponents between sizes."""
    results = sorted(results, key=lambda r: r["users"])
    head = ["stage"]
    for r in results:
        head += [f"{r['users']:,} users s", "peak GiB"]
    pairs = list(zip(results, results[1:], strict=False))
    head += [f"b {a['users']:,}→{b['users']:,}" for a, b in pairs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, get: Callable[[dict[str, Any]], tuple[float, float]]) -> str:
        cells = [name]
        for r in results:
            s, gb = get(r)
            cells += [f"{s:,.1f}", f"{gb:.2f}"]
        for a, b in pairs:
            e = exponent(get(a)[0], get(b)[0], a["users"], b["users"])
            cells.append("" if e is None else f"{e:.2f}")
        return "| " + " | ".join(cells) + " |"

    for stage in STAGES:
        lines.append(
            row(stage, lambda r, s=stage: (r["stages"][s]["s"], r["stages"][s]["peak_gb"]))
        )
    lines.append(row("**daily run**", lambda r: (r["total_s"], r["peak_gb"])))
    return "\n".join(lines)
