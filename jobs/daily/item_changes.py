"""Dated price and stock changes, the part of the ingest step that makes the catalogue as of `ds`.

The lake's optional `item_changes` table (`jobs.core.lake.ITEM_CHANGE_SCHEMA`) holds dated
changes of an item's price and/or stock. A run as of `ds` reads only the changes dated before
`ds` (a change dated d is known at the end of d); later ones are not yet known and are neither
read nor counted as bad. The read changes are checked like the catalogue: bad rows go to
`warehouse/quarantine_item_changes/ds=<ds>` with their reason (`null item_id`, `empty item_id`,
`null changed_on`, `empty change` (neither price nor stock), `negative price`,
`item_id not in catalogue` (not listed as of `ds`), `duplicate change` (a second change of one
item on one day; the first by price, then stock, is kept)), and a share of bad rows above
`ingest.max_bad_share` fails the run. Each item's latest good price and latest good stock flag
then override the catalogue row's (`apply_changes`).
"""

from __future__ import annotations

from typing import Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import IngestError
from jobs.core.lake import Lake, join
from jobs.daily.raw_files import check_files, read_groups, share_error


def conform_changes(raw: Any) -> Any:
    """The changes' rows in the contract's columns and types (missing optional columns null)."""
    from pyspark.sql import functions as F

    from jobs.core.lake import ITEM_CHANGE_SCHEMA

    out = raw
    for field in ITEM_CHANGE_SCHEMA:
        if field.name not in raw.columns:
            out = out.withColumn(field.name, F.lit(None))
    return out.select(
        F.col("item_id").cast("string"),
        F.col("changed_on").cast("date"),
        F.col("price").cast("double"),
        F.col("in_stock").cast("boolean"),
    )


def known_before(df: Any, column: str, ds: str) -> Any:
    """The rows of `df` whose date `column` is before `ds`, or null (bad or undated rows are
    read, to be quarantined or to count as always known): the facts a run as of `ds` knows."""
    from pyspark.sql import functions as F

    return df.filter(F.col(column).isNull() | (F.col(column) < F.lit(ds).cast("date")))


def flag_changes(changes: Any, item_ids: Any) -> Any:
    """The conformed changes with `reject_reason` (null for a good row); `item_ids` is a
    one-column DataFrame of the catalogue's items as of the run."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    listed = item_ids.select(F.col("item_id").alias("_listed")).distinct()
    joined = changes.join(listed, changes["item_id"] == listed["_listed"], "left")
    reason = F.coalesce(
        F.when(F.col("item_id").isNull(), F.lit("null item_id")),
        F.when(F.trim(F.col("item_id")) == "", F.lit("empty item_id")),
        F.when(F.col("changed_on").isNull(), F.lit("null changed_on")),
        F.when(F.col("price").isNull() & F.col("in_stock").isNull(), F.lit("empty change")),
        F.when(F.col("price") < 0, F.lit("negative price")),
        F.when(F.col("_listed").isNull(), F.lit("item_id not in catalogue")),
    )
    first_copy = Window.partitionBy("item_id", "changed_on", reason.isNull()).orderBy(
        F.col("price").asc_nulls_last(), F.col("in_stock").asc_nulls_last()
    )
    flagged = joined.withColumn("reject_reason", reason).withColumn(
        "_r", F.row_number().over(first_copy)
    )
    return flagged.withColumn(
        "reject_reason",
        F.when(
            F.col("reject_reason").isNull() & (F.col("_r") > 1), F.lit("duplicate change")
        ).otherwise(F.col("reject_reason")),
    ).drop("_r", "_listed")


def latest_values(good: Any) -> Any:
    """Per item with a change: its latest changed price and latest changed stock flag (null
    where no change set that column)."""
    from pyspark.sql import functions as F

    def latest(column: str) -> Any:
        return (
            good.filter(F.col(column).isNotNull())
            .groupBy("item_id")
            .agg(F.max_by(column, "changed_on").alias(f"_{column}"))
        )

    return latest("price").join(latest("in_stock"), "item_id", "full")


def apply_changes(items: Any, latest: Any | None) -> Any:
    """The catalogue rows with each item's latest known price and stock (`latest_values`)."""
    from pyspark.sql import functions as F

    if latest is None:
        return items
    columns = items.columns
    out = items.join(latest, "item_id", "left")
    return (
        out.withColumn("price", F.coalesce(F.col("_price"), F.col("price")))
        .withColumn("in_stock", F.coalesce(F.col("_in_stock"), F.col("in_stock")))
        .select(*columns)
    )


def ingest_changes(
    spark: Any, lake: Lake, ds: str, cfg: Config, item_ids: Any
) -> tuple[dict[str, Any], Any | None]:
    """The run's changes checked and quarantined: (summary, `latest_values` or None when the
    lake has no `item_changes` table). Raises `SchemaError` for a bad file and `IngestError`
    when the share of bad rows is above `ingest.max_bad_share` (the quarantine is written
    first)."""
    from pyspark.sql import functions as F

    from jobs.core.lake import ITEM_CHANGE_SCHEMA, REQUIRED_ITEM_CHANGE_COLUMNS

    files = io.list_files(lake.item_changes)
    if not files:
        return {"raw": 0, "accepted": 0, "quarantined": 0, "reasons": {}}, None
    groups = check_files(
        [(f"item_changes file {name}", join(lake.item_changes, name)) for name, _ in files],
        ITEM_CHANGE_SCHEMA,
        REQUIRED_ITEM_CHANGE_COLUMNS,
    )
    changes = known_before(
        read_groups(spark, groups, conform_changes, lake.item_changes), "changed_on", ds
    )
    flagged = flag_changes(changes, item_ids).cache()
    bad = flagged.filter(F.col("reject_reason").isNotNull())
    reasons = {
        r["reject_reason"]: r["n"]
        for r in bad.groupBy("reject_reason").agg(F.count("*").alias("n")).collect()
    }
    n_all = flagged.count()
    summary: dict[str, Any] = {
        "raw": n_all,
        "accepted": n_all - sum(reasons.values()),
        "quarantined": sum(reasons.values()),
        "reasons": reasons,
    }
    quarantine = join(lake.warehouse, "quarantine_item_changes", f"ds={ds}")
    bad.coalesce(1).write.mode("overwrite").parquet(quarantine)
    error = share_error("item_changes", summary, cfg.ingest.max_bad_share)
    if error:
        flagged.unpersist()
        raise IngestError(f"{error}; rows kept in {quarantine}")
    good = flagged.filter(F.col("reject_reason").isNull()).drop("reject_reason")
    latest = latest_values(good).cache()
    latest.count()  # materialised before `flagged` is released
    flagged.unpersist()
    return summary, latest
