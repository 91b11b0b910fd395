"""Run Airflow in this project's self-contained setup (SQLite metadata DB under var/airflow,
our dags folder): the environment, one `dag.test()` run of `homepage_daily` or `homepage_refresh`,
and what every way of running a DAG shares (syncing the DAG files, the `ds` a run covers).
Backfills: `jobs.runner.backfill`."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from jobs.core.errors import OrchestrationError

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "homepage_daily"


class BackfillError(OrchestrationError):
    """The backfill could not be created or run (not: one of its runs failed)."""


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

    from jobs.core.config import parse_overrides
    from jobs.core.lake import Lake, parse_ds
    from jobs.daily.pipeline import default_ds

    lake_path = Lake(lake).root
    ds = ds or default_ds(Lake(lake_path))
    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_daily.py"))
    if bag.import_errors:
        raise OrchestrationError(f"DAG import errors: {bag.import_errors}")
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
        raise OrchestrationError(
            f"DAG run created task instances {sorted(states)}, expected {sorted(dag.task_ids)}"
        )
    return str(run.state)


def run_refresh_dag_test(
    lake: str,
    watermark: str,
    *,
    overrides: dict[str, Any] | None = None,
    home: str | None = None,
) -> dict[str, str]:
    """`dag.test()` one run of `homepage_refresh` for `watermark`; returns each task's state."""
    env = airflow_env(home)
    os.environ.update(env)  # must precede the first airflow import
    os.makedirs(env["AIRFLOW_HOME"], exist_ok=True)
    from airflow.utils import db

    db.initdb()
    from airflow.dag_processing.dagbag import DagBag

    from jobs.core.lake import Lake
    from jobs.refresh.windows import parse_watermark

    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_refresh.py"))
    if bag.import_errors:
        raise OrchestrationError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag("homepage_refresh")
    wm = parse_watermark(watermark)
    run = dag.test(
        logical_date=wm,
        run_conf={
            "lake": Lake(lake).root,
            "watermark": wm.isoformat(),
            "overrides": overrides or {},
        },
    )
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    if set(states) != set(dag.task_ids):
        raise OrchestrationError(
            f"DAG run created task instances {sorted(states)}, expected {sorted(dag.task_ids)}"
        )
    return {"run": str(run.state), **states}


def configure_airflow(home: str | None) -> dict[str, str]:
    """Point this process's Airflow at `home` (before its first import), migrate the DB."""
    import sys

    env = airflow_env(home)
    if "airflow.settings" in sys.modules:
        from airflow import settings

        current = str(settings.SQL_ALCHEMY_CONN)
        if current != env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
            raise BackfillError(
                f"Airflow is already configured in this process for {current}; "
                f"cannot switch to {env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}"
            )
    os.environ.update(env)
    os.makedirs(env["AIRFLOW_HOME"], exist_ok=True)
    from airflow.utils import db

    db.initdb()  # idempotent
    return env


def sync_dag(session: Any) -> None:
    """Write the DAG files of the dags-folder bundle to the metadata DB (`dags reserialize`)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    manager = DagBundlesManager()
    manager.sync_bundles_to_db(session=session)
    session.commit()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        if bag.import_errors:
            raise BackfillError(f"DAG import errors: {bag.import_errors}")
        sync_bag_to_db(bag, bundle.name, bundle.version)


def run_as_of(run: Any) -> str | None:
    """The ds a dag run of homepage_daily runs as of (explicit `ds` param, else interval end)."""
    conf = run.conf or {}
    if conf.get("ds"):
        return str(conf["ds"])
    end = run.data_interval_end or run.logical_date
    return end.strftime("%Y-%m-%d") if end else None


def timezone_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
