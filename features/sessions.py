"""Sessions and purchase-intent soft labels (docs/methods.md §2, eBay page-level optimisation).

A session is the site's `session_id` when the event carries one. Events without one are
sessionised per user by inactivity: a gap of more than `gap_minutes` between consecutive events
(ordered by ts, then event_id) starts a new session, so a gap of exactly `gap_minutes` stays in
the same session. The two kinds of rows are sessionised independently.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features.context import MICROS_PER_MINUTE, utc_start
from features.events import require_columns

SESSION_KEY = "session_key"
INTENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user_id",
    "item_id",
    "carousel_id",
    "slot",
    "position",
    "ts",
    SESSION_KEY,
    "intent_weight",
    "purchased",
)
_OPTIONAL: dict[str, T.DataType] = {
    "carousel_id": T.StringType(),
    "slot": T.IntegerType(),
    "position": T.IntegerType(),
}
_DERIVED = "_derived_session"


def _check_gap(gap_minutes: float) -> None:
    if not gap_minutes > 0:
        raise ValueError(f"gap_minutes must be > 0 (minutes of inactivity), got {gap_minutes}")


def _with_session_key(events: DataFrame, gap_minutes: float) -> DataFrame:
    """`sessionize`, keeping the `_derived_session` flag the window was partitioned by, so a
    later window partitioned by (user_id, _derived_session, …) reuses the same shuffle."""
    require_columns(events, ["event_id", "user_id", "ts"], "events")
    _check_gap(gap_minutes)
    has_sid = "session_id" in events.columns
    derived = F.col("session_id").isNull() if has_sid else F.lit(True)
    df = events.withColumn(_DERIVED, derived)
    by_user = Window.partitionBy("user_id", _DERIVED).orderBy(
        F.col("ts").asc_nulls_last(), F.col("event_id").asc_nulls_last()
    )
    micros = F.unix_micros(F.col("ts"))
    prev = F.lag(micros).over(by_user)
    gap = F.lit(int(round(gap_minutes * MICROS_PER_MINUTE)))
    starts = F.when(prev.isNull() | (micros - prev > gap), 1).otherwise(0)
    # Rows with a session_id run through the same window (wasted arithmetic, no extra shuffle)
    # rather than a union of two branches, which would scan the input twice.
    n = F.sum(starts).over(by_user.rowsBetween(Window.unboundedPreceding, Window.currentRow)) - 1
    key = F.concat(F.col("user_id"), F.lit("#"), n.cast("string"))
    if has_sid:
        key = F.when(F.col(_DERIVED), key).otherwise(F.col("session_id"))
    return df.withColumn(SESSION_KEY, key)


def sessionize(events: DataFrame, *, gap_minutes: float = 30.0) -> DataFrame:
    """`events` plus `session_key` (string): the `session_id` where it is non-null, else
    f"{user_id}#{n}" with n the 0-based number of the user's inactivity-derived session.

    Derived sessions split where consecutive events of a user (ordered by ts, then event_id)
    are more than `gap_minutes` apart; exactly `gap_minutes` apart stays one session.
    """
    return _with_session_key(events, gap_minutes).drop(_DERIVED)


def intent_weight(
    click_ts: Column, purchase_ts: Column, *, decay: float, epsilon: float, gap_minutes: float
) -> Column:
    """decay ** ((t_p − t_c) / (epsilon · T)), times in minutes, T = gap_minutes; 0 if no t_p."""
    minutes = (F.unix_micros(purchase_ts) - F.unix_micros(click_ts)) / F.lit(
        float(MICROS_PER_MINUTE)
    )
    decayed = F.pow(F.lit(float(decay)), minutes / F.lit(float(epsilon) * float(gap_minutes)))
    return F.coalesce(decayed, F.lit(0.0))


def purchase_intent(
    events: DataFrame,
    *,
    decay: float = 0.5,
    epsilon: float = 1.0,
    gap_minutes: float = 30.0,
    as_of: dt.date,
) -> DataFrame:
    """Purchase-intent soft labels, one row per click strictly before `as_of` (docs/methods.md §2).

    Events before `as_of` are sessionised (all event types, so views and impressions keep a
    session alive); a click gets decay ** ((t_p − t_c) / (epsilon · T)) with t_p the first
    purchase at or after it in the same session and T = gap_minutes, minutes throughout, and 0
    when no purchase follows. `purchased` is True exactly when such a purchase exists (of any
    item: the label is the session's purchase intent, not the clicked item's).

    Columns: event_id, user_id, item_id, carousel_id, slot, position, ts, session_key,
    intent_weight (double in [0, 1]), purchased (bool). Absent carousel_id/slot/position are
    output as nulls.
    """
    require_columns(events, ["event_id", "user_id", "ts", "event_type", "item_id"], "events")
    if not 0 < decay < 1:
        raise ValueError(f"decay must be in (0, 1) exclusive, got {decay}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    _check_gap(gap_minutes)
    keep = ["event_id", "user_id", "ts", "event_type", "item_id"]
    if "session_id" in events.columns:
        keep.append("session_id")
    cols = [F.col(c) for c in keep] + [
        F.col(c) if c in events.columns else F.lit(None).cast(t).alias(c)
        for c, t in _OPTIONAL.items()
    ]
    df = events.filter(F.col("ts") < utc_start(as_of)).select(*cols)
    labelled = F.col("event_type").isin("click", "purchase")
    # Rows carrying a session_id need no sessionising, so only their clicks and purchases are
    # shuffled; only rows without one go through the inactivity window, which must see every
    # event type. As before, a derived session and a given one are never the same session.
    derived = df
    if "session_id" in keep:
        derived = df.filter(F.col("session_id").isNull()).drop("session_id")
    derived = _with_session_key(derived, gap_minutes).filter(labelled)
    # partitioned by a superset of the sessionising window's keys: no second shuffle
    parts = [_intent(derived, ["user_id", _DERIVED, SESSION_KEY], decay, epsilon, gap_minutes)]
    if "session_id" in keep:
        given = df.filter(F.col("session_id").isNotNull() & labelled).withColumn(
            SESSION_KEY, F.col("session_id")
        )
        parts.append(_intent(given, ["user_id", SESSION_KEY], decay, epsilon, gap_minutes))
    return parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])


def _intent(
    df: DataFrame, partition: list[str], decay: float, epsilon: float, gap_minutes: float
) -> DataFrame:
    """Clicks of `df` (clicks and purchases with a session key) labelled by the first purchase at
    or after them in the same session of the same user, as INTENT_COLUMNS."""
    from_here = (
        Window.partitionBy(*partition)
        .orderBy(F.unix_micros(F.col("ts")))
        .rangeBetween(Window.currentRow, Window.unboundedFollowing)
    )
    next_purchase = F.min(F.when(F.col("event_type") == "purchase", F.col("ts"))).over(from_here)
    out = df.withColumn("_tp", next_purchase).filter(F.col("event_type") == "click")
    weight = intent_weight(
        F.col("ts"), F.col("_tp"), decay=decay, epsilon=epsilon, gap_minutes=gap_minutes
    )
    return out.select(
        *[c for c in INTENT_COLUMNS if c not in ("intent_weight", "purchased")],
        weight.alias("intent_weight"),
        F.col("_tp").isNotNull().alias("purchased"),
    )
