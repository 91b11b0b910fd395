"""The measurements of `homepage bench refresh` without Airflow: one process per window (cold),
a resident worker, and the DAG's tasks on a Spark Connect server or a refresh worker."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from typing import Any

from jobs.bench.pipeline import run_measured
from jobs.bench.refresh_measure import (
    EVENTS_FILE,
    RefreshSetting,
    arrival_events,
    ask_worker,
    land_events,
    run_steps,
    sample_peak,
    served_after,
    wait_port,
    warm_and_measured,
    window_report,
)
from jobs.core.errors import BenchError
from jobs.core.lake import parse_ds


def cold(b: RefreshSetting) -> dict[str, Any]:
    """One `homepage refresh` process for the window B 00:15 (a DAG run's cost)."""
    lake, base, port, args = b.lake, b.base, b.port, b.args
    new_users, events, seed = b.new_users, b.events, b.seed
    wm = dt.datetime.combine(parse_ds(base), dt.time(0, 15), tzinfo=dt.UTC)
    table = arrival_events(lake, base, new_users, events, seed)
    cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", *args, "--watermark", wm.isoformat()]
    log_path = os.path.join(lake.root, f"bench-refresh-cold-{base}.log")
    t_arrival = land_events(lake, base, table, EVENTS_FILE)
    measured = run_measured(cmd, log_path)
    if measured["exit"] != 0:
        raise BenchError(f"the refresh failed (exit {measured['exit']}); see {log_path}")
    served_s = served_after(port, table, wm, t_arrival)
    return window_report(lake, base, wm, table, measured["s"], served_s, measured, log_path)


def resident(b: RefreshSetting) -> dict[str, Any]:
    """A `homepage refresh --watermarks-from -` worker: a small warm-up window B 00:15, then
    the measured one, B 00:30."""
    lake, base, port, args, say = b.lake, b.base, b.port, b.args, b.say
    warm_wm, wm, warm, table = warm_and_measured(b)
    cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", *args, "--watermarks-from", "-"]
    log_path = os.path.join(lake.root, f"bench-refresh-resident-{base}.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1
        )
        peak, done = sample_peak(proc.pid)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            land_events(lake, base, warm, "bench-warmup.parquet")
            t0 = time.perf_counter()
            warm_out = ask_worker(proc, warm_wm)
            warm_s = time.perf_counter() - t0
            say(f"  warm-up window {warm_wm:%H:%MZ}: {warm_out.get('seconds')} s")
            t_arrival = land_events(lake, base, table, EVENTS_FILE)
            out = ask_worker(proc, wm)
            refresh_s = time.perf_counter() - t_arrival
            served_s = served_after(port, table, wm, t_arrival)
            proc.stdin.close()
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
            done.set()
    if code != 0:
        raise BenchError(f"the refresh worker exited with {code}; see {log_path}")
    mem = {
        "peak_gb": round(peak[0] / 1024**3, 2),
        "peak_anon_gb": round(peak[1] / 1024**3, 2),
    }
    report = window_report(lake, base, wm, table, round(refresh_s, 1), served_s, mem, log_path)
    report["window_s"] = out.get("seconds")
    report["warmup"] = {
        "watermark": warm_wm.isoformat(),
        "events": warm.num_rows,
        "users": len(set(warm["user_id"].to_pylist())),
        "process_start_to_done_s": round(warm_s, 1),
        "window_s": warm_out.get("seconds"),
    }
    return report


def connect(b: RefreshSetting) -> dict[str, Any]:
    """The DAG's four tasks as four processes on a warm Spark Connect server."""
    return on_server(b, "connect")


def worker(b: RefreshSetting) -> dict[str, Any]:
    """The DAG's four tasks as four processes that hand their steps to a warm refresh worker."""
    return on_server(b, "worker")


def on_server(b: RefreshSetting, kind: str) -> dict[str, Any]:
    """The DAG's four tasks as four processes with a resident server (`kind`: a Spark Connect
    server or a refresh worker): a warm-up window B 00:15, then the measured one, B 00:30."""
    import socket

    lake, base, port, args, say = b.lake, b.base, b.port, b.args, b.say
    warm_wm, wm, warm, table = warm_and_measured(b)
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
        peak, done = sample_peak(server.pid)  # the server's; the steps' is measured per step
        try:
            t0 = time.perf_counter()
            wait_port(sv_port, server, 180)
            started_s = time.perf_counter() - t0
            land_events(lake, base, warm, "bench-warmup.parquet")
            warm_steps = run_steps(step_args, warm_wm, log_path)
            say(
                f"  server up in {started_s:.1f} s; warm-up window {warm_wm:%H:%MZ}: "
                f"{sum(s['s'] for s in warm_steps.values()):.1f} s"
            )
            t_arrival = land_events(lake, base, table, EVENTS_FILE)
            steps = run_steps(step_args, wm, log_path)
            refresh_s = time.perf_counter() - t_arrival
            served_s = served_after(port, table, wm, t_arrival)
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
    report = window_report(lake, base, wm, table, round(refresh_s, 1), served_s, mem, log_path)
    report["task_s"] = {name: s["s"] for name, s in steps.items()}
    report["server"] = {
        "kind": kind,
        "start_s": round(started_s, 1),
        "peak_gb": round(peak[0] / 1024**3, 2),
        "warmup_window_s": round(sum(s["s"] for s in warm_steps.values()), 1),
    }
    return report
