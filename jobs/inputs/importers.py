"""Import the three real datasets in `shared/data/` into a lake in the input contract.

`import_dataset(name, src, lake_root)` reads the Parquet files of one dataset and writes

    events/ds=YYYY-MM-DD/part-0.parquet   EVENT_SCHEMA (+ extra columns, OBD only)
    items/part-0.parquet                  ITEM_SCHEMA, exactly
    users/part-0.parquet                  user_id + profile columns (completejourney, obd)
    carousels/part-0.parquet              CAROUSEL_SCHEMA (completejourney, obd)

Ids are the source ids as strings (Instacart product 196 -> "196"); only OBD item ids are
prefixed with their campaign, because OBD numbers items per campaign. Event ids are built from
source keys, so they are deterministic and unique and a re-import yields the same ids.
Timestamps are `timestamp[us, UTC]`; an event's `ds` is the UTC date of its `ts`.

A re-import replaces the lake's input tables as a whole (events, items, users, carousels and a
generated lake's `_truth/`, which would describe other data): the new tables are written to a
staging folder inside the lake first and then moved into place, so a failed import leaves the
previous tables untouched and no stale partition survives. Pipeline outputs (`warehouse/`,
`exports/`) are left alone. Local lakes only.

instacart
    Only purchases (the data has nothing else): one event per order line, `session_id` = order id,
    quantity 1, price null (no prices). The data has no dates, only a per-user relative clock
    (`days_since_first_order`). **Anchoring rule: every user's last observed order falls on
    `INSTACART_ANCHOR` (2017-11-30); earlier orders fall `last_day - day` days before it.** Why
    the last order and not the first: aligned first orders would put each user's history in a
    different period, so a cut at "day X" would hold out late orders of long histories and
    nothing of short ones. Aligned last orders make a time split at `ANCHOR - k days` hold out
    everyone's latest orders, which is Instacart's own next-basket setup; the split at `ANCHOR`
    holds out each user's latest order (and the few orders placed the same relative day,
    `days_since_prior_order` = 0: 337 of 14,590). The anchor is 2017-12-31 minus 31 days so
    that the next orders withheld from this sample (at most 30 days later: the source caps
    `days_since_prior_order` at 30) still fall in 2017.
    Time of day: the hour is `order_hour_of_day`; the line's `add_to_cart_order` becomes seconds
    (cart order is kept), and a second order of a user in the same day and hour starts two
    minutes later, so `ts` order equals `order_number` order. The weekday cannot match
    `order_dow`: a common anchor date fixes every date, and `order_dow` is in any case
    consistent with the relative clock for only ~95% of consecutive orders (gaps over 30 days
    are capped in the source). `order_dow` is therefore dropped.
    Items: the whole catalogue; `category_id` = aisle id (leaf), `category_path` =
    "department/aisle", title = product name, brand null (no brands), in stock, with image,
    `first_seen` = first purchase date in the lake (earliest event date if never bought).

completejourney
    Purchases from `transactions` (household -> user, basket -> session, product -> item,
    `transaction_timestamp` read as UTC, price = `unit_price`, null where quantity is 0). Rows are
    kept as they are, including quantity 0 and very large (fuel) quantities; validation decides.
    Items: the catalogue plus stub rows (`category_id` "UNKNOWN") for the few sold products
    missing from it. `category_id` = `product_category`, or the department where it is null;
    `category_path` = "department/product_category" ("/" inside a name becomes "-"). Brand is the
    source's `brand`, which is only "National" or "Private" (store brand); the manufacturer id is
    kept in the title ("<product_type>, <package_size> (manufacturer <id>)") because ITEM_SCHEMA
    has no column for it. `price` = median positive unit price in the transactions (null if
    never sold). Users: every household in the transactions plus every household with
    demographics, profile columns as in the source (null where unknown).
    Curated carousels (family "promo") from `promotions`, using only weeks before the last
    transaction week (the last week is partial and later weeks are the withheld period):
    "curated:display" (most store-weeks on an in-store display), "curated:mailer" (most
    store-weeks in the weekly mailer) and "curated:latest_promo" (on display or in the mailer in
    the most stores in the latest such week), `CURATED_SIZE` items each, not immutable. Counts
    tie often (1,847 products are promoted in all 10 stores in week 44), so ties go to the
    products with the most order lines in the imported transactions.

obd
    The Open Bandit Dataset has no user id. The pseudo user id is "obd-" + the first 12 hex
    digits of sha1(user_feature_0..3): it identifies a segment of users who share the hashed
    features (327 in the sample), not a person. Each row becomes an `impression` (item id
    "<campaign>:<item_id>", carousel "obd:<campaign>", slot 1, position, propensity, page
    "home") and each clicked row also a `click` with the same ts and placement; event ids are
    "obd-<policy>-<campaign>-<ts µs>-<position>-i|c". Extra event column `logging_policy` =
    behavior_policy ("random" / "bts"). `user_item_affinity` is not imported.
    Items: category_id = "<campaign>:<item_feature_2>" (leaf; feature 2 nests in feature 3 in
    the data), category_path = "<campaign>/<item_feature_3>/<item_feature_2>", brand =
    item_feature_1 (crosses categories, like a brand). `item_feature_0` is standardised (mean 0,
    negative values), not a price, so price is null. Users: the pseudo ids with their four
    features. Carousels: one per campaign ("obd:<campaign>", family "obd", explicit item list).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.lake import CAROUSEL_SCHEMA, EVENT_SCHEMA, ITEM_SCHEMA, Lake, local_path

Progress = Callable[[str], None]

# Instacart: every user's last observed order is placed on this date (see module docstring).
INSTACART_ANCHOR = dt.date(2017, 11, 30)
# Completejourney: number of items in each promotion-based curated carousel.
CURATED_SIZE = 50
# Input tables an import owns; all are replaced together.
INPUT_TABLES: tuple[str, ...] = ("events", "items", "users", "carousels", "_truth")

OBD_USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")


@dataclass
class Tables:
    """The input tables of one dataset, ready to write."""

    events: pa.Table
    items: pa.Table
    users: pa.Table | None = None
    carousels: pa.Table | None = None


# ---------------------------------------------------------------------------------------------
# helpers


def _read(src: Path, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(src / name, columns=columns).to_pandas()


def _to_table(df: pd.DataFrame, schema: pa.Schema, extra: pa.Schema | None = None) -> pa.Table:
    """Build a table with exactly `schema` (+ `extra`) columns; absent columns become nulls."""
    fields = list(schema) + (list(extra) if extra is not None else [])
    arrays = []
    for f in fields:
        if f.name in df.columns:
            arrays.append(pa.array(df[f.name], type=f.type, from_pandas=True))
        else:
            arrays.append(pa.nulls(len(df), type=f.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _plain(df: pd.DataFrame) -> pa.Table:
    """A table without pandas metadata (profile columns keep their pandas-inferred types)."""
    return pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(None)


def _utc(values: pd.Series) -> pd.Series:
    """Naive or aware datetimes as UTC microseconds (naive ones are read as UTC)."""
    out = pd.to_datetime(values)
    out = out.dt.tz_localize("UTC") if out.dt.tz is None else out.dt.tz_convert("UTC")
    return out.astype("datetime64[us, UTC]")


def _path_part(values: pd.Series) -> pd.Series:
    # category_path is "/"-separated, so a "/" inside a name would add a level.
    return values.astype("string").str.replace("/", "-", regex=False).str.strip()


def _first_seen(events: pd.DataFrame, item_ids: pd.Series) -> pd.Series:
    """Date each item is first seen in the events; the earliest event date otherwise."""
    days = events["ts"].dt.floor("D").dt.date
    first = days.groupby(events["item_id"]).min()
    return item_ids.map(first).fillna(days.min())


def _short_hash(parts: pd.DataFrame) -> pd.Series:
    """First 12 hex digits of sha1 over the "|"-joined values of each row."""
    cols = [parts[c].astype("string").fillna("") for c in parts.columns]
    joined = cols[0].str.cat(cols[1:], sep="|")  # vectorised; a row-wise join is 100x slower
    unique = joined.drop_duplicates()  # few distinct rows: hash each once
    digest = {v: hashlib.sha1(v.encode()).hexdigest()[:12] for v in unique}
    return joined.map(digest)


def _require(src: Path, files: tuple[str, ...]) -> None:
    if not src.is_dir():
        raise FileNotFoundError(f"source folder {src} does not exist")
    for name in files:
        if not (src / name).is_file():
            raise FileNotFoundError(f"missing source file {src / name}")


# ---------------------------------------------------------------------------------------------
# instacart


def _instacart_order_ts(orders: pd.DataFrame, anchor: dt.date) -> pd.Series:
    """Start time of each order: the user's last order on `anchor`, hour from the data."""
    last_day = orders.groupby("user_id")["days_since_first_order"].transform("max")
    days_before = (last_day - orders["days_since_first_order"]).astype("int64")
    date = pd.Timestamp(anchor, tz="UTC") - pd.to_timedelta(days_before, unit="D")
    # orders of one user in the same day and hour: 2 minutes apart, in order_number order
    # (an order has at most 89 lines, i.e. 89 seconds), so ts order matches order order.
    key = [orders["user_id"], orders["days_since_first_order"], orders["order_hour_of_day"]]
    nth = orders.sort_values("order_number").groupby(key).cumcount().reindex(orders.index)
    return (
        date
        + pd.to_timedelta(orders["order_hour_of_day"].astype("int64"), unit="h")
        + pd.to_timedelta(nth * 2, unit="min")
    )


