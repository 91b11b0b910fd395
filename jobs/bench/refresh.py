"""`homepage bench refresh`: from event arrival to an updated page served.

Works on the lake of `homepage bench pipeline` for the same size (its `_bench_pipeline` work
lake holds a published daily export, `ds` = B, and the page state behind it). A refresh lake
`<lake>/_bench_refresh` shares that work lake's `warehouse` and `exports` (symlinks) and has its
own `events`: the source lake's partitions linked one by one, plus day B, which the benchmark
writes. So the generated lake itself never changes.

`new_users` warm users (a seeded sample of the page state's users) each get
`events / new_users` events on day B within the measured window: impressions of the carousels
their served page shows, and clicks on some of them (so their Beta priors move). A lookup server
(this process, one worker) serves the lake. Two measurements, each from a clean day B:

- cold (what one `homepage_refresh` DAG run costs): the events file lands in `events/ds=B`
  (the "arrival") and `homepage refresh --watermark B 00:15` runs in its own process (ingest,
  priors, pages, publish: interpreter, imports and Spark JVM started for this window).
- resident (`homepage refresh --watermarks-from -`, one process for the day): the worker first
  runs the window B 00:15 over a small batch of other users' events (1% of the measured one;
  its pages are carried in the next delta), then the measured events land, ts in
  [00:15, 00:30), and the worker is handed the watermark B 00:30. Timed: arrival → the window's
  outcome line.

- connect (the DAG's tasks on a resident Spark Connect server, `refresh.spark_remote`): a
  `homepage spark-connect` server is started first and warmed by the window B 00:15 (as for the
  resident worker); then the measured events land and the window B 00:30 runs as the DAG runs
  it, four `homepage refresh --step` processes one after another (each with its interpreter
  and imports, no JVM of its own). Timed: arrival → the publish step's exit.
- worker (the DAG's tasks on a resident refresh worker, `refresh.worker_url`): as connect, but
  the server is a `homepage refresh-server` and each task process hands its whole step to it
  (the step runs in the worker's warm interpreter, on its Spark driver).
- airflow (a `homepage_refresh` DAG run under the real Airflow scheduler): an execution API
  server, a scheduler (LocalExecutor, one task at a time) and a refresh worker are started on a
  fresh SQLite Airflow home; a warm-up run B 00:15, then the measured events land and the run
  B 00:30 is triggered with `refresh.worker_url` in its overrides. Timed: arrival → the run's
  success, as the metadata DB says; each task's time and the gaps between tasks from it.

Either way the benchmark then polls the server until a sample of the changed users' pages
carry the watermark as `refreshed_at`: arrival → served. Reported per mode: wall times (the
refresh, each step as the steps report it, arrival → served), the delta's users and bytes, peak
memory (PSS of the refresh's process tree: Python and the Spark JVM).
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.bench.pipeline import WORK_DIR, run_measured, tree_memory
from jobs.core.lake import Lake, parse_ds

REFRESH_DIR = "_bench_refresh"
REFRESH_DAG = "homepage_refresh"
EVENTS_FILE = "bench-arrival.parquet"


def refresh_lake(source: Lake, work: Lake) -> Lake:
    """`<source>/_bench_refresh`: the work lake's outputs, the source's inputs, own events."""
    root = os.path.join(source.root, REFRESH_DIR)
    os.makedirs(os.path.join(root, "events"), exist_ok=True)
    for name in ("items", "users", "carousels", "_truth"):
        src, dst = os.path.join(source.root, name), os.path.join(root, name)
        if os.path.exists(src) and not os.path.lexists(dst):
            os.symlink(src, dst)
    for name in ("warehouse", "exports", "_mlflow"):
        src, dst = os.path.join(work.root, name), os.path.join(root, name)
        if not os.path.lexists(dst):
            os.symlink(src, dst)
    for part in sorted(glob.glob(os.path.join(source.raw_events, "ds=*"))):
        dst = os.path.join(root, "events", os.path.basename(part))
        if not os.path.lexists(dst):
            os.symlink(part, dst)
    return Lake(root)


def arrival_events(
    lake: Lake,
    base: str,
    users: int,
    events: int,
    seed: int,
    *,
    window: tuple[dt.time, dt.time] = (dt.time(0, 0), dt.time(0, 15)),
    exclude: set[str] | None = None,
) -> pa.Table:
    """`events` events of `users` warm users (none of `exclude`) on day `base`, ts within
    `window`: impressions of the carousels (and items) their served page shows, every other
    one clicked."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from jobs.daily.page_state import STATE_DIR, StateReader
    from jobs.inputs.eventlog import GENERATED_EVENT_SCHEMA

    state = StateReader(os.path.join(lake.warehouse, "pages", f"ds={base}", STATE_DIR))
    rng = np.random.default_rng(seed)
    pool = state.index_users
    if exclude:
        # not np.isin: on object arrays it compares every pair (minutes at 50k × 577k ids)
        pool = pool[~pd.Index(pool).isin(list(exclude))]
    chosen = np.sort(rng.choice(pool, size=min(users, len(pool)), replace=False))
    shown = (
        pads.dataset(os.path.join(lake.export(base), "pages.parquet"))
        .to_table(
            columns=["user_id", "carousel_id", "slot", "item_rank", "item_id"],
            filter=pc.field("user_id").isin(chosen.tolist()),
        )
        .to_pandas()
    )
    per_user = max(events // max(len(chosen), 1), 1)
    # each user's placements in random order, the first `per_user` of them
    shown = shown.sample(frac=1.0, random_state=seed).groupby("user_id").head(per_user)
    shown = shown.sort_values(["user_id", "slot", "item_rank"]).reset_index(drop=True)
    n = len(shown)
    day = parse_ds(base)
    start = dt.datetime.combine(day, window[0], tzinfo=dt.UTC)
    span = dt.datetime.combine(day, window[1], tzinfo=dt.UTC) - start
    offset = rng.integers(0, int(span.total_seconds() * 1_000_000), n)  # within the window
    ts = pd.to_datetime(start) + pd.to_timedelta(np.sort(offset), unit="us")
    etype = np.where(np.arange(n) % 2 == 0, "impression", "click")
    cols: dict[str, Any] = {
        "event_id": [f"bench-{base}-{window[0]:%H%M}-{i}" for i in range(n)],
        "ts": ts,
        "user_id": shown["user_id"].astype(str),
        "session_id": "bench-" + shown["user_id"].astype(str),
        "event_type": etype,
        "item_id": shown["item_id"].astype(str),
        "carousel_id": shown["carousel_id"].astype(str),
        "slot": shown["slot"].astype("int32"),
        "position": shown["item_rank"].astype("int32"),
        "page": "home",
        "device": "mobile",
    }
    frame = pd.DataFrame(cols)
    fields = [f for f in GENERATED_EVENT_SCHEMA if f.name in frame.columns]
    return pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)


