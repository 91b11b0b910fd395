"""Importers of the real datasets: contract schemas, reconciliation with the source, ids, time.

Each dataset is imported once per module (into a temporary lake) and checked by several tests.
The data lives in `shared/data/` next to the repository, or wherever `HOMEPAGE_SHARED_DATA`
points; tests that need it are skipped when it is absent.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from support.event_checks import assert_no_event_before_first_seen

from jobs.core.lake import (
    CAROUSEL_SCHEMA,
    EVENT_SCHEMA,
    EVENT_TYPES,
    ITEM_CHANGE_SCHEMA,
    ITEM_SCHEMA,
    Lake,
    list_partitions,
)
from jobs.inputs.importers import import_dataset
from jobs.inputs.instacart import INSTACART_ANCHOR

SHARED_DATA = Path(
    os.environ.get("HOMEPAGE_SHARED_DATA")
    or Path(__file__).resolve().parents[3] / "shared" / "data"
)


def _src(name: str) -> Path:
    src = SHARED_DATA / name
    if not src.is_dir():
        pytest.skip(f"real dataset {name!r} not found at {src} (set HOMEPAGE_SHARED_DATA)")
    return src


def _import(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict]:
    src = _src(name)
    lake = Lake(str(tmp_path_factory.mktemp(name) / "lake"))
    stats = import_dataset(name, str(src), lake.root)
    return lake, stats


@pytest.fixture(scope="module")
def instacart(tmp_path_factory):
    return _import("instacart", tmp_path_factory)


@pytest.fixture(scope="module")
def completejourney(tmp_path_factory):
    return _import("completejourney", tmp_path_factory)


@pytest.fixture(scope="module")
def obd(tmp_path_factory):
    return _import("obd", tmp_path_factory)


def _events(lake: Lake) -> pd.DataFrame:
    """All events with the partition's ds as a column."""
    data = pads.dataset(lake.raw_events, format="parquet", partitioning="hive")
    return data.to_table().to_pandas()


def _event_schemas(lake: Lake) -> list[pa.Schema]:
    return [
        pq.read_schema(os.path.join(lake.raw_events_ds(ds), "part-0.parquet"))
        for ds in list_partitions(lake.raw_events)
    ]


