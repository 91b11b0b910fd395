"""The factorisation cache of the train step (jobs.daily.factorisations.fit_factorisations)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from jobs.core.config import load_config
from jobs.core.lake import Lake, join
from jobs.daily.factorisations import MF_CACHE, fit_factorisations, mf_params
from models.ranking.mf import build_matrix, fit_mf

CFG = load_config(overrides=["mf.iterations=3", "mf.factors=4", "training.label_days=3"])


def _write_features(lake: Lake, ds: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    users = np.array([f"u{x:03d}" for x in rng.integers(0, 60, n)], dtype=object)
    items = np.array([f"i{x:02d}" for x in rng.integers(0, 30, n)], dtype=object)
    eta = rng.random(n) + 0.1
    for table, key, ids in (
        ("user_item_counts", "item_id", items),
        ("user_category_counts", "category_id", np.array([f"c{i[-1]}" for i in items])),
    ):
        path = lake.feature(table, ds)
        os.makedirs(path, exist_ok=True)
        frame = pd.DataFrame({"user_id": users, key: ids, "eta": eta})
        frame = frame.drop_duplicates(["user_id", key])
        frame.to_parquet(f"{path}/part-{seed}.parquet")
        for old in os.listdir(path):  # a rebuilt partition: the new write replaces the old files
            if old != f"part-{seed}.parquet":
                os.remove(os.path.join(path, old))


def _cached(lake: Lake) -> dict[str, list[str]]:
    base = join(lake.warehouse, MF_CACHE)
    if not os.path.isdir(base):
        return {}
    return {d: sorted(os.listdir(os.path.join(base, d))) for d in sorted(os.listdir(base))}


def test_a_second_fit_of_the_same_counts_is_read_back_and_equals_a_fresh_fit(tmp_path):
    lake = Lake(str(tmp_path))
    _write_features(lake, "2026-01-05", seed=1)
    item, cat, first = fit_factorisations(lake, "2026-01-05", CFG)
    assert "item_cached" not in first and first["item_nnz"] > 0
    assert [len(v) for v in _cached(lake).values()] == [2]  # item and category, one day
    item2, cat2, second = fit_factorisations(lake, "2026-01-05", CFG)
    assert second["item_cached"] == 1.0 and second["category_cached"] == 1.0
    for a, b in ((item, item2), (cat, cat2)):
        assert np.array_equal(a.user_ids, b.user_ids) and np.array_equal(a.item_ids, b.item_ids)
        assert np.array_equal(a.user_factors, b.user_factors)
        assert np.array_equal(a.item_factors, b.item_factors)


def test_rebuilt_counts_or_other_settings_are_fitted_again(tmp_path):
    lake = Lake(str(tmp_path))
    _write_features(lake, "2026-01-05", seed=1)
    fit_factorisations(lake, "2026-01-05", CFG)
    _write_features(lake, "2026-01-05", seed=2)  # e.g. late events ingested, features rebuilt
    item, _, again = fit_factorisations(lake, "2026-01-05", CFG)
    assert "item_cached" not in again
    df = pd.read_parquet(lake.feature("user_item_counts", "2026-01-05"))
    fresh = fit_mf(
        df["user_id"].to_numpy(), df["item_id"].to_numpy(), df["eta"].to_numpy(), mf_params(CFG)
    )
    assert np.array_equal(item.user_factors, fresh.user_factors)
    more = load_config(overrides=["mf.iterations=4", "mf.factors=4", "training.label_days=3"])
    assert "item_cached" not in fit_factorisations(lake, "2026-01-05", more)[2]
    assert [len(v) for v in _cached(lake).values()] == [6]


def test_the_same_rows_rewritten_in_another_order_and_split_are_read_back(tmp_path):
    # Spark writes the same rows in another order and split from run to run (new names,
    # times and bytes): a backfill and seven single runs of the same days must share fits
    lake = Lake(str(tmp_path))
    _write_features(lake, "2026-01-05", seed=1)
    fit_factorisations(lake, "2026-01-05", CFG)
    before = _cached(lake)
    for table in ("user_item_counts", "user_category_counts"):
        path = lake.feature(table, "2026-01-05")
        (old,) = os.listdir(path)
        rows = pd.read_parquet(os.path.join(path, old)).sample(frac=1.0, random_state=3)
        os.remove(os.path.join(path, old))
        half = len(rows) // 2
        rows.iloc[:half].to_parquet(f"{path}/part-00000-b.parquet")
        rows.iloc[half:].to_parquet(f"{path}/part-00001-b.parquet")
    _, _, again = fit_factorisations(lake, "2026-01-05", CFG)
    assert again["item_cached"] == 1.0 and again["category_cached"] == 1.0
    assert _cached(lake) == before  # nothing new written


def test_factorisations_older_than_the_label_window_are_dropped(tmp_path):
    lake = Lake(str(tmp_path))
    days = ["2026-01-01", "2026-01-02", "2026-01-04", "2026-01-05"]
    for k, ds in enumerate(days):
        _write_features(lake, ds, seed=k + 1)
        fit_factorisations(lake, ds, CFG)
    # the run of 01-05 (label_days 3) reads as of its cutoff 01-02 and later; 01-01 is gone
    kept = _cached(lake)
    assert list(kept) == ["ds=2026-01-02", "ds=2026-01-04", "ds=2026-01-05"]
    # a re-run of a past day fits as of 01-01 again (dropped) but leaves the cache as it
    # found it: a backfill reprocessing a day changes nothing
    fit_factorisations(lake, "2026-01-01", CFG)
    assert _cached(lake) == kept


def test_build_matrix_sums_duplicates_with_sorted_ids():
    m, users, items = build_matrix(
        np.array(["b", "a", "b", "c"], dtype=object),
        np.array(["x", "y", "x", "x"], dtype=object),
        np.array([1.0, 2.0, 3.0, 4.0]),
    )
    assert list(users) == ["a", "b", "c"] and list(items) == ["x", "y"]
    assert m.toarray().tolist() == [[0.0, 2.0], [4.0, 0.0], [4.0, 0.0]]
