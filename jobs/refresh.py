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

This module holds the windows, publish and the runner; the steps are in `jobs.refresh_events`
(ingest, priors) and `jobs.refresh_pages` (pages).
"""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from jobs import io
from jobs.config import Config
from jobs.lake import Lake, join, local_path, parse_ds

log = logging.getLogger(__name__)

STAMP = "%Y%m%dT%H%M%SZ"
STEPS: tuple[str, ...] = ("ingest", "priors", "pages", "publish")
REBUILD_CHUNK = 4096  # pages rebuilt per batch
PRIOR_COLUMNS = ("user_id", "carousel_id", "a", "b", "lam", "trials", "successes")


class NoExport(Exception):
    """Nothing is published yet: there is no daily export to refresh."""


class RefreshError(Exception):
    """A refresh cannot run for this watermark (named reason)."""


# ---------------------------------------------------------------- watermarks and paths


def parse_watermark(value: str | dt.datetime) -> dt.datetime:
    """A UTC watermark from an ISO time (`2026-01-15T10:15`, `...Z`, `+00:00`) or a datetime."""
    if isinstance(value, dt.datetime):
        t = value
    else:
        text = str(value).strip()
        try:
            t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            try:
                t = dt.datetime.strptime(text, STAMP).replace(tzinfo=dt.UTC)
            except ValueError:
                raise RefreshError(
                    f"watermark {value!r} is not an ISO time like 2026-01-15T10:15Z"
                ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.astimezone(dt.UTC)


def floor_watermark(t: dt.datetime, every_minutes: int) -> dt.datetime:
    """`t` rounded down to the refresh grid (multiples of `every_minutes` since midnight UTC)."""
    t = parse_watermark(t)
    day = t.replace(hour=0, minute=0, second=0, microsecond=0)
    step = dt.timedelta(minutes=every_minutes)
    return day + step * ((t - day) // step)


def stamp(wm: dt.datetime) -> str:
    return wm.astimezone(dt.UTC).strftime(STAMP)


def refresh_root(lake: Lake, base: str) -> str:
    return join(lake.warehouse, "refresh", f"ds={base}")


def window_dir(lake: Lake, base: str, wm: dt.datetime) -> str:
    return join(refresh_root(lake, base), f"wm={stamp(wm)}")


def deltas_root(lake: Lake, base: str) -> str:
    return join(lake.exports, "deltas", f"ds={base}")


def delta_dir(lake: Lake, base: str, wm: dt.datetime) -> str:
    return join(deltas_root(lake, base), f"wm={stamp(wm)}")


def _day_start(ds: str) -> dt.datetime:
    return dt.datetime.combine(parse_ds(ds), dt.time(), tzinfo=dt.UTC)


def windows(lake: Lake, base: str, before: dt.datetime | None = None) -> list[dt.datetime]:
    """Watermarks of the day's ingested windows (their ingest.json exists), oldest first."""
    root = local_path(refresh_root(lake, base))
    out = []
    for path in glob.glob(os.path.join(root, "wm=*", "ingest.json")):
        wm = dt.datetime.strptime(path.split("wm=")[-1].split(os.sep)[0], STAMP)
        wm = wm.replace(tzinfo=dt.UTC)
        if before is None or wm < before:
            out.append(wm)
    return sorted(out)


@dataclass(frozen=True)
class Window:
    base: str  # the daily export's ds
    wm: dt.datetime  # this window's watermark
    prev: dt.datetime | None  # the previous window of the day
    lo: dt.datetime  # events with ts >= lo (and not seen before) are read

    @property
    def start(self) -> dt.datetime:
        return _day_start(self.base)


