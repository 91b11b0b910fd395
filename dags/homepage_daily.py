"""
### homepage_daily

Builds tomorrow's personalised homepage for every user and publishes it to the lookup server.

Each run covers one day of events: its data interval `[X, X+1)`. The pipeline runs *as of*
`ds = X+1` (the interval's end), using only events strictly before it, and publishes
`exports/ds=X+1`. Re-running a `ds` overwrites the same outputs, so retries and backfills are safe.

Tasks: ingest → build_features → train (MLflow run, model version with alias `challenger`) →
promote (the gate: `champion` only if not worse than the current one on the same held-out data,
beyond both the tolerance and the paired-bootstrap interval; a rejection is recorded and the run
goes on) → rank (with the champion, on today's features and stock) → export → publish (updates
the `homepage-export` asset, which starts a `homepage_refresh` run) → gate_alert (fails, without
retries, listing every failed criterion when the gate rejected, and runs `gate.alert_command`:
the run is marked failed while today's pages are published; Airflow's own failure notifications,
e.g. an `on_failure_callback` in `default_args`, fire on it too).

Params: `lake` (lake path or URI), `ds` (as-of override, `YYYY-MM-DD`; empty = interval end),
`overrides` (config overrides, e.g. `{"mf.factors": 64, "scoring.w": 0.5}`),
`config` (YAML config path; empty = conf/default.yaml).
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task

STEPS = ("ingest", "build_features", "train", "promote", "rank", "export", "publish", "gate_alert")
EXPORT_ASSET = Asset("homepage-export")  # publish updates it; homepage_refresh follows it


def _as_of(context: dict) -> str:
    explicit = context["params"].get("ds") or ""
    if explicit:
        return explicit
    end = context.get("data_interval_end") or context["logical_date"]
    return end.strftime("%Y-%m-%d")


@dag(
    dag_id="homepage_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # early on purpose: a task whose start_date is after a run's logical date gets no task
    # instance, so backfills and tests of historical lakes (2017 data) would silently do nothing
    start_date=dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["homepage", "daily"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=1), "owner": "data-platform"},
    params={
        "lake": Param(
            os.environ.get("HOMEPAGE_LAKE", "var/lake"),
            type="string",
            minLength=1,
            description="lake path or URI",
        ),
        "ds": Param(
            "",
            type="string",
            pattern=r"^(\d{4}-\d{2}-\d{2})?$",
            description="as-of date override (empty = interval end)",
        ),
        "overrides": Param({}, type="object", description="config overrides, dotted keys"),
        "config": Param(
            "", type="string", description="config YAML path (empty = conf/default.yaml)"
        ),
    },
)
def homepage_daily() -> None:
    def make(step: str):  # noqa: ANN202 - an Airflow task factory
        @task(task_id=step, outlets=[EXPORT_ASSET] if step == "publish" else [])
        def run(**context) -> dict:
            from jobs.daily.pipeline import run_step

            p = context["params"]
            result = run_step(
                step, p["lake"], _as_of(context), p["overrides"] or None, p["config"] or None
            )
            # XCom carries only small facts (paths, counts); data stays in the lake
            return {k: v for k, v in result.items() if isinstance(v, (str, int, float, bool))}

        return run()

    prev = None
    for step in STEPS:
        cur = make(step)
        if prev is not None:
            prev >> cur
        prev = cur


homepage_daily()
