"""Shared fixtures: one local Spark session for the whole run, a quiet environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# Airflow reads its settings once, at first import: give the whole run one throwaway home
# (SQLite metadata DB) before any test imports airflow, so no test depends on another's order.
if "PYTEST_AIRFLOW_HOME" not in os.environ:
    import tempfile

    from jobs.airflow_run import airflow_env

    os.environ["PYTEST_AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="homepage-airflow-")
    os.environ.update(airflow_env(os.environ["PYTEST_AIRFLOW_HOME"]))

# Config for the small generated lakes of the end-to-end tests: small MF and pages, a 2-day
# label window and training thresholds sized for a few thousand users over 5-8 days
SMALL_LAKE_OVERRIDES: dict[str, object] = {
    "mf.iterations": 5,
    "mf.factors": 8,
    "page.slots": 6,
    "page.items_per_carousel": 5,
    "page.min_items": 3,
    "page.candidate_items": 15,
    "training.label_days": 2,
    "training.min_positives": 5,
    "training.min_impressions": 500,
    "training.validation_users": 300,
    "engagement.n_estimators": 30,
}

SHARED_DATA = Path(
    os.environ.get("HOMEPAGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def spark():
    """The process's Spark session (local[2], UI off, 1 shuffle partition), made once."""
    from jobs.config import SparkConfig
    from jobs.spark import get_spark

    session = get_spark(SparkConfig(master="local[2]", driver_memory="1g", shuffle_partitions=1))
    yield session


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set HOMEPAGE_SHARED_DATA)")
    return SHARED_DATA
