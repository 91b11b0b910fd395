"""Feature job: compute the feature tables for `ds` from accepted events strictly before `ds`."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from jobs import io
from jobs.config import Config
from jobs.lake import Lake, join, parse_ds

log = logging.getLogger(__name__)

TABLES = (
    "user_item_counts",
    "user_category_counts",
    "user_carousel_priors",
    "carousel_priors",
    "item_stats",
    "user_activity",
)


def read_events(lake: Lake, ds: str, cfg: Config, *, days: int | None = None) -> Any:
    """Accepted events of the `days` (default: lookback) partitions strictly before `ds`."""
    from pyspark.sql import functions as F

    from jobs.spark import get_spark

    spark = get_spark(cfg.spark)
    as_of = parse_ds(ds)
    start = (as_of - dt.timedelta(days=days or cfg.features.lookback_days)).isoformat()
    parts = [p for p in io.partitions(lake.events) if start <= p < ds]
    if not parts:
        raise FileNotFoundError(
            f"no accepted events before ds={ds} in {lake.events}: run ingest first"
        )
    df = spark.read.option("basePath", lake.events).parquet(
        *[join(lake.events, f"ds={p}") for p in parts]
    )
    return df.withColumn("ds", F.col("ds").cast("string"))


def read_items(lake: Lake, ds: str, cfg: Config) -> Any:
    from jobs.spark import get_spark

    return get_spark(cfg.spark).read.parquet(join(lake.warehouse, "items", f"ds={ds}"))


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Build, validate and write every feature table for `ds` (overwriting that partition)."""
    from features.counts import user_category_counts, user_item_counts
    from features.items import item_stats, user_activity
    from features.priors import carousel_prior, carousel_trials, user_carousel_priors
    from validation import suites
    from validation.gx import run_suite

    as_of = parse_ds(ds)
    fc = cfg.features
    events = read_events(lake, ds, cfg)
    items = read_items(lake, ds, cfg)
    ui = user_item_counts(
        events,
        as_of=as_of,
        half_life_days=fc.half_life_days,
        weights={
            "click": fc.weight_click,
            "add_to_cart": fc.weight_add_to_cart,
            "purchase": fc.weight_purchase,
        },
    ).cache()  # reused by the category roll-up and written: avoid recomputing the aggregation
    uc = user_category_counts(ui, items)
    trials = carousel_trials(events, as_of=as_of).cache()  # feeds both prior levels
    cprior = carousel_prior(trials, strength=fc.prior_strength)
    ucp = user_carousel_priors(trials, cprior)
    stats = item_stats(events, items, as_of=as_of, recent_days=fc.trending_days)
    activity = user_activity(events, as_of=as_of)

    tables = {
        "user_item_counts": (ui, suites.user_item_counts),
        "user_category_counts": (uc, suites.user_category_counts),
        "user_carousel_priors": (ucp, suites.user_carousel_priors),
        "carousel_priors": (cprior, None),
        "item_stats": (stats, suites.item_stats),
        "user_activity": (activity, suites.user_activity),
    }
    out: dict[str, Any] = {"ds": ds, "tables": {}}
    for name, (df, suite) in tables.items():
        path = lake.feature(name, ds)
        df.write.mode("overwrite").parquet(path)
        written = df.sparkSession.read.parquet(path)
        if suite is not None:
            run_suite(name, written, suite)
        out["tables"][name] = {"path": path, "rows": written.count()}
    ui.unpersist()
    trials.unpersist()
    io.write_json(join(lake.reports(ds), "features.json"), out)
    log.info("features for %s: %s", ds, {k: v["rows"] for k, v in out["tables"].items()})
    return out