def _build_instacart(src: Path, progress: Progress) -> Tables:
    progress("instacart: reading orders, events and items")
    orders = _read(src, "orders.parquet")
    lines = _read(src, "events.parquet", ["order_id", "product_id", "add_to_cart_order"])
    catalogue = _read(src, "items.parquet")

    orders["order_ts"] = _instacart_order_ts(orders, INSTACART_ANCHOR)
    ev = lines.merge(orders[["order_id", "user_id", "order_ts"]], on="order_id", how="left")
    if ev["order_ts"].isna().any():
        raise ValueError("instacart: events.parquet has order lines without an order")
    ev["ts"] = ev["order_ts"] + pd.to_timedelta(ev["add_to_cart_order"] - 1, unit="s")
    ev["ts"] = ev["ts"].astype("datetime64[us, UTC]")
    ev["event_id"] = "ic-" + ev["order_id"].astype(str) + "-" + ev["product_id"].astype(str)
    ev["user_id"] = ev["user_id"].astype(str)
    ev["session_id"] = ev["order_id"].astype(str)
    ev["event_type"] = "purchase"
    ev["item_id"] = ev["product_id"].astype(str)
    ev["quantity"] = 1

    progress("instacart: building items")
    items = pd.DataFrame({"item_id": catalogue["product_id"].astype(str)})
    items["title"] = catalogue["product_name"]
    items["category_id"] = catalogue["aisle_id"].astype(str)
    items["category_path"] = (
        _path_part(catalogue["department"]) + "/" + _path_part(catalogue["aisle"])
    )
    items["in_stock"] = True
    items["has_image"] = True
    items["first_seen"] = _first_seen(ev, items["item_id"])
    return Tables(events=_to_table(ev, EVENT_SCHEMA), items=_to_table(items, ITEM_SCHEMA))