def open_window(lake: Lake, wm: dt.datetime, cfg: Config) -> Window:
    """The window for `wm` against the published daily export (for the ingest step)."""
    from serving_export.publish import current_ds

    if io.is_remote(lake.root):
        raise RefreshError(
            "intra-day refresh needs a local lake for now (the page state and the deltas are "
            "local files); run the daily pipeline only on a remote lake"
        )
    base = current_ds(lake)
    if base is None:
        raise NoExport(f"nothing is published under {lake.exports}: run the daily pipeline first")
    start = _day_start(base)
    if wm <= start:
        raise RefreshError(
            f"watermark {wm.isoformat()} is not after the published export's day {base} began: "
            "that export already covers every event before it"
        )
    earlier = windows(lake, base, before=wm)
    prev = earlier[-1] if earlier else None
    lateness = dt.timedelta(minutes=cfg.refresh.allowed_lateness_minutes)
    lo = max(start, prev - lateness) if prev is not None else start
    return Window(base=base, wm=wm, prev=prev, lo=lo)


def find_window(lake: Lake, wm: dt.datetime) -> Window:
    """The window an earlier step of this watermark opened (the newest base that has it)."""
    hits = sorted(
        glob.glob(
            os.path.join(
                local_path(lake.warehouse), "refresh", "ds=*", f"wm={stamp(wm)}", "ingest.json"
            )
        )
    )
    if not hits:
        raise RefreshError(
            f"no ingested refresh window for {wm.isoformat()}: run its ingest step first"
        )
    report = io.read_json(hits[-1])
    prev = report.get("previous_watermark")
    return Window(
        base=report["base"],
        wm=wm,
        prev=parse_watermark(prev) if prev else None,
        lo=parse_watermark(report["read_from"]),
    )


def served_pages(lake: Lake, base: str) -> pd.DataFrame:
    """The page rows the lookup server serves over export `base`: the daily export's, each
    user's replaced by the published delta's where it has one."""
    from serving_export.publish import current_delta

    daily = pd.read_parquet(os.path.join(local_path(lake.export(base)), "pages.parquet"))
    served = current_delta(lake, base)
    if served is None:
        return daily
    path = os.path.join(local_path(deltas_root(lake, base)), f"wm={served}", "pages.parquet")
    delta = pd.read_parquet(path)
    keep = daily[~daily["user_id"].isin(set(delta["user_id"]))]
    return pd.concat([keep, delta[daily.columns]], ignore_index=True)


# ---------------------------------------------------------------- 4. publish


def publish(lake: Lake, wm: dt.datetime, cfg: Config) -> dict[str, Any]:
    """Verify the window's delta and make it the served one (unless the day moved on)."""
    from serving_export.publish import current_ds, point_delta, prune_deltas
    from serving_export.writer import verify_export

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
    (and not `local`), the step runs on that resident worker (`jobs.refresh_server`)."""
    from jobs.config import load_config

    if name not in STEPS:
        raise ValueError(f"unknown refresh step {name!r}; steps are {', '.join(STEPS)}")
    cfg = load_config(config_path, overrides)
    wm = parse_watermark(watermark)
    if cfg.refresh.worker_url and not local:
        from jobs.refresh_server import call_step

        return call_step(
            cfg.refresh.worker_url,
            name,
            os.path.abspath(lake_root) if "://" not in lake_root else lake_root,
            wm.isoformat(),
            overrides,
            config_path,
        )
    lake = Lake(lake_root)
    from jobs.refresh_events import ingest, priors
    from jobs.refresh_pages import pages

    fn = {"ingest": ingest, "priors": priors, "pages": pages, "publish": publish}[name]
    t0 = time.perf_counter()
    result = fn(lake, wm, cfg)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


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


def cleanup(lake: Lake, keep_base: str) -> list[str]:
    """Remove the intra-day logs of days other than `keep_base` (the daily ingest has them)."""
    root = local_path(join(lake.warehouse, "refresh"))
    gone = []
    for path in glob.glob(os.path.join(root, "ds=*")):
        ds = path.rsplit("ds=", 1)[-1]
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", ds) and ds != keep_base:
            shutil.rmtree(path, ignore_errors=True)
            gone.append(ds)
    return gone
