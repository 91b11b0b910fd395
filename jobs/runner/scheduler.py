"""Airflow's components as child processes for a backfill: an `airflow api-server` (execution
API only) and an `airflow scheduler` (LocalExecutor), started for the backfill and stopped after
it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from jobs.runner.airflow_runs import DAG_ID, BackfillError, run_as_of


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: Any, timeout_s: float = 60.0) -> None:
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


class _Components:
    """The api-server and scheduler processes of one backfill, each logging to `logs`."""

    def __init__(self, penv: dict[str, str], logs: str) -> None:
        self.penv, self.logs = penv, logs
        self.procs: list[Any] = []

    def start(self, name: str, *args: str) -> Any:
        import subprocess
        import sys

        out = open(os.path.join(self.logs, f"{name}.log"), "ab")  # noqa: SIM115 - child keeps it
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.penv,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole, workers included
        )
        out.close()
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for proc, name in zip(self.procs, ("api-server", "scheduler"), strict=False):
            if proc.poll() is not None:
                raise BackfillError(
                    f"airflow {name} exited with {proc.returncode}; see {self.logs}/{name}.log"
                )

    def stop(self) -> None:
        for proc in reversed(self.procs):
            stop_process(proc)


def run_scheduler(
    env: dict[str, str],
    backfill_id: int,
    *,
    timeout_s: float | None,
    progress: Callable[[str], None],
) -> None:
    """api-server (execution API only) + scheduler (LocalExecutor) until the backfill is done."""
    import time

    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    port = free_port()
    logs = os.path.join(env["AIRFLOW_HOME"], "logs", f"backfill-{backfill_id}")
    os.makedirs(logs, exist_ok=True)
    with create_session() as session:
        model = session.get(DagModel, DAG_ID)
        was_paused = bool(model.is_paused)
        model.is_paused = False  # the scheduler starts no run of a paused DAG, backfill or not
    components = _Components(scheduler_env(env, port), logs)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    try:
        progress(f"starting airflow api-server (execution API) on 127.0.0.1:{port}")
        components.start(
            "api-server", "api-server", "--apps", "execution", "-H", "127.0.0.1", "-p", str(port)
        )
        _wait_for_api_server(components, port, deadline)
        progress("starting airflow scheduler (LocalExecutor)")
        components.start("scheduler", "scheduler", "--skip-serve-logs")
        _wait_for_backfill(components, backfill_id, deadline, timeout_s, progress)
    finally:
        components.stop()
        if was_paused:
            with create_session() as session:
                session.get(DagModel, DAG_ID).is_paused = True


def _wait_for_api_server(components: _Components, port: int, deadline: float | None) -> None:
    """Until the execution API answers its health check (or a component exits)."""
    import time
    import urllib.request

    health = f"http://127.0.0.1:{port}/execution/health"
    while True:
        components.check_alive()
        try:
            if urllib.request.urlopen(health, timeout=5).status == 200:
                break
        except OSError:
            pass
        if deadline and time.monotonic() > deadline:
            raise BackfillError(f"the api-server did not answer {health}; see {components.logs}")
        time.sleep(1)


def _wait_for_backfill(
    components: _Components,
    backfill_id: int,
    deadline: float | None,
    timeout_s: float | None,
    progress: Callable[[str], None],
) -> None:
    """Until every run of the backfill succeeded or failed, reporting each state change."""
    import time

    from airflow.utils.state import DagRunState
    from sqlalchemy.exc import OperationalError

    seen: dict[int, str] = {}
    while True:
        components.check_alive()
        try:
            runs = runs_of(backfill_id)
        except OperationalError:  # SQLite busy with the scheduler's write: ask again
            time.sleep(2)
            continue
        for run in runs:
            state = str(getattr(run.state, "value", run.state))
            if seen.get(run.id) != state:
                seen[run.id] = state
                progress(f"[{run_as_of(run)}] {run.run_id} {state}")
        if all(r.state in (DagRunState.SUCCESS, DagRunState.FAILED) for r in runs):
            break
        if deadline and time.monotonic() > deadline:
            raise BackfillError(f"backfill {backfill_id} not finished after {timeout_s}s")
        time.sleep(2)


def runs_of(backfill_id: int) -> list[Any]:
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
