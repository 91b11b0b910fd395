"""Spark schemas for hand-written event rows in the Spark feature tests: each test module names
the event columns its rows hold, in order, and gets them with the lake's types."""

from __future__ import annotations

from pyspark.sql import types as T

EVENT_COLUMN_TYPES: dict[str, T.DataType] = {
    "event_id": T.StringType(),
    "ts": T.TimestampType(),
    "user_id": T.StringType(),
    "session_id": T.StringType(),
    "event_type": T.StringType(),
    "item_id": T.StringType(),
    "carousel_id": T.StringType(),
    "slot": T.IntegerType(),
    "position": T.IntegerType(),
    "device": T.StringType(),
    "quantity": T.IntegerType(),
    "logging_policy": T.StringType(),
}

# the columns every hand-written event row of the Spark feature tests starts with
ROW_PREFIX = ("event_id", "ts", "user_id", "session_id", "event_type", "item_id", "carousel_id")


def event_schema(*columns: str) -> T.StructType:
    """A nullable StructType of the named event columns, in the given order."""
    return T.StructType([T.StructField(c, EVENT_COLUMN_TYPES[c]) for c in columns])