def bench_refresh(
    *,
    source_root: str,
    users: int,
    new_users: int,
    events: int,
    seed: int,
    overrides: list[str],
    config: str | None = None,
    modes: tuple[str, ...] = ("cold", "resident", "connect", "worker", "airflow"),
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The refresh measured in each of `modes` on the bench pipeline's export (see the module
    docstring); {"users", "base", and a report per mode}."""
    from serving_export.http.server import start_in_thread
    from serving_export.publish import current_ds

    source = Lake(source_root)
    work = Lake(os.path.join(source.root, WORK_DIR))
    if not os.path.exists(work.current):
        raise FileNotFoundError(
            f"no published export under {work.exports}: run `homepage bench pipeline --users "
            f"{users}` first (the refresh works on its daily run)"
        )
    lake = refresh_lake(source, work)
    base = current_ds(lake)
    result: dict[str, Any] = {"users": users, "base": base}
    thread, port, stop = start_in_thread(lake, reload_interval_s=0.2)
    try:
        _wait(lambda: _get(port, "/readyz")[0] == 200, 120)
        args = ["--lake", lake.root] + (["--config", config] if config else [])
        for kv in overrides:
            args += ["--set", kv]
        for mode in modes:
            _clean_day(lake, base)
            say(f"[{users:,} users] {mode} refresh: {events:,} events of {new_users:,} users ...")
            measure = {
                "cold": _cold,
                "resident": _resident,
                "connect": _connect,
                "worker": _worker,
                "airflow": _airflow,
            }[mode]
            result[mode] = measure(_Setting(lake, base, port, args, new_users, events, seed, say))
    finally:
        stop()
    return result


def _clean_day(lake: Lake, base: str) -> None:
    """Day B as the daily run left it: no intra-day windows, deltas or events yet."""
    shutil.rmtree(os.path.join(lake.warehouse, "refresh"), ignore_errors=True)
    shutil.rmtree(os.path.join(lake.exports, "deltas"), ignore_errors=True)
    part = lake.raw_events_ds(base)
    shutil.rmtree(part, ignore_errors=True)
    os.makedirs(part)


def _land(lake: Lake, base: str, table: pa.Table, name: str) -> float:
    """Write `table` into events/ds=B atomically; the arrival time (perf_counter)."""
    part = lake.raw_events_ds(base)
    tmp = os.path.join(part, f".{name}.tmp")
    pq.write_table(table, tmp)
    t = time.perf_counter()
    os.replace(tmp, os.path.join(part, name))
    return t


def _served_after(port: int, table: pa.Table, wm: dt.datetime, t_arrival: float) -> float:
    """Seconds from arrival until a sample of `table`'s users are served with `wm`'s pages."""
    import orjson

    sample = sorted(set(table["user_id"].to_pylist()))[:: max(table.num_rows // 400, 1)][:200]
    stamp = wm.strftime("%Y-%m-%dT%H:%M:%SZ")

    def refreshed() -> bool:
        for u in sample:
            status, body = _get(port, f"/v1/users/{u}/homepage")
            if status != 200 or orjson.loads(body).get("refreshed_at") != stamp:
                return False
        return True

    _wait(refreshed, 120)
    return time.perf_counter() - t_arrival


@dataclass(frozen=True)
class _Setting:
    """What both measurements share."""

    lake: Lake
    base: str
    port: int  # the lookup server's
    args: list[str]  # the refresh command's --lake, --config, --set
    new_users: int
    events: int
    seed: int
    say: Callable[[str], None]


def _cold(b: _Setting) -> dict[str, Any]:
    """One `homepage refresh` process for the window B 00:15 (a DAG run's cost)."""
    lake, base, port, args = b.lake, b.base, b.port, b.args
    new_users, events, seed = b.new_users, b.events, b.seed
    wm = dt.datetime.combine(parse_ds(base), dt.time(0, 15), tzinfo=dt.UTC)
    table = arrival_events(lake, base, new_users, events, seed)
    cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", *args, "--watermark", wm.isoformat()]
    log_path = os.path.join(lake.root, f"bench-refresh-cold-{base}.log")
    t_arrival = _land(lake, base, table, EVENTS_FILE)
    measured = run_measured(cmd, log_path)
    if measured["exit"] != 0:
        raise RuntimeError(f"the refresh failed (exit {measured['exit']}); see {log_path}")
    served_s = _served_after(port, table, wm, t_arrival)
    return _report(lake, base, wm, table, measured["s"], served_s, measured, log_path)


def _resident(b: _Setting) -> dict[str, Any]:
    """A `homepage refresh --watermarks-from -` worker: a small warm-up window B 00:15, then
    the measured one, B 00:30."""
    lake, base, port, args, say = b.lake, b.base, b.port, b.args, b.say
    warm_wm, wm, warm, table = _warm_and_measured(b)
    cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", *args, "--watermarks-from", "-"]
    log_path = os.path.join(lake.root, f"bench-refresh-resident-{base}.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
        )
        peak, done = _sample_peak(proc.pid)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            _land(lake, base, warm, "bench-warmup.parquet")
            t0 = time.perf_counter()
            warm_out = _ask(proc, warm_wm)
            warm_s = time.perf_counter() - t0
            say(f"  warm-up window {warm_wm:%H:%MZ}: {warm_out.get('seconds')} s")
            t_arrival = _land(lake, base, table, EVENTS_FILE)
            out = _ask(proc, wm)
            refresh_s = time.perf_counter() - t_arrival
            served_s = _served_after(port, table, wm, t_arrival)
            proc.stdin.close()
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
            done.set()
    if code != 0:
        raise RuntimeError(f"the refresh worker exited with {code}; see {log_path}")
    mem = {
        "peak_gb": round(peak[0] / 1024**3, 2),
        "peak_anon_gb": round(peak[1] / 1024**3, 2),
    }
    report = _report(lake, base, wm, table, round(refresh_s, 1), served_s, mem, log_path)
    report["window_s"] = out.get("seconds")
    report["warmup"] = {
        "watermark": warm_wm.isoformat(),
        "events": warm.num_rows,
        "users": len(set(warm["user_id"].to_pylist())),
        "process_start_to_done_s": round(warm_s, 1),
        "window_s": warm_out.get("seconds"),
    }
    return report


def _warm_and_measured(
    b: _Setting,
) -> tuple[dt.datetime, dt.datetime, pa.Table, pa.Table]:
    """The warm-up window B 00:15 with its events (1% of the measured ones, of other users),
    then the measured window B 00:30 with its events."""
    day = parse_ds(b.base)
    warm_wm = dt.datetime.combine(day, dt.time(0, 15), tzinfo=dt.UTC)
    wm = dt.datetime.combine(day, dt.time(0, 30), tzinfo=dt.UTC)
    table = arrival_events(
        b.lake, b.base, b.new_users, b.events, b.seed, window=(dt.time(0, 15), dt.time(0, 30))
    )
    warm = arrival_events(
        b.lake,
        b.base,
        max(b.new_users // 100, 1),
        max(b.events // 100, 1),
        b.seed + 1,
        exclude=set(table["user_id"].to_pylist()),
    )
    return warm_wm, wm, warm, table


def _sample_peak(pid: int) -> tuple[list[int], threading.Event]:
    """Sample the PSS and anonymous PSS of `pid`'s process tree once a second into the returned
    [peak, peak_anon] (bytes) until the returned event is set."""
    peak, done = [0, 0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            pss, anon = tree_memory(pid)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], anon)
            done.wait(1.0)

    threading.Thread(target=sample, daemon=True).start()
    return peak, done


def _connect(b: _Setting) -> dict[str, Any]:
    """The DAG's four tasks as four processes on a warm Spark Connect server."""
    return _on_server(b, "connect")


def _worker(b: _Setting) -> dict[str, Any]:
    """The DAG's four tasks as four processes that hand their steps to a warm refresh worker."""
    return _on_server(b, "worker")


def _on_server(b: _Setting, kind: str) -> dict[str, Any]:
    """The DAG's four tasks as four processes with a resident server (`kind`: a Spark Connect
    server or a refresh worker): a warm-up window B 00:15, then the measured one, B 00:30."""
    import socket

    lake, base, port, args, say = b.lake, b.base, b.port, b.args, b.say
    warm_wm, wm, warm, table = _warm_and_measured(b)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sv_port = sock.getsockname()[1]
    if kind == "connect":
        # the server gets the steps' Spark settings (--config, --set), not their lake
        server_args = [a for a in args if a != "--lake" and a != lake.root]
        server_cmd = ["spark-connect", "--port", str(sv_port), *server_args]
        setting = f"refresh.spark_remote=sc://127.0.0.1:{sv_port}"
    else:  # the worker takes each step's lake and config from the step
        server_cmd = ["refresh-server", "--port", str(sv_port)]
        setting = f"refresh.worker_url=http://127.0.0.1:{sv_port}"
    log_path = os.path.join(lake.root, f"bench-refresh-{kind}-{base}.log")
    step_args = [*args, "--set", setting]
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli.main", *server_cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        peak, done = _sample_peak(server.pid)  # the server's; the steps' is measured per step
        try:
            t0 = time.perf_counter()
            _wait_port(sv_port, server, 180)
            started_s = time.perf_counter() - t0
            _land(lake, base, warm, "bench-warmup.parquet")
            warm_steps = _steps(step_args, warm_wm, log_path)
            say(
                f"  server up in {started_s:.1f} s; warm-up window {warm_wm:%H:%MZ}: "
                f"{sum(s['s'] for s in warm_steps.values()):.1f} s"
            )
            t_arrival = _land(lake, base, table, EVENTS_FILE)
            steps = _steps(step_args, wm, log_path)
            refresh_s = time.perf_counter() - t_arrival
            served_s = _served_after(port, table, wm, t_arrival)
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
            done.set()
    step_peak = max(s["peak_gb"] for s in steps.values())
    mem = {
        "peak_gb": round(peak[0] / 1024**3 + step_peak, 2),
        "peak_anon_gb": round(
            peak[1] / 1024**3 + max(s["peak_anon_gb"] for s in steps.values()), 2
        ),
    }
    report = _report(lake, base, wm, table, round(refresh_s, 1), served_s, mem, log_path)
    report["task_s"] = {name: s["s"] for name, s in steps.items()}
    report["server"] = {
        "kind": kind,
        "start_s": round(started_s, 1),
        "peak_gb": round(peak[0] / 1024**3, 2),
        "warmup_window_s": round(sum(s["s"] for s in warm_steps.values()), 1),
    }
    return report


def _airflow(b: _Setting) -> dict[str, Any]:
    """`homepage_refresh` DAG runs under the Airflow scheduler (LocalExecutor, one task at a
    time, an execution API server), the tasks on a warm refresh worker: a warm-up run B 00:15,
    then the measured run B 00:30, triggered as its events land. A fresh Airflow home (SQLite)
    under the refresh lake each time."""
    from jobs.runner import airflow_runs as ar

    lake, base, port, args, say = b.lake, b.base, b.port, b.args, b.say
    home = os.path.join(lake.root, "_airflow")
    shutil.rmtree(home, ignore_errors=True)
    env = ar._configure_airflow(home)
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType

    with create_session() as session:
        ar._sync_dag(session)
    with create_session() as session:
        session.get(DagModel, REFRESH_DAG).is_paused = False
    warm_wm, wm, warm, table = _warm_and_measured(b)
    worker_port, api_port = ar._free_port(), ar._free_port()
    overrides = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
    overrides["refresh.worker_url"] = f"http://127.0.0.1:{worker_port}"
    config = args[args.index("--config") + 1] if "--config" in args else ""
    log_path = os.path.join(lake.root, f"bench-refresh-airflow-{base}.log")
    penv = ar.scheduler_env(env, api_port)
    procs: list[subprocess.Popen[bytes]] = []
    samplers: list[threading.Event] = []

    def start(*cmd: str, environ: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *cmd],
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped whole, the executor's workers included
            )
        procs.append(proc)
        return proc

    def dag_run(w: dt.datetime, label: str) -> Any:
        run = trigger_dag(
            REFRESH_DAG,
            triggered_by=DagRunTriggeredByType.CLI,
            run_id=f"bench-{label}-{w:%Y%m%dT%H%M}-{time.time_ns()}",
            logical_date=w,
            conf={
                "lake": lake.root,
                "watermark": w.isoformat(),
                "overrides": overrides,
                "config": config,
            },
        )
        while True:
            with create_session() as session:
                r = session.query(DagRun).filter_by(dag_id=REFRESH_DAG, run_id=run.run_id).one()
                if r.state in (DagRunState.SUCCESS, DagRunState.FAILED):
                    tis = sorted(
                        (
                            (t.task_id, t.start_date, t.end_date)
                            for t in r.get_task_instances(session=session)
                        ),
                        key=lambda t: t[1],
                    )
                    if r.state != DagRunState.SUCCESS:
                        raise RuntimeError(f"DAG run {run.run_id} failed; see {log_path}")
                    return tis, r.end_date
            time.sleep(1.0)  # seldom: the metadata DB is SQLite, and the run's times come from it

    try:
        worker = start("jobs.cli.main", "refresh-server", "--port", str(worker_port))
        _wait_port(worker_port, worker, 120)
        peak, done = _sample_peak(worker.pid)
        samplers.append(done)
        start(
            "airflow",
            "api-server",
            "--apps",
            "execution",
            "-H",
            "127.0.0.1",
            "-p",
            str(api_port),
            environ=penv,
        )
        health = f"http://127.0.0.1:{api_port}/execution/health"
        _wait(lambda: _ok(health), 180)
        scheduler = start("airflow", "scheduler", "--skip-serve-logs", environ=penv)
        sched_peak, sched_done = _sample_peak(scheduler.pid)
        samplers.append(sched_done)
        _land(lake, base, warm, "bench-warmup.parquet")
        t0 = time.perf_counter()
        dag_run(warm_wm, "warmup")
        warm_s = time.perf_counter() - t0
        say(f"  warm-up DAG run {warm_wm:%H:%MZ}: {warm_s:.1f} s (scheduler and worker starts)")
        t_arrival = _land(lake, base, table, EVENTS_FILE)
        arrival = dt.datetime.now(dt.UTC)
        tis, end = dag_run(wm, "measured")
        refresh_s = (end - arrival).total_seconds()  # to the run's end, as the scheduler set it
        served_s = _served_after(port, table, wm, t_arrival)
    finally:
        for proc in reversed(procs):
            ar._stop(proc)
        for sampler in samplers:
            sampler.set()
    mem = {
        "peak_gb": round((peak[0] + sched_peak[0]) / 1024**3, 2),
        "peak_anon_gb": round((peak[1] + sched_peak[1]) / 1024**3, 2),
    }
    report = _report(lake, base, wm, table, round(refresh_s, 1), served_s, mem, log_path)
    report["task_s"] = {t: round((e - s_).total_seconds(), 1) for t, s_, e in tis}
    report["between_tasks_s"] = [
        round((tis[i + 1][1] - tis[i][2]).total_seconds(), 2) for i in range(len(tis) - 1)
    ]
    report["run_s"] = round((tis[-1][2] - tis[0][1]).total_seconds(), 1)
    report["worker_peak_gb"] = round(peak[0] / 1024**3, 2)
    report["warmup_run_s"] = round(warm_s, 1)
    return report


def _ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def _steps(args: list[str], wm: dt.datetime, log_path: str) -> dict[str, dict[str, Any]]:
    """The window's steps, each in its own process as a DAG task runs it."""
    from jobs.refresh.run import STEPS

    out = {}
    for step in STEPS:
        cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", *args]
        cmd += ["--watermark", wm.isoformat(), "--step", step]
        measured = run_measured(cmd, log_path)
        if measured["exit"] != 0:
            raise RuntimeError(
                f"refresh step {step} failed (exit {measured['exit']}); see {log_path}"
            )
        out[step] = measured
    return out


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited ({proc.returncode})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no Spark Connect server on port {port} after {timeout} s"
                ) from None
            time.sleep(0.2)