# ---------------------------------------------------------------------------------------------
# completejourney


def _cj_items(catalogue: pd.DataFrame, tx: pd.DataFrame, ev: pd.DataFrame) -> pd.DataFrame:
    """Catalogue in ITEM_SCHEMA, plus stubs for sold products the catalogue lacks."""
    sold = pd.Index(tx["product_id"].unique())
    missing = sold.difference(pd.Index(catalogue["product_id"]))
    if len(missing):
        catalogue = pd.concat([catalogue, pd.DataFrame({"product_id": missing})], ignore_index=True)
    items = pd.DataFrame({"item_id": catalogue["product_id"].astype(str)})
    kind = catalogue["product_type"].astype("string").fillna(catalogue["product_category"])
    size = catalogue["package_size"].astype("string")
    title = kind.where(size.isna(), kind + ", " + size)
    mfr = catalogue["manufacturer_id"].astype("Int64").astype("string")
    items["title"] = title.where(mfr.isna(), title.fillna("item") + " (manufacturer " + mfr + ")")
    leaf = catalogue["product_category"].fillna(catalogue["department"])
    items["category_id"] = leaf.fillna("UNKNOWN")
    items["category_path"] = _path_part(catalogue["department"]) + "/" + _path_part(leaf)
    items["brand"] = catalogue["brand"]
    # an item's price: the median positive unit price it sold at (0 is a free item, not a price)
    paid = tx[np.isfinite(tx["unit_price"]) & (tx["unit_price"] > 0)]
    median = paid.groupby(paid["product_id"].astype(str))["unit_price"].median()
    items["price"] = items["item_id"].map(median)
    items["in_stock"] = True
    items["has_image"] = True
    items["first_seen"] = _first_seen(ev, items["item_id"])
    return items


