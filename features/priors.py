"""User–carousel Beta priors (docs/methods.md §1), incremental from day to day.

A *trial* is one showing of a carousel to a user: the impressions of one carousel in one visit
(a session, or the day without sessions) on one UTC day. It is a *success* when the user clicked
or added to cart in that carousel during that visit. Trials are keyed by day so that a
day-by-day update and a recompute from the whole history count exactly the same trials.

The state is sufficient statistics per (user, carousel): decayed `trials` and `successes`.
Advancing it by one day multiplies by 0.5 ** (1 / half_life) and adds the new day's counts, which
equals weighting each day d by 0.5 ** ((as_of − 1 − d) / half_life) in a full recompute.

Posterior: a = a0 + successes, b = b0 + trials − successes, where the carousel-level prior
(a0, b0) = strength · (p_k, 1 − p_k) and p_k is the carousel's rate shrunk towards the global
rate, so a pair never seen is neither 0 nor 1.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.events import require_columns

STATE_COLUMNS = ("user_id", "carousel_id", "trials", "successes")


def _start(as_of: dt.date) -> Column:
    return F.lit(dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)).cast("timestamp")


def carousel_trials(
    events: DataFrame, *, as_of: dt.date, since: dt.date | None = None
) -> DataFrame:
    """One row per (user_id, carousel_id, day, visit) with `success` 0/1, from events in
    [since, as_of) (all before `as_of` when `since` is None)."""
    require_columns(events, ["user_id", "carousel_id", "event_type", "ts"], "events")
    visit = F.date_format("ts", "yyyy-MM-dd")
    if "session_id" in events.columns:
        visit = F.coalesce(F.col("session_id"), visit)
    cond = (F.col("ts") < _start(as_of)) & F.col("carousel_id").isNotNull()
    if since is not None:
        cond = cond & (F.col("ts") >= _start(since))
    return (
        events.filter(cond)
        .withColumn("day", F.to_date("ts"))
        .withColumn("_visit", visit)
        .groupBy("user_id", "carousel_id", "day", "_visit")
        .agg(
            F.max(F.when(F.col("event_type") == "impression", 1).otherwise(0)).alias("shown"),
            F.max(F.when(F.col("event_type").isin("click", "add_to_cart"), 1).otherwise(0)).alias(
                "success"
            ),
        )
        # an engagement implies the carousel was shown, even if its impression row is missing
        .filter((F.col("shown") == 1) | (F.col("success") == 1))
        .drop("shown", "_visit")
    )


def _decay(half_life_days: float, days: Column | float) -> Column:
    if half_life_days <= 0:
        return F.lit(1.0)
    d = days if isinstance(days, Column) else F.lit(float(days))
    return F.pow(F.lit(0.5), d / F.lit(float(half_life_days)))


def trial_counts(trials: DataFrame, *, as_of: dt.date, half_life_days: float = 0.0) -> DataFrame:
    """State from trials: user_id, carousel_id, trials, successes (day-decayed to `as_of`)."""
    age = F.datediff(F.lit(as_of - dt.timedelta(days=1)), F.col("day")).cast("double")
    decay_weight = _decay(half_life_days, age)
    return trials.groupBy("user_id", "carousel_id").agg(
        F.sum(decay_weight).alias("trials"),
        F.sum(decay_weight * F.col("success")).alias("successes"),
    )


def advance_state(
    previous: DataFrame, new_day: DataFrame, *, half_life_days: float = 0.0, days: int = 1
) -> DataFrame:
    """Yesterday's state decayed by `days`, plus the new day's counts (both STATE_COLUMNS)."""
    require_columns(previous, list(STATE_COLUMNS), "previous prior state")
    require_columns(new_day, list(STATE_COLUMNS), "new day's trial counts")
    d = _decay(half_life_days, float(days))
    prev = previous.select(
        "user_id",
        "carousel_id",
        (F.col("trials") * d).alias("pt"),
        (F.col("successes") * d).alias("ps"),
    )
    new = new_day.select(
        "user_id", "carousel_id", F.col("trials").alias("nt"), F.col("successes").alias("ns")
    )
    return prev.join(new, ["user_id", "carousel_id"], "full_outer").select(
        "user_id",
        "carousel_id",
        (F.coalesce("pt", F.lit(0.0)) + F.coalesce("nt", F.lit(0.0))).alias("trials"),
        (F.coalesce("ps", F.lit(0.0)) + F.coalesce("ns", F.lit(0.0))).alias("successes"),
    )


def carousel_prior(state: DataFrame, *, strength: float) -> DataFrame:
    """Carousel-level prior from the state: carousel_id, a0, b0, p_global."""
    if strength <= 0:
        raise ValueError(f"prior strength must be > 0, got {strength}")
    require_columns(state, list(STATE_COLUMNS), "prior state")
    tot = state.agg(F.sum("trials").alias("n"), F.sum("successes").alias("s")).first()
    n, s = (tot["n"] or 0.0), (tot["s"] or 0.0)
    p_global = (s + 1.0) / (n + 2.0)  # Laplace: defined even on an empty log
    per = state.groupBy("carousel_id").agg(
        F.sum("trials").alias("n"), F.sum("successes").alias("s")
    )
    p_k = (F.col("s") + F.lit(p_global * strength)) / (F.col("n") + F.lit(strength))
    return per.select(
        "carousel_id",
        (p_k * strength).alias("a0"),
        ((1 - p_k) * strength).alias("b0"),
        F.lit(p_global).alias("p_global"),
    )


def user_carousel_priors(state: DataFrame, prior: DataFrame) -> DataFrame:
    """Posterior per (user_id, carousel_id): a, b, lam = a / (a + b), trials, successes."""
    require_columns(state, list(STATE_COLUMNS), "prior state")
    return (
        # one prior row per carousel: broadcasting it avoids shuffling the (large) state
        state.join(F.broadcast(prior.select("carousel_id", "a0", "b0")), "carousel_id")
        .withColumn("a", F.col("a0") + F.col("successes"))
        .withColumn("b", F.col("b0") + F.col("trials") - F.col("successes"))
        .withColumn("lam", F.col("a") / (F.col("a") + F.col("b")))
        .select("user_id", "carousel_id", "a", "b", "lam", "trials", "successes")
    )
