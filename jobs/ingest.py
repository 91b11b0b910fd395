"""Ingest: validate raw event partitions, quarantine bad rows with reasons, write accepted rows.

For a run as of `ds`, every raw partition before `ds` whose files changed since it was last
ingested (or that was never ingested) is (re)processed. Each processed partition is overwritten
in `warehouse/events` and `warehouse/quarantine`, so re-ingesting a file never duplicates rows.
Row counts reconcile per partition: raw = accepted + quarantined.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from jobs import io
from jobs.config import Config
from jobs.lake import Lake, join, parse_ds

log = logging.getLogger(__name__)


class IngestError(RuntimeError):
    """The raw data cannot be ingested as it is (missing columns, too many bad rows, no data)."""


def _fingerprint(lake: Lake, ds: str) -> list[list[Any]]:
    return [[name, size] for name, size in io.list_files(lake.raw_events_ds(ds))]


def pending_partitions(lake: Lake, ds: str, lookback_days: int) -> tuple[list[str], list[str]]:
    """(partitions to (re)ingest, partitions already up to date) among raw partitions < ds."""
    start = parse_ds(ds) - dt.timedelta(days=lookback_days)
    todo, done = [], []
    for p in io.partitions(lake.raw_events):
        if not (start <= parse_ds(p) < parse_ds(ds)):
            continue
        marker = join(lake.events, f"ds={p}", "_INGEST.json")
        fp = _fingerprint(lake, p)
        if io.exists(marker) and io.read_json(marker).get("source") == fp:
            done.append(p)
        else:
            todo.append(p)
    return todo, done


def run(lake: Lake, ds: str, cfg: Config, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Ingest pending raw partitions before `ds`; returns the run's ingest report."""
    from pyspark.sql import functions as F

    from features.events import REJECT_REASON, conform_events, flag_bad_rows
    from jobs.spark import get_spark
    from validation import suites
    from validation.gx import run_suite

    parse_ds(ds)
    todo, done = pending_partitions(lake, ds, cfg.features.lookback_days)
    report: dict[str, Any] = {"ds": ds, "ingested": {}, "up_to_date": done}
    if not todo and not done:
        raise IngestError(f"no raw event partitions before ds={ds} under {lake.raw_events}")
    spark = get_spark(cfg.spark)
    items_clean = ingest_items(lake, ds, cfg)
    if not todo:
        log.info("ingest: all %d partitions up to date", len(done))
        report["items"] = items_clean
        io.write_json(join(lake.reports(ds), "ingest.json"), report)
        return report

    now = now or dt.datetime.now(dt.UTC)
    limit = F.lit(now + dt.timedelta(seconds=cfg.ingest.max_future_seconds)).cast("timestamp")
    paths = [lake.raw_events_ds(p) for p in todo]
    raw = (
        spark.read.option("basePath", lake.raw_events).option("mergeSchema", "true").parquet(*paths)
    )
    raw = raw.withColumn("ds", F.col("ds").cast("string"))
    items = spark.read.parquet(join(lake.warehouse, "items", f"ds={ds}")).select("item_id")
    flagged = flag_bad_rows(conform_events(raw), now_limit=limit, item_ids=items)
    bad_cols = [c for c in flagged.columns if c.startswith("_bad_")]
    # flagged is read twice (accepted + quarantined) and counted: cache avoids re-reading raw files
    flagged = flagged.cache()

    counts = {
        (r["ds"], r["reason"]): r["n"]
        for r in flagged.groupBy("ds", F.col(REJECT_REASON).alias("reason"))
        .agg(F.count("*").alias("n"))
        .collect()
    }
    for p in todo:
        raw_n = sum(n for (d, _), n in counts.items() if d == p)
        bad = {reason: n for (d, reason), n in counts.items() if d == p and reason is not None}
        bad_n = sum(bad.values())
        report["ingested"][p] = {
            "raw": raw_n,
            "accepted": raw_n - bad_n,
            "quarantined": bad_n,
            "reasons": bad,
        }
    total_raw = sum(v["raw"] for v in report["ingested"].values())
    total_bad = sum(v["quarantined"] for v in report["ingested"].values())
    share = total_bad / total_raw if total_raw else 0.0
    report.update(raw=total_raw, quarantined=total_bad, bad_share=share)

    accepted = flagged.filter(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON, *bad_cols)
    quarantined = flagged.filter(F.col(REJECT_REASON).isNotNull())
    quarantined.write.mode("overwrite").partitionBy("ds").parquet(lake.quarantine)
    if share > cfg.ingest.max_bad_share:
        flagged.unpersist()
        io.write_json(join(lake.reports(ds), "ingest.json"), report)
        reasons: dict[str, int] = {}
        for v in report["ingested"].values():
            for r, n in v["reasons"].items():
                reasons[r] = reasons.get(r, 0) + n
        raise IngestError(
            f"{total_bad} of {total_raw} rows ({share:.1%}) were rejected, above "
            f"ingest.max_bad_share={cfg.ingest.max_bad_share:.1%}; reasons: {reasons}; "
            f"rows kept in {lake.quarantine}"
        )

    checked = accepted.withColumn("_ts_in_partition", F.to_date("ts") == F.to_date("ds"))
    report["validation"] = run_suite("accepted_events", checked, suites.accepted_events)
    accepted.write.mode("overwrite").partitionBy("ds").parquet(lake.events)
    flagged.unpersist()
    for p in todo:
        io.write_json(
            join(lake.events, f"ds={p}", "_INGEST.json"),
            {"source": _fingerprint(lake, p), **report["ingested"][p]},
        )
    report["items"] = items_clean
    io.write_json(join(lake.reports(ds), "ingest.json"), report)
    log.info("ingest: %d partitions, %d rows, %d quarantined", len(todo), total_raw, total_bad)
    return report