def _cj_users(households: pd.DataFrame, tx: pd.DataFrame) -> pd.DataFrame:
    ids = pd.Index(tx["household_id"].unique()).union(pd.Index(households["household_id"]))
    users = pd.DataFrame({"household_id": ids.astype("int64")})
    profile = households.assign(household_id=households["household_id"].astype("int64"))
    users = users.merge(profile, on="household_id", how="left").sort_values("household_id")
    users.insert(0, "user_id", users.pop("household_id").astype(str))
    return users.reset_index(drop=True)


def _top_products(placed: pd.DataFrame, sales: pd.Series, n: int) -> list[str]:
    """Products on the most store-weeks; ties (many) go to the best sellers, then product id."""
    ranked = placed.groupby("product_id").size().rename("n").reset_index()
    ranked["sold"] = ranked["product_id"].map(sales).fillna(0)
    ranked = ranked.sort_values(["n", "sold", "product_id"], ascending=[False, False, True])
    return ranked["product_id"].head(n).astype(str).tolist()


def _cj_carousels(promotions: pd.DataFrame, tx: pd.DataFrame) -> pd.DataFrame:
    """Operator carousels from promotion weeks before the last transaction week."""
    # later weeks are the withheld period, and the last transaction week is partial
    last_tx_week = int(tx["week"].max())
    sales = tx.groupby("product_id").size()  # order lines per product, breaks the many ties
    past = promotions[promotions["week"] < last_tx_week]
    on_display = past[past["display_location"] != "0"]
    in_mailer = past[past["mailer_location"] != "0"]
    latest = past[past["week"] == past["week"].max()]
    latest = latest[(latest["display_location"] != "0") | (latest["mailer_location"] != "0")]
    rows = [
        ("curated:display", "On display in store", _top_products(on_display, sales, CURATED_SIZE)),
        ("curated:mailer", "In the weekly mailer", _top_products(in_mailer, sales, CURATED_SIZE)),
        (
            "curated:latest_promo",
            "This week's promotions",
            _top_products(latest, sales, CURATED_SIZE),
        ),
    ]
    return pd.DataFrame(
        {
            "carousel_id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "family": "promo",
            "item_ids": [r[2] for r in rows],
            "rule": None,
            "immutable": False,
        }
    )


def _build_completejourney(src: Path, progress: Progress) -> Tables:
    progress("completejourney: reading transactions")
    tx = _read(src, "transactions.parquet")
    ev = pd.DataFrame(
        {
            "event_id": "cj-" + tx["basket_id"].astype(str) + "-" + tx["product_id"].astype(str),
            "ts": _utc(tx["transaction_timestamp"]),
            "user_id": tx["household_id"].astype(str),
            "session_id": tx["basket_id"].astype(str),
            "event_type": "purchase",
            "item_id": tx["product_id"].astype(str),
            "quantity": tx["quantity"].round().astype("int64"),
            # unit_price = sales_value / quantity: not finite where quantity is 0
            "price": tx["unit_price"].where(np.isfinite(tx["unit_price"])),
        }
    )
    progress("completejourney: building items and users")
    items = _cj_items(_read(src, "items.parquet"), tx, ev)
    users = _cj_users(_read(src, "households.parquet"), tx)
    progress("completejourney: building curated carousels from promotions")
    promotions = _read(
        src, "promotions.parquet", ["product_id", "display_location", "mailer_location", "week"]
    )
    carousels = _cj_carousels(promotions, tx)
    return Tables(
        events=_to_table(ev, EVENT_SCHEMA),
        items=_to_table(items, ITEM_SCHEMA),
        users=_plain(users),
        carousels=_to_table(carousels, CAROUSEL_SCHEMA),
    )


