"""User–carousel Beta priors (METHODS §1).

A *trial* is one showing of a carousel to a user: the impressions of one carousel in one session
(or, without sessions, one day). It is a *success* when the user clicked or added to cart in that
carousel during that session. Posterior: a = a0 + successes, b = b0 + failures, where the
carousel-level prior (a0, b0) = strength · (p_k, 1 − p_k), p_k being the carousel's CTR shrunk
towards the global CTR, so a pair never seen is neither 0 nor 1.
"""

from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from features.events import require_columns


def carousel_trials(events: DataFrame, *, as_of: dt.date) -> DataFrame:
    """One row per (user_id, carousel_id, visit) with `success` 0/1, from events before `as_of`."""
    require_columns(events, ["user_id", "carousel_id", "event_type", "ts"], "events")
    start = F.lit(dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)).cast("timestamp")
    visit = (
        F.coalesce(F.col("session_id"), F.date_format("ts", "yyyy-MM-dd"))
        if "session_id" in events.columns
        else F.date_format("ts", "yyyy-MM-dd")
    )
    df = events.filter((F.col("ts") < start) & F.col("carousel_id").isNotNull()).withColumn(
        "_visit", visit
    )
    return (
        df.groupBy("user_id", "carousel_id", "_visit")
        .agg(
            F.max(F.when(F.col("event_type") == "impression", 1).otherwise(0)).alias("shown"),
            F.max(F.when(F.col("event_type").isin("click", "add_to_cart"), 1).otherwise(0)).alias(
                "success"
            ),
        )
        # an engagement implies the carousel was shown, even if its impression row is missing
        .filter((F.col("shown") == 1) | (F.col("success") == 1))
        .drop("shown")
    )


def carousel_prior(trials: DataFrame, *, strength: float) -> DataFrame:
    """Carousel-level prior: carousel_id, a0, b0 (and the global CTR as `p_global`)."""
    if strength <= 0:
        raise ValueError(f"prior strength must be > 0, got {strength}")
    tot = trials.agg(F.count("*").alias("n"), F.sum("success").alias("s")).first()
    n, s = (tot["n"] or 0), (tot["s"] or 0)
    p_global = (s + 1.0) / (n + 2.0)  # Laplace: defined even on an empty log
    per = trials.groupBy("carousel_id").agg(F.count("*").alias("n"), F.sum("success").alias("s"))
    p_k = (F.col("s") + F.lit(p_global * strength)) / (F.col("n") + F.lit(strength))
    return per.select(
        "carousel_id",
        (p_k * strength).alias("a0"),
        ((1 - p_k) * strength).alias("b0"),
        F.lit(p_global).alias("p_global"),
    )


def user_carousel_priors(trials: DataFrame, prior: DataFrame) -> DataFrame:
    """Posterior per (user_id, carousel_id): a, b, lam = a / (a + b), trials, successes."""
    per = trials.groupBy("user_id", "carousel_id").agg(
        F.count("*").alias("trials"), F.sum("success").alias("successes")
    )
    return (
        per.join(F.broadcast(prior.select("carousel_id", "a0", "b0")), "carousel_id")
        .withColumn("a", F.col("a0") + F.col("successes"))
        .withColumn("b", F.col("b0") + F.col("trials") - F.col("successes"))
        .withColumn("lam", F.col("a") / (F.col("a") + F.col("b")))
        .select("user_id", "carousel_id", "a", "b", "lam", "trials", "successes")
    )
