"""Ingest's catalogue as of `ds`: listings, dated price and stock changes, their quarantine."""

from __future__ import annotations

import datetime as dt
import os

import pandas as pd
import pyarrow as pa
import pytest
from conftest import NOW, items_table, write_lake, write_parquet
from conftest import at as t

from jobs.core.config import load_config
from jobs.core.lake import ITEM_CHANGE_SCHEMA, join
from jobs.daily.ingest import IngestError, run

RUN = "2026-01-06"
D = dt.date


def _changes(rows: list[tuple]) -> pa.Table:
    cols = ("item_id", "changed_on", "price", "in_stock")
    return pa.Table.from_pydict(
        {c: [r[i] for r in rows] for i, c in enumerate(cols)}, ITEM_CHANGE_SCHEMA
    )


def _catalogue(tmp_path, changes: list[tuple], listed: dict[str, D | None] | None = None):
    rows = (("a", "A", "c", 1.0), ("b", "B", "c", 2.0), ("n", "New", "c", 3.0))
    items = items_table(rows)
    first_seen = [(listed or {}).get(r[0], D(2025, 1, 1)) for r in rows]
    items = items.set_column(8, "first_seen", pa.array(first_seen, pa.date32()))
    lake = write_lake(tmp_path, [("e1", t(1), "u1", "click", "a", None)], items=items)
    if changes:
        write_parquet(_changes(changes), lake.item_changes)
    return lake


def _snapshot(spark, lake) -> pd.DataFrame:
    frame = spark.read.parquet(join(lake.warehouse, "items", f"ds={RUN}")).toPandas()
    return frame.set_index("item_id").sort_index()


def test_listings_and_changes_dated_before_ds_apply_later_ones_are_not_read(spark, tmp_path):
    changes = [
        ("a", D(2026, 1, 2), 1.5, None),  # price up
        ("a", D(2026, 1, 4), None, False),  # out of stock
        ("a", D(2026, 1, 5), 1.7, None),  # the last price known before ds
        ("b", D(2026, 1, 3), None, False),
        ("b", D(2026, 1, 5), None, True),  # back in stock the day before ds
        ("a", D(2026, 1, 6), 9.9, True),  # dated ds: not known yet
        ("b", D(2026, 1, 9), -1.0, None),  # a bad change dated after ds: never read nor counted
        ("n", D(2026, 1, 7), 4.0, None),  # an item listed later, changed later
    ]
    lake = _catalogue(tmp_path, changes, listed={"n": D(2026, 1, 6), "b": None})
    report = run(lake, RUN, load_config(), now=NOW)
    snap = _snapshot(spark, lake)
    assert list(snap.index) == ["a", "b"]  # "n" is listed on ds: not yet
    assert snap.loc["a", "price"] == pytest.approx(1.7) and not snap.loc["a", "in_stock"]
    assert snap.loc["b", "price"] == pytest.approx(2.0) and snap.loc["b", "in_stock"]
    items = report["items"]
    assert items["accepted"] == 2 and items["not_yet_listed"] == 1
    assert items["changes"] == {"raw": 5, "accepted": 5, "quarantined": 0, "reasons": {}}


def test_bad_changes_are_quarantined_with_reasons(spark, tmp_path):
    changes = [
        ("a", D(2026, 1, 2), 1.5, None),
        (None, D(2026, 1, 2), 1.0, None),
        ("", D(2026, 1, 2), 1.0, None),
        ("a", None, 1.0, None),
        ("a", D(2026, 1, 3), None, None),
        ("a", D(2026, 1, 4), -2.0, None),
        ("zzz", D(2026, 1, 4), 1.0, None),
        ("b", D(2026, 1, 4), 2.5, None),
        ("b", D(2026, 1, 4), 2.2, None),  # a second change of b that day: the first by price wins
    ]
    lake = _catalogue(tmp_path, changes)
    cfg = load_config(overrides=["ingest.max_bad_share=1.0"])
    report = run(lake, RUN, cfg, now=NOW)
    assert report["items"]["changes"]["reasons"] == {
        "null item_id": 1,
        "empty item_id": 1,
        "null changed_on": 1,
        "empty change": 1,
        "negative price": 1,
        "item_id not in catalogue": 1,
        "duplicate change": 1,
    }
    snap = _snapshot(spark, lake)
    assert snap.loc["a", "price"] == pytest.approx(1.5)
    assert snap.loc["b", "price"] == pytest.approx(2.2)
    quarantine = spark.read.parquet(join(lake.warehouse, "quarantine_item_changes", f"ds={RUN}"))
    assert quarantine.count() == 7

    with pytest.raises(IngestError, match=r"^item_changes: 7 of 9 rows .* ingest.max_bad_share"):
        run(lake, RUN, load_config(), now=NOW)


def test_a_catalogue_listed_only_from_ds_on_is_a_clear_error(spark, tmp_path):
    later = {k: D(2026, 1, 6) for k in ("a", "b", "n")}
    lake = _catalogue(tmp_path, [], listed=later)
    with pytest.raises(IngestError, match=r"lists no item before 2026-01-06"):
        run(lake, RUN, load_config(), now=NOW)
    assert not os.path.exists(join(lake.warehouse, "items", f"ds={RUN}"))
