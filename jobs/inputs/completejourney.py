"""Complete Journey importer (`import_dataset("completejourney", ...)`).

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
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from jobs.core.lake import CAROUSEL_SCHEMA, EVENT_SCHEMA, ITEM_SCHEMA
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
    # an item's price: the median positive unit price it sold at (0 is a free item, not a price)
    paid = tx[np.isfinite(tx["unit_price"]) & (tx["unit_price"] > 0)]
    median = paid.groupby(paid["product_id"].astype(str))["unit_price"].median()
    items["price"] = items["item_id"].map(median)
    items["in_stock"] = True
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
    carousels = _cj_carousels(promotions, tx)
    return Tables(
        events=to_table(ev, EVENT_SCHEMA),
        items=to_table(items, ITEM_SCHEMA),
        users=plain_table(users),
        carousels=to_table(carousels, CAROUSEL_SCHEMA),
    )