def _check_events(lake: Lake, stats: dict, extra: pa.Schema | None = None) -> pd.DataFrame:
    """Checks every dataset shares: schema, ids, partitions, stats."""
    expected = pa.schema(list(EVENT_SCHEMA) + (list(extra) if extra is not None else []))
    schemas = _event_schemas(lake)
    assert schemas and all(s.remove_metadata().equals(expected) for s in schemas)
    ev = _events(lake)
    assert len(ev) == stats["events"]
    assert ev["event_id"].is_unique
    assert ev["event_id"].notna().all() and ev["user_id"].notna().all()
    assert set(ev["event_type"]) <= set(EVENT_TYPES)
    # every ts lies inside its partition day (UTC)
    day = ev["ts"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%d")
    assert (day == ev["ds"].astype(str)).all()
    assert stats["days"] == ev["ds"].nunique()
    assert stats["first_ds"] == ev["ds"].astype(str).min()
    assert stats["last_ds"] == ev["ds"].astype(str).max()
    assert stats["users"] == ev["user_id"].nunique()
    return ev


def _items(lake: Lake) -> pd.DataFrame:
    table = pq.read_table(lake.items)
    assert table.schema.remove_metadata().equals(ITEM_SCHEMA)
    items = table.to_pandas()
    assert items["item_id"].is_unique
    assert items["category_id"].notna().all()
    return items


def _carousels(lake: Lake, items: pd.DataFrame) -> pd.DataFrame:
    table = pq.read_table(lake.carousels)
    assert table.schema.remove_metadata().equals(CAROUSEL_SCHEMA)
    carousels = table.to_pandas()
    # one id may have several rows (one per week), whose windows never overlap
    assert not carousels.duplicated(["carousel_id", "valid_from"]).any()
    for _, rows in carousels.sort_values("valid_from").groupby("carousel_id"):
        if len(rows) > 1:
            assert (
                rows["valid_from"].iloc[1:].to_numpy() >= rows["valid_to"].iloc[:-1].to_numpy()
            ).all()
    known = set(items["item_id"])
    for ids in carousels["item_ids"]:
        assert len(ids) > 0 and set(ids) <= known
    return carousels


# --- instacart ---------------------------------------------------------------------------------


def test_instacart_events_reconcile_with_source(instacart):
    lake, stats = instacart
    ev = _check_events(lake, stats)
    src = pd.read_parquet(_src("instacart") / "events.parquet")
    assert len(ev) == len(src) == stats["event_types"]["purchase"]
    assert set(ev["event_type"]) == {"purchase"}
    assert ev["session_id"].nunique() == src["order_id"].nunique()
    assert ev["user_id"].nunique() == src["user_id"].nunique() == stats["users"]
    assert (ev["quantity"] == 1).all() and ev["price"].isna().all()
    # the same (order, product) lines, ids as plain strings
    got = set(zip(ev["session_id"], ev["item_id"], strict=True))
    want = set(zip(src["order_id"].astype(str), src["product_id"].astype(str), strict=True))
    assert got == want


def test_instacart_ids_round_trip(instacart):
    lake, _ = instacart
    ev = _events(lake)
    user1 = ev[ev["user_id"] == "1"].sort_values("ts")
    first_order = user1[user1["session_id"] == user1["session_id"].iloc[0]]
    assert first_order["session_id"].iloc[0] == "2539329"
    assert first_order["item_id"].head(3).tolist() == ["196", "14084", "12427"]
    assert first_order["event_id"].iloc[0] == "ic-2539329-196"


def test_instacart_anchor_rule(instacart):
    lake, stats = instacart
    ev = _events(lake)
    orders = pd.read_parquet(_src("instacart") / "orders.parquet")
    assert stats["last_ds"] == INSTACART_ANCHOR.isoformat()
    # every user's last order is on the anchor date; other orders only on their relative day
    order_day = ev.groupby("session_id")["ts"].min().dt.date
    last = orders.sort_values("order_number").groupby("user_id").tail(1)
    assert (last["order_id"].astype(str).map(order_day) == INSTACART_ANCHOR).all()
    same_day = orders["days_since_first_order"] == orders.groupby("user_id")[
        "days_since_first_order"
    ].transform("max")
    on_anchor = set(order_day[order_day == INSTACART_ANCHOR].index)
    assert on_anchor == set(orders.loc[same_day, "order_id"].astype(str))
    # gaps between a user's orders follow the relative clock; the hour is order_hour_of_day
    orders["ts"] = orders["order_id"].astype(str).map(ev.groupby("session_id")["ts"].min())
    user_last = orders.groupby("user_id")["days_since_first_order"].transform("max")
    expect = [
        INSTACART_ANCHOR - dt.timedelta(days=int(d))
        for d in user_last - orders["days_since_first_order"]
    ]
    assert (orders["ts"].dt.date == pd.Series(expect, index=orders.index)).all()
    assert (orders["ts"].dt.hour == orders["order_hour_of_day"]).all()
    # ts order within a user follows order_number
    ranked = orders.sort_values(["user_id", "order_number"])
    assert ranked.groupby("user_id")["ts"].apply(lambda s: s.is_monotonic_increasing).all()


def test_instacart_items(instacart):
    lake, stats = instacart
    items = _items(lake)
    src = pd.read_parquet(_src("instacart") / "items.parquet")
    assert len(items) == len(src) == stats["items"]
    row = items.set_index("item_id").loc["196"]
    want = src.set_index("product_id").loc[196]
    assert row["title"] == want["product_name"]
    assert row["category_id"] == str(want["aisle_id"])
    assert row["category_path"] == f"{want['department']}/{want['aisle']}"
    assert items["brand"].isna().all() and items["price"].isna().all()
    assert items["in_stock"].all() and items["has_image"].all()
    assert items["first_seen"].min().isoformat() == stats["first_ds"]
    assert not os.path.exists(lake.users) and not os.path.exists(lake.carousels)
    assert not os.path.exists(lake.item_changes) and stats["item_changes"] == 0
    assert_no_event_before_first_seen(_events(lake), items)


# --- completejourney ---------------------------------------------------------------------------


def test_completejourney_events_reconcile(completejourney):
    lake, stats = completejourney
    ev = _check_events(lake, stats)
    tx = pd.read_parquet(_src("completejourney") / "transactions.parquet")
    assert len(ev) == len(tx) and set(ev["event_type"]) == {"purchase"}
    assert ev["user_id"].nunique() == tx["household_id"].nunique()
    assert ev["quantity"].sum() == tx["quantity"].sum()
    # one known line: ts in UTC as in the source, unit price, ids as strings
    first = tx.sort_values("transaction_timestamp").iloc[0]
    eid = f"cj-{first['basket_id']}-{first['product_id']}"
    row = ev.set_index("event_id").loc[eid]
    assert row["ts"] == pd.Timestamp(first["transaction_timestamp"], tz="UTC")
    assert row["user_id"] == str(first["household_id"])
    assert row["session_id"] == str(first["basket_id"])
    assert row["price"] == pytest.approx(first["unit_price"])


def test_completejourney_items_users_carousels(completejourney):
    lake, stats = completejourney
    items = _items(lake)
    ev = _events(lake)
    assert set(ev["item_id"]) <= set(items["item_id"])
    assert set(items["brand"].dropna()) == {"National", "Private"}
    # prices are dated changes from the sales: none in `items`, one or more per sold item
    assert items["price"].isna().all() and items["in_stock"].all()
    table = pq.read_table(lake.item_changes)
    assert table.schema.remove_metadata().equals(ITEM_CHANGE_SCHEMA)
    changes = table.to_pandas()
    assert len(changes) == stats["item_changes"] and (changes["price"] > 0).all()
    assert changes["in_stock"].isna().all()
    assert not changes.duplicated(["item_id", "changed_on"]).any()
    sold = set(ev["item_id"])
    assert set(changes["item_id"]) <= sold and len(set(changes["item_id"])) > 0.95 * len(sold)
    first_change = changes.groupby("item_id")["changed_on"].min()
    listed = items.set_index("item_id")["first_seen"]
    assert (first_change >= listed.loc[first_change.index]).all()
    assert_no_event_before_first_seen(ev, items)

    users = pq.read_table(lake.users).to_pandas()
    assert users["user_id"].is_unique and set(ev["user_id"]) <= set(users["user_id"])
    households = pd.read_parquet(_src("completejourney") / "households.parquet")
    assert users["age"].notna().sum() == len(households)
    assert stats["user_profiles"] == len(users)

    carousels = _carousels(lake, items)
    assert set(carousels["family"]) == {"promo"} and stats["carousels"] == len(carousels)
    ids = {"curated:display", "curated:mailer", "curated:latest_promo"}
    assert set(carousels["carousel_id"]) == ids
    # one row per promotion week: a week's rows are known the day before it starts, run 7 days
    assert carousels["valid_from"].notna().all()
    span = pd.to_datetime(carousels["valid_to"]) - pd.to_datetime(carousels["valid_from"])
    assert (span.dt.days == 7).all()
    promo = pd.read_parquet(_src("completejourney") / "promotions.parquet", columns=["week"])
    assert carousels.groupby("carousel_id").size().max() == promo["week"].nunique()


# --- obd ---------------------------------------------------------------------------------------


def test_obd_impressions_and_clicks_reconcile(obd):
    lake, stats = obd
    ev = _check_events(lake, stats, pa.schema([("logging_policy", pa.string())]))
    src = pd.read_parquet(_src("obd") / "impressions.parquet", columns=["click", "behavior_policy"])
    counts = ev["event_type"].value_counts()
    assert counts["impression"] == len(src)
    assert counts["click"] == src["click"].sum()
    assert set(ev["logging_policy"]) == set(src["behavior_policy"])
    shown = ev[ev["event_type"] == "impression"]
    assert shown["propensity"].between(0, 1, inclusive="right").all()
    assert set(shown["position"]) == {1, 2, 3} and (shown["slot"] == 1).all()
    assert (shown["page"] == "home").all()
    # a click repeats its impression's placement
    clicks = ev[ev["event_type"] == "click"].set_index("event_id")
    twin = shown.set_index("event_id").loc[clicks.index.str[:-2] + "-i"]
    cols = ["ts", "user_id", "item_id", "carousel_id", "position", "propensity"]
    assert (twin[cols].to_numpy() == clicks[cols].to_numpy()).all()
    assert ev["user_id"].str.startswith("obd-").all()


def test_obd_items_users_carousels(obd):
    lake, _ = obd
    items = _items(lake)
    ev = _events(lake)
    assert set(ev["item_id"]) <= set(items["item_id"])
    assert items["price"].isna().all()
    assert not os.path.exists(lake.item_changes)
    assert_no_event_before_first_seen(ev, items)
    carousels = _carousels(lake, items)
    assert set(carousels["carousel_id"]) == set(ev["carousel_id"])
    assert carousels["valid_from"].isna().all() and carousels["valid_to"].isna().all()
    for cid, ids in zip(carousels["carousel_id"], carousels["item_ids"], strict=True):
        campaign = cid.split(":", 1)[1]
        assert all(i.startswith(campaign + ":") for i in ids)
    users = pq.read_table(lake.users).to_pandas()
    assert set(users["user_id"]) == set(ev["user_id"])


# --- behaviour ---------------------------------------------------------------------------------


def test_reimport_is_idempotent_and_drops_stale_partitions(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    stale = lake.raw_events_ds("2001-01-01")
    os.makedirs(stale)
    pq.write_table(pa.table({"x": [1]}), os.path.join(stale, "part-0.parquet"))
    os.makedirs(lake.truth)
    first = import_dataset("obd", str(_src("obd")), lake.root)
    before = _events(lake)
    second = import_dataset("obd", str(_src("obd")), lake.root)
    after = _events(lake)
    assert "2001-01-01" not in list_partitions(lake.raw_events)
    assert not os.path.exists(lake.truth)
    assert first["events"] == second["events"] == len(after)
    assert (
        before.sort_values("event_id")
        .reset_index(drop=True)
        .equals(after.sort_values("event_id").reset_index(drop=True))
    )
    assert not [n for n in os.listdir(lake.root) if n.startswith(".import-")]


def test_unknown_dataset_raises(tmp_path):
    with pytest.raises(ValueError, match="completejourney, instacart, obd"):
        import_dataset("movielens", str(tmp_path), str(tmp_path / "lake"))


def test_missing_source_file_is_named(tmp_path):
    (tmp_path / "orders.parquet").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="events.parquet"):
        import_dataset("instacart", str(tmp_path), str(tmp_path / "lake"))
    assert not os.path.exists(tmp_path / "lake")
