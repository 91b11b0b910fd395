"""The `airflow` measurement of `homepage bench refresh`: `homepage_refresh` DAG runs under the
real Airflow scheduler, their tasks on a warm refresh worker."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

from jobs.bench.refresh_measure import (
    EVENTS_FILE,
    RefreshSetting,
    answers_ok,
    land_events,
    sample_peak,
    served_after,
    wait_port,
    wait_until,
    warm_and_measured,
    window_report,
)
from jobs.core.errors import BenchError

REFRESH_DAG = "homepage_refresh"


class _Processes:
    """Child processes started in their own session, logging to one file; stopped together."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.samplers: list[threading.Event] = []

    def start(self, *cmd: str, environ: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", *cmd],
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # stopped whole, the executor's workers included
            )
        self.procs.append(proc)
        return proc

    def sample(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """The process tree's [peak PSS, peak anonymous PSS] while it runs."""
        peak, done = sample_peak(proc.pid)
        self.samplers.append(done)
        return peak

    def stop(self) -> None:
        from jobs.runner.scheduler import stop_process

        for proc in reversed(self.procs):
            stop_process(proc)
        for sampler in self.samplers:
            sampler.set()


def _fresh_airflow(home: str) -> dict[str, str]:
    """A fresh Airflow home with the DAG files synced and homepage_refresh unpaused."""
    from jobs.runner.airflow_runs import configure_airflow, sync_dag

    shutil.rmtree(home, ignore_errors=True)
    env = configure_airflow(home)
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    with create_session() as session:
        sync_dag(session)
    with create_session() as session:
        session.get(DagModel, REFRESH_DAG).is_paused = False
    return env


def _dag_run(
    lake_root: str, wm: dt.datetime, label: str, conf: dict[str, Any], log_path: str
) -> tuple[list[tuple[str, Any, Any]], Any]:
    """Trigger a run of homepage_refresh for `wm`; when it succeeded, its tasks (id, start, end)
    in start order and its end."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType

    run = trigger_dag(
        REFRESH_DAG,
        triggered_by=DagRunTriggeredByType.CLI,
        run_id=f"bench-{label}-{wm:%Y%m%dT%H%M}-{time.time_ns()}",
        logical_date=wm,
        conf={"lake": lake_root, "watermark": wm.isoformat(), **conf},
    )
    while True:
        with create_session() as session:
            r = session.query(DagRun).filter_by(dag_id=REFRESH_DAG, run_id=run.run_id).one()
            if r.state in (DagRunState.SUCCESS, DagRunState.FAILED):
                tis = sorted(
                    (
                        (t.task_id, t.start_date, t.end_date)
                        for t in r.get_task_instances(session=session)
                    ),
                    key=lambda t: t[1],
                )
                if r.state != DagRunState.SUCCESS:
                    raise BenchError(f"DAG run {run.run_id} failed; see {log_path}")
                return tis, r.end_date
        time.sleep(1.0)  # seldom: the metadata DB is SQLite, and the run's times come from it


def airflow_run(b: RefreshSetting) -> dict[str, Any]:
    """`homepage_refresh` DAG runs under the Airflow scheduler (LocalExecutor, one task at a
    time, an execution API server), the tasks on a warm refresh worker: a warm-up run B 00:15,
    then the measured run B 00:30, triggered as its events land. A fresh Airflow home (SQLite)
    under the refresh lake each time."""
    from jobs.runner.scheduler import free_port, scheduler_env

    lake, base, port, args, say = b.lake, b.base, b.port, b.args, b.say
    env = _fresh_airflow(os.path.join(lake.root, "_airflow"))
    warm_wm, wm, warm, table = warm_and_measured(b)
    worker_port, api_port = free_port(), free_port()
    overrides = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--set")
    overrides["refresh.worker_url"] = f"http://127.0.0.1:{worker_port}"
    config = args[args.index("--config") + 1] if "--config" in args else ""
    conf = {"overrides": overrides, "config": config}
    log_path = os.path.join(lake.root, f"bench-refresh-airflow-{base}.log")
    penv = scheduler_env(env, api_port)
    procs = _Processes(log_path)
    try:
        worker = procs.start("jobs.cli.main", "refresh-server", "--port", str(worker_port))
        wait_port(worker_port, worker, 120)
        peak = procs.sample(worker)
        procs.start(
            "airflow",
            "api-server",
            "--apps",
            "execution",
            "-H",
            "127.0.0.1",
            "-p",
            str(api_port),
            environ=penv,
        )
        health = f"http://127.0.0.1:{api_port}/execution/health"
        wait_until(lambda: answers_ok(health), 180)
        scheduler = procs.start("airflow", "scheduler", "--skip-serve-logs", environ=penv)
        sched_peak = procs.sample(scheduler)
        land_events(lake, base, warm, "bench-warmup.parquet")
        t0 = time.perf_counter()
        _dag_run(lake.root, warm_wm, "warmup", conf, log_path)
        warm_s = time.perf_counter() - t0
        say(f"  warm-up DAG run {warm_wm:%H:%MZ}: {warm_s:.1f} s (scheduler and worker starts)")
        t_arrival = land_events(lake, base, table, EVENTS_FILE)
        arrival = dt.datetime.now(dt.UTC)
        tis, end = _dag_run(lake.root, wm, "measured", conf, log_path)
        refresh_s = (end - arrival).total_seconds()  # to the run's end, as the scheduler set it
        served_s = served_after(port, table, wm, t_arrival)
    finally:
        procs.stop()
    mem = {
        "peak_gb": round((peak[0] + sched_peak[0]) / 1024**3, 2),
        "peak_anon_gb": round((peak[1] + sched_peak[1]) / 1024**3, 2),
    }
    report = window_report(lake, base, wm, table, round(refresh_s, 1), served_s, mem, log_path)
    report["task_s"] = {t: round((e - s_).total_seconds(), 1) for t, s_, e in tis}
    report["between_tasks_s"] = [
        round((tis[i + 1][1] - tis[i][2]).total_seconds(), 2) for i in range(len(tis) - 1)
    ]
    report["run_s"] = round((tis[-1][2] - tis[0][1]).total_seconds(), 1)
    report["worker_peak_gb"] = round(peak[0] / 1024**3, 2)
    report["warmup_run_s"] = round(warm_s, 1)
    return report
