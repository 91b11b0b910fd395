"""Importers on tiny hand-written sources: dated prices, dated promotion carousels, listing dates.

Known answers: a Complete Journey product sold at 1.00, 1.00 and 1.20 has price changes on its
first and third sale days only; a promotion week's carousels are dated by the week and ordered
by the sales before it; no event precedes its item's `first_seen`.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from support.event_checks import assert_no_event_before_first_seen

from jobs.core.lake import CAROUSEL_SCHEMA, ITEM_CHANGE_SCHEMA, ITEM_SCHEMA, Lake
from jobs.inputs.importers import import_dataset

D = dt.date
# CJ weeks here follow the real grid: week w starts on Monday 2016-12-19 + 7 w days.
WEEK3 = D(2017, 1, 9)


def _tx(rows: list[tuple[int, int, str, float, int]]) -> pd.DataFrame:
    """(basket, product, "YYYY-MM-DD HH:MM", unit price, week) -> a transactions table."""
    basket, product, ts, price, week = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "household_id": pd.array([1] * len(rows), "int32"),
            "basket_id": pd.array(basket, "int64"),
            "product_id": pd.array(product, "int32"),
            "quantity": 1.0,
            "week": pd.array(week, "int16"),
            "transaction_timestamp": pd.to_datetime(list(ts)).astype("datetime64[us]"),
            "unit_price": list(price),
        }
    )


def _write_cj(src: Path, tx: pd.DataFrame, promotions: pd.DataFrame) -> Path:
    src.mkdir(parents=True)
    products = sorted(set(tx["product_id"]) | set(promotions["product_id"]))
    items = pd.DataFrame(
        {
            "product_id": pd.array(products, "int32"),
            "manufacturer_id": 7,
            "department": "GROCERY",
            "brand": "National",
            "product_category": "SOUP",
            "product_type": "TOMATO SOUP",
            "package_size": "10 OZ",
        }
    )
    households = pd.DataFrame({"household_id": pd.array([1], "int32"), "age": ["35-44"]})
    for name, df in (
        ("transactions", tx),
        ("items", items),
        ("households", households),
        ("promotions", promotions),
    ):
        df.to_parquet(src / f"{name}.parquet", index=False)
    return src


def _promo(rows: list[tuple[int, int, str, str, int]]) -> pd.DataFrame:
    """(product, store, display_location, mailer_location, week) -> a promotions table."""
    product, store, display, mailer, week = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "product_id": pd.array(product, "int32"),
            "store_id": pd.array(store, "int32"),
            "display_location": pd.array(display, "string"),
            "mailer_location": pd.array(mailer, "string"),
            "week": pd.array(week, "int16"),
        }
    )


def _events(lake: Lake) -> pd.DataFrame:
    return pads.dataset(lake.raw_events, partitioning="hive").to_table().to_pandas()


def _cj_lake(tmp_path: Path, tx: pd.DataFrame, promotions: pd.DataFrame) -> tuple[Lake, dict]:
    src = _write_cj(tmp_path / "cj", tx, promotions)
    lake = Lake(str(tmp_path / "lake"))
    return lake, import_dataset("completejourney", str(src), lake.root)


def test_completejourney_prices_are_dated_changes(tmp_path: Path) -> None:
    tx = _tx(
        [
            (1, 10, "2017-01-02 10:00", 1.00, 2),
            (2, 10, "2017-01-03 10:00", 1.00, 2),
            (3, 10, "2017-01-06 10:00", 1.20, 2),
            (3, 20, "2017-01-06 10:00", 2.50, 2),
        ]
    )
    lake, stats = _cj_lake(tmp_path, tx, _promo([(10, 1, "1", "0", 2)]))
    table = pq.read_table(lake.item_changes)
    assert table.schema.remove_metadata().equals(ITEM_CHANGE_SCHEMA)
    changes = table.to_pandas()
    assert changes[["item_id", "changed_on", "price"]].values.tolist() == [
        ["10", D(2017, 1, 2), 1.00],
        ["10", D(2017, 1, 6), 1.20],
        ["20", D(2017, 1, 6), 2.50],
    ]
    assert changes["in_stock"].isna().all() and stats["item_changes"] == 3
    items = pq.read_table(lake.items)
    assert items.schema.remove_metadata().equals(ITEM_SCHEMA)
    items = items.to_pandas()
    assert items["price"].isna().all() and items["in_stock"].all()
    assert dict(zip(items["item_id"], items["first_seen"], strict=True)) == {
        "10": D(2017, 1, 2),
        "20": D(2017, 1, 6),
    }
    assert_no_event_before_first_seen(_events(lake), items)


def test_completejourney_promotion_week_carousels_are_dated_and_use_only_the_past(
    tmp_path: Path,
) -> None:
    tx = _tx(
        [
            (1, 20, "2017-01-02 10:00", 1.0, 2),  # before week 3: B sells 2 lines, A 1, C 0
            (2, 20, "2017-01-04 10:00", 1.0, 2),
            (2, 10, "2017-01-04 10:00", 1.0, 2),
            *[(10 + k, 30, "2017-01-09 10:00", 1.0, 3) for k in range(5)],  # C in week 3
            *[(20 + k, 30, "2017-01-16 10:00", 1.0, 4) for k in range(5)],  # and week 4
        ]
    )
    promotions = _promo(
        [
            (10, 1, "1", "0", 3),  # A, B, C each on display in one store in week 3: tied
            (20, 1, "2", "0", 3),
            (30, 1, "3", "A", 3),
            *[(40, s, "1", "0", 4) for s in (1, 2, 3)],  # D only from week 4, in 3 stores
        ]
    )
    lake, _ = _cj_lake(tmp_path, tx, promotions)
    table = pq.read_table(lake.carousels)
    assert table.schema.remove_metadata().equals(CAROUSEL_SCHEMA)
    rows = table.to_pandas().set_index(["carousel_id", "valid_from"])
    week3 = WEEK3 - dt.timedelta(days=1)
    for cid in ("curated:display", "curated:latest_promo"):
        row = rows.loc[(cid, week3)]
        assert row["valid_to"] == D(2017, 1, 15)  # the week's last day (a Sunday)
        assert list(row["item_ids"]) == ["20", "10", "30"]  # C's week-3 sales do not count
    assert list(rows.loc[("curated:mailer", week3), "item_ids"]) == ["30"]
    week4 = rows.xs(WEEK3 + dt.timedelta(days=6), level="valid_from")
    assert list(week4.loc["curated:display", "item_ids"]) == ["40", "30", "20", "10"]
    assert list(week4.loc["curated:latest_promo", "item_ids"]) == ["40"]
    assert week4.loc["curated:display", "valid_to"] == D(2017, 1, 22)
    # one row per week and carousel id: windows of one id never overlap
    for _, one in table.to_pandas().groupby("carousel_id"):
        one = one.sort_values("valid_from")
        assert (one["valid_from"].iloc[1:].to_numpy() >= one["valid_to"].iloc[:-1].to_numpy()).all()


def _write_instacart(src: Path) -> Path:
    src.mkdir(parents=True)
    orders = pd.DataFrame(
        {
            "order_id": pd.array([1, 2], "int32"),
            "user_id": pd.array([7, 7], "int32"),
            "order_number": pd.array([1, 2], "int16"),
            "order_hour_of_day": pd.array([9, 9], "int8"),
            "days_since_first_order": pd.array([0.0, 10.0], "float32"),
        }
    )
    lines = pd.DataFrame(
        {
            "order_id": pd.array([1, 2, 2], "int32"),
            "product_id": pd.array([100, 100, 200], "int32"),
            "add_to_cart_order": pd.array([1, 1, 2], "int16"),
        }
    )
    items = pd.DataFrame(
        {
            "product_id": pd.array([100, 200, 300], "int32"),
            "product_name": ["milk", "bread", "never bought"],
            "aisle_id": pd.array([1, 2, 2], "int16"),
            "aisle": ["dairy", "bakery", "bakery"],
            "department": ["fresh", "fresh", "fresh"],
        }
    )
    for name, df in (("orders", orders), ("events", lines), ("items", items)):
        df.to_parquet(src / f"{name}.parquet", index=False)
    return src


def test_instacart_first_seen_is_the_first_purchase_day(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    stats = import_dataset("instacart", str(_write_instacart(tmp_path / "ic")), lake.root)
    items = pq.read_table(lake.items).to_pandas()
    # the last order is on the anchor (2017-11-30), the first ten days before it
    assert dict(zip(items["item_id"], items["first_seen"], strict=True)) == {
        "100": D(2017, 11, 20),
        "200": D(2017, 11, 30),
        "300": D(2017, 11, 20),  # never bought: the earliest event date
    }
    assert_no_event_before_first_seen(_events(lake), items)
    assert stats["item_changes"] == 0 and not os.path.exists(lake.item_changes)


def test_reimport_without_item_changes_removes_the_old_table(tmp_path: Path) -> None:
    tx = _tx([(1, 10, "2017-01-02 10:00", 1.0, 2)])
    lake, _ = _cj_lake(tmp_path, tx, _promo([(10, 1, "1", "0", 2)]))
    assert pq.read_table(lake.item_changes).num_rows == 1
    import_dataset("instacart", str(_write_instacart(tmp_path / "ic")), lake.root)
    assert not os.path.exists(lake.item_changes) and not os.path.exists(lake.carousels)
