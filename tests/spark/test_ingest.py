import datetime as dt
import os

import pytest
from conftest import DAY, NOW, write_lake
from conftest import at as t

from jobs.core.config import load_config
from jobs.daily.ingest import IngestError, run
from jobs.daily.raw_files import SchemaError

GOOD = [
    ("e1", t(1), "u1", "click", "a", None),
    ("e2", t(2), "u1", "purchase", "a", 1.0),
    ("e3", t(3), "u2", "search", None, None),
]
BAD = [
    ("e1", t(4), "u1", "click", "b", None),  # duplicate event_id
    ("e4", t(5), "u1", "teleport", "a", None),  # unknown type
    ("e5", t(1, day=4), "u1", "click", "a", None),  # outside the partition
    ("e6", t(6), "u1", "purchase", "a", -3.0),  # negative price
    ("e7", t(7), None, "click", "a", None),  # null user
    ("e8", t(8), "u1", "click", "zzz", None),  # not in catalogue
]
REASONS = {
    "duplicate event_id": 1,
    "unknown event_type: teleport": 1,
    "ts outside partition ds=2026-01-05": 1,
    "negative price": 1,
    "null user_id": 1,
    "item_id not in catalogue": 1,
}


def test_bad_rows_are_quarantined_with_reasons_and_counts_reconcile(spark, tmp_path):
    lake = write_lake(tmp_path, GOOD + BAD)
    cfg = load_config(overrides=["ingest.max_bad_share=1.0"])
    report = run(lake, "2026-01-06", cfg, now=NOW)
    part = report["ingested"][DAY]
    assert part == {"raw": 9, "accepted": 3, "quarantined": 6, "reasons": REASONS}
    accepted = spark.read.parquet(lake.events)
    assert sorted(r.event_id for r in accepted.collect()) == ["e1", "e2", "e3"]
    assert accepted.filter("event_id = 'e1'").first().item_id == "a"  # the earliest copy wins
    q = spark.read.parquet(lake.quarantine)
    assert sorted(r.reject_reason for r in q.collect()) == sorted(REASONS)

    # re-ingesting the same (touched) file adds nothing; an unchanged file is skipped
    again = run(lake, "2026-01-06", cfg, now=NOW)
    assert again["ingested"] == {} and again["up_to_date"] == [DAY]
    os.remove(os.path.join(lake.events, f"ds={DAY}", "_INGEST.json"))  # forget it was ingested
    forced = run(lake, "2026-01-06", cfg, now=NOW)
    assert forced["ingested"][DAY]["accepted"] == 3
    assert spark.read.parquet(lake.events).count() == 3

    # a fixed file replaces the partition's quarantine too: no rows of the old version are left
    write_lake(tmp_path, GOOD + [("e9", t(9), "u3", "view", "b", None)])
    fixed = run(lake, "2026-01-06", cfg, now=NOW)
    assert fixed["ingested"][DAY] == {"raw": 4, "accepted": 4, "quarantined": 0, "reasons": {}}
    assert spark.read.parquet(lake.events).count() == 4
    assert not os.path.exists(os.path.join(lake.quarantine, f"ds={DAY}"))


def test_future_events_are_rejected(spark, tmp_path):
    lake = write_lake(tmp_path, GOOD)
    cfg = load_config(overrides=["ingest.max_bad_share=1.0"])
    report = run(lake, "2026-01-06", cfg, now=dt.datetime(2026, 1, 5, 1, 30, tzinfo=dt.UTC))
    assert report["ingested"][DAY]["reasons"] == {"ts in the future": 2}


def test_too_many_bad_rows_fail_the_run_but_keep_the_quarantine(spark, tmp_path):
    lake = write_lake(tmp_path, GOOD + BAD)
    with pytest.raises(
        IngestError,
        match=r"^ds=2026-01-05: 6 of 9 rows \(66.7%\) were rejected, above ingest.max_bad_share=5.0%",
    ):
        run(lake, "2026-01-06", load_config(), now=NOW)
    assert spark.read.parquet(lake.quarantine).count() == 6


def test_missing_required_column_is_named(spark, tmp_path):
    lake = write_lake(tmp_path, GOOD, drop=("user_id",))
    with pytest.raises(
        SchemaError,
        match=r"events partition ds=2026-01-05, file part-0.parquet: missing required column\(s\): "
        r"user_id$",
    ):
        run(lake, "2026-01-06", load_config(), now=NOW)


def test_no_partitions_is_a_clear_error(spark, tmp_path):
    lake = write_lake(tmp_path, GOOD)
    with pytest.raises(IngestError, match="no raw event partitions before ds=2026-01-01"):
        run(lake, "2026-01-01", load_config(), now=NOW)
