"""User aggregates, user × category frequency and carousel-slot engagement (docs/methods.md §3).

Every window is a whole number of UTC days ending at midnight of `as_of`: an event at exactly
as_of − d days is inside the d-day window, one at as_of is outside.

Rates are ratios of counts clipped to [0, 1], and 0.0 when the denominator is 0 (a user with
no impressions has click_rate 0, not null). Counts can exceed their denominator in real logs
(a click from a search page has no impression; a purchase needs no add-to-cart), hence the clip.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from features.context import utc_date, utc_start
from features.events import require_columns

# (output name stem, event_type) of the per-user counts
USER_COUNTS: tuple[tuple[str, str], ...] = (
    ("impressions", "impression"),
    ("views", "view"),
    ("clicks", "click"),
    ("add_to_carts", "add_to_cart"),
    ("purchases", "purchase"),
)
# (rate, numerator, denominator)
USER_RATES: tuple[tuple[str, str, str], ...] = (
    ("click_rate", "clicks", "impressions"),
    ("cart_rate", "add_to_carts", "views"),
    ("purchase_rate", "purchases", "add_to_carts"),
)
ENGAGEMENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")


def clipped_rate(num: Column, den: Column) -> Column:
    """num / den clipped to [0, 1]; 0.0 when den is 0 or null."""
    return F.when(den > 0, F.least(F.lit(1.0), F.greatest(F.lit(0.0), num / den))).otherwise(
        F.lit(0.0)
    )


def _check_days(name: str, days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or days <= 0:
        raise ValueError(f"{name} must be a positive whole number of days, got {days!r}")


def user_aggregates(
    events: DataFrame, *, as_of: dt.date, windows: tuple[int, ...] = (7, 30)
) -> DataFrame:
    """Per user with any event in the largest window: for each window of d days,
    `impressions_{d}d`, `views_{d}d`, `clicks_{d}d`, `add_to_carts_{d}d`, `purchases_{d}d` (event rows, long) and
    `click_rate_{d}d` = clicks/impressions, `cart_rate_{d}d` = add_to_carts/views,
    `purchase_rate_{d}d` = purchases/add_to_carts, each clipped to [0, 1] and 0.0 when the
    denominator is 0. Only events in [as_of − d days, as_of) count towards window d.
    """
    require_columns(events, ["user_id", "event_type", "ts"], "events")
    if not windows:
        raise ValueError("windows must name at least one window length in days")
    for days in windows:
        _check_days("each window", days)
    ws = sorted(set(windows))
    end = utc_start(as_of)
    starts = {days: utc_start(as_of - dt.timedelta(days=days)) for days in ws}
    df = events.filter((F.col("ts") >= starts[ws[-1]]) & (F.col("ts") < end))
    # one pass: every (window, type) count is a conditional count in the same groupBy
    counts = [
        F.count(F.when((F.col("event_type") == etype) & (F.col("ts") >= starts[days]), 1)).alias(
            f"{name}_{days}d"
        )
        for days in ws
        for name, etype in USER_COUNTS
    ]
    out = df.groupBy("user_id").agg(*counts)
    cols = [F.col("user_id")]
    for days in ws:
        cols += [F.col(f"{name}_{days}d") for name, _ in USER_COUNTS]
        cols += [
            clipped_rate(F.col(f"{num}_{days}d"), F.col(f"{den}_{days}d")).alias(f"{rate}_{days}d")
            for rate, num, den in USER_RATES
        ]
    return out.select(*cols)


def user_category_frequency(
    events: DataFrame, items: DataFrame, *, as_of: dt.date, days: int = 30
) -> DataFrame:
    """Per (user, category) with an engagement event (view, click, add_to_cart, purchase) on a
    catalogued item in [as_of − days, as_of): user_id, category_id, `active_days` (distinct UTC
    days with such an event in that category), `events` (their count), and `day_share` =
    active_days / the user's distinct days with an engagement event in any category (in [0, 1]).
    """
    require_columns(events, ["user_id", "item_id", "event_type", "ts"], "events")
    require_columns(items, ["item_id", "category_id"], "items")
    _check_days("days", days)
    end = utc_start(as_of)
    start = utc_start(as_of - dt.timedelta(days=days))
    ev = events.filter(
        (F.col("ts") >= start)
        & (F.col("ts") < end)
        & F.col("item_id").isNotNull()
        & F.col("event_type").isin(*ENGAGEMENT_TYPES)
    ).select("user_id", "item_id", utc_date(F.col("ts")).alias("day"))
    cats = items.select("item_id", "category_id")
    # the catalogue is small next to events: broadcasting it avoids shuffling the events
    daily = (
        ev.join(F.broadcast(cats), "item_id")
        .groupBy("user_id", "category_id", "day")
        .agg(F.count(F.lit(1)).alias("n"))
    )
    # after the daily roll-up, one small shuffle by user serves the user-level window and the
    # per-(user, category) groupBy below
    user_days = F.size(F.collect_set("day").over(Window.partitionBy("user_id")))
    return (
        daily.withColumn("_user_days", user_days)
        .groupBy("user_id", "category_id")
        .agg(
            F.count(F.lit(1)).alias("active_days"),
            F.sum("n").alias("events"),
            F.first("_user_days").alias("_user_days"),
        )
        .select(
            "user_id",
            "category_id",
            "active_days",
            "events",
            (F.col("active_days") / F.col("_user_days")).alias("day_share"),
        )
    )


def carousel_slot_engagement(events: DataFrame, *, as_of: dt.date, days: int = 30) -> DataFrame:
    """Per (carousel_id, slot) seen in [as_of − days, as_of): `impressions` = distinct showings
    (user, visit, carousel, slot) among `impression` rows, the visit being the session_id where
    present else the UTC date; `clicks` and `add_to_carts` = engagement rows carrying that
    carousel_id and slot; `click_rate` = clicks / impressions clipped to [0, 1], 0.0 without
    impressions. A null slot is its own group.
    """
    require_columns(events, ["user_id", "event_type", "ts", "carousel_id", "slot"], "events")
    _check_days("days", days)
    end = utc_start(as_of)
    start = utc_start(as_of - dt.timedelta(days=days))
    visit = F.date_format(utc_date(F.col("ts")), "yyyy-MM-dd")
    if "session_id" in events.columns:
        visit = F.coalesce(F.col("session_id"), visit)
    etype = F.col("event_type")
    df = events.filter(
        (F.col("ts") >= start)
        & (F.col("ts") < end)
        & F.col("carousel_id").isNotNull()
        & etype.isin("impression", "click", "add_to_cart")
    )
    # per showing first (a partial aggregate, so only small rows are shuffled), then per slot
    showings = df.groupBy("carousel_id", "slot", "user_id", visit.alias("_visit")).agg(
        F.max(F.when(etype == "impression", 1).otherwise(0)).alias("_shown"),
        F.count(F.when(etype == "click", 1)).alias("_clicks"),
        F.count(F.when(etype == "add_to_cart", 1)).alias("_carts"),
    )
    out = showings.groupBy("carousel_id", "slot").agg(
        F.sum("_shown").cast("long").alias("impressions"),
        F.sum("_clicks").alias("clicks"),
        F.sum("_carts").alias("add_to_carts"),
    )
    return out.withColumn("click_rate", clipped_rate(F.col("clicks"), F.col("impressions")))