def ingest_items(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Validate the item catalogue snapshot into `warehouse/items/ds=`; bad rows quarantined."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from features.events import require_columns
    from jobs.lake import ITEM_SCHEMA, REQUIRED_ITEM_COLUMNS
    from jobs.spark import get_spark
    from validation import suites
    from validation.gx import run_suite

    spark = get_spark(cfg.spark)
    if not io.list_files(lake.items):
        raise IngestError(f"the item catalogue {lake.items} is missing or empty")
    raw = spark.read.parquet(lake.items)
    require_columns(raw, REQUIRED_ITEM_COLUMNS, "items")
    defaults = {"in_stock": F.lit(True), "has_image": F.lit(True)}
    out = raw
    for field in ITEM_SCHEMA:
        if field.name not in raw.columns:
            out = out.withColumn(field.name, defaults.get(field.name, F.lit(None)))
    out = out.select(
        F.col("item_id").cast("string"),
        F.col("title").cast("string"),
        F.col("category_id").cast("string"),
        F.col("category_path").cast("string"),
        F.col("brand").cast("string"),
        F.col("price").cast("double"),
        F.coalesce(F.col("in_stock").cast("boolean"), F.lit(True)).alias("in_stock"),
        F.coalesce(F.col("has_image").cast("boolean"), F.lit(True)).alias("has_image"),
        F.col("first_seen").cast("date"),
    )
    reason = F.coalesce(
        F.when(F.col("item_id").isNull(), F.lit("null item_id")),
        F.when(F.col("category_id").isNull(), F.lit("null category_id")),
        F.when(F.col("price") < 0, F.lit("negative price")),
    )
    w = Window.partitionBy("item_id", reason.isNull()).orderBy(
        *[F.col(c).asc_nulls_last() for c in ("title", "category_id", "price")]
    )
    flagged = out.withColumn("reject_reason", reason).withColumn("_r", F.row_number().over(w))
    flagged = (
        flagged.withColumn(
            "reject_reason",
            F.when(
                F.col("reject_reason").isNull() & (F.col("_r") > 1), F.lit("duplicate item_id")
            ).otherwise(F.col("reject_reason")),
        )
        .drop("_r")
        # counted, split into good/bad and written twice: cache avoids re-reading the catalogue
        .cache()
    )
    good = flagged.filter(F.col("reject_reason").isNull()).drop("reject_reason")
    bad = flagged.filter(F.col("reject_reason").isNotNull())
    n_bad = bad.count()
    n_all = flagged.count()
    result = run_suite("items", good, suites.items)
    good.coalesce(1).write.mode("overwrite").parquet(join(lake.warehouse, "items", f"ds={ds}"))
    bad.coalesce(1).write.mode("overwrite").parquet(
        join(lake.warehouse, "quarantine_items", f"ds={ds}")
    )
    flagged.unpersist()
    return {"raw": n_all, "accepted": n_all - n_bad, "quarantined": n_bad, "validation": result}
