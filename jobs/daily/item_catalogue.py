"""The item catalogue part of the ingest step: the catalogue as of `ds`.

The raw catalogue's files are checked against the input contract; the items listed before `ds`
(`first_seen` before `ds`, or null) are conformed and flagged (null or empty ids, null
categories, negative prices, duplicates), bad rows quarantined; each item's latest price and
stock changes dated before `ds` are applied (jobs/daily/item_changes.py), and the validated
snapshot is written to `warehouse/items/ds=<ds>`. Items listed on or after `ds` are not yet
known: not read (the report counts them as `not_yet_listed`)."""

from __future__ import annotations

from typing import Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import IngestError
from jobs.core.lake import Lake, join
from jobs.daily.item_changes import apply_changes, ingest_changes, known_before
from jobs.daily.raw_files import check_files, read_groups, share_error


def conform_items(raw: Any) -> Any:
    """The catalogue's rows in the contract's columns and types (`in_stock` and `has_image`
    default to true; other missing columns are null)."""
    from pyspark.sql import functions as F

    from jobs.core.lake import ITEM_SCHEMA

    defaults = {"in_stock": F.lit(True), "has_image": F.lit(True)}
    out = raw
    for field in ITEM_SCHEMA:
        if field.name not in raw.columns:
            out = out.withColumn(field.name, defaults.get(field.name, F.lit(None)))
    return out.select(
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


def flag_items(out: Any) -> Any:
    """The conformed rows with `reject_reason` (null for a good row), cached."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    reason = F.coalesce(
        F.when(F.col("item_id").isNull(), F.lit("null item_id")),
        F.when(F.trim(F.col("item_id")) == "", F.lit("empty item_id")),
        F.when(F.col("category_id").isNull(), F.lit("null category_id")),
        F.when(F.col("price") < 0, F.lit("negative price")),
    )
    first_copy = Window.partitionBy("item_id", reason.isNull()).orderBy(
        *[F.col(c).asc_nulls_last() for c in ("title", "category_id", "price")]
    )
    flagged = out.withColumn("reject_reason", reason).withColumn(
        "_r", F.row_number().over(first_copy)
    )
    return (
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


def ingest_items(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Validate the item catalogue as of `ds` into `warehouse/items/ds=`; bad rows quarantined.

    Files are checked like raw events (`SchemaError`). Row reasons: `null item_id`,
    `empty item_id`, `null category_id`, `negative price`, `duplicate item_id` (the first copy
    by title, category and price is kept). Returns raw/accepted/quarantined counts and reasons;
    raises `IngestError` when the catalogue is missing, has no rows, or its share of bad rows is
    above `ingest.max_bad_share` (the quarantine is written first, the snapshot is not).
    """
    from pyspark.sql import functions as F

    from jobs.core.lake import ITEM_SCHEMA, REQUIRED_ITEM_COLUMNS
    from jobs.core.spark import get_spark
    from validation import suites
    from validation.gx import run_suite

    spark = get_spark(cfg.spark)
    files = io.list_files(lake.items)
    if not files:
        raise IngestError(f"the item catalogue {lake.items} is missing or empty")
    groups = check_files(
        [(f"items file {name}", join(lake.items, name)) for name, _ in files],
        ITEM_SCHEMA,
        REQUIRED_ITEM_COLUMNS,
    )
    conformed = read_groups(spark, groups, conform_items, lake.items)
    flagged = flag_items(known_before(conformed, "first_seen", ds))
    good = flagged.filter(F.col("reject_reason").isNull()).drop("reject_reason")
    bad = flagged.filter(F.col("reject_reason").isNotNull())
    reasons = {
        r["reject_reason"]: r["n"]
        for r in bad.groupBy("reject_reason").agg(F.count("*").alias("n")).collect()
    }
    n_bad = sum(reasons.values())
    n_all = flagged.count()
    if n_all == 0:
        flagged.unpersist()
        raise IngestError(
            f"the item catalogue {lake.items} has no rows"
            if conformed.count() == 0
            else f"the item catalogue {lake.items} lists no item before {ds} (every first_seen "
            "is on or after it): run a later ds, or fix the listing dates"
        )
    summary: dict[str, Any] = {
        "raw": n_all,
        "accepted": n_all - n_bad,
        "quarantined": n_bad,
        "reasons": reasons,
    }
    quarantine = join(lake.warehouse, "quarantine_items", f"ds={ds}")
    bad.coalesce(1).write.mode("overwrite").parquet(quarantine)
    error = share_error("items", summary, cfg.ingest.max_bad_share)
    if error:
        flagged.unpersist()
        raise IngestError(f"{error}; rows kept in {quarantine}")
    summary["not_yet_listed"] = conformed.count() - n_all
    summary["changes"], latest = ingest_changes(spark, lake, ds, cfg, good.select("item_id"))
    good = apply_changes(good, latest)
    summary["validation"] = run_suite("items", good, suites.items)
    good.coalesce(1).write.mode("overwrite").parquet(join(lake.warehouse, "items", f"ds={ds}"))
    flagged.unpersist()
    if latest is not None:
        latest.unpersist()
    return summary


def ensure_items_snapshot(lake: Lake, ds: str, cfg: Config) -> None:
    """The catalogue as of `ds` for a day that was never ingested (the start of a training label
    window): validated as that day's run would have (its report is not written)."""
    if not io.exists(join(lake.warehouse, "items", f"ds={ds}", "_SUCCESS")):
        ingest_items(lake, ds, cfg)
