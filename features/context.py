"""Request-context features (docs/methods.md §3): day of week, hour, device; per-user habits.

Time features are computed from the instant itself (microseconds since the epoch), so they are
UTC whatever `spark.sql.session.timeZone` says. The helpers here are shared by the other
feature modules that need a UTC day or the start of `as_of`.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.events import require_columns

MICROS_PER_MINUTE = 60_000_000
MICROS_PER_HOUR = 60 * MICROS_PER_MINUTE
MICROS_PER_DAY = 24 * MICROS_PER_HOUR
# The devices whose shares `user_context` reports; any other value counts in the denominator only.
SHARE_DEVICES: tuple[str, ...] = ("mobile", "desktop", "app")
UNKNOWN_DEVICE = "unknown"


def utc_start(day: dt.date) -> Column:
    """Midnight UTC at the start of `day`, as a timestamp literal."""
    return F.lit(dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)).cast("timestamp")


def _floor_div(n: Column, d: int) -> Column:
    """Floor division of a long by a positive constant in integer arithmetic (exact: the
    division is of a multiple of `d`), also for instants before 1970."""
    return ((n - F.pmod(n, F.lit(d))) / F.lit(d)).cast("long")


def utc_epoch_day(ts: Column) -> Column:
    """Whole days since 1970-01-01 (UTC) of `ts`, as a long."""
    return _floor_div(F.unix_micros(ts), MICROS_PER_DAY)


def utc_date(ts: Column) -> Column:
    """The UTC calendar date of `ts` (independent of the session time zone)."""
    return F.date_from_unix_date(utc_epoch_day(ts).cast("int"))


def utc_hour(ts: Column) -> Column:
    """Hour of day 0–23 in UTC."""
    return _floor_div(F.pmod(F.unix_micros(ts), F.lit(MICROS_PER_DAY)), MICROS_PER_HOUR).cast("int")


def iso_dow(ts: Column) -> Column:
    """ISO day of week in UTC: 1 = Monday … 7 = Sunday (1970-01-01 was a Thursday)."""
    return (F.pmod(utc_epoch_day(ts) + F.lit(3), F.lit(7)) + F.lit(1)).cast("int")


def normalised_device(events: DataFrame) -> Column:
    """`device` trimmed and lower-cased; null, blank or absent → "unknown"."""
    if "device" not in events.columns:
        return F.lit(UNKNOWN_DEVICE)
    d = F.lower(F.trim(F.col("device")))
    return F.when(d.isNull() | (d == ""), F.lit(UNKNOWN_DEVICE)).otherwise(d)


def _check_days(days: int) -> None:
    if days <= 0:
        raise ValueError(f"days must be a positive number of days, got {days}")


def event_context(events: DataFrame) -> DataFrame:
    """`events` plus `dow` (ISO, 1 = Monday … 7 = Sunday, UTC), `hour` (0–23 UTC) and `device`
    normalised to lower case (null or blank → "unknown"; added when the column is absent)."""
    require_columns(events, ["ts"], "events")
    return (
        events.withColumn("dow", iso_dow(F.col("ts")))
        .withColumn("hour", utc_hour(F.col("ts")))
        .withColumn("device", normalised_device(events))
    )


def user_context(events: DataFrame, *, as_of: dt.date, days: int = 30) -> DataFrame:
    """Per user with any event in [as_of − days, as_of): user_id, `main_device` (most frequent
    normalised device, ties → alphabetically first), `share_mobile`, `share_desktop`,
    `share_app` (shares of the user's events; other devices, "unknown" included, count only in
    the denominator), `main_hour` (most frequent UTC hour, ties → smallest), `weekend_share`
    (share of events on Saturday or Sunday, UTC).
    """
    require_columns(events, ["user_id", "ts"], "events")
    _check_days(days)
    end = utc_start(as_of)
    start = utc_start(as_of - dt.timedelta(days=days))
    hour = utc_hour(F.col("ts"))
    base = events.filter((F.col("ts") >= start) & (F.col("ts") < end)).select(
        "user_id",
        normalised_device(events).alias("device"),
        hour.alias("hour"),
        (iso_dow(F.col("ts")) >= 6).alias("weekend"),
    )
    # Two stages, both shuffling partial aggregates only: per (user, device) with the 24 hour
    # counts as columns, then per user (the mode of the device needs per-device totals first).
    per_device = base.groupBy("user_id", "device").agg(
        F.count(F.lit(1)).alias("n"),
        F.count(F.when(F.col("weekend"), 1)).alias("n_weekend"),
        *[F.count(F.when(F.col("hour") == h, 1)).alias(f"h{h}") for h in range(24)],
    )
    hours = F.array(*[F.col(f"h{h}") for h in range(24)])
    per_user = per_device.groupBy("user_id").agg(
        F.sum("n").alias("_n"),
        F.sum("n_weekend").alias("_weekend"),
        # min over (−count, name): the largest count, then the alphabetically first device
        F.min(F.struct((-F.col("n")).alias("k"), F.col("device").alias("d")))["d"].alias(
            "main_device"
        ),
        *[
            F.sum(F.when(F.col("device") == d, F.col("n")).otherwise(0)).alias(f"_{d}")
            for d in SHARE_DEVICES
        ],
        *[F.sum(f"h{h}").alias(f"h{h}") for h in range(24)],
    )
    total = F.col("_n").cast("double")
    return per_user.select(
        "user_id",
        "main_device",
        *[(F.col(f"_{d}") / total).alias(f"share_{d}") for d in SHARE_DEVICES],
        # first position of the maximum = the smallest hour among ties (array_position is 1-based)
        (F.array_position(hours, F.array_max(hours)) - 1).cast("int").alias("main_hour"),
        (F.col("_weekend") / total).alias("weekend_share"),
    )
