"""Run `homepage_daily` through Airflow on the embedded SQLite metadata DB: one run in one
process (`dag.test()`), or a backfill of a range of days (`airflow backfill create`, then the
scheduler or an in-process loop runs it; see `run_backfill`)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.core.errors import OrchestrationError

REPO = Path(__file__).resolve().parents[2]


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
    from jobs.refresh.run import parse_watermark

    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_refresh.py"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
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
        raise RuntimeError(
            f"DAG run created task instances {sorted(states)}, expected {sorted(dag.task_ids)}"
        )
    return {"run": str(run.state), **states}


# --- backfill ---------------------------------------------------------------------------------
#
# `airflow backfill create` only writes a Backfill and its queued dag runs (with the run conf) to
# the metadata DB; in Airflow 3 the *scheduler* runs them, its executor's workers talking to the
# execution API of an api-server. `run_backfill` does exactly that against the embedded SQLite
# home, with no service left running: it creates the backfill with the real CLI, then either
#
# - executor="scheduler": starts `airflow api-server --apps execution` and `airflow scheduler`
#   (LocalExecutor, one task at a time) for the duration, waits until every run of the backfill
#   is finished, and stops both; every task runs in its own worker process, as in production; or
# - executor="inline": runs the backfill's dag runs, one after the other in the backfill's order,
#   in this process with the loop `dag.test()` uses (the scheduler's `DagRun.update_state` to pick
#   ready tasks, the Task SDK's in-process execution API to run them). Same runs, same conf, same
#   data intervals, same task code; no process, imports and Spark JVM to start per task, which
#   makes it several times faster (measured here: ~3-4x on the small test lake).
#
# A backfill run's data interval is [X, X+1) for logical date X, and the DAG runs as of its end:
# the run for `ds` has logical date ds - 1 day. `--from`/`--to` are `ds` values, like every other
# `ds` of this project.

DAG_ID = "homepage_daily"
BACKFILL_EXECUTORS = ("scheduler", "inline")
REPROCESS = ("none", "completed", "failed")


class BackfillError(OrchestrationError):
    """The backfill could not be created or run (not: one of its runs failed)."""


def backfill_dates(from_ds: str, to_ds: str, *, today: dt.date | None = None) -> list[str]:
    """The `ds` values from `from_ds` to `to_ds` inclusive; errors name the bad value."""
    from jobs.core.lake import fmt_ds, parse_ds

    start, end = parse_ds(from_ds), parse_ds(to_ds)
    if start > end:
        raise ValueError(f"--from {from_ds} is after --to {to_ds}")
    today = today or dt.datetime.now(dt.UTC).date()
    if end > today:
        # the run for ds covers [ds - 1, ds): Airflow only backfills intervals that have ended
        raise ValueError(f"--to {to_ds} is in the future (today is {fmt_ds(today)})")
    return [fmt_ds(start + dt.timedelta(days=i)) for i in range((end - start).days + 1)]


def _logical(ds: str) -> dt.datetime:
    from jobs.core.lake import parse_ds

    day = parse_ds(ds) - dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _configure_airflow(home: str | None) -> dict[str, str]:
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


def _sync_dag(session: Any) -> None:
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


def _run_as_of(run: Any) -> str | None:
    """The ds a dag run of homepage_daily runs as of (explicit `ds` param, else interval end)."""
    conf = run.conf or {}
    if conf.get("ds"):
        return str(conf["ds"])
    end = run.data_interval_end or run.logical_date
    return end.strftime("%Y-%m-%d") if end else None


def _check_existing_runs(dates: list[str], session: Any) -> None:
    """Refuse when a run already sits at a backfill logical date but covers another ds.

    `homepage airflow-test --ds D` (dag.test) makes a manual run at logical date D whose
    interval ends at D; the backfill run for D + 1 needs that logical date. Reprocessing it
    would run D again (and skip D + 1); not reprocessing it would skip D + 1 silently.
    """
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    by_logical = {_logical(ds): ds for ds in dates}
    runs = session.scalars(
        select(DagRun).where(DagRun.dag_id == DAG_ID, DagRun.logical_date.in_(list(by_logical)))
    )
    clashes = []
    for run in runs:
        want = by_logical[run.logical_date]
        got = _run_as_of(run)
        if got != want:
            clashes.append(
                f"run {run.run_id} ({run.run_type}) at logical date "
                f"{run.logical_date:%Y-%m-%d} covers ds={got}, not ds={want}"
            )
    if clashes:
        raise BackfillError(
            "existing dag runs occupy the backfill's logical dates: "
            + "; ".join(clashes)
            + f" (delete them, e.g. `airflow dags delete {DAG_ID}`, or backfill other dates)"
        )


def _create_backfill(
    env: dict[str, str],
    dates: list[str],
    conf: dict[str, Any],
    reprocess: str,
) -> int:
    """`airflow backfill create` for the logical dates of `dates`; returns the backfill id."""
    import json
    import subprocess
    import sys

    from airflow.models.backfill import Backfill
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        before = session.scalar(select(func.max(Backfill.id))) or 0
    cmd = [
        sys.executable,
        "-m",
        "airflow",
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        _logical(dates[0]).strftime("%Y-%m-%d"),
        "--to-date",
        _logical(dates[-1]).strftime("%Y-%m-%d"),
        "--max-active-runs",
        "1",  # the pipeline's days build on each other (champion, ingest markers)
        "--reprocess-behavior",
        reprocess,
        "--dag-run-conf",
        json.dumps(conf),
    ]
    proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-5:]
        raise BackfillError(f"airflow backfill create failed: {' | '.join(tail)}")
    with create_session() as session:
        backfill_id = session.scalar(select(func.max(Backfill.id)).where(Backfill.dag_id == DAG_ID))
    if not backfill_id or backfill_id <= before:
        raise BackfillError(f"airflow backfill create made no backfill: {proc.stdout.strip()}")
    return int(backfill_id)


def _backfill_runs(backfill_id: int, session: Any) -> list[dict[str, Any]]:
    """One record per date of the backfill, in its order: ds, logical date, run, states."""
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    out = []
    rows = session.scalars(
        select(BackfillDagRun)
        .where(BackfillDagRun.backfill_id == backfill_id)
        .order_by(BackfillDagRun.sort_ordinal)
    )
    for bdr in rows:
        logical = bdr.logical_date
        rec: dict[str, Any] = {
            "ds": (logical + dt.timedelta(days=1)).strftime("%Y-%m-%d"),
            "logical_date": logical.strftime("%Y-%m-%d"),
            "run_id": None,
            "state": "not created",
            "tasks": {},
        }
        if bdr.dag_run_id is None:
            reason = str(getattr(bdr.exception_reason, "value", bdr.exception_reason))
            rec["state"] = f"skipped ({reason})"
        else:
            run = session.get(DagRun, bdr.dag_run_id)
            rec["run_id"] = run.run_id
            rec["state"] = str(getattr(run.state, "value", run.state))
            rec["ds"] = _run_as_of(run) or rec["ds"]
            rec["tasks"] = {
                ti.task_id: str(getattr(ti.state, "value", ti.state))
                for ti in run.get_task_instances(session=session)
            }
        out.append(rec)
    return out


def _run_inline(backfill_id: int, progress: Callable[[str], None]) -> None:
    """Run the backfill's dag runs in order, in this process (the loop of `dag.test()`)."""
    import time

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_daily.py"))
    if bag.import_errors:
        raise BackfillError(f"DAG import errors: {bag.import_errors}")
    sdk_dag = bag.get_dag(DAG_ID)
    finished = {
        TaskInstanceState.SUCCESS,
        TaskInstanceState.FAILED,
        TaskInstanceState.SKIPPED,
        TaskInstanceState.UPSTREAM_FAILED,
        TaskInstanceState.REMOVED,
    }
    dag_bag = DBDagBag()
    with create_session() as session:
        run_ids = list(
            session.scalars(
                select(BackfillDagRun.dag_run_id)
                .where(
                    BackfillDagRun.backfill_id == backfill_id,
                    BackfillDagRun.dag_run_id.is_not(None),
                )
                .order_by(BackfillDagRun.sort_ordinal)
            )
        )
    for run_pk in run_ids:
        with create_session() as session:
            dr = session.get(DagRun, run_pk)
            if dr.state != DagRunState.QUEUED:
                continue
            dr.dag = dag_bag.get_dag_for_run(dr, session=session)
            dr.state = DagRunState.RUNNING  # what the scheduler's _start_queued_dagruns does
            dr.start_date = timezone_now()
            session.commit()
            progress(f"[{_run_as_of(dr)}] {dr.run_id} running")
            while dr.state == DagRunState.RUNNING:
                session.expire_all()
                schedulable, _ = dr.update_state(session=session)
                for ti in schedulable:
                    if ti.state != TaskInstanceState.UP_FOR_RESCHEDULE:
                        ti.try_number += 1
                    ti.state = TaskInstanceState.SCHEDULED
                    ti.scheduled_dttm = timezone_now()
                session.commit()
                tis = dr.get_task_instances(session=session)
                scheduled = [ti for ti in tis if ti.state == TaskInstanceState.SCHEDULED]
                if not scheduled and any(ti.state not in finished for ti in tis):
                    time.sleep(1)  # e.g. waiting for a retry's delay
                for ti in scheduled:
                    _run_task(ti=ti, task=sdk_dag.task_dict[ti.task_id], run_triggerer=True)
            progress(f"[{_run_as_of(dr)}] {dr.run_id} {getattr(dr.state, 'value', dr.state)}")


