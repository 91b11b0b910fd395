"""Item statistics: popularity over a recent and a prior window, trend, recency."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.events import require_columns


def item_stats(
    events: DataFrame, items: DataFrame, *, as_of: dt.date, recent_days: int
) -> DataFrame:
    """Per catalogue item: pop_recent (engagements in the last `recent_days` before `as_of`),
    pop_prior (the `recent_days` before that), pop_total, trend = (recent+1)/(prior+1), is_new.

    Items with no events get zeros, so every catalogue item has a row.
    """
    require_columns(events, ["item_id", "event_type", "ts"], "events")
    require_columns(items, ["item_id", "first_seen"], "items")
    start = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    recent = F.lit(start - dt.timedelta(days=recent_days)).cast("timestamp")
    prior = F.lit(start - dt.timedelta(days=2 * recent_days)).cast("timestamp")
    end = F.lit(start).cast("timestamp")
    w = (
        F.when(F.col("event_type") == "purchase", 3.0)
        .when(F.col("event_type") == "add_to_cart", 2.0)
        .otherwise(1.0)
    )
    ev = events.filter(
        (F.col("ts") < end)
        & F.col("item_id").isNotNull()
        & F.col("event_type").isin("click", "add_to_cart", "purchase", "view")
    )
    agg = ev.groupBy("item_id").agg(
        F.sum(F.when(F.col("ts") >= recent, w).otherwise(0.0)).alias("pop_recent"),
        F.sum(F.when((F.col("ts") >= prior) & (F.col("ts") < recent), w).otherwise(0.0)).alias(
            "pop_prior"
        ),
        F.sum(w).alias("pop_total"),
        F.max("ts").alias("last_event_ts"),
    )
    new_since = F.lit(as_of - dt.timedelta(days=recent_days * 2)).cast("date")
    return (
        items.select("item_id", "first_seen")
        .join(agg, "item_id", "left")
        .fillna(0.0, subset=["pop_recent", "pop_prior", "pop_total"])
        .withColumn("trend", (F.col("pop_recent") + 1.0) / (F.col("pop_prior") + 1.0))
        .withColumn("is_new", F.coalesce(F.col("first_seen") >= new_since, F.lit(False)))
        .drop("first_seen")
    )


def user_activity(events: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Every user seen before `as_of`: user_id, n_events, last_ts (the pipeline's known users)."""
    require_columns(events, ["user_id", "ts"], "events")
    end = F.lit(dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)).cast("timestamp")
    return (
        events.filter(F.col("ts") < end)
        .groupBy("user_id")
        .agg(F.count("*").alias("n_events"), F.max("ts").alias("last_ts"))
    )
