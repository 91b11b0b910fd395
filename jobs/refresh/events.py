"""Steps 1 and 2 of an intra-day refresh (see `jobs.refresh.run`): ingest a window's new events,
then refresh the Beta posteriors of the users who have them."""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from typing import Any

import numpy as np
import pandas as pd

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import Lake, fmt_ds, join, local_path, parse_ds
from jobs.refresh.windows import (
    PRIOR_COLUMNS,
    RefreshError,
    Window,
    find_window,
    open_window,
    stamp,
    window_dir,
    windows,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 1. ingest


def ingest(
    lake: Lake, wm: dt.datetime, cfg: Config, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Validate and log the window's new events (see the module docstring, step 1)."""
    from jobs.core.spark import get_spark

    t0 = time.perf_counter()
    win = open_window(lake, wm, cfg)
    out = window_dir(lake, win.base, wm)
    days = _window_days(win, wm)
    files = [
        (f"events partition ds={d}, file {name}", join(lake.raw_events_ds(d), name))
        for d in days
        for name, _ in io.list_files(lake.raw_events_ds(d))
    ]
    report: dict[str, Any] = {
        "base": win.base,
        "watermark": wm.isoformat(),
        "previous_watermark": win.prev.isoformat() if win.prev else None,
        "read_from": win.lo.isoformat(),
        "partitions": days,
        "files": len(files),
        "spark": cfg.refresh.spark_remote or cfg.spark.master,
    }
    spark = get_spark(cfg.spark, remote=cfg.refresh.spark_remote)
    seen = _seen_ids(spark, lake, win)
    raw = _read_raw(spark, lake, files)
    tagged, counts = _tag_rows(raw, seen, win, wm)
    flagged, reasons = _flag_fresh(spark, lake, win, tagged, cfg, now)
    n_bad = sum(reasons.values())
    report["counts"] = {
        **counts,
        "raw": counts["in_window"],
        "accepted": counts["in_window"] - n_bad,
        "quarantined": n_bad,
        "reasons": reasons,
    }
    _write_window(out, wm, cfg, tagged, flagged, report["counts"])
    report["users"] = int(
        io.read_parquet(join(out, "events"), ["user_id"], marker=None)["user_id"].nunique()
    )
    report["seconds"] = round(time.perf_counter() - t0, 3)
    io.write_json(join(out, "ingest.json"), report)
    log.info("refresh ingest %s (base %s): %s", stamp(wm), win.base, report["counts"])
    return report


def _window_days(win: Window, wm: dt.datetime) -> list[str]:
    """The event partitions (`ds`) from the base day to the watermark's day."""
    return [
        fmt_ds(parse_ds(win.base) + dt.timedelta(days=k))
        for k in range(
            (wm - dt.timedelta(microseconds=1)).date().toordinal()
            - parse_ds(win.base).toordinal()
            + 1
        )
    ]


def _read_raw(spark: Any, lake: Lake, files: list[tuple[str, str]]) -> Any:
    """The partitions' files, checked and conformed to the event schema (empty when none)."""
    from pyspark.sql import functions as F

    from features.events import conform_events
    from jobs.core.lake import EVENT_SCHEMA, REQUIRED_EVENT_COLUMNS
    from jobs.daily.raw_files import check_files, read_groups

    groups = check_files(files, EVENT_SCHEMA, REQUIRED_EVENT_COLUMNS) if files else {}
    raw = read_groups(
        spark,
        groups,
        lambda df: conform_events(df.withColumn("ds", F.col("ds").cast("string"))),
        lake.raw_events,
    )
    if raw is None:
        raw = spark.createDataFrame([], _raw_struct())
    return raw


def _tag_rows(raw: Any, seen: Any, win: Window, wm: dt.datetime) -> tuple[Any, dict[str, int]]:
    """Each row tagged (`_bucket`) with where it falls against the window and the rows earlier
    windows took (cached); the count per bucket."""
    from pyspark.sql import functions as F

    counts = {"in_window": 0, "already_seen": 0, "after_watermark": 0, "too_late": 0, "no_ts": 0}
    ts = F.col("ts")
    lo = F.lit(win.lo).cast("timestamp")
    hi = F.lit(wm).cast("timestamp")
    start = F.lit(win.start).cast("timestamp")
    known = F.col("_seen").isNotNull()
    tagged = (
        raw.join(seen, raw["event_id"] == seen["_sid"], "left")
        .withColumn("_seen", F.col("_sid"))
        .drop("_sid")
    )
    bucket = (
        F.when(ts.isNull(), "no_ts")
        .when(ts >= hi, "after_watermark")
        .when(known, "already_seen")
        .when(ts >= lo, "in_window")
        .when(ts >= start, "too_late")
        .otherwise("before_base")
    )
    tagged = tagged.withColumn("_bucket", bucket).cache()
    for r in tagged.groupBy("_bucket").count().collect():
        counts[r["_bucket"]] = r["count"]
    return tagged, counts


def listed_on(lake: Lake, day: str) -> list[str]:
    """The items the raw catalogue lists on `day` itself: their events of that day are good."""
    if not io.list_files(lake.items):
        return []
    items = io.read_parquet(lake.items, marker=None)
    if "first_seen" not in items.columns:
        return []
    on_day = pd.to_datetime(items["first_seen"]) == pd.Timestamp(day)
    return sorted(items.loc[on_day, "item_id"].dropna().astype(str).unique())


def _flag_fresh(
    spark: Any,
    lake: Lake,
    win: Window,
    tagged: Any,
    cfg: Config,
    now: dt.datetime | None,
) -> tuple[Any, dict[str, int]]:
    """The window's rows with their reject reasons (cached); the count per reason."""
    from pyspark.sql import functions as F

    from features.events import REJECT_REASON, flag_bad_rows

    now = now or dt.datetime.now(dt.UTC)
    limit = F.lit(now + dt.timedelta(seconds=cfg.ingest.max_future_seconds)).cast("timestamp")
    items = spark.read.parquet(join(lake.warehouse, "items", f"ds={win.base}")).select("item_id")
    today = listed_on(lake, win.base)
    if today:  # the daily catalogue (as of the start of the day) does not know them yet
        items = items.unionByName(spark.createDataFrame([(i,) for i in today], "item_id string"))
    fresh = tagged.filter(F.col("_bucket") == "in_window").drop("_bucket", "_seen")
    flagged = flag_bad_rows(fresh, now_limit=limit, item_ids=items).cache()
    reasons = {
        r["reason"]: r["n"]
        for r in flagged.filter(F.col(REJECT_REASON).isNotNull())
        .groupBy(F.col(REJECT_REASON).alias("reason"))
        .agg(F.count("*").alias("n"))
        .collect()
    }
    return flagged, reasons


def _write_window(
    out: str, wm: dt.datetime, cfg: Config, tagged: Any, flagged: Any, counts: dict[str, Any]
) -> None:
    """Quarantine, then (unless too many rows are bad) the accepted events; uncaches both."""
    from pyspark.sql import functions as F

    from features.events import REJECT_REASON
    from jobs.core.errors import IngestError
    from jobs.core.spark import write_spark_parquet
    from jobs.daily.raw_files import share_error

    bad_cols = [c for c in flagged.columns if c.startswith("_bad_")]
    accepted = flagged.filter(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON, *bad_cols)
    quarantined = flagged.filter(F.col(REJECT_REASON).isNotNull())
    # ingest.json marks a complete window: it goes last, after the data it describes
    io.delete_file(join(out, "ingest.json"))
    write_spark_parquet(quarantined.coalesce(1), join(out, "quarantine"))
    error = share_error(f"refresh window {stamp(wm)}", counts, cfg.ingest.max_bad_share)
    if error:
        tagged.unpersist()
        flagged.unpersist()
        raise IngestError(f"{error}; rows kept in {join(out, 'quarantine')}")
    write_spark_parquet(accepted.coalesce(1), join(out, "events"))
    tagged.unpersist()
    flagged.unpersist()


def _raw_struct() -> Any:
    from pyspark.sql import types as T

    from features.events import EVENT_STRUCT

    return T.StructType([*EVENT_STRUCT.fields, T.StructField("ds", T.StringType())])


def _window_paths(
    lake: Lake, base: str, upto: dt.datetime, name: str, inclusive: bool
) -> list[str]:
    wins = windows(lake, base)
    keep = [wm for wm in wins if (wm <= upto if inclusive else wm < upto)]
    paths = [join(window_dir(lake, base, wm), name) for wm in keep]
    return [p for p in paths if io.list_files(p)]


def _seen_ids(spark: Any, lake: Lake, win: Window) -> Any:
    """event_id (as `_sid`) of every row an earlier window of the day accepted or quarantined."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    paths = _window_paths(lake, win.base, win.wm, "events", False) + _window_paths(
        lake, win.base, win.wm, "quarantine", False
    )
    if not paths:
        return spark.createDataFrame([], T.StructType([T.StructField("_sid", T.StringType())]))
    ids = spark.read.parquet(*paths).select(F.col("event_id").alias("_sid"))
    return ids.filter(F.col("_sid").isNotNull()).distinct()


# ---------------------------------------------------------------- 2. priors


def priors(lake: Lake, wm: dt.datetime, cfg: Config) -> dict[str, Any]:
    """Refreshed Beta posteriors of the window's users; cumulative over the day."""
    from pyspark.sql import functions as F

    from features.priors import advance_state, carousel_trials, trial_counts, user_carousel_priors
    from jobs.core.spark import get_spark

    t0 = time.perf_counter()
    win = find_window(lake, wm)
    out = window_dir(lake, win.base, wm)
    spark = get_spark(cfg.spark, remote=cfg.refresh.spark_remote)
    new = io.read_parquet(join(out, "events"), ["user_id"], marker=None)
    users = np.sort(new["user_id"].dropna().astype(str).unique())
    prev_priors = _previous(lake, win, "priors")
    report: dict[str, Any] = {
        "base": win.base,
        "watermark": wm.isoformat(),
        "users": len(users),
        "spark": cfg.refresh.spark_remote or cfg.spark.master,
    }
    frames = []
    if len(users):
        wanted = spark.createDataFrame(pd.DataFrame({"user_id": users}))
        # the window's users are few next to the day's log and the daily state: broadcast them
        todays = spark.read.parquet(*_window_paths(lake, win.base, wm, "events", True)).join(
            F.broadcast(wanted), "user_id"
        )
        todays = todays.dropDuplicates(["event_id"])  # windows never share one; a guard
        trials = carousel_trials(
            todays,
            as_of=(wm - dt.timedelta(microseconds=1)).date() + dt.timedelta(days=1),
            since=parse_ds(win.base),
        )
        counts = trial_counts(trials, as_of=parse_ds(win.base), half_life_days=0.0)
        state = spark.read.parquet(lake.feature("priors_state", win.base)).join(
            F.broadcast(wanted), "user_id"
        )
        state = advance_state(state, counts, half_life_days=0.0, days=0)
        prior = spark.read.parquet(lake.feature("carousel_priors", win.base))
        post = user_carousel_priors(state, prior).toPandas()
        post.attrs = {}  # a Spark Connect client attaches its plan metrics, not serialisable
        report["trials_today"] = int(trials.count())
        frames.append(post[list(PRIOR_COLUMNS)])
    if prev_priors is not None:
        carried = prev_priors[~prev_priors["user_id"].isin(users)]
        frames.insert(0, carried)
        report["carried_users"] = int(carried["user_id"].nunique())
    frames = [f for f in frames if len(f)]
    table = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            {c: pd.Series(dtype=object if c.endswith("_id") else float) for c in PRIOR_COLUMNS}
        )
    )
    table = table.sort_values(["user_id", "carousel_id"], kind="stable").reset_index(drop=True)
    _write_frame(table, join(out, "priors.parquet"))
    report["rows"] = len(table)
    report["seconds"] = round(time.perf_counter() - t0, 3)
    io.write_json(join(out, "priors.json"), report)
    return report


def _write_frame(frame: pd.DataFrame, uri: str) -> None:
    """One Parquet file, written aside and renamed in (readers see the old or the new one)."""
    path = local_path(uri)
    tmp = f"{path}.tmp-{os.getpid()}"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _previous(lake: Lake, win: Window, what: str) -> pd.DataFrame | None:
    """The previous window's cumulative priors table, or None for the day's first window."""
    if win.prev is None:
        return None
    path = join(window_dir(lake, win.base, win.prev), f"{what}.parquet")
    if not io.exists(path):
        raise RefreshError(
            f"the previous window {stamp(win.prev)} has no {what}: re-run it before this one"
        )
    return io.read_parquet(path)
