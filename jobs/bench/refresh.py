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

import glob
import os
import shutil
from collections.abc import Callable
from typing import Any

from jobs.bench.pipeline import WORK_DIR
from jobs.bench.refresh_airflow import airflow_run
from jobs.bench.refresh_measure import RefreshSetting, http_get, wait_until
from jobs.bench.refresh_modes import cold, connect, resident, worker
from jobs.core.lake import INPUT_TABLES, Lake

REFRESH_DIR = "_bench_refresh"


def refresh_lake(source: Lake, work: Lake) -> Lake:
    """`<source>/_bench_refresh`: the work lake's outputs, the source's inputs, own events."""
    root = os.path.join(source.root, REFRESH_DIR)
    os.makedirs(os.path.join(root, "events"), exist_ok=True)
    for name in INPUT_TABLES[1:]:  # events are linked per partition below
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
        wait_until(lambda: http_get(port, "/readyz")[0] == 200, 120)
        args = ["--lake", lake.root] + (["--config", config] if config else [])
        for kv in overrides:
            args += ["--set", kv]
        for mode in modes:
            _clean_day(lake, base)
            say(f"[{users:,} users] {mode} refresh: {events:,} events of {new_users:,} users ...")
            measure = {
                "cold": cold,
                "resident": resident,
                "connect": connect,
                "worker": worker,
                "airflow": airflow_run,
            }[mode]
            result[mode] = measure(
                RefreshSetting(lake, base, port, args, new_users, events, seed, say)
            )
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
