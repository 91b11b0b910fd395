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
before it), so they come out the same: every output is replaced whole.
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

import numpy as np
import pandas as pd

from jobs import io
from jobs.config import Config
from jobs.lake import DEFAULT_PAGE_KEY, Lake, fmt_ds, join, local_path, parse_ds

log = logging.getLogger(__name__)

STAMP = "%Y%m%dT%H%M%SZ"
STEPS: tuple[str, ...] = ("ingest", "priors", "pages", "publish")
REBUILD_CHUNK = 8192  # pages rebuilt per batch
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


# ---------------------------------------------------------------- 1. ingest


def ingest(
    lake: Lake, wm: dt.datetime, cfg: Config, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """Validate and log the window's new events (see the module docstring, step 1)."""
    from pyspark.sql import functions as F

    from features.events import REJECT_REASON, conform_events, flag_bad_rows
    from jobs.ingest import IngestError, _read_groups, check_files, share_error
    from jobs.lake import EVENT_SCHEMA, REQUIRED_EVENT_COLUMNS
    from jobs.spark import get_spark

    t0 = time.perf_counter()
    win = open_window(lake, wm, cfg)
    out = window_dir(lake, win.base, wm)
    days = [
        fmt_ds(parse_ds(win.base) + dt.timedelta(days=k))
        for k in range(
            (wm - dt.timedelta(microseconds=1)).date().toordinal()
            - parse_ds(win.base).toordinal()
            + 1
        )
    ]
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
    }
    spark = get_spark(cfg.spark)
    seen = _seen_ids(spark, lake, win)
    groups = check_files(files, EVENT_SCHEMA, REQUIRED_EVENT_COLUMNS) if files else {}
    raw = _read_groups(
        spark,
        groups,
        lambda df: conform_events(df.withColumn("ds", F.col("ds").cast("string"))),
        lake.raw_events,
    )
    counts = {"in_window": 0, "already_seen": 0, "after_watermark": 0, "too_late": 0, "no_ts": 0}
    if raw is None:
        raw = spark.createDataFrame([], _raw_struct())
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
    now = now or dt.datetime.now(dt.UTC)
    limit = F.lit(now + dt.timedelta(seconds=cfg.ingest.max_future_seconds)).cast("timestamp")
    items = spark.read.parquet(join(lake.warehouse, "items", f"ds={win.base}")).select("item_id")
    fresh = tagged.filter(F.col("_bucket") == "in_window").drop("_bucket", "_seen")
    flagged = flag_bad_rows(fresh, now_limit=limit, item_ids=items).cache()
    bad_cols = [c for c in flagged.columns if c.startswith("_bad_")]
    reasons = {
        r["reason"]: r["n"]
        for r in flagged.filter(F.col(REJECT_REASON).isNotNull())
        .groupBy(F.col(REJECT_REASON).alias("reason"))
        .agg(F.count("*").alias("n"))
        .collect()
    }
    n_bad = sum(reasons.values())
    report["counts"] = {
        **counts,
        "raw": counts["in_window"],
        "accepted": counts["in_window"] - n_bad,
        "quarantined": n_bad,
        "reasons": reasons,
    }
    accepted = flagged.filter(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON, *bad_cols)
    quarantined = flagged.filter(F.col(REJECT_REASON).isNotNull())
    # ingest.json marks a complete window: it goes last, after the data it describes
    io.delete_file(join(out, "ingest.json"))
    io.write_spark_parquet(quarantined.coalesce(1), join(out, "quarantine"))
    error = share_error(f"refresh window {stamp(wm)}", report["counts"], cfg.ingest.max_bad_share)
    if error:
        tagged.unpersist()
        flagged.unpersist()
        raise IngestError(f"{error}; rows kept in {join(out, 'quarantine')}")
    io.write_spark_parquet(accepted.coalesce(1), join(out, "events"))
    tagged.unpersist()
    flagged.unpersist()
    report["users"] = int(
        io.read_parquet(join(out, "events"), ["user_id"], marker=None)["user_id"].nunique()
    )
    report["seconds"] = round(time.perf_counter() - t0, 3)
    io.write_json(join(out, "ingest.json"), report)
    log.info("refresh ingest %s (base %s): %s", stamp(wm), win.base, report["counts"])
    return report


def _raw_struct() -> Any:
    from pyspark.sql import types as T

    from features.events import EVENT_STRUCT

    return T.StructType([*EVENT_STRUCT.fields, T.StructField("ds", T.StringType())])


