"""Item statistics: popularity over a recent and a prior window, trend, recency, price band."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from features.events import require_columns

POP_DAYS: tuple[int, ...] = (1, 7, 30)
PRICE_BANDS = 5
NEW_BUYER_DAYS = 30


def item_stats(
    events: DataFrame, items: DataFrame, *, as_of: dt.date, recent_days: int
) -> DataFrame:
    """Per catalogue item: pop_recent (engagements in the last `recent_days` before `as_of`),
    pop_prior (the `recent_days` before that), pop_total, trend = (recent+1)/(prior+1), is_new.

    Also: `pop_1d`, `pop_7d`, `pop_30d` (the same weighting over the last 1/7/30 days),
    `days_since_last_event` (double, from the event to midnight of `as_of`; null if never),
    `age_days` (as_of − first_seen in days; null when first_seen is), `n_buyers` (users who
    bought the item) and `repeat_rate` (the share of them who bought it in two or more orders,
    an order being one purchase timestamp; null without buyers), `new_buyers_30d` (users whose
    first purchase of the item fell in the last 30 days), `price_band` (1..5, the
    price quintile within the item's category among items with a price, ties share a band; null
    without a price), `in_stock` and `has_image` (from `items`, true when absent or null).

    Items with no events get zeros, so every catalogue item has a row. `items` needs only
    item_id and first_seen; category_id, price, in_stock and has_image are optional.
    """
    require_columns(events, ["user_id", "item_id", "event_type", "ts"], "events")
    require_columns(items, ["item_id", "first_seen"], "items")
    start = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    end = F.lit(start).cast("timestamp")
    ev = events.filter(
        (F.col("ts") < end)
        & F.col("item_id").isNotNull()
        & F.col("event_type").isin("click", "add_to_cart", "purchase", "view")
    )
    agg = _popularity(ev, start=start, recent_days=recent_days)
    buyers = _buyers(ev, start=start)
    new_since = F.lit(as_of - dt.timedelta(days=recent_days * 2)).cast("date")
    pop_cols = ["pop_recent", "pop_prior", "pop_total", *[f"pop_{d}d" for d in POP_DAYS]]
    return (
        _item_attributes(items, as_of=as_of)
        .join(agg, "item_id", "left")
        .join(buyers, "item_id", "left")
        .fillna(0.0, subset=[*pop_cols, "n_buyers", "new_buyers_30d"])
        .withColumn("trend", (F.col("pop_recent") + 1.0) / (F.col("pop_prior") + 1.0))
        .withColumn("is_new", F.coalesce(F.col("first_seen") >= new_since, F.lit(False)))
        .withColumn(
            "days_since_last_event",
            (end.cast("double") - F.col("last_event_ts").cast("double")) / 86400.0,
        )
        .select(
            "item_id",
            "pop_recent",
            "pop_prior",
            "pop_total",
            "last_event_ts",
            "trend",
            "is_new",
            *[f"pop_{d}d" for d in POP_DAYS],
            "days_since_last_event",
            "n_buyers",
            "repeat_rate",
            "new_buyers_30d",
            "age_days",
            "price_band",
            "in_stock",
            "has_image",
        )
    )


def _popularity(ev: DataFrame, *, start: dt.datetime, recent_days: int) -> DataFrame:
    """item_id, pop_recent, pop_prior, pop_total, last_event_ts and pop_{d}d: engagements
    weighted purchase 3, add-to-cart 2, other 1, over the windows ending at `start`."""
    recent = F.lit(start - dt.timedelta(days=recent_days)).cast("timestamp")
    prior = F.lit(start - dt.timedelta(days=2 * recent_days)).cast("timestamp")
    event_weight = (
        F.when(F.col("event_type") == "purchase", 3.0)
        .when(F.col("event_type") == "add_to_cart", 2.0)
        .otherwise(1.0)
    )
    pops = [
        F.sum(
            F.when(
                F.col("ts") >= F.lit(start - dt.timedelta(days=d)).cast("timestamp"), event_weight
            ).otherwise(0.0)
        ).alias(f"pop_{d}d")
        for d in POP_DAYS
    ]
    return ev.groupBy("item_id").agg(
        F.sum(F.when(F.col("ts") >= recent, event_weight).otherwise(0.0)).alias("pop_recent"),
        F.sum(
            F.when((F.col("ts") >= prior) & (F.col("ts") < recent), event_weight).otherwise(0.0)
        ).alias("pop_prior"),
        F.sum(event_weight).alias("pop_total"),
        F.max("ts").alias("last_event_ts"),
        *pops,
    )


def _buyers(ev: DataFrame, *, start: dt.datetime) -> DataFrame:
    """item_id, n_buyers, repeat_rate (share of buyers with two or more orders) and
    new_buyers_30d (buyers whose first purchase fell in the last NEW_BUYER_DAYS)."""
    new_buyer_since = F.lit(start - dt.timedelta(days=NEW_BUYER_DAYS)).cast("timestamp")
    return (
        ev.filter((F.col("event_type") == "purchase") & F.col("user_id").isNotNull())
        .groupBy("item_id", "user_id")
        .agg(F.countDistinct("ts").alias("n_orders"), F.min("ts").alias("first_ts"))
        .groupBy("item_id")
        .agg(
            F.count("*").cast("double").alias("n_buyers"),
            (F.sum((F.col("n_orders") >= 2).cast("double")) / F.count("*")).alias("repeat_rate"),
            F.sum((F.col("first_ts") >= new_buyer_since).cast("double")).alias("new_buyers_30d"),
        )
    )


def _item_attributes(items: DataFrame, *, as_of: dt.date) -> DataFrame:
    """item_id, first_seen, age_days, price_band, in_stock, has_image from the catalogue."""
    cols = items.columns
    flags = [
        F.coalesce(F.col(c).cast("boolean"), F.lit(True)).alias(c)
        if c in cols
        else F.lit(True).alias(c)
        for c in ("in_stock", "has_image")
    ]
    out = items.select(
        "item_id",
        "first_seen",
        F.datediff(F.lit(as_of), F.col("first_seen")).alias("age_days"),
        (F.col("category_id") if "category_id" in cols else F.lit(None).cast("string")).alias(
            "_cat"
        ),
        (F.col("price").cast("double") if "price" in cols else F.lit(None).cast("double")).alias(
            "_price"
        ),
        *flags,
    )
    # percent_rank gives tied prices the same rank, so ties share a band (ntile would split them
    # arbitrarily); nulls are ranked in their own partition and then masked
    by_cat = Window.partitionBy("_cat", F.col("_price").isNull()).orderBy("_price")
    band = F.least(F.lit(PRICE_BANDS), F.floor(F.percent_rank().over(by_cat) * PRICE_BANDS) + 1)
    return out.withColumn("price_band", F.when(F.col("_price").isNotNull(), band.cast("int"))).drop(
        "_cat", "_price"
    )


def user_activity(events: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Every user seen before `as_of` (the pipeline's known users): user_id, n_events, last_ts,
    and the user's orders, an order being one purchase timestamp: `n_orders`, `basket_size`
    (purchase rows per order), `days_since_order` (from the last order to midnight of `as_of`)
    and `order_gap_days` (mean days between consecutive orders). The last three are null for a
    user with no orders, and the gap also for a user with one."""
    require_columns(events, ["user_id", "event_type", "ts"], "events")
    end = F.lit(dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)).cast("timestamp")
    bought = F.col("event_type") == "purchase"
    order_ts = F.when(bought, F.col("ts"))
    out = (
        events.filter(F.col("ts") < end)
        .groupBy("user_id")
        .agg(
            F.count("*").alias("n_events"),
            F.max("ts").alias("last_ts"),
            F.countDistinct(order_ts).alias("n_orders"),
            F.count(order_ts).alias("_n_bought"),
            F.min(order_ts).alias("_first"),
            F.max(order_ts).alias("_last"),
        )
    )
    days = 86400.0
    return out.select(
        "user_id",
        "n_events",
        "last_ts",
        "n_orders",
        F.when(F.col("n_orders") > 0, F.col("_n_bought") / F.col("n_orders")).alias("basket_size"),
        ((end.cast("double") - F.col("_last").cast("double")) / days).alias("days_since_order"),
        F.when(
            F.col("n_orders") > 1,
            (F.col("_last").cast("double") - F.col("_first").cast("double"))
            / days
            / (F.col("n_orders") - 1),
        ).alias("order_gap_days"),
    )
