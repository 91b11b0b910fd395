"""Curated carousels as of `ds` (rank) and the stock flags the intra-day refresh sees."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
from conftest import items_table, write_parquet

from jobs.core.lake import ITEM_CHANGE_SCHEMA, Lake
from jobs.daily.catalogue import curated_as_of
from jobs.refresh.stock import newly_out_of_stock, stock_now

D = dt.date


def _row(cid: str, start: D | None, end: D | None, title: str = "") -> dict:
    return {"carousel_id": cid, "title": title, "valid_from": start, "valid_to": end}


def test_a_carousel_is_live_from_the_day_after_valid_from_to_valid_to():
    rows = [
        _row("open", None, None),
        _row("known_yesterday", D(2026, 1, 5), None),
        _row("known_today", D(2026, 1, 6), None),  # known at the end of ds: not yet
        _row("ends_today", D(2026, 1, 1), D(2026, 1, 6)),
        _row("ended", D(2026, 1, 1), D(2026, 1, 5)),
        _row("undated_end", None, D(2026, 1, 7)),
    ]
    live = {r["carousel_id"] for r in curated_as_of(rows, "2026-01-06")}
    assert live == {"open", "known_yesterday", "ends_today", "undated_end"}


def test_of_one_carousel_id_the_row_known_latest_wins_and_strings_are_dates():
    rows = [
        _row("promo", "2026-01-04", "2026-01-11", "week 2"),
        _row("promo", "2025-12-28", "2026-01-04", "week 1"),
        _row("promo", "2026-01-11", "2026-01-18", "week 3"),
    ]
    assert [r["title"] for r in curated_as_of(rows, "2026-01-05")] == ["week 2"]
    assert [r["title"] for r in curated_as_of(rows, "2026-01-04")] == ["week 1"]
    assert curated_as_of(rows, "2025-12-28") == []


def test_the_refresh_sees_todays_stock_changes_but_not_tomorrows(tmp_path):
    lake = Lake(str(tmp_path))
    write_parquet(
        items_table((("a", "A", "c", 1.0), ("b", "B", "c", 1.0), ("c", "C", "c", 1.0))), lake.items
    )
    changes = {
        "item_id": ["a", "b", "b", "c"],
        "changed_on": [D(2026, 1, 6), D(2026, 1, 5), D(2026, 1, 6), D(2026, 1, 7)],
        "price": [None, None, None, None],
        "in_stock": [False, False, True, False],
    }
    write_parquet(pa.Table.from_pydict(changes, ITEM_CHANGE_SCHEMA), lake.item_changes)
    ids = np.array(["a", "b", "c", "zzz"], dtype=object)
    now = stock_now(lake, "2026-01-06", ids)
    assert now.tolist()[:3] == [False, True, True] and now.isna().tolist() == [0, 0, 0, 1]
    gone = newly_out_of_stock(lake, "2026-01-06", ids, np.array([True, True, True, True]))
    assert gone.tolist() == [True, False, False, False]


def test_the_refresh_accepts_events_of_items_listed_that_day(tmp_path):
    """The daily catalogue of `base` knows the items listed before it; the day's own listings
    come from the raw catalogue (else their events would be quarantined as unknown)."""
    from jobs.refresh.events import listed_on

    lake = Lake(str(tmp_path))
    table = items_table((("a", "A", "c", 1.0), ("b", "B", "c", 1.0), ("c", "C", "c", 1.0)))
    seen = pa.array([D(2026, 1, 5), D(2026, 1, 6), D(2026, 1, 7)], pa.date32())
    write_parquet(table.set_column(8, "first_seen", seen), lake.items)
    assert listed_on(lake, "2026-01-06") == ["b"]