def _window_paths(
    lake: Lake, base: str, upto: dt.datetime, name: str, inclusive: bool
) -> list[str]:
    wins = windows(lake, base)
    keep = [w for w in wins if (w <= upto if inclusive else w < upto)]
    paths = [join(window_dir(lake, base, w), name) for w in keep]
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
    from jobs.spark import get_spark

    t0 = time.perf_counter()
    win = find_window(lake, wm)
    out = window_dir(lake, win.base, wm)
    spark = get_spark(cfg.spark)
    new = io.read_parquet(join(out, "events"), ["user_id"], marker=None)
    users = np.sort(new["user_id"].dropna().astype(str).unique())
    prev_priors = _previous(lake, win, "priors")
    report: dict[str, Any] = {"base": win.base, "watermark": wm.isoformat(), "users": len(users)}
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


# ---------------------------------------------------------------- 3. pages


def pages(lake: Lake, wm: dt.datetime, cfg: Config) -> dict[str, Any]:
    """Rebuild the changed pages and write the delta export (step 3)."""
    from jobs.page_state import STATE_DIR, StateReader
    from models.ranking import PageParams, build_pages, scored_from_state
    from serving_export.writer import write_export
    from validation.export import validate_pages

    t0 = time.perf_counter()
    win = find_window(lake, wm)
    out = window_dir(lake, win.base, wm)
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        t0 = now

    state = StateReader(local_path(join(lake.warehouse, "pages", f"ds={win.base}", STATE_DIR)))
    meta, arrays = state.meta, state.arrays
    item_ids = arrays["item_ids"].astype(object)
    post_all = io.read_parquet(join(out, "priors.parquet"))
    new_users = io.read_parquet(join(out, "events"), ["user_id"], marker=None)["user_id"]
    new_users = set(new_users.dropna().astype(str))
    lap("load")

    # stock: the latest catalogue against the one the daily run used
    gone = _newly_out_of_stock(lake, item_ids, arrays["in_stock"])
    gone_ids = set(item_ids[gone].tolist())
    prev_delta = _previous_delta(lake, win)
    served = _pages_with(lake, win.base, prev_delta, gone_ids)
    lap("stock")

    with_state = {k for k in served if state.has(k)}
    rebuild = sorted(new_users | with_state)
    params = PageParams(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["page_params"].items()}
    )
    cal = meta.get("carousel_calibration")
    calibration = None
    if cal:
        x, y = np.asarray(cal["x"], np.float64), np.asarray(cal["y"], np.float64)

        def calibration(phi: np.ndarray) -> np.ndarray:
            return np.interp(phi, x, y)

    refreshed = set(post_all["user_id"].unique())
    frames, n_rebuilt = [], 0
    # in chunks: memory stays bounded; a page does not depend on its chunk (per-user streams)
    for lo in range(0, len(rebuild), REBUILD_CHUNK):
        st = state.read(rebuild[lo : lo + REBUILD_CHUNK])
        n_rebuilt += len(st.users)
        cid = state.carousel_id[st.code]
        want = pd.DataFrame({"user_id": st.users[st.cand_user], "carousel_id": cid})
        daily_users = sorted(set(st.users.tolist()) - refreshed)
        mine = post_all[post_all["user_id"].isin(set(st.users.tolist()))]
        parts = [mine[["user_id", "carousel_id", "lam", "a", "b"]]]
        if daily_users:  # rebuilt for stock changes only: the daily run's posteriors
            parts.append(_daily_priors(lake, win.base, daily_users))
        post_tab = pd.concat(parts, ignore_index=True)
        post = want.merge(post_tab, on=["user_id", "carousel_id"], how="left")
        scored = scored_from_state(
            users=st.users,
            cand_user=st.cand_user,
            carousel_id=cid,
            title=state.title[st.code],
            family=state.family[st.code],
            reason=state.reason[st.code],
            fixed_order=state.fixed_order[st.code],
            rel_sum=st.rel_sum,
            gamma=st.gamma,
            items=st.items,
            item_scores=st.scores,
            new_pool=st.new_pool,
            new_score=st.new_score,
            post=post,
            carousel_ab={k: tuple(v) for k, v in meta["carousel_ab"].items()},
            carousel_lam=meta["carousel_lam"],
            p_global=meta["p_global"],
            v_items=arrays["v_items"],
            item_cat=arrays["item_cat"],
            item_brand=arrays["item_brand"],
            per_carousel=params.items_per_carousel,
            unavailable=gone,
        )
        frame = build_pages(
            scored,
            meta["w"],
            params,
            item_ids,
            exam=arrays.get("exam"),
            calibration=calibration,
            randomise=True,
            seed=int(meta["seed"]),
        ).frame
        for c in ("user_id", "carousel_id", "carousel_title", "family", "item_id", "reason"):
            frame[c] = frame[c].astype(object)
        frames.append(frame)
    rebuilt = pd.concat(frames, ignore_index=True) if frames else _empty_pages()
    rebuilt_users = set(rebuilt["user_id"])
    rebuilt["model_version"] = meta["model_version"]
    lap("rebuild")

    # pages without a state (cold users' context pages, default pages) only lose gone items
    stateless = sorted(served - with_state)
    trimmed = _trim(_served_rows(lake, win.base, prev_delta, stateless), gone_ids, params)
    changed = rebuilt_users | set(stateless)
    carried = prev_delta[~prev_delta["user_id"].isin(changed)] if prev_delta is not None else None
    parts = [f for f in (carried, rebuilt, trimmed) if f is not None and len(f)]
    delta = pd.concat(parts, ignore_index=True) if parts else rebuilt
    for c in (
        "user_id",
        "carousel_id",
        "carousel_title",
        "family",
        "item_id",
        "reason",
        "model_version",
    ):
        delta[c] = delta[c].astype(object)
    lap("assemble")

    items_table = io.read_parquet(
        join(lake.warehouse, "items", f"ds={win.base}"),
        ["item_id", "title", "category_id", "brand", "price", "in_stock"],
        marker=None,
    )
    in_stock = set(items_table.loc[items_table["in_stock"].fillna(True).astype(bool), "item_id"])
    validation = validate_pages(
        delta,
        sorted(set(delta["user_id"])),
        slots=params.slots,
        per_carousel=params.items_per_carousel,
        in_stock_items=np.array(sorted(in_stock - gone_ids), dtype=object),
        page_stats=None,
    )
    lap("validate")
    default = delta[delta["user_id"] == DEFAULT_PAGE_KEY]
    user_pages = delta[delta["user_id"] != DEFAULT_PAGE_KEY]
    final = local_path(delta_dir(lake, win.base, wm))
    with io.atomic_dir(final) as staging:
        manifest = write_export(
            staging,
            user_pages,
            default,
            items_table,
            ds=win.base,
            model_versions={"model": str(meta["model_version"])},
            config_hash=cfg.hash(),
            delta={"watermark": wm.isoformat(), "refreshed_at": _iso(wm)},
        )
    lap("write")
    report = {
        "base": win.base,
        "watermark": wm.isoformat(),
        "new_event_users": len(new_users),
        "out_of_stock_items": int(gone.sum()),
        "out_of_stock_pages": len(served),
        "rebuilt_users": n_rebuilt,
        "trimmed_pages": len(stateless),
        "carried_users": int(carried["user_id"].nunique()) if carried is not None else 0,
        "delta_users": manifest["users"],
        "delta_rows": manifest["rows"],
        "delta_bytes": sum(f["bytes"] for f in manifest["files"].values()),
        "path": final,
        "validation": validation,
        "timings_s": timings,
    }
    io.write_json(join(out, "pages.json"), report)
    log.info(
        "refresh pages %s: %s", stamp(wm), {k: v for k, v in report.items() if k != "validation"}
    )
    return report


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