def _finish(backfill_id: int, *, cancel: bool) -> None:
    """Mark the backfill completed (as the scheduler does once its runs are done); with
    `cancel`, first fail its runs that nothing will run any more (as `cancel_backfill` does, and
    also the running one: its scheduler or process is gone). An unfinished backfill would block
    the next one ("Another backfill is running")."""
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select, update

    with create_session() as session:
        if cancel:
            session.get(Backfill, backfill_id).is_paused = True
            session.execute(
                update(DagRun)
                .where(
                    DagRun.id.in_(
                        select(BackfillDagRun.dag_run_id).where(
                            BackfillDagRun.backfill_id == backfill_id
                        )
                    ),
                    DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]),
                )
                .values(state=DagRunState.FAILED)
                .execution_options(synchronize_session=False)
            )
        backfill = session.get(Backfill, backfill_id)
        if backfill.completed_at is None:
            backfill.completed_at = timezone_now()


def timezone_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: Any, timeout_s: float = 60.0) -> None:
    """Stop a component started in its own session: SIGTERM its group, then SIGKILL."""
    import signal
    import subprocess

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def scheduler_env(env: dict[str, str], api_port: int) -> dict[str, str]:
    """The environment of an `airflow api-server --apps execution` on `api_port` and an
    `airflow scheduler` (LocalExecutor, one task at a time) that runs only the dag runs it is
    given (no scheduled runs)."""
    import secrets
    import sys

    bin_dir = os.path.dirname(sys.executable)
    return {
        **os.environ,
        **env,
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "1",  # one task at a time: 2 cores, Spark in each task
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        # the api-server checks the tokens the scheduler signs for its workers
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        # only the runs asked for: no scheduled run while the DAG is unpaused
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    }


