"""User–item and user–category transaction counts η with time decay (docs/methods.md §1)."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.events import require_columns

ENGAGEMENTS: tuple[str, ...] = ("click", "add_to_cart", "purchase")


def decay_weight(ts: Column, *, as_of: dt.date, half_life_days: float) -> Column:
    """0.5 ** (age / half-life), age in days from `ts` to the start of `as_of`; 1 when no decay."""
    if half_life_days <= 0:
        return F.lit(1.0)
    start = F.lit(dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)).cast("timestamp")
    age_days = (start.cast("double") - ts.cast("double")) / 86400.0
    return F.pow(F.lit(0.5), age_days / F.lit(half_life_days))


def user_item_counts(
    events: DataFrame,
    *,
    as_of: dt.date,
    half_life_days: float,
    weights: dict[str, float],
) -> DataFrame:
    """Decayed counts per (user_id, item_id): `n_<type>` for each engagement type, and
    `eta` = Σ weights[type] · n_type. Only events strictly before `as_of` count.

    Columns: user_id, item_id, n_click, n_add_to_cart, n_purchase, eta, last_ts.
    """
    require_columns(events, ["user_id", "item_id", "event_type", "ts"], "events")
    unknown = set(weights) - set(ENGAGEMENTS)
    if unknown:
        raise ValueError(
            f"weights has unknown event type(s) {sorted(unknown)}; allowed {ENGAGEMENTS}"
        )
    start = F.lit(dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)).cast("timestamp")
    df = events.filter(
        (F.col("ts") < start)
        & F.col("item_id").isNotNull()
        & F.col("event_type").isin(*ENGAGEMENTS)
    ).withColumn("_w", decay_weight(F.col("ts"), as_of=as_of, half_life_days=half_life_days))
    aggs = [
        F.sum(
            F.when(
                F.col("event_type") == t,
                F.col("_w") * F.coalesce(F.col("quantity"), F.lit(1))
                if t == "purchase"
                else F.col("_w"),
            ).otherwise(0.0)
        ).alias(f"n_{t}")
        for t in ENGAGEMENTS
    ]
    out = df.groupBy("user_id", "item_id").agg(*aggs, F.max("ts").alias("last_ts"))
    eta = sum(
        (F.col(f"n_{t}") * F.lit(float(weights.get(t, 0.0))) for t in ENGAGEMENTS), F.lit(0.0)
    )
    return out.withColumn("eta", eta)


def user_category_counts(user_items: DataFrame, items: DataFrame) -> DataFrame:
    """Roll user–item counts up to leaf categories: user_id, category_id, eta and the decayed
    `n_click`, `n_add_to_cart`, `n_purchase`."""
    require_columns(
        user_items,
        ["user_id", "item_id", "eta", *[f"n_{t}" for t in ENGAGEMENTS]],
        "user_item_counts",
    )
    require_columns(items, ["item_id", "category_id"], "items")
    cats = items.select("item_id", "category_id")
    # the catalogue is far smaller than the counts table
    return (
        user_items.join(F.broadcast(cats), "item_id")
        .groupBy("user_id", "category_id")
        .agg(F.sum("eta").alias("eta"), *[F.sum(f"n_{t}").alias(f"n_{t}") for t in ENGAGEMENTS])
    )