# ---------------------------------------------------------------------------------------------
# obd


def _obd_events(imp: pd.DataFrame) -> pd.DataFrame:
    """One impression per row and one click per clicked row, same ts and placement."""
    ts = _utc(imp["timestamp"])
    # (policy, campaign, ts, position) is unique in the data: a content key for the event id
    key = (
        "obd-"
        + imp["behavior_policy"]
        + "-"
        + imp["campaign"]
        + "-"
        + (ts.astype("int64")).astype(str)
        + "-"
        + imp["position"].astype(str)
    )
    shown = pd.DataFrame(
        {
            "event_id": key + "-i",
            "ts": ts,
            "user_id": "obd-" + _short_hash(imp[list(OBD_USER_FEATURES)]),
            "event_type": "impression",
            "item_id": imp["campaign"] + ":" + imp["item_id"].astype(str),
            "carousel_id": "obd:" + imp["campaign"],
            "slot": 1,
            "position": imp["position"].astype("int64"),
            "propensity": imp["propensity_score"],
            "page": "home",
            "logging_policy": imp["behavior_policy"],
        }
    )
    clicked = shown[imp["click"].to_numpy() == 1].copy()
    clicked["event_id"] = clicked["event_id"].str[:-2] + "-c"
    clicked["event_type"] = "click"
    return pd.concat([shown, clicked], ignore_index=True)


def _obd_items(catalogue: pd.DataFrame, ev: pd.DataFrame) -> pd.DataFrame:
    campaign = catalogue["campaign"].astype(str)
    items = pd.DataFrame({"item_id": campaign + ":" + catalogue["item_id"].astype(str)})
    items["title"] = "ZOZOTOWN " + campaign + " item " + catalogue["item_id"].astype(str)
    items["category_id"] = campaign + ":" + catalogue["item_feature_2"]
    items["category_path"] = (
        campaign + "/" + catalogue["item_feature_3"] + "/" + catalogue["item_feature_2"]
    )
    items["brand"] = catalogue["item_feature_1"]
    items["in_stock"] = True
    items["has_image"] = True
    items["first_seen"] = _first_seen(ev, items["item_id"])
    return items


def _obd_carousels(items: pd.DataFrame) -> pd.DataFrame:
    campaign = items["item_id"].str.split(":", n=1).str[0]
    lists = items.groupby(campaign, sort=True)["item_id"].agg(list)
    return pd.DataFrame(
        {
            "carousel_id": "obd:" + lists.index,
            "title": "ZOZOTOWN: " + lists.index,
            "family": "obd",
            "item_ids": lists.to_list(),
            "rule": None,
            "immutable": False,
        }
    )


def _build_obd(src: Path, progress: Progress) -> Tables:
    progress("obd: reading impressions and items")
    cols = [
        "behavior_policy",
        "campaign",
        "timestamp",
        "item_id",
        "position",
        "click",
        "propensity_score",
        *OBD_USER_FEATURES,
    ]
    imp = _read(src, "impressions.parquet", cols)
    ev = _obd_events(imp)
    items = _obd_items(_read(src, "items.parquet"), ev)
    users = imp[list(OBD_USER_FEATURES)].drop_duplicates().reset_index(drop=True)
    users.insert(0, "user_id", "obd-" + _short_hash(users))
    users = users.sort_values("user_id").reset_index(drop=True)
    extra = pa.schema([("logging_policy", pa.string())])
    return Tables(
        events=_to_table(ev, EVENT_SCHEMA, extra),
        items=_to_table(items, ITEM_SCHEMA),
        users=_plain(users.astype("string")),
        carousels=_to_table(_obd_carousels(items), CAROUSEL_SCHEMA),
    )


