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
