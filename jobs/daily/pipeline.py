"""The daily pipeline's steps, run in one process (`homepage pipeline`) or one per DAG task."""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import time
from collections.abc import Callable
from typing import Any

from jobs.core import io
from jobs.core.config import Config, load_config
from jobs.core.lake import Lake, fmt_ds, parse_ds

log = logging.getLogger(__name__)

# (step name, "module:function"); each function takes (lake, ds, cfg) and returns a JSON-able dict
STEPS: tuple[tuple[str, str], ...] = (
    ("ingest", "jobs.daily.ingest:run"),
    ("build_features", "jobs.daily.build_features:run"),
    ("train", "jobs.daily.train:run"),
    ("promote", "jobs.daily.promote:run"),
    ("rank", "jobs.daily.rank:run"),
    ("export", "jobs.daily.export:run"),
    ("publish", "jobs.daily.export:publish_newest"),  # never moves CURRENT back to a past day
    # after the pages are published: fails (GateRejected) when the day's gate rejected
    ("gate_alert", "jobs.daily.gate_alert:run"),
)
STEP_NAMES = tuple(name for name, _ in STEPS)


def default_ds(lake: Lake) -> str:
    """The day after the latest raw event partition: pages for 'tomorrow' from all data so far."""
    parts = io.partitions(lake.raw_events)
    if not parts:
        raise FileNotFoundError(
            f"no event partitions under {lake.raw_events}: generate or import a lake first"
        )
    return fmt_ds(parse_ds(parts[-1]) + dt.timedelta(days=1))


def run_step(
    name: str,
    lake_root: str,
    ds: str,
    overrides: dict[str, Any] | list[str] | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Run one step for `ds`. Used by the DAG tasks and by `run_pipeline`."""
    if name not in STEP_NAMES:
        raise ValueError(f"unknown step {name!r}; steps are {', '.join(STEP_NAMES)}")
    parse_ds(ds)
    cfg = load_config(config_path, overrides)
    lake = Lake(lake_root)
    module, func = dict(STEPS)[name].split(":")
    fn: Callable[[Lake, str, Config], dict[str, Any]] = getattr(
        importlib.import_module(module), func
    )
    t0 = time.perf_counter()
    result = fn(lake, ds, cfg)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def run_pipeline(
    lake_root: str,
    ds: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    *,
    config_path: str | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every step in order for one `ds` (default: the day after the latest events).

    A rejected challenger does not stop the day: promote records it, rank, export and publish
    run with the champion, and the last step (gate_alert) raises `GateRejected`, so the caller
    (and `homepage pipeline`'s exit code) still sees the rejection, after today's pages are
    published."""
    load_config(config_path, overrides)  # fail on a bad override before any work
    lake = Lake(lake_root)
    ds = ds or default_ds(lake)
    results: dict[str, Any] = {"ds": ds}
    for name in STEP_NAMES:
        progress(f"[{ds}] {name} ...")
        results[name] = run_step(name, lake.root, ds, overrides, config_path)
        progress(f"[{ds}] {name} done in {results[name]['seconds']:.1f}s")
    return results
