"""Column contract and row-level checks of raw events (pure Spark functions)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.core.lake import EVENT_SCHEMA, EVENT_TYPES, REQUIRED_EVENT_COLUMNS

_SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "timestamp[us, tz=UTC]": T.TimestampType(),
    "int32": T.IntegerType(),
    "double": T.DoubleType(),
}

# The contract as a Spark schema (without the `ds` partition column)
EVENT_STRUCT = T.StructType(
    [T.StructField(f.name, _SPARK_TYPES[str(f.type)], True) for f in EVENT_SCHEMA]
)

REJECT_REASON = "reject_reason"


def require_columns(df: DataFrame, columns: tuple[str, ...] | list[str], table: str) -> None:
    """Raise a ValueError naming every required column `df` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table} is missing required column(s): {', '.join(missing)}")


def conform_events(raw: DataFrame) -> DataFrame:
    """Cast raw events to the contract's types; add absent optional columns as nulls.

    A value that cannot be cast exactly becomes null and its original is kept in `_bad_<col>`,
    so the quarantine can name the column and value (`bad type for slot: 1.5`) instead of
    silently losing the row's meaning. Casts never raise (ANSI mode, Spark's default, would fail
    the whole job on one malformed value): a number that does not fit an int column (too large,
    or not whole) counts as not castable rather than being wrapped or truncated.
    Unknown extra columns are kept as they are.
    """
    require_columns(raw, REQUIRED_EVENT_COLUMNS, "events")
    out = raw
    for field in EVENT_SCHEMA:
        target = _SPARK_TYPES[str(field.type)]
        if field.name not in raw.columns:
            out = out.withColumn(field.name, F.lit(None).cast(target))
            continue
        source_type = raw.schema[field.name].dataType
        if source_type == target:
            continue
        original = F.col(field.name)
        casted = original.try_cast(target)
        lost = original.isNotNull() & casted.isNull()
        if isinstance(target, T.IntegralType) and isinstance(source_type, T.NumericType):
            # try_cast truncates 1.5 to 1: a value is kept only when it survives the round trip
            lost = lost | (casted.cast(source_type) != original)
        lost = F.coalesce(lost, F.lit(False))
        out = out.withColumn(f"_bad_{field.name}", F.when(lost, original.cast("string")))
        out = out.withColumn(field.name, F.when(~lost, casted))
    return out


def _reasons(df: DataFrame, *, now_limit: Column, item_ids: DataFrame | None) -> list[Column]:
    checks: list[tuple[Column, Column]] = []
    for c in df.columns:
        if c.startswith("_bad_"):
            col = c[len("_bad_") :]
            checks.append(
                (F.col(c).isNotNull(), F.concat(F.lit(f"bad type for {col}: "), F.col(c)))
            )
    for c in REQUIRED_EVENT_COLUMNS:
        checks.append((F.col(c).isNull(), F.lit(f"null {c}")))
    for c in ("event_id", "user_id"):  # a blank id would merge unrelated events or users
        checks.append((F.trim(F.col(c)) == "", F.lit(f"empty {c}")))
    checks.append(
        (
            ~F.col("event_type").isin(*EVENT_TYPES),
            F.concat(F.lit("unknown event_type: "), F.col("event_type")),
        )
    )
    checks.append(
        (
            F.to_date(F.col("ts")) != F.to_date(F.col("ds")),
            F.concat(F.lit("ts outside partition ds="), F.col("ds").cast("string")),
        )
    )
    checks.append((F.col("ts") > now_limit, F.lit("ts in the future")))
    checks.append((F.col("price") < 0, F.lit("negative price")))
    checks.append(
        ((F.col("propensity") <= 0) | (F.col("propensity") > 1), F.lit("propensity outside (0, 1]"))
    )
    if item_ids is not None:
        checks.append(
            (
                F.col("item_id").isNotNull() & F.col("_item_known").isNull(),
                F.lit("item_id not in catalogue"),
            )
        )
    return [F.when(cond.isNotNull() & cond, reason) for cond, reason in checks]


def flag_bad_rows(
    events: DataFrame,
    *,
    now_limit: Column,
    item_ids: DataFrame | None = None,
) -> DataFrame:
    """Add `reject_reason` (null for good rows): the first failed rule, named.

    Duplicates of an `event_id` keep one row (the earliest, ties broken by every column so the
    choice is deterministic) and the rest are rejected as `duplicate event_id`.
    """
    df = events
    if item_ids is not None:
        known = item_ids.select(F.col("item_id").alias("_k"), F.lit(True).alias("_item_known"))
        # the catalogue is small next to events: broadcast avoids shuffling the events
        df = df.join(F.broadcast(known), df["item_id"] == known["_k"], "left").drop("_k")
    reason = F.coalesce(*_reasons(df, now_limit=now_limit, item_ids=item_ids))
    df = df.withColumn(REJECT_REASON, reason)
    order = [
        F.col("ts").asc_nulls_last(),
        *[F.col(c).asc_nulls_last() for c in ("user_id", "event_type", "item_id", "carousel_id")],
    ]
    # rank only among otherwise-good rows, so a bad first copy cannot reject a good second one
    same_event = Window.partitionBy("event_id", F.col(REJECT_REASON).isNull()).orderBy(*order)
    df = df.withColumn(
        "_dup_rank",
        F.when(
            F.col("event_id").isNotNull() & F.col(REJECT_REASON).isNull(),
            F.row_number().over(same_event),
        ),
    )
    df = df.withColumn(
        REJECT_REASON,
        F.when(F.col("_dup_rank") > 1, F.lit("duplicate event_id")).otherwise(F.col(REJECT_REASON)),
    )
    return df.drop("_dup_rank", "_item_known")
