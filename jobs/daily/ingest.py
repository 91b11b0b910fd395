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
import logging
from typing import Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import IngestError
from jobs.core.lake import Lake, join, parse_ds
from jobs.daily.item_catalogue import ingest_items
from jobs.daily.raw_files import check_files, read_groups, share_error

log = logging.getLogger(__name__)


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


# ---- report helpers ------------------------------------------------------------------------


def _report_failure(lake: Lake, ds: str, report: dict[str, Any], message: str) -> None:
    """Write the run's report with the reason it failed (the caller raises)."""
    report["error"] = message
    io.write_json(join(lake.reports(ds), "ingest.json"), report)


# ---- events --------------------------------------------------------------------------------


def _flag_events(spark: Any, groups: Any, lake: Lake, ds: str, cfg: Config, now: Any) -> Any:
    """The pending raw events, conformed and flagged (`REJECT_REASON`), cached."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from features.events import EVENT_STRUCT, conform_events, flag_bad_rows

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
    # flagged is read twice (accepted + quarantined) and counted: cache avoids re-reading raw files
    return flagged.cache()


def _count_rows(flagged: Any, todo: list[str], report: dict[str, Any]) -> tuple[int, int]:
    """Raw, accepted and quarantined rows (and reasons) per partition into `report`; returns
    (raw rows, quarantined rows) of the run."""
    from pyspark.sql import functions as F

    from features.events import REJECT_REASON

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
    return total_raw, total_bad


def _write_events(
    lake: Lake, ds: str, cfg: Config, flagged: Any, todo: list[str], report: dict[str, Any]
) -> None:
    """Quarantine the bad rows; fail above the bad share, else validate and write the accepted
    rows (and a zero-row file for each partition without any)."""
    from pyspark.sql import functions as F

    from features.events import REJECT_REASON
    from validation import suites
    from validation.gx import run_suite

    bad_cols = [c for c in flagged.columns if c.startswith("_bad_")]
    accepted = flagged.filter(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON, *bad_cols)
    quarantined = flagged.filter(F.col(REJECT_REASON).isNotNull())
    for p in todo:  # a re-ingested partition with fewer (or no) bad rows leaves none behind
        io.delete_dir(join(lake.quarantine, f"ds={p}"))
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


def run(lake: Lake, ds: str, cfg: Config, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Ingest pending raw partitions before `ds`; returns the run's ingest report."""
    from jobs.core.lake import EVENT_SCHEMA, REQUIRED_EVENT_COLUMNS
    from jobs.core.spark import get_spark

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

    flagged = _flag_events(spark, groups, lake, ds, cfg, now)
    total_raw, total_bad = _count_rows(flagged, todo, report)
    _write_events(lake, ds, cfg, flagged, todo, report)
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
