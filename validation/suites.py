"""Expectation suites, versioned with the pipeline. Each returns a list of GX expectations."""

from __future__ import annotations

from typing import Any

from jobs.core.lake import EVENT_TYPES


def accepted_events(e: Any) -> list[Any]:
    """Accepted events: what ingest promises downstream after quarantining bad rows."""
    return [
        *[
            e.ExpectColumnToExist(column=c)
            for c in ("event_id", "ts", "user_id", "event_type", "ds")
        ],
        *[
            e.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("event_id", "ts", "user_id", "event_type")
        ],
        e.ExpectColumnValuesToBeUnique(column="event_id"),
        e.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        e.ExpectColumnValuesToBeInSet(column="_ts_in_partition", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="price", min_value=0, mostly=1.0),
        e.ExpectColumnValuesToBeBetween(column="propensity", min_value=0, max_value=1, mostly=1.0),
        e.ExpectColumnValuesToBeBetween(column="slot", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="position", min_value=1),
    ]


def items(e: Any) -> list[Any]:
    return [
        e.ExpectColumnValuesToNotBeNull(column="item_id"),
        e.ExpectColumnValuesToBeUnique(column="item_id"),
        e.ExpectColumnValuesToNotBeNull(column="category_id"),
        e.ExpectColumnValuesToBeBetween(column="price", min_value=0),
    ]


def user_item_counts(e: Any) -> list[Any]:
    return [
        *[e.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "item_id")],
        e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
        *[
            e.ExpectColumnValuesToBeBetween(column=c, min_value=0)
            for c in ("eta", "n_click", "n_add_to_cart", "n_purchase")
        ],
    ]


def user_category_counts(e: Any) -> list[Any]:
    return [
        *[e.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "category_id")],
        e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "category_id"]),
        e.ExpectColumnValuesToBeBetween(column="eta", min_value=0),
    ]


def user_carousel_priors(e: Any) -> list[Any]:
    return [
        *[e.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "carousel_id")],
        e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "carousel_id"]),
        e.ExpectColumnValuesToBeBetween(column="a", min_value=0, strict_min=True),
        e.ExpectColumnValuesToBeBetween(column="b", min_value=0, strict_min=True),
        e.ExpectColumnValuesToBeBetween(column="lam", min_value=0, max_value=1),
    ]


def item_stats(e: Any) -> list[Any]:
    return [
        e.ExpectColumnValuesToNotBeNull(column="item_id"),
        e.ExpectColumnValuesToBeUnique(column="item_id"),
        *[
            e.ExpectColumnValuesToBeBetween(column=c, min_value=0)
            for c in (
                "pop_recent",
                "pop_prior",
                "pop_total",
                "pop_1d",
                "pop_7d",
                "pop_30d",
                "days_since_last_event",
                "n_buyers",
                "new_buyers_30d",
            )
        ],
        e.ExpectColumnValuesToBeBetween(column="repeat_rate", min_value=0, max_value=1),
        e.ExpectColumnValuesToBeBetween(column="trend", min_value=0, strict_min=True),
        e.ExpectColumnValuesToBeBetween(column="price_band", min_value=1, max_value=5),
        e.ExpectColumnValuesToNotBeNull(column="in_stock"),
    ]


def user_activity(e: Any) -> list[Any]:
    return [
        e.ExpectColumnValuesToNotBeNull(column="user_id"),
        e.ExpectColumnValuesToBeUnique(column="user_id"),
        e.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
        *[
            e.ExpectColumnValuesToBeBetween(column=c, min_value=0)
            for c in ("n_orders", "days_since_order", "order_gap_days")
        ],
        e.ExpectColumnValuesToBeBetween(column="basket_size", min_value=1),
    ]


def priors_state(e: Any) -> list[Any]:
    return [
        *[e.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "carousel_id")],
        e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "carousel_id"]),
        e.ExpectColumnValuesToBeBetween(column="trials", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="successes", min_value=0),
        e.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="trials", column_B="successes", or_equal=True
        ),
    ]


