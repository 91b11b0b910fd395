"""A rejected challenger never stops the pages (issue 33, point 2), through the real DAG.

On the story lake (conftest) with a champion v1, some items the champion would show go out of
stock the day before ds (dated stock changes); then `dag.test()` runs homepage_daily for the
same ds with the degraded challenger of tests/e2e/test_train_promote.py. The gate rejects it, yet rank, export
and publish run: today's export is published (CURRENT = ds), ranked by v1, with none of the
out-of-stock items; gate_alert fails the run (not retried) listing every failed criterion with
its interval, runs the alert hook, and the promotion log records the rejection.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_LAKE_OVERRIDES, copy_lake

os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
OVERRIDES: dict[str, Any] = dict(SMALL_LAKE_OVERRIDES)
# the degraded challenger of tests/e2e/test_train_promote.py: far below the champion's AUC and NDCG
BAD = OVERRIDES | {
    "engagement.n_estimators": 1,
    "engagement.max_depth": 1,
    "engagement.learning_rate": 0.01,
}
OUT_OF_STOCK = 15  # the items the champion's pages show most, marked out of stock before the run

# the alert hook: writes what it received (stdin and the HOMEPAGE_GATE_* variables) to a file
HOOK = r"""
import json, os, sys
out = {k: v for k, v in os.environ.items() if k.startswith("HOMEPAGE_GATE_")}
out["stdin"] = sys.stdin.read()
with open(sys.argv[1], "w") as f:
    json.dump(out, f)
"""


@pytest.fixture(scope="module")
def rejected(tmp_path_factory: pytest.TempPathFactory, spark: Any, story_lake: str) -> Any:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    from jobs.core.config import load_config
    from jobs.core.lake import ITEM_CHANGE_SCHEMA, Lake, parse_ds
    from jobs.daily import promotion_log, registry
    from jobs.daily.pipeline import default_ds, run_step

    tmp = tmp_path_factory.mktemp("rejected")
    root = copy_lake(story_lake, str(tmp / "lake"))
    lake = Lake(root)
    ds = default_ds(lake)
    day = parse_ds(ds)
    champion = run_step("train", root, ds, OVERRIDES)
    run_step("promote", root, ds, OVERRIDES)
    # what the champion shows on today's pages: its most shown items go out of stock the day
    # before ds (dated stock changes: the day's catalogue knows them)
    run_step("rank", root, ds, OVERRIDES)
    shown = pd.read_parquet(os.path.join(lake.warehouse, "pages", f"ds={ds}", "pages.parquet"))
    gone = shown["item_id"].value_counts().index[:OUT_OF_STOCK].tolist()
    changes = pd.DataFrame(
        {
            "item_id": gone,
            "changed_on": day - dt.timedelta(days=1),
            "price": None,
            "in_stock": False,
        }
    )
    os.makedirs(lake.item_changes, exist_ok=True)
    pq.write_table(
        pa.Table.from_pandas(changes, schema=ITEM_CHANGE_SCHEMA, preserve_index=False),
        os.path.join(lake.item_changes, "outage.parquet"),
    )

    hook_out = str(tmp / "alert.json")
    hook = tmp / "hook.py"
    hook.write_text(HOOK)
    overrides = BAD | {"gate.alert_command": f"{sys.executable} {hook} {hook_out}"}
    records = len(promotion_log.read_log(lake))
    db.initdb()
    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_daily.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.get_dag("homepage_daily")
    run = dag.test(
        logical_date=dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC),
        run_conf={"lake": root, "ds": ds, "overrides": overrides},
    )
    cfg = load_config(None, OVERRIDES)
    champ = registry.version_for(lake, cfg, "champion")
    return SimpleNamespace(
        lake=lake,
        ds=ds,
        dag=dag,
        run=run,
        tis={ti.task_id: ti for ti in run.get_task_instances()},
        champion=champion,
        champion_now=None if champ is None else str(champ.version),
        gone=set(gone),
        log=promotion_log.read_log(lake)[records:],
        hook_out=hook_out,
    )


def test_pages_are_published_by_the_champion_without_todays_out_of_stock_items(rejected):
    from serving_export.export.format import MANIFEST_FILE, PARQUET_FILE
    from serving_export.publish import current_ds

    r = rejected
    states = {t: str(ti.state) for t, ti in r.tis.items()}
    assert states == {
        "ingest": "success",
        "build_features": "success",
        "train": "success",
        "promote": "success",  # the rejection is recorded; the day goes on
        "rank": "success",
        "export": "success",
        "publish": "success",
        "gate_alert": "failed",
    }, states
    assert current_ds(r.lake) == r.ds
    export = r.lake.export(r.ds)
    manifest = json.loads(Path(export, MANIFEST_FILE).read_text())
    assert manifest["model_versions"]["model"] == r.champion["model_version"]
    assert manifest["model_versions"]["registry_version"] == r.champion["registry_version"]
    pages = pd.read_parquet(os.path.join(export, PARQUET_FILE))
    assert len(pages) > 0
    assert set(pages["model_version"]) == {r.champion["model_version"]}
    shown_now = set(pages["item_id"])
    assert not shown_now & r.gone, sorted(shown_now & r.gone)
    assert r.champion_now == r.champion["registry_version"]


def test_the_run_fails_loudly_at_gate_alert_without_retrying(rejected):
    r = rejected
    assert str(r.run.state) == "failed"
    assert r.dag.get_task("gate_alert").retries >= 1 and r.tis["gate_alert"].try_number == 1
    assert r.tis["promote"].try_number == 1

    [record] = r.log
    assert record["action"] == "reject" and record["ds"] == r.ds
    assert record["champion_before"] == record["champion_after"] == r.champion["registry_version"]
    failed = [c for c in record["criteria"] if not c["passed"]]
    assert "click.auc" in {c["name"] for c in failed}, failed
    for c in failed:
        if c["name"].endswith(".ece"):
            assert 0 < c["interval"][0] <= c["interval"][1], c  # the whole interval above 0
        elif c["name"] != "training_data_checks":
            assert c["interval"][0] <= c["interval"][1] < 0, c  # the whole interval below 0

    alert = json.loads(Path(r.hook_out).read_text())
    assert alert["HOMEPAGE_GATE_DS"] == r.ds
    assert alert["HOMEPAGE_GATE_CHAMPION"] == r.champion["registry_version"]
    assert set(alert["HOMEPAGE_GATE_FAILED"].split(",")) == {c["name"] for c in failed}
    assert alert["stdin"].startswith("promotion gate rejected challenger")
    for c in failed:
        assert f"  - {c['name']}: challenger=" in alert["stdin"], c["name"]
    assert f"today's pages (ds={r.ds}) were ranked with champion" in alert["stdin"]
