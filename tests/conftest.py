"""Shared fixtures: one local Spark session for the whole run, a quiet environment."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

# Airflow reads its settings once, at first import: give the whole run one throwaway home
# (SQLite metadata DB) before any test imports airflow, so no test depends on another's order.
if "PYTEST_AIRFLOW_HOME" not in os.environ:
    import tempfile

    from jobs.runner.airflow_runs import airflow_env

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
    from jobs.core.config import SparkConfig
    from jobs.core.spark import get_spark

    session = get_spark(SparkConfig(master="local[2]", driver_memory="1g", shuffle_partitions=1))
    yield session


@pytest.fixture(scope="session")
def story_lake(tmp_path_factory: pytest.TempPathFactory, spark: Any) -> str:
    """The generated lake of the train/promote and fault tests (1,500 users, 300 items, 8 days,
    seed 5), ingested, with the feature store as of its default ds and as of that ds's label
    window start (what train needs), under SMALL_LAKE_OVERRIDES. Made once per session (its
    Spark jobs are most of those modules' set-up); each module works on its own `copy_lake`."""
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.daily import training_data as td
    from jobs.daily.pipeline import default_ds, run_step
    from jobs.inputs.generate import generate_lake

    root = str(tmp_path_factory.mktemp("story") / "lake")
    # days=8, not 6: with days=6 (seed 5) none of the 13 held-out users of the 2-day label window
    # has history before the cutoff, and train fails in w_grid_search (pd.concat of no pages)
    generate_lake(root, users=1500, items=300, days=8, seed=5)
    lake = Lake(root)
    ds = default_ds(lake)
    for step in ("ingest", "build_features"):
        run_step(step, root, ds, SMALL_LAKE_OVERRIDES)
    cfg = load_config(None, SMALL_LAKE_OVERRIDES)
    td.ensure_cutoff_features(lake, td.cutoff_for(ds, cfg), cfg)
    return root


def copy_lake(src: str, dst: str) -> str:
    """A private copy of a prepared lake (no MLflow store in it yet: nothing holds its path)."""
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set HOMEPAGE_SHARED_DATA)")
    return SHARED_DATA


# ---- tiny raw lakes for the ingest tests (test_ingest.py, test_bad_input.py) ----------------

DAY = "2026-01-05"  # the raw partition they write
RUN_DS = "2026-01-06"  # ingest runs as of the next day
NOW = dt.datetime(2026, 1, 6, 12, tzinfo=dt.UTC)
RAW_COLUMNS = ("event_id", "ts", "user_id", "event_type", "item_id", "price")
ITEM_COLUMNS = ("item_id", "title", "category_id", "price")


def at(hour: int, day: int = 5) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, tzinfo=dt.UTC)


def events_table(
    rows: Sequence[Sequence[Any]],
    columns: Sequence[str] = RAW_COLUMNS,
    types: dict[str, Any] | None = None,
) -> Any:
    """Rows as a pyarrow table with the contract's schema (absent columns are null), or with
    the column types in `types` instead of the contract's."""
    import pyarrow as pa

    from jobs.core.lake import EVENT_SCHEMA

    types = types or {}
    schema = pa.schema([(f.name, types.get(f.name, f.type)) for f in EVENT_SCHEMA])
    given = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    data = {f.name: given.get(f.name, [None] * len(rows)) for f in EVENT_SCHEMA}
    return pa.Table.from_pydict(data, schema=schema)


def items_table(
    rows: Sequence[Sequence[Any]] = (("a", "A", "c", 1.0), ("b", "B", "c", 2.0)),
) -> Any:
    """Catalogue rows (item_id, title, category_id, price) as a contract-typed pyarrow table."""
    import pyarrow as pa

    from jobs.core.lake import ITEM_SCHEMA

    n = len(rows)
    given = {c: [r[i] for r in rows] for i, c in enumerate(ITEM_COLUMNS)}
    fill = {
        "category_path": ["x/c"] * n,
        "brand": ["z"] * n,
        "in_stock": [True] * n,
        "has_image": [True] * n,
        "first_seen": [dt.date(2025, 1, 1)] * n,
    }
    return pa.Table.from_pydict(
        {f.name: {**fill, **given}[f.name] for f in ITEM_SCHEMA}, ITEM_SCHEMA
    )


def write_parquet(table: Any, directory: str, name: str = "part-0.parquet") -> str:
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    pq.write_table(table, path)
    return path


def write_lake(
    root: Any, rows: Sequence[Sequence[Any]], *, drop: Sequence[str] = (), items: Any = None
) -> Any:
    """A lake with a two-item catalogue (or `items`) and `rows` as raw partition `DAY`."""
    from jobs.core.lake import Lake

    lake = Lake(str(root))
    write_parquet(items_table() if items is None else items, lake.items)
    table = events_table(rows)
    if drop:
        table = table.drop_columns(list(drop))
    write_parquet(table, lake.raw_events_ds(DAY))
    return lake