# ---------------------------------------------------------------------------------------------
# writing


DATASETS: dict[str, tuple[tuple[str, ...], Callable[[Path, Progress], Tables]]] = {
    "instacart": (("orders.parquet", "events.parquet", "items.parquet"), _build_instacart),
    "completejourney": (
        ("transactions.parquet", "items.parquet", "households.parquet", "promotions.parquet"),
        _build_completejourney,
    ),
    "obd": (("impressions.parquet", "items.parquet"), _build_obd),
}


def _write_events(events: pa.Table, folder: str) -> list[str]:
    """One `ds=` partition per UTC day, rows sorted by ts; returns the ds values written."""
    events = events.sort_by([("ts", "ascending"), ("event_id", "ascending")])
    ds = pc.strftime(events["ts"], format="%Y-%m-%d").to_numpy(zero_copy_only=False)
    days, starts = np.unique(ds, return_index=True)  # ds is sorted because ts is
    bounds = [*starts.tolist(), len(ds)]
    for day, lo, hi in zip(days, bounds[:-1], bounds[1:], strict=True):
        part = os.path.join(folder, f"ds={day}")
        os.makedirs(part)
        pq.write_table(events.slice(lo, hi - lo), os.path.join(part, "part-0.parquet"))
    return [str(d) for d in days]


def _write_single(table: pa.Table | None, folder: str) -> None:
    if table is None:
        return
    os.makedirs(folder)
    pq.write_table(table, os.path.join(folder, "part-0.parquet"))


def _swap_in(staging: str, root: str) -> None:
    """Replace every input table of the lake by the staged one (or remove it if not staged)."""
    for table in INPUT_TABLES:
        target = os.path.join(root, table)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
        staged = os.path.join(staging, table)
        if os.path.exists(staged):
            os.rename(staged, target)


def _stats(name: str, tables: Tables, days: list[str], seconds: float) -> dict:
    types = pc.value_counts(tables.events["event_type"]).to_pylist()
    return {
        "dataset": name,
        "events": tables.events.num_rows,
        "event_types": {t["values"]: t["counts"] for t in types},
        "users": pc.count_distinct(tables.events["user_id"]).as_py(),
        "user_profiles": tables.users.num_rows if tables.users is not None else 0,
        "items": tables.items.num_rows,
        "carousels": tables.carousels.num_rows if tables.carousels is not None else 0,
        "days": len(days),
        "first_ds": days[0] if days else None,
        "last_ds": days[-1] if days else None,
        "seconds": round(seconds, 2),
    }


def import_dataset(name: str, src: str, lake_root: str, progress: Progress | None = None) -> dict:
    """Convert dataset `name` from the Parquet files in `src` into the lake at `lake_root`.

    Returns stats: dataset, events, event_types, users (distinct in events), user_profiles,
    items, carousels, days, first_ds, last_ds, seconds. Raises ValueError for an unknown
    dataset and FileNotFoundError naming a missing source file.
    """
    started = time.monotonic()
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(sorted(DATASETS))}")
    say = progress or (lambda _msg: None)
    files, build = DATASETS[name]
    src_dir = Path(local_path(src))
    _require(src_dir, files)
    root = local_path(Lake(lake_root).root)  # local lakes only: a URI fails here, before work
    tables = build(src_dir, say)

    os.makedirs(root, exist_ok=True)
    staging = os.path.join(root, f".import-{uuid.uuid4().hex[:8]}")
    try:
        say(f"{name}: writing {tables.events.num_rows:,} events")
        days = _write_events(tables.events, os.path.join(staging, "events"))
        _write_single(tables.items, os.path.join(staging, "items"))
        _write_single(tables.users, os.path.join(staging, "users"))
        _write_single(tables.carousels, os.path.join(staging, "carousels"))
        _swap_in(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stats = _stats(name, tables, days, time.monotonic() - started)
    say(
        f"{name}: {stats['events']:,} events over {stats['days']} days "
        f"({stats['first_ds']}..{stats['last_ds']}) in {stats['seconds']}s"
    )
    return stats


__all__ = ["DATASETS", "INSTACART_ANCHOR", "import_dataset"]