def _run_scheduler(
    env: dict[str, str],
    backfill_id: int,
    *,
    timeout_s: float | None,
    progress: Callable[[str], None],
) -> None:
    """api-server (execution API only) + scheduler (LocalExecutor) until the backfill is done."""
    import subprocess
    import sys
    import time
    import urllib.request

    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy.exc import OperationalError

    port = _free_port()
    penv = scheduler_env(env, port)
    logs = os.path.join(env["AIRFLOW_HOME"], "logs", f"backfill-{backfill_id}")
    os.makedirs(logs, exist_ok=True)
    with create_session() as session:
        model = session.get(DagModel, DAG_ID)
        was_paused = bool(model.is_paused)
        model.is_paused = False  # the scheduler starts no run of a paused DAG, backfill or not
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        out = open(os.path.join(logs, f"{name}.log"), "ab")  # noqa: SIM115 - child keeps it
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=penv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole, workers included
        )
        out.close()
        procs.append(proc)
        return proc

    def check_alive() -> None:
        for proc, name in zip(procs, ("api-server", "scheduler"), strict=False):
            if proc.poll() is not None:
                raise BackfillError(
                    f"airflow {name} exited with {proc.returncode}; see {logs}/{name}.log"
                )

    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        progress(f"starting airflow api-server (execution API) on 127.0.0.1:{port}")
        start("api-server", "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port))
        health = f"http://127.0.0.1:{port}/execution/health"
        while True:
            check_alive()
            try:
                if urllib.request.urlopen(health, timeout=5).status == 200:
                    break
            except OSError:
                pass
            if deadline and time.monotonic() > deadline:
                raise BackfillError(f"the api-server did not answer {health}; see {logs}")
            time.sleep(1)
        progress("starting airflow scheduler (LocalExecutor)")
        start("scheduler", "scheduler", "--skip-serve-logs")
        seen: dict[int, str] = {}
        while True:
            check_alive()
            try:
                runs = _runs_of(backfill_id)
            except OperationalError:  # SQLite busy with the scheduler's write: ask again
                time.sleep(2)
                continue
            for run in runs:
                state = str(getattr(run.state, "value", run.state))
                if seen.get(run.id) != state:
                    seen[run.id] = state
                    progress(f"[{_run_as_of(run)}] {run.run_id} {state}")
            if all(r.state in (DagRunState.SUCCESS, DagRunState.FAILED) for r in runs):
                break
            if deadline and time.monotonic() > deadline:
                raise BackfillError(f"backfill {backfill_id} not finished after {timeout_s}s")
            time.sleep(2)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if was_paused:
            with create_session() as session:
                session.get(DagModel, DAG_ID).is_paused = True


def _runs_of(backfill_id: int) -> list[Any]:
    """The dag runs of a backfill, in its order (detached, with their state and conf)."""
    from airflow.models.backfill import BackfillDagRun
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(
            select(DagRun)
            .join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
            .where(BackfillDagRun.backfill_id == backfill_id)
            .order_by(BackfillDagRun.sort_ordinal)
        ).all()
        session.expunge_all()
    return list(runs)


def run_backfill(
    lake: str,
    from_ds: str,
    to_ds: str,
    *,
    overrides: list[str] | dict[str, Any] | None = None,
    config: str | None = None,
    home: str | None = None,
    executor: str = "scheduler",
    reprocess: str = "none",
    timeout_s: float | None = None,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Backfill homepage_daily for every `ds` from `from_ds` to `to_ds` through Airflow.

    Creates the backfill with `airflow backfill create` (one run per day, at most one active,
    the lake, overrides and config in the run conf), runs it (see the note above on
    `executor`), and returns one record per day in order: ds, logical_date, run_id, state
    ("success", "failed", or "skipped (...)" when a run for that date exists and `reprocess`
    says not to run it again) and the state of each task.
    """
    from jobs.core.config import load_config, parse_overrides
    from jobs.core.lake import Lake

    if executor not in BACKFILL_EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(BACKFILL_EXECUTORS)}")
    if reprocess not in REPROCESS:
        raise ValueError(f"reprocess must be one of {', '.join(REPROCESS)}")
    dates = backfill_dates(from_ds, to_ds)
    lake_path = Lake(lake).root
    flat: dict[str, Any] = {}
    if isinstance(overrides, list):
        parse_overrides(overrides)
        for item in overrides:
            k, _, v = item.partition("=")
            flat[k] = v
    elif overrides:
        flat = dict(overrides)
    load_config(config, flat or None)  # a bad override fails here, not in seven task logs
    conf: dict[str, Any] = {"lake": lake_path, "overrides": flat}
    if config:
        conf["config"] = os.path.abspath(config)

    env = _configure_airflow(home)
    from airflow.utils.session import create_session

    with create_session() as session:
        _sync_dag(session)
        _check_existing_runs(dates, session)
    backfill_id = _create_backfill(env, dates, conf, reprocess)
    progress(
        f"backfill {backfill_id} of {DAG_ID}: ds {dates[0]} .. {dates[-1]} "
        f"({len(dates)} runs, executor={executor}, lake={lake_path})"
    )
    try:
        if executor == "inline":
            _run_inline(backfill_id, progress)
        else:
            _run_scheduler(env, backfill_id, timeout_s=timeout_s, progress=progress)
    except BaseException:
        _finish(backfill_id, cancel=True)
        raise
    _finish(backfill_id, cancel=False)
    with create_session() as session:
        return _backfill_runs(backfill_id, session)