def _ask(proc: subprocess.Popen[str], wm: dt.datetime) -> dict[str, Any]:
    """Hand the worker a watermark; its outcome line (raises when the window failed)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(wm.isoformat() + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the refresh worker exited (code {proc.wait()}) during {wm}")
    out = json.loads(line)
    if not out.get("ok"):
        raise RuntimeError(f"refresh window {wm} failed: {out.get('error')}")
    return out


def _report(
    lake: Lake,
    base: str,
    wm: dt.datetime,
    table: pa.Table,
    refresh_s: float,
    served_s: float,
    mem: dict[str, Any],
    log_path: str,
) -> dict[str, Any]:
    from jobs.refresh import run as refresh

    win = refresh.window_dir(lake, base, wm)
    steps = {
        name: _read(os.path.join(win, f"{name}.json")) for name in ("ingest", "priors", "pages")
    }
    pages = steps["pages"]
    return {
        "watermark": wm.isoformat(),
        "new_events": table.num_rows,
        "new_event_users": int(len(set(table["user_id"].to_pylist()))),
        "accepted": steps["ingest"].get("counts", {}).get("accepted"),
        "refresh_s": refresh_s,
        "refresh_peak_gb": mem["peak_gb"],
        "refresh_peak_anon_gb": mem.get("peak_anon_gb"),
        "step_s": {
            "ingest": steps["ingest"].get("seconds"),
            "priors": steps["priors"].get("seconds"),
            "pages": round(sum((pages.get("timings_s") or {}).values()), 3),
        },
        "pages_parts_s": pages.get("timings_s"),
        "arrival_to_served_s": round(served_s, 1),
        "delta_users": pages.get("delta_users"),
        "delta_rows": pages.get("delta_rows"),
        "delta_mb": round((pages.get("delta_bytes") or 0) / 1e6, 1),
        "rebuilt_users": pages.get("rebuilt_users"),
        "carried_users": pages.get("carried_users"),
        "log": log_path,
    }


def _read(path: str) -> dict[str, Any]:
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _wait(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError("the server did not show the refreshed pages in time")
