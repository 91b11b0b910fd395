"""The feature job end to end on a small generated lake: incremental priors, GX gates, URIs."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from jobs.core.config import load_config
from jobs.core.lake import Lake

OVERRIDES = ["spark.shuffle_partitions=1"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory, spark):
    from jobs.daily.pipeline import run_step
    from jobs.inputs.generate import generate_lake

    root = str(tmp_path_factory.mktemp("features-lake"))
    generate_lake(root, users=800, items=150, days=4, seed=9, random_share=0.5)
    for ds in ("2026-01-04", "2026-01-05"):
        run_step("ingest", root, ds, OVERRIDES)
        run_step("build_features", root, ds, OVERRIDES)
    return Lake(root)


def _read(path: str) -> pd.DataFrame:
    return pd.read_parquet(path)


def test_second_day_is_incremental_and_equals_a_full_recompute(lake):
    from jobs.core import io
    from jobs.daily.pipeline import run_step

    state_path = lake.feature("priors_state", "2026-01-05")
    assert io.read_json(state_path + "/_STATE.json")["mode"] == "incremental"
    incremental = _read(state_path).sort_values(["user_id", "carousel_id"]).reset_index(drop=True)
    posterior = (
        _read(lake.feature("user_carousel_priors", "2026-01-05"))
        .sort_values(["user_id", "carousel_id"])
        .reset_index(drop=True)
    )

    shutil.rmtree(lake.feature("priors_state", "2026-01-04"))  # no previous state: full path
    run_step("build_features", lake.root, "2026-01-05", OVERRIDES)
    assert io.read_json(state_path + "/_STATE.json")["mode"] == "full"
    full = _read(state_path).sort_values(["user_id", "carousel_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(incremental, full, check_exact=False, rtol=1e-12)
    again = (
        _read(lake.feature("user_carousel_priors", "2026-01-05"))
        .sort_values(["user_id", "carousel_id"])
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(posterior, again, check_exact=False, rtol=1e-12)


def test_every_table_is_written_for_the_day(lake):
    from jobs.core import io

    report = io.read_json(lake.reports("2026-01-05") + "/features.json")
    expected = {
        "user_item_counts",
        "user_category_counts",
        "priors_state",
        "carousel_priors",
        "user_carousel_priors",
        "item_stats",
        "user_activity",
        "user_aggregates",
        "user_category_frequency",
        "user_context",
        "carousel_slot_engagement",
        "examination",
    }
    assert set(report["tables"]) == expected
    assert all(report["tables"][t]["rows"] > 0 for t in expected)
    assert report["tables"]["user_item_counts"]["previous_rows"] > 0  # bounded by yesterday


def test_the_daily_run_writes_no_purchase_intent_table(lake):
    """Nothing read it: the purchase head computes its intent labels from its label window
    (engagement.intent_labels), so the daily run, with the option off as by default, has no
    such table."""
    from jobs.core import io

    assert load_config().engagement.intent_labels is False
    report = io.read_json(lake.reports("2026-01-05") + "/features.json")
    assert "purchase_intent" not in report["tables"]
    for ds in ("2026-01-04", "2026-01-05"):
        assert not io.exists(lake.feature("purchase_intent", ds))


def test_a_failed_suite_names_the_failed_expectations(spark):
    from validation import suites
    from validation.gx import ValidationFailed, run_suite

    bad = spark.createDataFrame(
        [("u1", "k", 1.0, 2.0), ("u1", "k", 1.0, 0.0)],
        ["user_id", "carousel_id", "trials", "successes"],
    )
    with pytest.raises(ValidationFailed) as err:
        run_suite("priors_state", bad, suites.priors_state, previous_rows=100, max_ratio=3.0)
    msg = str(err.value)
    assert "expect_compound_columns_to_be_unique" in msg
    assert "expect_column_pair_values_a_to_be_greater_than_b" in msg
    assert "expect_table_row_count_to_be_between" in msg and "observed=2" in msg


def test_paths_are_uris_for_cluster_lakes():
    lake = Lake("s3a://bucket/lake")
    assert (
        lake.feature("user_item_counts", "2026-01-05")
        == "s3a://bucket/lake/warehouse/features/user_item_counts/ds=2026-01-05"
    )
    assert lake.events == "s3a://bucket/lake/warehouse/events"
    assert Lake("file:///tmp/x").root == "/tmp/x"
    cfg = load_config(overrides=["spark.master=spark://master:7077", "spark.shuffle_partitions=64"])
    assert cfg.spark.master == "spark://master:7077" and cfg.spark.shuffle_partitions == 64
