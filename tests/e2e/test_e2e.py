"""One end-to-end run of the real DAG with dag.test() on a small generated lake."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
from conftest import SMALL_LAKE_OVERRIDES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daily_run(tmp_path_factory, spark):
    from jobs.core.lake import Lake
    from jobs.daily.pipeline import default_ds
    from jobs.inputs.generate import generate_lake
    from jobs.runner.airflow_runs import run_dag_test

    root = str(tmp_path_factory.mktemp("lake"))
    generate_lake(root, users=1500, items=300, days=5, seed=3)
    lake = Lake(root)
    ds = default_ds(lake)
    overrides = dict(SMALL_LAKE_OVERRIDES)
    state = run_dag_test(root, ds=ds, overrides=overrides, home=os.environ["PYTEST_AIRFLOW_HOME"])
    return lake, ds, state, overrides


def test_dag_succeeds_and_publishes(daily_run):
    lake, ds, state, _ = daily_run
    assert state == "success"
    with open(lake.current) as f:
        assert f.read().strip() == ds
    with open(os.path.join(lake.export(ds), "MANIFEST.json")) as f:
        manifest = json.load(f)
    assert manifest["ds"] == ds and manifest["users"] > 0


def test_export_honours_the_page_contract(daily_run):
    lake, ds, _, _ = daily_run
    pages = pd.read_parquet(os.path.join(lake.export(ds), "pages.parquet"))
    users = pd.read_parquet(lake.users)["user_id"]
    assert set(users) <= set(pages["user_id"])  # every known user has a page
    assert "__default__" in set(pages["user_id"])
    assert not pages.duplicated(["user_id", "item_id"]).any()
    assert pages["slot"].between(1, 6).all() and pages["item_rank"].between(1, 5).all()
    slots = pages.drop_duplicates(["user_id", "slot"]).sort_values(["user_id", "slot"])
    same = (slots["user_id"].eq(slots["user_id"].shift())) & (
        slots["family"].eq(slots["family"].shift())
    )
    assert not same.any(), "two adjacent slots share a family"
    items = pd.read_parquet(os.path.join(lake.warehouse, "items", f"ds={ds}"))  # as of ds
    oos = set(items.loc[~items["in_stock"], "item_id"])
    assert oos, "the generator's stock-outs before ds reach the day's catalogue"
    assert not set(pages["item_id"]) & oos
    # placements carry their propensity; the exploration share is randomised (< 1)
    assert pages["propensity"].between(0, 1, inclusive="right").all()
    assert (pages["propensity"] < 1).any() and (pages["propensity"] == 1).any()
    # context default pages exist next to the global one
    assert pages["user_id"].str.startswith("__default__:").any()


def _wait_ready(port: int, timeout_s: float = 60.0) -> None:
    """The server loads and verifies the export in the background: wait for /readyz."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200:
                return
        except urllib.error.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not ready after {timeout_s}s")
        time.sleep(0.1)


def test_server_answers_from_the_export(daily_run):
    from serving_export.http.server import start_in_thread

    lake, ds, _, _ = daily_run
    pages = pd.read_parquet(os.path.join(lake.export(ds), "pages.parquet"))
    user = pages.loc[~pages["user_id"].str.startswith("__default__"), "user_id"].iloc[0]
    _, port, stop = start_in_thread(lake)
    try:
        _wait_ready(port)
        body = json.load(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/users/{user}/homepage", timeout=10)
        )
        assert body["user_id"] == user and body["ds"] == ds and body["fallback"] is False
        mine = pages[pages["user_id"] == user].sort_values(["slot", "item_rank"])
        assert [c["carousel_id"] for c in body["carousels"]] == list(
            mine.drop_duplicates("slot")["carousel_id"]
        )
        assert [i["item_id"] for c in body["carousels"] for i in c["items"]] == list(
            mine["item_id"]
        )
        unknown = json.load(
            urllib.request.urlopen(
                f"http://127.0.0.1:{port}/v1/users/nobody-here/homepage", timeout=10
            )
        )
        assert unknown["fallback"] is True
    finally:
        stop()


def test_rerunning_a_ds_rewrites_the_same_outputs(daily_run):
    from jobs.daily.pipeline import run_step

    lake, ds, _, overrides = daily_run
    before = pd.read_parquet(os.path.join(lake.export(ds), "pages.parquet"))
    for step in ("rank", "export", "publish"):
        run_step(step, lake.root, ds, overrides)
    after = pd.read_parquet(os.path.join(lake.export(ds), "pages.parquet"))
    assert len(after) == len(before)
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    assert [d for d in os.listdir(lake.exports) if d.startswith("ds=")] == [f"ds={ds}"]


def test_simulated_traffic_logs_the_published_pages_propensities(daily_run):
    """The pipeline's placements and their probabilities reach tomorrow's event log."""
    import datetime as dt

    from jobs.experiments.simulate import simulate_day

    lake, ds, _, _ = daily_run
    nxt = (dt.date.fromisoformat(ds) + dt.timedelta(days=1)).isoformat()
    stats = simulate_day(lake.root, nxt, seed=5, visits_per_user=1.0)
    assert stats["export_ds"] == ds and stats["impressions"] > 0
    events = pd.read_parquet(os.path.join(lake.root, "events", f"ds={nxt}"))
    imp = events[events["event_type"] == "impression"]
    assert (imp["logging_policy"] == "pipeline").all()
    pages = pd.read_parquet(os.path.join(lake.export(ds), "pages.parquet"))
    shown = imp.merge(
        pages.rename(columns={"item_rank": "position"}),
        on=["user_id", "slot", "position"],
        how="left",
        suffixes=("", "_page"),
    )
    known = shown["item_id_page"].notna()
    assert known.mean() > 0.5  # most visitors are known users (the rest see a default page)
    s = shown[known]
    assert (s["item_id"] == s["item_id_page"]).all()
    assert (s["carousel_id"] == s["carousel_id_page"]).all()
    assert (s["propensity"] - s["propensity_page"]).abs().max() < 1e-12
    assert (s["propensity"] < 1).any()  # exploration's placements are logged as such