def _empty_pages() -> pd.DataFrame:
    from models.ranking import PAGE_COLUMNS

    return pd.DataFrame({c: pd.Series(dtype=object) for c in (*PAGE_COLUMNS, "model_version")})


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _newly_out_of_stock(lake: Lake, item_ids: np.ndarray, daily_in_stock: np.ndarray) -> np.ndarray:
    """Per catalogue item of the base: in stock for the daily run, out of stock now."""
    files = io.list_files(lake.items)
    if not files:
        return np.zeros(len(item_ids), dtype=bool)
    latest = io.read_parquet(lake.items, marker=None)
    if "in_stock" not in latest.columns:
        return np.zeros(len(item_ids), dtype=bool)
    latest = latest.dropna(subset=["item_id"])
    flag = latest.assign(item_id=latest["item_id"].astype(str)).drop_duplicates(
        "item_id", keep="last"
    )
    now = flag.set_index("item_id")["in_stock"].reindex(item_ids)
    out_now = (now.notna() & (now.fillna(True) == False)).to_numpy()  # noqa: E712 - pandas mask
    return out_now & np.asarray(daily_in_stock, dtype=bool)


def _previous_delta(lake: Lake, win: Window) -> pd.DataFrame | None:
    """The previous window's delta pages (what was served before this window), or None."""
    if win.prev is None:
        return None
    from serving_export.writer import PARQUET_FILE

    path = os.path.join(local_path(delta_dir(lake, win.base, win.prev)), PARQUET_FILE)
    if not os.path.exists(path):
        raise RefreshError(
            f"the previous window {stamp(win.prev)} has no delta: re-run it before this one"
        )
    frame = pd.read_parquet(path)
    return frame.drop(columns=[c for c in ("refreshed_at",) if c in frame.columns])


