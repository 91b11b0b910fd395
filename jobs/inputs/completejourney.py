"""Complete Journey importer (`import_dataset("completejourney", ...)`).

Purchases from `transactions` (household -> user, basket -> session, product -> item,
`transaction_timestamp` read as UTC, price = `unit_price`, null where quantity is 0). Rows are
kept as they are, including quantity 0 and very large (fuel) quantities; validation decides.
Items: the catalogue plus stub rows (`category_id` "UNKNOWN") for the few sold products
missing from it. `category_id` = `product_category`, or the department where it is null;
`category_path` = "department/product_category" ("/" inside a name becomes "-"). Brand is the
source's `brand`, which is only "National" or "Private" (store brand); the manufacturer id is
kept in the title ("<product_type>, <package_size> (manufacturer <id>)") because ITEM_SCHEMA
has no column for it. Users: every household in the transactions plus every household with
demographics, profile columns as in the source (null where unknown).

Dated facts (a fact dated d is known at the end of day d; see `jobs.core.lake`):
- `first_seen` = the item's first purchase day (the earliest event date if never sold).
- `price`: null in `items` (unknown until the first sale); `item_changes` holds one price row
  per item and day on which the median positive unit price paid that day, rounded to cents,
  differs from the item's previous one (the first sale day always). Cents because
  `unit_price` is `sales_value / quantity`: its float noise (and a median between two prices)
  is not a shelf-price change. A quantity-0 line (no finite price) or a free item (0) is not a
  price. The median, not the mean, so one discounted or coupon line does not move the price.
- `in_stock`: the data knows no stock, so every item is in stock and there are no stock changes.
- Curated carousels (family "promo", `CURATED_SIZE` items, not immutable) from `promotions`,
  one row per promotion week and carousel id; the ids stay the same across weeks, so the
  pipeline learns one carousel and the rows' windows never overlap: "curated:display" (most
  store-weeks on an in-store display over the weeks up to this one), "curated:mailer" (the
  same for the weekly mailer) and "curated:latest_promo" (on display or in the mailer in the
  most stores this week). Week w runs 7 days from `week_origin` + 7 w days (the grid the
  transactions' `week` column follows); its rows have `valid_to` = the week's last day and
  `valid_from` = the day before its first day: the shop knows its display and mailer plan
  before the week starts. Store counts tie often (1,847 products are promoted in all 10 stores
  in week 44), so ties go to the products with the most order lines strictly before the week's
  first day, then by item id; no row uses a later week or later sales. Weeks after
  the last transaction are kept (dated after the data, they are candidates for no run in it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jobs.core.lake import CAROUSEL_SCHEMA, EVENT_SCHEMA, ITEM_CHANGE_SCHEMA, ITEM_SCHEMA
from jobs.inputs.source_tables import (
    Progress,
    Tables,
    first_seen,
    path_part,
    plain_table,
    read_source,
    to_table,
    to_utc,
)

# Completejourney: number of items in each promotion-based curated carousel.
CURATED_SIZE = 50


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
    items["category_path"] = path_part(catalogue["department"]) + "/" + path_part(leaf)
    items["brand"] = catalogue["brand"]
    items["price"] = None  # unknown until the first sale: prices are dated `item_changes`
    items["in_stock"] = True  # the data knows no stock
    items["has_image"] = True
    items["first_seen"] = first_seen(ev, items["item_id"])
    return items


def _cj_users(households: pd.DataFrame, tx: pd.DataFrame) -> pd.DataFrame:
    ids = pd.Index(tx["household_id"].unique()).union(pd.Index(households["household_id"]))
    users = pd.DataFrame({"household_id": ids.astype("int64")})
    profile = households.assign(household_id=households["household_id"].astype("int64"))
    users = users.merge(profile, on="household_id", how="left").sort_values("household_id")
    users.insert(0, "user_id", users.pop("household_id").astype(str))
    return users.reset_index(drop=True)


def _price_changes(ev: pd.DataFrame) -> pd.DataFrame:
    """Dated prices in ITEM_CHANGE_SCHEMA columns: per item, the median positive unit price
    paid on a day (rounded to cents), on the days it differs from the item's previous one."""
    paid = ev[(ev["price"] > 0) & ev["event_type"].eq("purchase")]  # NaN (quantity 0) drops
    daily = (
        paid.groupby([paid["item_id"], paid["ts"].dt.floor("D").rename("day")])["price"]
        .median()
        .round(2)
        .reset_index()
    )
    daily = daily[daily["price"] > 0].sort_values(["item_id", "day"], kind="stable")
    previous = daily.groupby("item_id")["price"].shift()
    changes = daily[daily["price"].ne(previous)]  # the first day's price: previous is NaN
    return pd.DataFrame(
        {
            "item_id": changes["item_id"].to_numpy(),
            "changed_on": changes["day"].dt.date.to_numpy(),
            "price": changes["price"].to_numpy(),
        }
    )


