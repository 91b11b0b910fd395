"""What every measurement of `homepage bench refresh` shares: the setting, the arrival events
and landing them, waiting for the refreshed pages to be served, memory sampling, the report."""

from __future__ import annotations

import datetime as dt
import json
import os
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

from jobs.bench.pipeline import read_json_or_empty, run_measured, tree_memory
from jobs.core.errors import BenchError
from jobs.core.lake import Lake, parse_ds

EVENTS_FILE = "bench-arrival.parquet"


@dataclass(frozen=True)
class RefreshSetting:
    """What both measurements share."""

    lake: Lake
    base: str
    port: int  # the lookup server's
    args: list[str]  # the refresh command's --lake, --config, --set
    new_users: int
    events: int
    seed: int
    say: Callable[[str], None]


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


def warm_and_measured(
    b: RefreshSetting,
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


def land_events(lake: Lake, base: str, table: pa.Table, name: str) -> float:
    """Write `table` into events/ds=B atomically; the arrival time (perf_counter)."""
    part = lake.raw_events_ds(base)
    tmp = os.path.join(part, f".{name}.tmp")
    pq.write_table(table, tmp)
    t = time.perf_counter()
    os.replace(tmp, os.path.join(part, name))
    return t


def served_after(port: int, table: pa.Table, wm: dt.datetime, t_arrival: float) -> float:
    """Seconds from arrival until a sample of `table`'s users are served with `wm`'s pages."""
    import orjson

    sample = sorted(set(table["user_id"].to_pylist()))[:: max(table.num_rows // 400, 1)][:200]
    stamp = wm.strftime("%Y-%m-%dT%H:%M:%SZ")

    def refreshed() -> bool:
        for u in sample:
            status, body = http_get(port, f"/v1/users/{u}/homepage")
            if status != 200 or orjson.loads(body).get("refreshed_at") != stamp:
                return False
        return True

    wait_until(refreshed, 120)
    return time.perf_counter() - t_arrival


def sample_peak(pid: int) -> tuple[list[int], threading.Event]:
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


def run_steps(args: list[str], wm: dt.datetime, log_path: str) -> dict[str, dict[str, Any]]:
    """The window's steps, each in its own process as a DAG task runs it."""
    from jobs.refresh.windows import STEPS

    out = {}
    for step in STEPS:
        cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", *args]
        cmd += ["--watermark", wm.isoformat(), "--step", step]
        measured = run_measured(cmd, log_path)
        if measured["exit"] != 0:
            raise BenchError(
                f"refresh step {step} failed (exit {measured['exit']}); see {log_path}"
            )
        out[step] = measured
    return out


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise BenchError(f"the Spark Connect server exited ({proc.returncode})") from None
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no Spark Connect server on port {port} after {timeout} s"
                ) from None
            time.sleep(0.2)


def ask_worker(proc: subprocess.Popen[str], wm: dt.datetime) -> dict[str, Any]:
    """Hand the worker a watermark; its outcome line (raises when the window failed)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(wm.isoformat() + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise BenchError(f"the refresh worker exited (code {proc.wait()}) during {wm}")
    out = json.loads(line)
    if not out.get("ok"):
        raise BenchError(f"refresh window {wm} failed: {out.get('error')}")
    return out


def window_report(
    lake: Lake,
    base: str,
    wm: dt.datetime,
    table: pa.Table,
    refresh_s: float,
    served_s: float,
    mem: dict[str, Any],
    log_path: str,
) -> dict[str, Any]:
    from jobs.refresh import windows

    win = windows.window_dir(lake, base, wm)
    steps = {
        name: read_json_or_empty(os.path.join(win, f"{name}.json"))
        for name in ("ingest", "priors", "pages")
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


def http_get(port: int, path: str) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError("the server did not show the refreshed pages in time")


def answers_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False
