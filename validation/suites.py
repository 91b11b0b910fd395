"""Expectation suites, versioned with the pipeline. Each returns a list of GX expectations."""

from __future__ import annotations

from typing import Any

from jobs.lake import EVENT_TYPES


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
            for c in ("pop_recent", "pop_prior", "pop_total")
        ],
    ]


def user_activity(e: Any) -> list[Any]:
    return [
        e.ExpectColumnValuesToNotBeNull(column="user_id"),
        e.ExpectColumnValuesToBeUnique(column="user_id"),
        e.ExpectColumnValuesToBeBetween(column="n_events", min_value=1),
    ]
