"""
### homepage_refresh

Brings the day's events and stock changes into the published homepages every few minutes,
without retraining: the batch twin of Walmart's request-time re-ranking with fresh Beta priors.

Runs on a short schedule (every `HOMEPAGE_REFRESH_MINUTES`, default 15, UTC) and also as soon
as `homepage_daily` publishes a new export (the `homepage-export` asset its `publish` task
updates). Each run works for one *watermark* (the run's time, rounded down to the grid) against
the published daily export:

ingest (new raw events since the last watermark, with the allowed lateness, validated and
quarantined like the daily ingest; duplicates ignored) → priors (the user–carousel Beta priors of
the users with new events, with the daily feature functions) → pages (their carousel order
re-scored from the stored α, γ and calibration, out-of-stock items taken out of every affected
page; a delta of the changed users) → publish (atomic; the lookup server overlays it).

Each task is its own process. With `refresh.spark_remote` set (e.g. `sc://localhost:15002`, in
the config file or the run's `overrides`), the ingest and priors tasks send their Spark work to a
resident `homepage spark-connect` server instead of starting a Spark driver each: no JVM start
or warm-up per task. With `refresh.worker_url` set (e.g. `http://localhost:15003`), every task
hands its whole step to a resident `homepage refresh-server` and waits for the result (the
step's log lines come back into the task's log): no imports, JVM start or warm-up per task.

A run with nothing published yet is skipped. Params: `lake`, `watermark` (ISO UTC time;
empty = the run's time), `overrides` (config overrides), `config` (YAML path).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

STEPS = ("ingest", "priors", "pages", "publish")
EXPORT_ASSET = Asset("homepage-export")  # updated by homepage_daily's publish
MINUTES = int(os.environ.get("HOMEPAGE_REFRESH_MINUTES", "15"))


def _watermark(context: dict) -> str:
    explicit = context["params"].get("watermark") or ""
    if explicit:
        return explicit
    run = context["dag_run"]
    when = getattr(run, "run_after", None) or context.get("logical_date") or dt.datetime.now(dt.UTC)
    return when.isoformat()


@dag(
    dag_id="homepage_refresh",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(f"*/{MINUTES} * * * *", timezone="UTC"),
        assets=[EXPORT_ASSET],
    ),
    start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["homepage", "refresh"],
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=1), "owner": "data-platform"},
    params={
        "lake": Param(
            os.environ.get("HOMEPAGE_LAKE", "var/lake"),
            type="string",
            minLength=1,
            description="lake path",
        ),
        "watermark": Param(
            "",
            type="string",
            pattern=r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?(Z|[+-]\d{2}:\d{2})?)?$",
            description="UTC time to refresh up to (empty = the run's time)",
        ),
        "overrides": Param({}, type="object", description="config overrides, dotted keys"),
        "config": Param(
            "", type="string", description="config YAML path (empty = conf/default.yaml)"
        ),
    },
)
def homepage_refresh() -> None:
    def make(step: str):  # noqa: ANN202 - an Airflow task factory
        @task(task_id=step)
        def run(**context) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from jobs.refresh import run as refresh
            from jobs.refresh import windows

            p = context["params"]
            try:
                # the watermark grid is the schedule's unless the run's overrides say otherwise
                result = refresh.run_task(
                    step,
                    p["lake"],
                    _watermark(context),
                    p["overrides"],
                    p["config"] or None,
                    every_minutes=MINUTES,
                )
            except windows.NoExport as exc:  # nothing to refresh until the first daily run
                raise AirflowSkipException(str(exc)) from None
            # XCom carries only small facts (paths, counts); data stays in the lake
            return {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool))}

        return run()

    prev = None
    for step in STEPS:
        cur = make(step)
        if prev is not None:
            prev >> cur
        prev = cur


homepage_refresh()
