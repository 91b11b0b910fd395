"""DAG integrity: imports cleanly and fast, the expected task chain, retries, tags and params."""

import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "homepage_daily" in dagbag.dag_ids


@pytest.mark.parametrize(
    ("dag_id", "order", "tag", "as_of_param"),
    [
        (
            "homepage_daily",
            # gate_alert after publish: a rejected challenger never stops the pages
            [
                "ingest",
                "build_features",
                "train",
                "promote",
                "rank",
                "export",
                "publish",
                "gate_alert",
            ],
            "daily",
            "ds",
        ),
        ("homepage_refresh", ["ingest", "priors", "pages", "publish"], "refresh", "watermark"),
    ],
)
def test_task_chain_retries_and_tags(dagbag, dag_id, order, tag, as_of_param):
    dag = dagbag.dags[dag_id]
    assert sorted(dag.task_ids) == sorted(order)
    for up, down in zip(order, order[1:], strict=False):
        assert dag.get_task(down).upstream_task_ids == {up}
    assert all(t.retries >= 1 for t in dag.tasks)
    assert {"homepage", tag} <= set(dag.tags)
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert set(dag.params.keys()) >= {"lake", as_of_param, "overrides", "config"}


def test_refresh_dag_follows_the_daily_export_on_a_short_schedule(dagbag):
    dag = dagbag.dags["homepage_refresh"]
    # every 15 minutes, and whenever homepage_daily's publish updates the export asset
    tt = dag.timetable
    assert type(tt).__name__ == "AssetOrTimeSchedule"
    assert tt.timetable.expression == "*/15 * * * *"
    daily = dagbag.dags["homepage_daily"]
    outlets = [o.name for o in daily.get_task("publish").outlets]
    assert outlets == ["homepage-export"]
    assert "homepage-export" in repr(tt.asset_condition)


@pytest.mark.parametrize("name", ["homepage_daily.py", "homepage_refresh.py"])
def test_dag_file_parses_without_heavy_imports(name):
    """The scheduler parses DAG files often: no pandas/pyspark/mlflow at module top."""
    import subprocess
    import sys

    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        "heavy = [m for m in ('pyspark', 'pandas', 'mlflow', 'great_expectations', 'xgboost', 'implicit') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / name)],
        capture_output=True,
        text=True,
        check=True,
    )
    heavy = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert heavy == "", f"DAG file imported {heavy}"
    assert time.perf_counter() - t0 < 60


def test_experiment_dag_is_manual_with_typed_params(dagbag):
    dag = dagbag.dags["homepage_experiment"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: triggered only
    assert dag.catchup is False
    assert {"homepage", "experiment"} <= set(dag.tags)
    assert sorted(dag.task_ids) == ["compare", "evaluate_champion", "evaluate_experiment", "plan"]
    assert dag.get_task("evaluate_champion").upstream_task_ids == {"plan"}
    assert dag.get_task("evaluate_experiment").upstream_task_ids == {"plan", "evaluate_champion"}
    for side in ("evaluate_champion", "evaluate_experiment"):
        assert dag.get_task(side).retries >= 1
    assert dag.get_task("compare").upstream_task_ids == {
        "plan",
        "evaluate_champion",
        "evaluate_experiment",
    }
    assert dag.get_task("plan").retries == 0  # a bad override is not transient
    assert set(dag.params.keys()) >= {
        "lake",
        "split_ds",
        "name",
        "test_days",
        "config",
        "extra_overrides",
        "scoring.w",
        "scoring.choose_w",
        "mf.factors",
        "mf.regularization",
        "engagement.weight_click",
        "engagement.weight_add_to_cart",
        "engagement.weight_purchase",
        "page.beam_width",
        "page.explore_epsilon",
        "page.item_lambda",
        "page.carousel_lambda",
    }
    assert dag.params.get_param("split_ds").schema == {
        "type": "string",
        "format": "date",
        "title": "Split date",
    }


def test_experiment_dag_file_parses_without_heavy_imports():
    import subprocess
    import sys

    code = (
        "import sys, runpy; runpy.run_path(sys.argv[1]);"
        "heavy = [m for m in ('pyspark', 'pandas', 'mlflow', 'great_expectations', 'xgboost', 'implicit', 'jobs.experiments.experiment') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "homepage_experiment.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    heavy = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert heavy == "", f"DAG file imported {heavy}"
