"""Intra-day refresh windows (see `jobs.refresh.run`): watermarks, the directories of a day's
windows and deltas, and the window a step runs in."""

from __future__ import annotations

import datetime as dt
import glob
import logging
import os
from dataclasses import dataclass

import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import HomepageError, RefreshError
from jobs.core.lake import Lake, join, local_path, parse_ds

log = logging.getLogger(__name__)

STAMP = "%Y%m%dT%H%M%SZ"
STEPS: tuple[str, ...] = ("ingest", "priors", "pages", "publish")
REBUILD_CHUNK = 4096  # pages rebuilt per batch
PRIOR_COLUMNS = ("user_id", "carousel_id", "a", "b", "lam", "trials", "successes")


class NoExport(HomepageError):
    """Nothing is published yet: there is no daily export to refresh."""


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
    return join(lake.refresh_logs, f"ds={base}")


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
