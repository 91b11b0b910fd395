"""Checks on a generated event log shared by the generator and the traffic simulator tests."""

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
