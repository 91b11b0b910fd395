"""Checks on event logs shared by the generator, traffic simulator and importer tests."""

from __future__ import annotations

import pandas as pd


def assert_sessions_split_at_30_minutes(events: pd.DataFrame) -> None:
    """Sessions are recoverable with a 30-minute gap: no gap over 30 minutes inside a session,
    none of 30 minutes or less between two sessions of a user, and one user per session."""
    e = events.sort_values(["user_id", "ts", "event_id"])
    same_user = e["user_id"].eq(e["user_id"].shift())
    same_session = same_user & e["session_id"].eq(e["session_id"].shift())
    gap = e["ts"].diff().dt.total_seconds() / 60
    assert gap[same_session].max() <= 30
    assert gap[same_user & ~same_session].min() > 30
    assert e.groupby("session_id")["user_id"].nunique().max() == 1


def assert_no_event_before_first_seen(events: pd.DataFrame, items: pd.DataFrame) -> None:
    """No event of an item falls on a (UTC) day before the item's `first_seen` listing date."""
    listed = events["item_id"].map(items.set_index("item_id")["first_seen"])
    day = events["ts"].dt.tz_convert("UTC").dt.date
    known = listed.notna()
    assert known.any() and (day[known] >= listed[known]).all()
