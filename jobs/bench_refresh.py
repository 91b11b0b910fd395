"""`homepage bench refresh`: from event arrival to an updated page served.

Works on the lake of `homepage bench pipeline` for the same size (its `_bench_pipeline` work
lake holds a published daily export, `ds` = B, and the page state behind it). A refresh lake
`<lake>/_bench_refresh` shares that work lake's `warehouse` and `exports` (symlinks) and has its
own `events`: the source lake's partitions linked one by one, plus day B, which the benchmark
writes. So the generated lake itself never changes.

One measurement:
  1. `new_users` warm users (a seeded sample of the page state's users) each get
     `events / new_users` events on day B before the watermark B 00:15: impressions of the
     carousels their served page shows, and clicks on some of them (so their Beta priors move).
  2. A lookup server (this process, one worker) serves the lake and is ready.
  3. The events file lands in `events/ds=B` (the "arrival"); `homepage refresh` runs in its own
     process (what one `homepage_refresh` run does: ingest, priors, pages, publish), timed with
     its peak process-tree memory (PSS, Python and the Spark JVM).
  4. The benchmark polls the server until a sample of the changed users' pages carry the
     watermark as `refreshed_at`: arrival → served.
Reported: wall times (refresh process, each step as the steps report it, arrival → served),
the delta's users and bytes, peak memory. Earlier benchmark windows of B are removed first, so
each measurement is the day's first window.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.bench_pipeline import WORK_DIR, run_measured
from jobs.lake import Lake, parse_ds

REFRESH_DIR = "_bench_refresh"
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


def arrival_events(lake: Lake, base: str, users: int, events: int, seed: int) -> pa.Table:
    """`events` events of `users` warm users on day `base` before 00:15: impressions of the
    carousels (and items) their served page shows, every other one clicked."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from jobs.generate import GENERATED_EVENT_SCHEMA
    from jobs.page_state import STATE_DIR, StateReader

    state = StateReader(os.path.join(lake.warehouse, "pages", f"ds={base}", STATE_DIR))
    rng = np.random.default_rng(seed)
    pool = state.index_users
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
    start = dt.datetime.combine(parse_ds(base), dt.time(), tzinfo=dt.UTC)
    offset = rng.integers(0, 15 * 60 * 1_000_000, n)  # within [00:00, 00:15)
    ts = pd.to_datetime(start) + pd.to_timedelta(np.sort(offset), unit="us")
    etype = np.where(np.arange(n) % 2 == 0, "impression", "click")
    cols: dict[str, Any] = {
        "event_id": [f"bench-{base}-{i}" for i in range(n)],
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
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """One timed refresh window on the bench pipeline's published export (see the docstring)."""
    import orjson

    from jobs import refresh
    from serving_export.publish import current_ds
    from serving_export.server import start_in_thread

    source = Lake(source_root)
    work = Lake(os.path.join(source.root, WORK_DIR))
    if not os.path.exists(work.current):
        raise FileNotFoundError(
            f"no published export under {work.exports}: run `homepage bench pipeline --users "
            f"{users}` first (the refresh works on its daily run)"
        )
    lake = refresh_lake(source, work)
    base = current_ds(lake)
    wm = dt.datetime.combine(parse_ds(base), dt.time(0, 15), tzinfo=dt.UTC)
    # a clean first window of the day
    shutil.rmtree(os.path.join(lake.warehouse, "refresh"), ignore_errors=True)
    shutil.rmtree(os.path.join(lake.exports, "deltas"), ignore_errors=True)
    part = lake.raw_events_ds(base)
    shutil.rmtree(part, ignore_errors=True)
    os.makedirs(part)
    say(f"[{users:,} users] making {events:,} events of {new_users:,} users on {base} ...")
    table = arrival_events(lake, base, new_users, events, seed)
    sample = sorted(set(table["user_id"].to_pylist()))[:: max(table.num_rows // 400, 1)][:200]

    thread, port, stop = start_in_thread(lake, reload_interval_s=0.2)
    try:
        _wait(lambda: _get(port, "/readyz")[0] == 200, 120)
        cmd = [sys.executable, "-m", "jobs.cli", "refresh", "--lake", lake.root]
        cmd += ["--watermark", wm.isoformat()]
        if config:
            cmd += ["--config", config]
        for kv in overrides:
            cmd += ["--set", kv]
        log_path = os.path.join(lake.root, f"bench-refresh-{base}.log")
        tmp = os.path.join(part, f".{EVENTS_FILE}.tmp")
        pq.write_table(table, tmp)
        t_arrival = time.perf_counter()
        os.replace(tmp, os.path.join(part, EVENTS_FILE))  # the events land
        say(f"[{users:,} users] refresh {wm:%Y-%m-%dT%H:%MZ} ...")
        measured = run_measured(cmd, log_path)
        if measured["exit"] != 0:
            raise RuntimeError(f"the refresh failed (exit {measured['exit']}); see {log_path}")
        stamp = wm.strftime("%Y-%m-%dT%H:%M:%SZ")

        def refreshed() -> bool:
            for u in sample:
                status, body = _get(port, f"/v1/users/{u}/homepage")
                if status != 200 or orjson.loads(body).get("refreshed_at") != stamp:
                    return False
            return True

        _wait(refreshed, 120)
        served_s = time.perf_counter() - t_arrival
    finally:
        stop()
    win = refresh.window_dir(lake, base, wm)
    steps = {
        name: _read(os.path.join(win, f"{name}.json")) for name in ("ingest", "priors", "pages")
    }
    pages = steps["pages"]
    result = {
        "users": users,
        "base": base,
        "watermark": wm.isoformat(),
        "new_events": table.num_rows,
        "new_event_users": int(len(set(table["user_id"].to_pylist()))),
        "accepted": steps["ingest"].get("counts", {}).get("accepted"),
        "refresh_s": measured["s"],
        "refresh_peak_gb": measured["peak_gb"],
        "refresh_peak_anon_gb": measured.get("peak_anon_gb"),
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
        "log": log_path,
    }
    return result


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
