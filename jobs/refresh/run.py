"""Intra-day refresh: new events and stock changes reach the pages within minutes, no retrain.

A refresh runs for a *watermark* `wm` (a UTC time on the `refresh.every_minutes` grid) against
the *base*, the daily export `exports/CURRENT` names (ds = B, built from events before B). Its
four steps, one DAG task each (`homepage_refresh`), or all in one process (`homepage refresh`):

1. `ingest` — the raw events of the partitions B .. date(wm) with ts in [lo, wm), where
   lo = previous watermark − `refresh.allowed_lateness_minutes` (B 00:00 for the day's first
   window), that no earlier window of the day accepted or quarantined, are checked with the
   daily ingest's rules (`features.events.flag_bad_rows`: bad rows are quarantined with their
   reason, a window above `ingest.max_bad_share` fails after writing its quarantine) and
   appended to the day's intra-day log `warehouse/refresh/ds=B/wm=<stamp>/events`. So a
   duplicate of an accepted event is ignored, a late event (ts before the previous watermark,
   within the allowed lateness) is picked up by the next window, and nothing is counted twice.
   Events later than that are left to the next daily run, which ingests the whole day anyway.
2. `priors` — for the users with new events: today's trials from ALL their intra-day events so
   far (`features.priors.carousel_trials`, counted without decay), added to the daily prior
   state of B (`advance_state`), then the posterior with the daily run's carousel-level priors
   (`user_carousel_priors`): the same functions as the daily features. Recomputing a user's
   day from its whole intra-day log (instead of adding the window's trials) keeps a visit that
   spans two windows one trial. The table is cumulative: the users of earlier windows of the
   day are carried over.
3. `pages` — the users whose pages change: those with new events, and those whose served page
   shows an item the latest catalogue (`<lake>/items`) has out of stock while the base had it in
   stock. Pages with a stored state (warm users, `warehouse/pages/ds=B/state`) are rebuilt from
   it with the refreshed posteriors (α = λ · Σ r̂/log(1+l), γ, the calibrated carousel engagement
   q = calibration(φ), the same beam search, assembly and per-user random streams as the daily
   rank: no model is loaded or retrained); out-of-stock items leave every pool, so the carousel
   fills from deeper in its pool. Other pages (cold users' context pages, the default pages) only
   lose their out-of-stock items. The delta holds every page changed since B (earlier windows'
   pages are carried over unless rebuilt now), is checked with the export's page rules, and is
   written as `exports/deltas/ds=B/wm=<stamp>/` (pages.parquet, pages.lmdb, MANIFEST.json),
   each page with `refreshed_at` = the watermark.
4. `publish` — verifies the delta and atomically points `exports/deltas/ds=B/CURRENT` at it,
   unless the daily export has moved on; keeps the newest `refresh.keep_last` deltas. The lookup
   server overlays the newest delta on the daily export (the delta wins for its users). The next
   daily publish drops the deltas of older days.

Re-running a window rebuilds its outputs from the same inputs (the raw files and the windows
before it), so they come out the same: every output is replaced whole. The daily publish drops
older days' intra-day logs (`cleanup`).

This module holds publish and the runner; the windows are in `jobs.refresh.windows`, the steps in `jobs.refresh.events`
(ingest, priors) and `jobs.refresh.pages` (pages).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

from jobs.core.config import Config
from jobs.core.lake import Lake, local_path
from jobs.refresh.windows import (
    STEPS,
    delta_dir,
    find_window,
    floor_watermark,
    parse_watermark,
    stamp,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 4. publish


def publish(lake: Lake, wm: dt.datetime, cfg: Config) -> dict[str, Any]:
    """Verify the window's delta and make it the served one (unless the day moved on)."""
    from serving_export.export.verify import verify_export
    from serving_export.publish import current_ds, point_delta, prune_deltas

    win = find_window(lake, wm)
    path = local_path(delta_dir(lake, win.base, wm))
    manifest = verify_export(path)
    current = current_ds(lake)
    if current != win.base:
        log.warning(
            "refresh %s: the published export is now %s, not %s: delta not published",
            stamp(wm),
            current,
            win.base,
        )
        return {
            "base": win.base,
            "watermark": wm.isoformat(),
            "published": False,
            "current": current,
        }
    served = point_delta(lake, win.base, stamp(wm))
    pruned = prune_deltas(lake, win.base, keep_last=cfg.refresh.keep_last)
    return {
        "base": win.base,
        "watermark": wm.isoformat(),
        "published": served == stamp(wm),
        "served": served,
        "users": manifest["users"],
        "pruned": pruned,
    }


# ---------------------------------------------------------------- running


def run_step(
    name: str,
    lake_root: str,
    watermark: str | dt.datetime,
    overrides: Any = None,
    config_path: str | None = None,
    *,
    local: bool = False,
) -> dict[str, Any]:
    """One step for one watermark (the DAG's tasks and `run`). With `refresh.worker_url` set
    (and not `local`), the step runs on that resident worker (`jobs.refresh.server`)."""
    from jobs.core.config import load_config

    if name not in STEPS:
        raise ValueError(f"unknown refresh step {name!r}; steps are {', '.join(STEPS)}")
    cfg = load_config(config_path, overrides)
    wm = parse_watermark(watermark)
    if cfg.refresh.worker_url and not local:
        from jobs.refresh.client import call_step

        return call_step(
            cfg.refresh.worker_url,
            name,
            os.path.abspath(lake_root) if "://" not in lake_root else lake_root,
            wm.isoformat(),
            overrides,
            config_path,
        )
    lake = Lake(lake_root)
    from jobs.refresh.events import ingest, priors
    from jobs.refresh.pages import pages

    fn = {"ingest": ingest, "priors": priors, "pages": pages, "publish": publish}[name]
    t0 = time.perf_counter()
    result = fn(lake, wm, cfg)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def run_task(
    name: str,
    lake_root: str,
    watermark: str | dt.datetime,
    overrides: dict[str, Any] | None,
    config_path: str | None,
    *,
    every_minutes: int,
) -> dict[str, Any]:
    """One task of the `homepage_refresh` DAG: step `name` for `watermark`, rounded down to the
    grid of the run's `refresh.every_minutes` (the schedule's `every_minutes` unless the run's
    overrides say otherwise)."""
    from jobs.core.config import load_config

    overrides = {"refresh.every_minutes": every_minutes, **(overrides or {})}
    cfg = load_config(config_path, overrides)
    wm = floor_watermark(parse_watermark(watermark), cfg.refresh.every_minutes)
    return run_step(name, lake_root, wm, overrides, config_path)


def run(
    lake_root: str,
    watermark: str | dt.datetime,
    overrides: Any = None,
    config_path: str | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Every step for one watermark, in one process."""
    results: dict[str, Any] = {}
    for name in STEPS:
        if progress:
            progress(f"refresh {name} ...")
        results[name] = run_step(name, lake_root, watermark, overrides, config_path)
    return results
