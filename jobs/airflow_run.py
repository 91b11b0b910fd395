"""Run `homepage_daily` through Airflow in one process (`dag.test()`, SQLite metadata DB)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def airflow_env(home: str | None = None) -> dict[str, str]:
    """Environment for a self-contained Airflow: SQLite under var/airflow, our dags folder."""
    home = home or os.environ.get("AIRFLOW_HOME") or str(REPO / "var" / "airflow")
    return {
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "OPENBLAS_NUM_THREADS": "1",
        "GX_ANALYTICS_ENABLED": "false",
    }


def run_dag_test(
    lake: str,
    *,
    ds: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
    home: str | None = None,
) -> str:
    """Migrate the metadata DB if needed, then `dag.test()` the daily DAG; returns the run state."""
    env = airflow_env(home)
    os.environ.update(env)  # must precede the first airflow import
    os.makedirs(env["AIRFLOW_HOME"], exist_ok=True)
    from airflow.utils import db

    db.initdb()  # idempotent: creates or upgrades the SQLite schema
    from airflow.dag_processing.dagbag import DagBag

    from jobs.config import parse_overrides
    from jobs.lake import Lake, parse_ds
    from jobs.pipeline import default_ds

    lake_path = Lake(lake).root
    ds = ds or default_ds(Lake(lake_path))
    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_daily.py"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag("homepage_daily")
    flat: dict[str, Any] = {}
    if isinstance(overrides, list):
        for item in overrides:
            k, _, v = item.partition("=")
            flat[k] = v
        parse_overrides(overrides)
    elif overrides:
        flat = dict(overrides)
    # a manual run's data interval ends at its logical date, and the DAG runs as of that end
    day = parse_ds(ds)
    logical = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    run = dag.test(logical_date=logical, run_conf={"lake": lake_path, "ds": ds, "overrides": flat})
    tis = run.get_task_instances() if hasattr(run, "get_task_instances") else []
    states = {ti.task_id: str(ti.state) for ti in tis}
    if set(states) != set(dag.task_ids):
        # never report an empty run as green
        raise RuntimeError(
            f"DAG run created task instances {sorted(states)}, expected {sorted(dag.task_ids)}"
        )
    return str(run.state)