def _pages_with(lake: Lake, base: str, prev_delta: pd.DataFrame | None, gone: set[str]) -> set[str]:
    """Page keys whose served page (the previous delta's, else the daily export's) shows a
    gone item."""
    if not gone:
        return set()
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from serving_export.writer import PARQUET_FILE

    daily = pads.dataset(os.path.join(local_path(lake.export(base)), PARQUET_FILE))
    hit = daily.to_table(columns=["user_id"], filter=pc.field("item_id").isin(sorted(gone)))
    keys = set(hit["user_id"].to_pylist())
    if prev_delta is not None:
        in_delta = set(prev_delta["user_id"])
        keys = {k for k in keys if k not in in_delta}  # the delta's page is the served one
        keys |= set(prev_delta.loc[prev_delta["item_id"].isin(gone), "user_id"])
    return keys


def _served_rows(
    lake: Lake, base: str, prev_delta: pd.DataFrame | None, keys: list[str]
) -> pd.DataFrame:
    """The served page rows of `keys` (the previous delta's where it has them)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from serving_export.writer import PARQUET_FILE

    if not keys:
        return pd.DataFrame()
    frames = []
    rest = set(keys)
    if prev_delta is not None:
        mine = prev_delta[prev_delta["user_id"].isin(rest)]
        frames.append(mine)
        rest -= set(mine["user_id"])
    if rest:
        daily = pads.dataset(os.path.join(local_path(lake.export(base)), PARQUET_FILE))
        frames.append(daily.to_table(filter=pc.field("user_id").isin(sorted(rest))).to_pandas())
    return pd.concat(frames, ignore_index=True)


def _trim(rows: pd.DataFrame, gone: set[str], params: Any) -> pd.DataFrame:
    """Pages without their gone items: items move left, a carousel left with fewer than
    `min_items` drops out and the slots below move up, as long as no two adjacent slots then
    share a family (else the short carousel keeps its remaining items)."""
    if not len(rows):
        return rows
    keep = rows[~rows["item_id"].isin(gone)].copy()
    keep = keep.sort_values(["user_id", "slot", "item_rank"], kind="stable")
    size = keep.groupby(["user_id", "slot"])["item_id"].transform("size")
    out = []
    for _, page in keep.assign(_n=size).groupby("user_id", sort=False):
        slots = page.drop_duplicates("slot")[["slot", "family", "_n"]].to_numpy(object)
        kept: list[int] = []
        for s, fam, n in slots:
            if n < params.min_items:
                continue
            if (
                kept
                and page.loc[page["slot"] == kept[-1], "family"].iloc[0] == fam
                and fam is not None
            ):
                continue
            kept.append(int(s))
        part = page[page["slot"].isin(kept)].copy()
        part["slot"] = part["slot"].map({s: i + 1 for i, s in enumerate(kept)}).astype(np.int32)
        part["item_rank"] = part.groupby("slot").cumcount().add(1).astype(np.int32)
        out.append(part.drop(columns="_n"))
    return pd.concat(out, ignore_index=True) if out else rows.iloc[0:0]


def _daily_priors(lake: Lake, base: str, users: list[str]) -> pd.DataFrame:
    """The daily run's posteriors of `users` (for pages rebuilt only for stock changes)."""
    cols = ["user_id", "carousel_id", "lam", "a", "b"]
    if not users:
        return pd.DataFrame(columns=cols)
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    data = pads.dataset(local_path(lake.feature("user_carousel_priors", base)), format="parquet")
    return data.to_table(columns=cols, filter=pc.field("user_id").isin(users)).to_pandas()


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
) -> dict[str, Any]:
    """One step for one watermark (the DAG's tasks and `run`)."""
    from jobs.config import load_config

    if name not in STEPS:
        raise ValueError(f"unknown refresh step {name!r}; steps are {', '.join(STEPS)}")
    cfg = load_config(config_path, overrides)
    lake = Lake(lake_root)
    wm = parse_watermark(watermark)
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
