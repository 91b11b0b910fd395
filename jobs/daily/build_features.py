"""Feature job: every feature table for `ds`, from accepted events strictly before `ds`.

Each table is written to `warehouse/features/<table>/ds=<ds>` (replacing that partition whole:
written aside, then swapped in, so a run killed half-way leaves each table's previous partition
and a retry or backfill gives the same result), then validated by its Great Expectations suite, with
the row count bounded by the previous day's partition. A failed suite fails the task and lists
the failed expectations.

The user–carousel Beta prior *state* advances incrementally: yesterday's state plus yesterday's
events, when yesterday's state exists and covers exactly the accepted partitions it should;
otherwise it is recomputed from the whole history (same numbers, see features/priors.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.lake import Lake, join, parse_ds, shift_ds
from jobs.core.spark import write_spark_parquet
from jobs.daily.catalogue import items_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table:
    name: str
    suite: Callable[[Any], list[Any]] | None


def _accepted_partitions(lake: Lake, ds: str, start: str | None = None) -> list[str]:
    return [p for p in io.partitions(lake.events) if p < ds and (start is None or p >= start)]


def read_events(
    lake: Lake, ds: str, cfg: Config, *, days: int | None = None, all_history: bool = False
) -> Any:
    """Accepted events of the partitions strictly before `ds` (lookback window by default)."""
    from pyspark.sql import functions as F

    from jobs.core.spark import get_spark

    spark = get_spark(cfg.spark)
    start = None
    if not all_history:
        start = (parse_ds(ds) - dt.timedelta(days=days or cfg.features.lookback_days)).isoformat()
    parts = _accepted_partitions(lake, ds, start)
    if not parts:
        raise FileNotFoundError(
            f"no accepted events before ds={ds} in {lake.events}: run ingest first"
        )
    df = spark.read.option("basePath", lake.events).parquet(
        *[join(lake.events, f"ds={p}") for p in parts]
    )
    return df.withColumn("ds", F.col("ds").cast("string"))


def read_items(lake: Lake, ds: str, cfg: Config) -> Any:
    from jobs.core.spark import get_spark

    return get_spark(cfg.spark).read.parquet(items_snapshot(lake, ds))


def _coverage(lake: Lake, ds: str) -> dict[str, Any]:
    """Which accepted partitions (and which ingested versions of them) lie before `ds`."""
    out = {}
    for p in _accepted_partitions(lake, ds):
        marker = join(lake.events, f"ds={p}", "_INGEST.json")
        out[p] = io.read_json(marker).get("source") if io.exists(marker) else None
    return out


def prior_state(lake: Lake, ds: str, cfg: Config) -> tuple[Any, str]:
    """The Beta prior state as of `ds`, and how it was obtained ("incremental" or "full")."""
    from features.priors import advance_state, carousel_trials, trial_counts
    from jobs.core.spark import get_spark

    fc = cfg.features
    as_of = parse_ds(ds)
    prev_ds = shift_ds(ds, -1)
    prev_path = lake.feature("priors_state", prev_ds)
    meta_path = join(prev_path, "_STATE.json")
    if io.exists(meta_path):
        meta = io.read_json(meta_path)
        wanted = {k: v for k, v in _coverage(lake, ds).items() if k < prev_ds}
        if meta.get("covers") == wanted and meta.get("half_life_days") == fc.prior_half_life_days:
            previous = get_spark(cfg.spark).read.parquet(prev_path)
            if prev_ds in io.partitions(lake.events):
                day = read_events(lake, ds, cfg, days=1)
                new = trial_counts(
                    carousel_trials(day, as_of=as_of, since=parse_ds(prev_ds)), as_of=as_of
                )
            else:  # an empty day still ages the state by one day
                new = previous.limit(0)
            return advance_state(
                previous, new, half_life_days=fc.prior_half_life_days, days=1
            ), "incremental"
        log.info("prior state of %s does not cover the current partitions: recomputing", prev_ds)
    events = read_events(lake, ds, cfg, all_history=True)
    trials = carousel_trials(events, as_of=as_of)
    return trial_counts(trials, as_of=as_of, half_life_days=fc.prior_half_life_days), "full"


def compute(lake: Lake, ds: str, cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """Lazily defined feature tables (Spark DataFrames), plus facts for the report."""
    from features.aggregates import (
        carousel_slot_engagement,
        user_aggregates,
        user_category_frequency,
    )
    from features.context import user_context
    from features.counts import user_category_counts, user_item_counts
    from features.items import item_stats, user_activity
    from features.priors import carousel_prior, user_carousel_priors

    as_of = parse_ds(ds)
    fc = cfg.features
    # Each table scans the events from Parquet. Caching them instead was measured at 1M users
    # (51M events): building Spark's columnar cache cost 244 s and saved about 70 s in the
    # other tables' scans
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
    )
    ui = ui.persist()  # written, then aggregated by category
    state, mode = prior_state(lake, ds, cfg)
    # the state is written, summed for the carousel prior and joined for the posterior
    state = state.cache()
    cprior = carousel_prior(state, strength=fc.prior_strength)
    tables = {
        "user_item_counts": ui,
        "user_category_counts": user_category_counts(ui, items),
        "priors_state": state,
        "carousel_priors": cprior,
        "user_carousel_priors": user_carousel_priors(state, cprior),
        "item_stats": item_stats(events, items, as_of=as_of, recent_days=fc.trending_days),
        "user_activity": user_activity(events, as_of=as_of),
        "user_aggregates": user_aggregates(events, as_of=as_of),
        "user_category_frequency": user_category_frequency(events, items, as_of=as_of),
        "user_context": user_context(events, as_of=as_of),
        "carousel_slot_engagement": carousel_slot_engagement(events, as_of=as_of),
    }
    return tables, {"priors_mode": mode}


def _examination(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Slot/position examination propensities from randomised traffic, when the lake has some."""
    from features.propensity import ExaminationFitError, examination_table

    events = read_events(lake, ds, cfg)
    if "logging_policy" not in events.columns:
        return {"skipped": "no logging_policy column: no randomised traffic to estimate from"}
    try:
        table = examination_table(events, as_of=parse_ds(ds))
    except (ValueError, ExaminationFitError) as exc:
        # later stages fall back to default curves; the reason is kept in the run's report
        log.warning("examination propensities not estimated for %s: %s", ds, exc)
        return {"skipped": str(exc)}
    from validation import suites
    from validation.gx import run_suite

    checked = table.assign(
        _ci_ordered=(table["ci_low"] <= table["propensity"] + 1e-12)
        & (table["propensity"] <= table["ci_high"] + 1e-12)
    )
    run_suite("examination", checked, suites.examination, engine="pandas")
    path = lake.feature("examination", ds)
    spark = events.sparkSession
    write_spark_parquet(spark.createDataFrame(table).coalesce(1), path)
    return {"path": path, "rows": len(table)}


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Build, write and validate every feature table for `ds`."""
    from validation import suites
    from validation.gx import run_suite

    tables, facts = compute(lake, ds, cfg)
    spark = tables["user_item_counts"].sparkSession
    out: dict[str, Any] = {"ds": ds, **facts, "tables": {}}
    prev_ds = shift_ds(ds, -1)
    for name, df in tables.items():
        t0 = time.perf_counter()
        path = lake.feature(name, ds)
        write_spark_parquet(df, path)  # whole or not at all: a killed run leaves the old one
        t_write = time.perf_counter() - t0
        written = spark.read.parquet(path)
        rows = written.count()
        prev_path = lake.feature(name, prev_ds)
        previous = spark.read.parquet(prev_path).count() if io.exists(prev_path) else None
        suite = getattr(suites, name, None)
        if suite is not None:
            run_suite(
                name,
                written,
                suite,
                previous_rows=previous,
                max_ratio=cfg.features.row_count_max_ratio,
            )
        out["tables"][name] = {
            "path": path,
            "rows": rows,
            "previous_rows": previous,
            "write_s": round(t_write, 2),
            "validate_s": round(time.perf_counter() - t0 - t_write, 2),
        }
    io.write_json(
        join(lake.feature("priors_state", ds), "_STATE.json"),
        {
            "covers": _coverage(lake, ds),
            "half_life_days": cfg.features.prior_half_life_days,
            "mode": facts["priors_mode"],
        },
    )
    out["tables"]["examination"] = _examination(lake, ds, cfg)
    for cached in (tables["user_item_counts"], tables["priors_state"]):
        cached.unpersist()
    io.write_json(join(lake.reports(ds), "features.json"), out)
    log.info(
        "features for %s (%s priors): %s",
        ds,
        facts["priors_mode"],
        {k: v.get("rows") for k, v in out["tables"].items()},
    )
    return out
