"""Reuse of the feature tables as of a label window's start (jobs.daily.training_data).

Tables written by an older version lack columns the engagement features now read; training on
them would see NaN where serving sees values, so they are rebuilt, not reused."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from jobs.core.config import load_config
from jobs.core.lake import Lake
from jobs.daily import build_features, item_catalogue
from jobs.daily import training_data as td
from models.ranking.item_features import ACTIVITY_COLUMNS, ITEM_COLUMNS

DAY = "2024-03-03"


def _write(lake: Lake, table: str, columns: list[str]) -> None:
    path = lake.feature(table, DAY)
    os.makedirs(path)
    pd.DataFrame({c: [1.0] for c in columns}).to_parquet(os.path.join(path, "part-0.parquet"))
    open(os.path.join(path, "_SUCCESS"), "w").close()


def _lake(tmp_path, *, item_stats: list[str]) -> Lake:
    lake = Lake(str(tmp_path))
    for t in td.CUTOFF_TABLES:
        cols = {"item_stats": item_stats, "user_activity": ["user_id", *ACTIVITY_COLUMNS]}
        _write(lake, t, cols.get(t, ["user_id"]))
    # one accepted events day before the cutoff, so a rebuild is possible
    os.makedirs(os.path.join(lake.events, "ds=2024-03-01"))
    # the catalogue as of the cutoff, validated (by that day's run)
    os.makedirs(os.path.join(lake.warehouse, "items", f"ds={DAY}"))
    open(os.path.join(lake.warehouse, "items", f"ds={DAY}", "_SUCCESS"), "w").close()
    return lake


@pytest.fixture
def builds(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(build_features, "run", lambda lake, ds, cfg: calls.append(ds))
    monkeypatch.setattr(
        item_catalogue, "ingest_items", lambda lake, ds, cfg: calls.append(f"items {ds}")
    )
    return calls


def test_current_tables_are_reused(tmp_path, builds):
    lake = _lake(tmp_path, item_stats=["item_id", *ITEM_COLUMNS.values()])
    assert td.stale_columns(lake, DAY) == {}
    assert td.ensure_cutoff_features(lake, DAY, load_config(None, {})) == "existing"
    assert builds == []


def test_tables_without_new_columns_are_rebuilt(tmp_path, builds, caplog):
    old = [c for c in ITEM_COLUMNS.values() if c not in ("repeat_rate", "n_buyers")]
    lake = _lake(tmp_path, item_stats=["item_id", *old])
    assert td.stale_columns(lake, DAY) == {"item_stats": ["n_buyers", "repeat_rate"]}
    with caplog.at_level("WARNING"):
        assert td.ensure_cutoff_features(lake, DAY, load_config(None, {})) == "built"
    assert builds == [DAY]
    assert "repeat_rate" in caplog.text


def test_a_cutoff_never_ingested_gets_its_own_catalogue_snapshot(tmp_path, builds):
    """Not a later day's snapshot: the catalogue as of the cutoff is validated first."""
    lake = _lake(tmp_path, item_stats=["item_id", *ITEM_COLUMNS.values()])
    shutil.rmtree(os.path.join(lake.warehouse, "items", f"ds={DAY}"))
    os.makedirs(os.path.join(lake.warehouse, "items", "ds=2024-03-09"))  # a later one exists
    assert td.ensure_cutoff_features(lake, DAY, load_config(None, {})) == "existing"
    assert builds == [f"items {DAY}"]
