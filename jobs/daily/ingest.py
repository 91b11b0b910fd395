"""Ingest: validate raw event partitions, quarantine bad rows with reasons, write accepted rows.

For a run as of `ds`, every raw partition before `ds` whose files changed since it was last
ingested (or that was never ingested) is (re)processed. Each processed partition is overwritten
in `warehouse/events` and `warehouse/quarantine`, so re-ingesting a file never duplicates rows
and never leaves rows of an older version behind. Row counts reconcile per partition:
raw = accepted + quarantined (`warehouse/reports/ds=<ds>/ingest.json`, and the `_INGEST.json`
marker of each accepted partition).

Bad input, and what happens to it:

- A file's schema. Before Spark reads anything, the Parquet footer of every raw file is checked
  against the contract (`jobs.core.lake.EVENT_SCHEMA`, `ITEM_SCHEMA`). A missing required column, or
  a column whose type cannot be cast safely, fails the run with a `SchemaError` that names the
  table, partition and file, the column, and the expected and actual types; nothing is ingested
  (the run's report records the error).
  Safe: the contract's type, a column of nulls, dictionary-encoded values of the right type,
  any integer, float or decimal type for a numeric column (values are checked row by row, see
  below), any timestamp in s/ms/us with or without a time zone for `ts` (without one it is read
  as UTC), date32/date64 for a date. Not safe, hence an error: strings for numbers or
  timestamps (their parsing depends on formats and time zones the contract does not fix),
  numbers for ids (`007` and `7` would become one id), nanosecond timestamps (Spark cannot
  read them), anything else. A file that is not Parquet at all is named the same way.
- A row. Bad rows go to `warehouse/quarantine/ds=P` with `reject_reason`, the first rule they
  fail (`features.events.flag_bad_rows`): `bad type for <col>: <value>` (a number that does not
  fit an int column exactly), `null <col>` for a required column, `empty event_id`,
  `empty user_id`, `unknown event_type: <value>`, `ts outside partition ds=P`,
  `ts in the future`, `negative price`, `propensity outside (0, 1]`,
  `item_id not in catalogue` (the validated catalogue of this run), `duplicate event_id` (the
  earliest good copy is kept). The report counts rows per partition and reason.
- Too many bad rows. A partition whose share of rejected rows is above `ingest.max_bad_share`
  fails the run, after its quarantine is written, with a message naming each such partition,
  its share and its reasons; no accepted rows or markers are written, so the next run retries.
  The item catalogue is held to the same share (`warehouse/quarantine_items/ds=<ds>`).
- An empty day. A raw partition that has no rows (files with zero rows, or no data files) is
  ingested as an explicit zero-row partition, not an error: it is listed in the report's
  `empty_partitions` and logged as a warning, and `warehouse/events/ds=P` gets a zero-row
  Parquet file (with the accepted table's columns) and its marker. Every later step reads it as
  a day without events, exactly like a day whose rows were all quarantined: feature windows
  simply have no rows for it and the prior state still ages across it. If the day's data
  arrives later, its changed files make the next run re-ingest it. An error would instead block
  every following daily run until someone refilled or deleted the partition. (A day with no
  partition directory at all is a gap: not an input of ingest, not reported.)
- No raw partitions before `ds` at all, or an empty or missing item catalogue, fail the run.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import IngestError
from jobs.core.lake import Lake, join, parse_ds

log = logging.getLogger(__name__)


class SchemaError(IngestError, ValueError):
    """A raw file breaks the input contract: a required column is missing, or a column's type
    cannot be cast safely. The message names the table, partition, file, column and types."""


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


# ---- schema checks (Parquet footers, before Spark) -------------------------------------------


def type_problem(column: str, actual: pa.DataType, expected: pa.DataType) -> str | None:
    """Why a column of type `actual` cannot stand for the contract's `expected`; None if it can
    be cast safely (the rules are in the module docstring)."""
    t = actual.value_type if pa.types.is_dictionary(actual) else actual
    if pa.types.is_null(t) or t == expected:
        return None
    want = str(expected)
    if pa.types.is_string(expected):
        ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    elif pa.types.is_integer(expected) or pa.types.is_floating(expected):
        ok = (
            pa.types.is_integer(t)
            or pa.types.is_decimal(t)
            or (pa.types.is_floating(t) and not pa.types.is_float16(t))
        )
        want += " or another numeric type"
    elif pa.types.is_timestamp(expected):
        ok = pa.types.is_timestamp(t) and t.unit != "ns"
        if pa.types.is_timestamp(t) and t.unit == "ns":
            want += " (Spark cannot read nanosecond timestamps: write microseconds)"
    elif pa.types.is_date(expected):
        ok = pa.types.is_date(t)
    else:  # bool: exactly the contract's type
        ok = False
    return None if ok else f"column {column} has type {actual}, expected {want}"


def _footer(uri: str) -> pa.Schema | str:
    """A Parquet file's Arrow schema, or why it cannot be read (INT96 timestamps, which Spark
    writes by default, are read as microseconds, as Spark reads them)."""
    import pyarrow.parquet as pq

    fs, path = io._fs(uri)
    try:
        with fs.open_input_file(path) as f:
            return pq.ParquetFile(f, coerce_int96_timestamp_unit="us").schema_arrow
    except (OSError, pa.ArrowException) as exc:
        return f"not a readable Parquet file ({exc})"


def check_files(
    files: list[tuple[str, str]], contract: pa.Schema, required: tuple[str, ...]
) -> dict[tuple[tuple[str, str], ...], list[str]]:
    """Check each (label, uri) file's columns against the contract; group the URIs by schema.

    Files with different (but safe) schemas are read separately and unioned after conforming,
    so e.g. `slot` as int64 one day and int32 the next never meets Spark's schema merging.
    Raises `SchemaError` listing every bad file (the first ten) and its problems.
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:  # footers are small reads: overlap them
        schemas = list(pool.map(_footer, [uri for _, uri in files]))
    problems: list[str] = []
    groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
    for (label, uri), schema in zip(files, schemas, strict=True):
        if isinstance(schema, str):
            problems.append(f"{label}: {schema}")
            continue
        found = []
        missing = [c for c in required if c not in schema.names]
        if missing:
            found.append(f"missing required column(s): {', '.join(missing)}")
        for field in contract:
            if field.name in schema.names:
                problem = type_problem(field.name, schema.field(field.name).type, field.type)
                if problem:
                    found.append(problem)
        if found:
            problems.append(f"{label}: {'; '.join(found)}")
        else:
            groups.setdefault(tuple((f.name, str(f.type)) for f in schema), []).append(uri)
    if problems:
        more = [f"and {len(problems) - 10} more file(s)"] if len(problems) > 10 else []
        raise SchemaError(" | ".join(problems[:10] + more))
    return groups


