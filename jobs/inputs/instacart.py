"""Instacart importer (`import_dataset("instacart", ...)`).

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
"department/aisle", title = product name, brand null (no brands), in stock, with image.

Dated facts (a fact dated d is known at the end of day d; see `jobs.core.lake`): the data
has no calendar, prices or stock, so the only date is `first_seen` = the item's first purchase
day in the lake (the anchored clock above): the earliest day the data vouches for the item,
so no event precedes it and the run for `ds` lists it only when that day is before `ds`.
Products never bought get the earliest event date (listed from the start: nothing says
otherwise). Price null, in stock, and no `item_changes` table (the data has no changes).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from jobs.core.lake import EVENT_SCHEMA, ITEM_SCHEMA
from jobs.inputs.source_tables import (
    Progress,
    Tables,
    first_seen,
    path_part,
    read_source,
    to_table,
)

# Instacart: every user's last observed order is placed on this date (see module docstring).
INSTACART_ANCHOR = dt.date(2017, 11, 30)


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


def build_instacart(src: Path, progress: Progress) -> Tables:
    progress("instacart: reading orders, events and items")
    orders = read_source(src, "orders.parquet")
    lines = read_source(src, "events.parquet", ["order_id", "product_id", "add_to_cart_order"])
    catalogue = read_source(src, "items.parquet")

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
        path_part(catalogue["department"]) + "/" + path_part(catalogue["aisle"])
    )
    items["in_stock"] = True
    items["has_image"] = True
    items["first_seen"] = first_seen(ev, items["item_id"])
    return Tables(events=to_table(ev, EVENT_SCHEMA), items=to_table(items, ITEM_SCHEMA))
