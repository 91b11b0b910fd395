"""Purchase-intent soft labels of the training set (engagement.intent_labels) on a tiny
hand-written session with a known answer."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from jobs.core.config import load_config
from jobs.daily.training_data import INTENT_LABEL, intent_labels, with_intent_labels

END = "2026-01-11"  # the label window ends here: nothing at or after it is seen
DAY = dt.date(2026, 1, 10)
SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType()),
        T.StructField("ts", T.TimestampType()),
        T.StructField("user_id", T.StringType()),
        T.StructField("event_type", T.StringType()),
        T.StructField("item_id", T.StringType()),
    ]
)


def at(hour: int, minute: int, day: int = 10) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=dt.UTC)


ROWS = [
    ("i1", at(10, 0), "u1", "impression", "a"),
    ("i2", at(10, 0), "u1", "impression", "b"),
    ("i3", at(10, 0), "u1", "impression", "c"),
    ("i4", at(10, 0), "u1", "impression", "e"),
    ("c1", at(10, 0), "u1", "click", "a"),  # 30 min before the purchase: 0.5 ** (30 / 30)
    ("c2", at(10, 15), "u1", "click", "b"),  # 15 min before: 0.5 ** 0.5, but b is bought
    ("k1", at(10, 20), "u1", "add_to_cart", "b"),
    ("p1", at(10, 30), "u1", "purchase", "b"),
    ("c3", at(11, 30), "u1", "click", "c"),  # 60 min later: a new session without purchase
    ("c4", at(23, 50), "u1", "click", "d"),  # its purchase lies after the window: not seen
    ("p2", at(0, 5, day=11), "u1", "purchase", "d"),
    ("c5", at(9, 0), "u2", "click", "a"),  # u2 is not among the sampled users
    ("p3", at(9, 10), "u2", "purchase", "a"),
]


@pytest.fixture(scope="module")
def events(spark):
    return spark.createDataFrame(ROWS, SCHEMA)


def _by_item(frame: pd.DataFrame) -> dict[str, float]:
    return dict(zip(frame["item_id"], frame[INTENT_LABEL], strict=True))


def test_clicks_get_their_sessions_time_decayed_purchase_credit(events):
    got = intent_labels(events, np.array(["u1"], dtype=object), END, load_config())
    assert set(got["user_id"]) == {"u1"} and set(got["day"]) == {DAY}
    assert _by_item(got) == pytest.approx({"a": 0.5, "b": 0.5**0.5, "c": 0.0, "d": 0.0})
    steeper = load_config(overrides=["features.intent_decay=0.25"])
    assert _by_item(intent_labels(events, np.array(["u1"]), END, steeper))["a"] == 0.25
    longer = load_config(overrides=["features.session_gap_minutes=60"])  # T = 60: c3 joins in
    assert _by_item(intent_labels(events, np.array(["u1"]), END, longer)) == pytest.approx(
        {"a": 0.5**0.5, "b": 0.5**0.25, "c": 0.0, "d": 0.0}
    )


def test_impressions_take_the_credit_and_a_purchase_counts_whole(events):
    impressions = pd.DataFrame(
        {
            "user_id": ["u1"] * 4,
            "item_id": ["a", "b", "c", "e"],
            "day": [DAY] * 4,
            "purchase": [0, 1, 0, 0],
        }
    )
    intent = intent_labels(events, np.array(["u1"], dtype=object), END, load_config())
    out = with_intent_labels(impressions, intent)
    assert len(out) == len(impressions) and list(out["purchase"]) == [0, 1, 0, 0]
    assert _by_item(out) == pytest.approx({"a": 0.5, "b": 1.0, "c": 0.0, "e": 0.0})