def read_groups(
    spark: Any, groups: dict[Any, list[str]], conform: Callable[[Any], Any], base_path: str
) -> Any:
    """The files of each schema group, read and conformed, then unioned (None if no files)."""
    frames = [
        conform(spark.read.option("basePath", base_path).parquet(*uris)) for uris in groups.values()
    ]
    if not frames:
        return None
    return functools.reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)


# ---- report helpers ------------------------------------------------------------------------


def share_error(label: str, counts: dict[str, Any], max_bad_share: float) -> str | None:
    """The failure message when `counts` (raw, quarantined, reasons) exceed the share."""
    raw, bad = counts["raw"], counts["quarantined"]
    if not raw or bad / raw <= max_bad_share:
        return None
    reasons = dict(sorted(counts["reasons"].items()))
    return (
        f"{label}: {bad} of {raw} rows ({bad / raw:.1%}) were rejected, above "
        f"ingest.max_bad_share={max_bad_share:.1%}; reasons: {reasons}"
    )


def _report_failure(lake: Lake, ds: str, report: dict[str, Any], message: str) -> None:
    """Write the run's report with the reason it failed (the caller raises)."""
    report["error"] = message
    io.write_json(join(lake.reports(ds), "ingest.json"), report)


def _remove_dir(uri: str) -> None:
    import pyarrow.fs as pafs

    fs, path = io._fs(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


# ---- events --------------------------------------------------------------------------------


def run(lake: Lake, ds: str, cfg: Config, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Ingest pending raw partitions before `ds`; returns the run's ingest report."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from features.events import EVENT_STRUCT, REJECT_REASON, conform_events, flag_bad_rows
    from jobs.core.lake import EVENT_SCHEMA, REQUIRED_EVENT_COLUMNS
    from jobs.core.spark import get_spark
    from validation import suites
    from validation.gx import run_suite

    parse_ds(ds)
    todo, done = pending_partitions(lake, ds, cfg.features.lookback_days)
    report: dict[str, Any] = {"ds": ds, "ingested": {}, "up_to_date": done, "empty_partitions": []}
    if not todo and not done:
        raise IngestError(f"no raw event partitions before ds={ds} under {lake.raw_events}")
    listing = {p: io.list_files(lake.raw_events_ds(p)) for p in todo}
    try:
        groups = check_files(
            [
                (f"events partition ds={p}, file {name}", join(lake.raw_events_ds(p), name))
                for p in todo
                for name, _ in listing[p]
            ],
            EVENT_SCHEMA,
            REQUIRED_EVENT_COLUMNS,
        )
        spark = get_spark(cfg.spark)
        report["items"] = ingest_items(lake, ds, cfg)
    except IngestError as exc:
        _report_failure(lake, ds, report, str(exc))
        raise
    if not todo:
        log.info("ingest: all %d partitions up to date", len(done))
        io.write_json(join(lake.reports(ds), "ingest.json"), report)
        return report

    now = now or dt.datetime.now(dt.UTC)
    limit = F.lit(now + dt.timedelta(seconds=cfg.ingest.max_future_seconds)).cast("timestamp")
    raw = read_groups(
        spark,
        groups,
        lambda df: conform_events(df.withColumn("ds", F.col("ds").cast("string"))),
        lake.raw_events,
    )
    if raw is None:  # every pending partition is an empty directory
        raw = spark.createDataFrame(
            [], T.StructType([*EVENT_STRUCT.fields, T.StructField("ds", T.StringType())])
        )
    items = spark.read.parquet(join(lake.warehouse, "items", f"ds={ds}")).select("item_id")
    flagged = flag_bad_rows(raw, now_limit=limit, item_ids=items)
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
    report["empty_partitions"] = [p for p in todo if report["ingested"][p]["raw"] == 0]
    for p in report["empty_partitions"]:
        log.warning("ingest: raw partition ds=%s has no rows: ingested as an empty day", p)
    total_raw = sum(v["raw"] for v in report["ingested"].values())
    total_bad = sum(v["quarantined"] for v in report["ingested"].values())
    share = total_bad / total_raw if total_raw else 0.0
    report.update(raw=total_raw, quarantined=total_bad, bad_share=share)

    accepted = flagged.filter(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON, *bad_cols)
    quarantined = flagged.filter(F.col(REJECT_REASON).isNotNull())
    for p in todo:  # a re-ingested partition with fewer (or no) bad rows leaves none behind
        _remove_dir(join(lake.quarantine, f"ds={p}"))
    quarantined.write.mode("overwrite").partitionBy("ds").parquet(lake.quarantine)
    errors = [
        e
        for p in todo
        if (e := share_error(f"ds={p}", report["ingested"][p], cfg.ingest.max_bad_share))
    ]
    if errors:
        flagged.unpersist()
        message = f"{' | '.join(errors)}; rows kept in {lake.quarantine}"
        _report_failure(lake, ds, report, message)
        raise IngestError(message)

    checked = accepted.withColumn("_ts_in_partition", F.to_date("ts") == F.to_date("ds"))
    report["validation"] = run_suite("accepted_events", checked, suites.accepted_events)
    accepted.write.mode("overwrite").partitionBy("ds").parquet(lake.events)
    _write_zero_row_partitions(
        lake, accepted, [p for p in todo if report["ingested"][p]["accepted"] == 0]
    )
    flagged.unpersist()
    for p in todo:
        io.write_json(
            join(lake.events, f"ds={p}", "_INGEST.json"),
            {"source": [[name, size] for name, size in listing[p]], **report["ingested"][p]},
        )
    io.write_json(join(lake.reports(ds), "ingest.json"), report)
    log.info("ingest: %d partitions, %d rows, %d quarantined", len(todo), total_raw, total_bad)
    return report


def _write_zero_row_partitions(lake: Lake, accepted: Any, parts: list[str]) -> None:
    """A zero-row Parquet file in `warehouse/events/ds=P` for each partition without accepted
    rows (an empty day, or one whose rows were all quarantined), replacing any older version.

    Its columns are the accepted rows' plus those of the latest non-empty accepted partition,
    so a reader that takes its schema from the first file of a window loses no column.
    """
    from pyspark.sql import functions as F

    if not parts:
        return
    empty = accepted.limit(0).drop("ds")
    others = (q for q in reversed(io.partitions(lake.events)) if q not in parts)
    latest = next((q for q in others if io.list_files(join(lake.events, f"ds={q}"))), None)
    if latest is not None:
        for field in accepted.sparkSession.read.parquet(join(lake.events, f"ds={latest}")).schema:
            if field.name not in empty.columns:
                empty = empty.withColumn(field.name, F.lit(None).cast(field.dataType))
    for p in parts:
        empty.coalesce(1).write.mode("overwrite").parquet(join(lake.events, f"ds={p}"))


# ---- items ---------------------------------------------------------------------------------


def ingest_items(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    """Validate the item catalogue snapshot into `warehouse/items/ds=`; bad rows quarantined.

    Files are checked like raw events (`SchemaError`). Row reasons: `null item_id`,
    `empty item_id`, `null category_id`, `negative price`, `duplicate item_id` (the first copy
    by title, category and price is kept). Returns raw/accepted/quarantined counts and reasons;
    raises `IngestError` when the catalogue is missing, has no rows, or its share of bad rows is
    above `ingest.max_bad_share` (the quarantine is written first, the snapshot is not).
    """
    from pyspark.sql import Window
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
    defaults = {"in_stock": F.lit(True), "has_image": F.lit(True)}

    def conform(raw: Any) -> Any:
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

    out = read_groups(spark, groups, conform, lake.items)
    reason = F.coalesce(
        F.when(F.col("item_id").isNull(), F.lit("null item_id")),
        F.when(F.trim(F.col("item_id")) == "", F.lit("empty item_id")),
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
    reasons = {
        r["reject_reason"]: r["n"]
        for r in bad.groupBy("reject_reason").agg(F.count("*").alias("n")).collect()
    }
    n_bad = sum(reasons.values())
    n_all = flagged.count()
    if n_all == 0:
        flagged.unpersist()
        raise IngestError(f"the item catalogue {lake.items} has no rows")
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
    summary["validation"] = run_suite("items", good, suites.items)
    good.coalesce(1).write.mode("overwrite").parquet(join(lake.warehouse, "items", f"ds={ds}"))
    flagged.unpersist()
    return summary