def week_origin(day: pd.Series, week: pd.Series) -> pd.Timestamp:
    """Day 0 of the weekly grid: CJ week w runs from `origin + 7 w` days, for 7 days.

    A week's first day is the earliest (UTC) date of its transactions; the grid is the offset
    most weeks agree on (week 1 is partial, and early-Monday lines still carry the old week)."""
    first = day.groupby(week.to_numpy()).min()
    offsets = first - pd.to_timedelta(7 * first.index.to_numpy().astype("int64"), unit="D")
    return offsets.mode().min()


def _top_products(placed: pd.Series, sales: pd.Series, n: int) -> list[str]:
    """Products with the highest `placed` count; ties go to the best sellers, then item id."""
    if placed.empty:
        return []
    placed = placed[placed >= placed.nlargest(n).min()]  # only these can make the top n
    ranked = pd.DataFrame({"item_id": placed.index.astype(str), "n": placed.to_numpy()})
    ranked["sold"] = ranked["item_id"].map(sales).fillna(0)
    ranked = ranked.sort_values(["n", "sold", "item_id"], ascending=[False, False, True])
    return ranked["item_id"].head(n).tolist()


def _store_counts(promotions: pd.DataFrame, placed: pd.Series) -> pd.Series:
    """Stores placing each product, per (week, product)."""
    return promotions[placed].groupby(["week", "product_id"]).size()


def _cj_carousels(promotions: pd.DataFrame, ev: pd.DataFrame, week: pd.Series) -> pd.DataFrame:
    """One row per promotion week and carousel, dated by the week (see the module docstring)."""
    day = ev["ts"].dt.floor("D")
    origin = week_origin(day, week)
    on_display = promotions["display_location"] != "0"
    in_mailer = promotions["mailer_location"] != "0"
    display = _store_counts(promotions, on_display)
    mailer = _store_counts(promotions, in_mailer)
    either = _store_counts(promotions, on_display | in_mailer)
    seen_display, seen_mailer = pd.Series(dtype="int64"), pd.Series(dtype="int64")
    rows = []
    for w in sorted(int(x) for x in promotions["week"].unique()):
        first = origin + pd.Timedelta(days=7 * w)
        # order lines strictly before the week: what the shop knows when it plans the week
        sales = ev.loc[day < first, "item_id"].value_counts()
        seen_display = seen_display.add(_week(display, w), fill_value=0)
        seen_mailer = seen_mailer.add(_week(mailer, w), fill_value=0)
        for cid, title, placed in (
            ("curated:display", "On display in store", seen_display),
            ("curated:mailer", "In the weekly mailer", seen_mailer),
            ("curated:latest_promo", "This week's promotions", _week(either, w)),
        ):
            ids = _top_products(placed, sales, CURATED_SIZE)
            if ids:
                day_before = (first - pd.Timedelta(days=1)).date()
                rows.append((cid, title, ids, day_before, (first + pd.Timedelta(days=6)).date()))
    return pd.DataFrame(
        {
            "carousel_id": [r[0] for r in rows],
            "title": [r[1] for r in rows],
            "family": "promo",
            "item_ids": [r[2] for r in rows],
            "rule": None,
            "immutable": False,
            "valid_from": [r[3] for r in rows],
            "valid_to": [r[4] for r in rows],
        }
    )


def _week(counts: pd.Series, w: int) -> pd.Series:
    """One week's counts per product (empty when the week has none)."""
    if w not in counts.index.get_level_values("week"):
        return pd.Series(dtype="int64")
    return counts.xs(w, level="week")


def build_completejourney(src: Path, progress: Progress) -> Tables:
    progress("completejourney: reading transactions")
    tx = read_source(src, "transactions.parquet")
    ev = pd.DataFrame(
        {
            "event_id": "cj-" + tx["basket_id"].astype(str) + "-" + tx["product_id"].astype(str),
            "ts": to_utc(tx["transaction_timestamp"]),
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
    items = _cj_items(read_source(src, "items.parquet"), tx, ev)
    users = _cj_users(read_source(src, "households.parquet"), tx)
    progress("completejourney: building curated carousels from promotions")
    promotions = read_source(
        src, "promotions.parquet", ["product_id", "display_location", "mailer_location", "week"]
    )
    carousels = _cj_carousels(promotions, ev, tx["week"])
    return Tables(
        events=to_table(ev, EVENT_SCHEMA),
        items=to_table(items, ITEM_SCHEMA),
        users=plain_table(users),
        carousels=to_table(carousels, CAROUSEL_SCHEMA),
        item_changes=to_table(_price_changes(ev), ITEM_CHANGE_SCHEMA),
    )