def carousel_priors(e: Any) -> list[Any]:
    return [
        e.ExpectColumnValuesToNotBeNull(column="carousel_id"),
        e.ExpectColumnValuesToBeUnique(column="carousel_id"),
        e.ExpectColumnValuesToBeBetween(column="a0", min_value=0, strict_min=True),
        e.ExpectColumnValuesToBeBetween(column="b0", min_value=0, strict_min=True),
        e.ExpectColumnValuesToBeBetween(column="p_global", min_value=0, max_value=1),
    ]


def user_aggregates(e: Any) -> list[Any]:
    counts = [
        f"{k}_{days}d"
        for days in (7, 30)
        for k in ("impressions", "views", "clicks", "add_to_carts", "purchases")
    ]
    rates = [
        f"{k}_{days}d" for days in (7, 30) for k in ("click_rate", "cart_rate", "purchase_rate")
    ]
    return [
        e.ExpectColumnValuesToNotBeNull(column="user_id"),
        e.ExpectColumnValuesToBeUnique(column="user_id"),
        *[e.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in counts],
        *[e.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1) for c in rates],
    ]


def user_category_frequency(e: Any) -> list[Any]:
    return [
        *[e.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "category_id")],
        e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "category_id"]),
        e.ExpectColumnValuesToBeBetween(column="active_days", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="events", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="day_share", min_value=0, max_value=1),
    ]


def user_context(e: Any) -> list[Any]:
    return [
        e.ExpectColumnValuesToNotBeNull(column="user_id"),
        e.ExpectColumnValuesToBeUnique(column="user_id"),
        *[
            e.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1)
            for c in ("share_mobile", "share_desktop", "share_app", "weekend_share")
        ],
        e.ExpectColumnValuesToBeBetween(column="main_hour", min_value=0, max_value=23),
    ]


def carousel_slot_engagement(e: Any) -> list[Any]:
    return [
        e.ExpectColumnValuesToNotBeNull(column="carousel_id"),
        e.ExpectCompoundColumnsToBeUnique(column_list=["carousel_id", "slot"]),
        *[
            e.ExpectColumnValuesToBeBetween(column=c, min_value=0)
            for c in ("impressions", "clicks", "add_to_carts")
        ],
        e.ExpectColumnValuesToBeBetween(column="click_rate", min_value=0, max_value=1),
    ]


def purchase_intent(e: Any) -> list[Any]:
    """The engagement examples' purchase-intent soft label (`engagement.intent_labels`)."""
    return [
        e.ExpectColumnValuesToNotBeNull(column="purchase_intent"),
        e.ExpectColumnValuesToBeBetween(column="purchase_intent", min_value=0, max_value=1),
    ]


def examination(e: Any) -> list[Any]:
    """Examination propensities relative to index 1 (pandas: a dozen rows)."""
    return [
        e.ExpectColumnValuesToBeInSet(column="kind", value_set=["slot", "position"]),
        e.ExpectCompoundColumnsToBeUnique(column_list=["kind", "index"]),
        e.ExpectColumnValuesToBeBetween(column="index", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="propensity", min_value=0),
        e.ExpectColumnValuesToBeInSet(column="_ci_ordered", value_set=[True]),
        e.ExpectColumnValuesToBeBetween(column="impressions", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="clicks", min_value=0),
    ]


def training_examples(e: Any) -> list[Any]:
    """The engagement models' training set: labels 0/1, keys present, no duplicate example
    keys by design of the builders, and MF features finite where present."""
    return [
        *[e.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "item_id")],
        *[
            e.ExpectColumnValuesToBeInSet(column=c, value_set=[0, 1])
            for c in ("click", "add_to_cart", "purchase")
        ],
        e.ExpectTableRowCountToBeBetween(min_value=100),
        e.ExpectColumnValuesToBeBetween(column="item_pop_30d", min_value=0, mostly=1.0),
        e.ExpectColumnValuesToBeBetween(column="ui_eta", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="uc_eta", min_value=0),
        e.ExpectColumnValuesToBeBetween(column="slot", min_value=1),
        e.ExpectColumnValuesToBeBetween(column="position", min_value=1),
    ]
