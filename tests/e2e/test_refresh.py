"""Intra-day refresh on a generated lake: a daily run, then four refresh windows over the next
day's events arriving in files (late ones, duplicates, one too late), then stock changes.

The consistency check rebuilds every warm user's page with the rank step's own functions and the
daily run's models, from Beta priors recomputed from scratch over every event before the last
watermark; the served pages (the daily export with the newest delta on top) must be exactly
those pages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
import zlib

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import SMALL_LAKE_OVERRIDES

from jobs.core.config import load_config
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, fmt_ds, parse_ds
from jobs.daily.export import drop_refresh_logs
from jobs.refresh import run as refresh
from jobs.refresh import windows
from jobs.refresh.windows import refresh_root

pytestmark = pytest.mark.e2e
KEY = ["user_id", "slot", "item_rank"]


def at(day: str, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(parse_ds(day), dt.time(hour, minute), tzinfo=dt.UTC)


def checksums(lake: Lake, base: str, wm: dt.datetime) -> dict[str, str]:
    from serving_export.export.format import MANIFEST_FILE

    mf = pd.read_json(os.path.join(windows.delta_dir(lake, base, wm), MANIFEST_FILE), typ="series")
    return {name: meta["sha256"] for name, meta in mf["files"].items()}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, spark):
    from jobs.daily.pipeline import run_pipeline
    from jobs.inputs.generate import generate_lake

    root = str(tmp_path_factory.mktemp("refresh") / "lake")
    generate_lake(root, users=1500, items=300, days=6, seed=3)
    lake = Lake(root)
    base = sorted(os.listdir(lake.raw_events))[-1].split("=")[1]  # the last generated day
    run_pipeline(root, base, SMALL_LAKE_OVERRIDES, progress=lambda _: None)
    cfg = load_config(None, SMALL_LAKE_OVERRIDES)
    # no stock changes during the day here (the windows must equal a full recompute, which
    # keeps the daily catalogue): the generator's stock-outs dated `base` are dropped;
    # `stock_change` below puts one item out of stock on purpose
    for path in glob.glob(os.path.join(lake.item_changes, "*.parquet")):
        changes = pq.read_table(path)
        before = pc.less(changes["changed_on"], pa.scalar(parse_ds(base), pa.date32()))
        pq.write_table(changes.filter(before), path)

    # the day's raw events arrive in three files: a (before 10:00, but for some late rows),
    # b (after the 10:00 window: the late rows, copies of a's rows, one row 2 h late), c (the rest)
    part = lake.raw_events_ds(base)
    (src,) = glob.glob(os.path.join(part, "*.parquet"))
    table = pq.read_table(src)
    os.remove(src)
    ts = table["ts"].to_pandas()
    hour = ts.dt.hour.to_numpy()
    ids = table["event_id"].to_numpy(zero_copy_only=False)
    late = np.flatnonzero(hour == 9)[:20]
    too_late = np.flatnonzero(hour < 8)[:1]
    first = np.setdiff1d(np.flatnonzero(hour < 10), np.concatenate([late, too_late]))
    dups = first[:10]
    rest = np.flatnonzero(hour >= 10)
    pq.write_table(table.take(pa.array(first)), os.path.join(part, "a.parquet"))
    w1, w2, w3 = at(base, 10), at(base, 12), at(fmt_ds(parse_ds(base) + dt.timedelta(days=1)), 0)
    out = {"w1": refresh.run(root, w1, SMALL_LAKE_OVERRIDES)}
    pq.write_table(
        table.take(pa.array(np.concatenate([late, too_late, dups]))),
        os.path.join(part, "b.parquet"),
    )
    pq.write_table(table.take(pa.array(rest)), os.path.join(part, "c.parquet"))
    out["w2"] = refresh.run(root, w2, SMALL_LAKE_OVERRIDES)
    before = (
        checksums(lake, base, w2),
        pd.read_parquet(os.path.join(windows.window_dir(lake, base, w2), "priors.parquet")),
    )
    out["w2_again"] = refresh.run(root, w2, SMALL_LAKE_OVERRIDES)  # a re-run of the window
    after = (
        checksums(lake, base, w2),
        pd.read_parquet(os.path.join(windows.window_dir(lake, base, w2), "priors.parquet")),
    )
    out["w3"] = refresh.run(root, w3, SMALL_LAKE_OVERRIDES)
    return {
        "served_w3": windows.served_pages(lake, base),
        "lake": lake,
        "base": base,
        "cfg": cfg,
        "windows": (w1, w2, w3),
        "runs": out,
        "rerun": (before, after),
        "ids": {"late": ids[late], "too_late": ids[too_late], "dups": ids[dups]},
        "today": table.filter(pa.array(~np.isin(np.arange(len(ids)), too_late))).to_pandas(),
    }


def test_a_window_reads_only_new_events_and_counts_late_and_duplicate_ones(scenario):
    runs, ids = scenario["runs"], scenario["ids"]
    c1, c2 = runs["w1"]["ingest"]["counts"], runs["w2"]["ingest"]["counts"]
    assert c1["quarantined"] == 0 and c1["accepted"] > 0
    assert c2["too_late"] == len(ids["too_late"]) == 1  # left to the next daily run
    # everything the first window took, and the copies of it, are not read again
    assert c2["already_seen"] == c1["accepted"] + len(ids["dups"])
    lake, base, (w1, w2, w3) = scenario["lake"], scenario["base"], scenario["windows"]
    logged = [
        pd.read_parquet(os.path.join(windows.window_dir(lake, base, w), "events"))
        for w in (w1, w2, w3)
    ]
    every = pd.concat(logged)
    assert not every["event_id"].duplicated().any()  # nothing is counted twice
    assert set(ids["late"]) <= set(logged[1]["event_id"])  # late rows: in the next window
    assert not set(ids["too_late"]) & set(every["event_id"])
    # raw = accepted + quarantined in every window
    for run in ("w1", "w2", "w3"):
        c = runs[run]["ingest"]["counts"]
        assert c["raw"] == c["accepted"] + c["quarantined"]
    # by the end of the day, every event of the day but the too-late one is in the log
    assert set(every["event_id"]) == set(scenario["today"]["event_id"])


def test_re_running_a_window_changes_nothing(scenario):
    (sums, priors), (sums2, priors2) = scenario["rerun"]
    assert sums == sums2  # pages.parquet and pages.lmdb byte for byte
    pd.testing.assert_frame_equal(priors, priors2)
    assert scenario["runs"]["w2_again"]["publish"]["served"].endswith("120000Z")


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """A Spark Connect server (`homepage spark-connect`) on a free local port."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "jobs.cli.main", "spark-connect", "--port", str(port)]
    cmd += ["--set", "spark.driver_memory=1g"]
    # its log to a file: a pipe nobody reads fills up and blocks the server
    log = tmp_path_factory.mktemp("spark-connect") / "server.log"
    out = open(log, "wb")  # noqa: SIM115 - open until the server stops
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the Spark Connect server did not start: {log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield f"sc://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    out.close()


def task_steps(root: str, wm: dt.datetime, setting: str) -> dict[str, dict]:
    """The window's ingest, priors and pages steps, each in its own `homepage refresh --step`
    process as a DAG task runs it, with the override `setting`; each step's report (and its
    stderr, as `_stderr`). Not publish: w3's delta stays served."""
    import subprocess
    import sys

    reports = {}
    for step in ("ingest", "priors", "pages"):
        cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", "--lake", root]
        cmd += ["--watermark", wm.isoformat(), "--step", step, "--set", setting]
        for k, v in SMALL_LAKE_OVERRIDES.items():
            cmd += ["--set", f"{k}={v}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{wm} {step}: {done.stderr[-3000:]}"
        reports[step] = orjson.loads(done.stdout[done.stdout.index("{") :])
        reports[step]["_stderr"] = done.stderr
    return reports


def window_outputs(
    lake: Lake, base: str, wm: dt.datetime
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """A window's accepted events (in a fixed order), its priors and its delta's checksums."""
    out = windows.window_dir(lake, base, wm)
    events = pd.read_parquet(os.path.join(out, "events")).sort_values("event_id")
    events = events[sorted(events.columns)].reset_index(drop=True)
    return events, pd.read_parquet(os.path.join(out, "priors.parquet")), checksums(lake, base, wm)


def test_dag_tasks_on_a_spark_connect_server_give_the_same_window(
    scenario, connect_server, tmp_path
):
    """The window's steps as separate processes (as the DAG's tasks run them), their Spark work
    on a resident Spark Connect server: the same events, priors and delta as in one process."""
    import shutil

    lake, base, (w1, w2, _) = scenario["lake"], scenario["base"], scenario["windows"]
    setting = f"refresh.spark_remote={connect_server}"

    def steps(root: str, wm: dt.datetime) -> None:
        reports = task_steps(root, wm, setting)
        for step in ("ingest", "priors"):  # the Spark steps ran on the server
            assert reports[step]["spark"] == connect_server

    # a later window of the day, re-run: what the in-process run wrote
    before = window_outputs(lake, base, w2)
    steps(lake.root, w2)
    after = window_outputs(lake, base, w2)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    assert before[2] == after[2] == scenario["rerun"][0][0]
    # the day's first window (no predecessor), on a copy of the lake (its raw files have grown
    # since the window first ran): on the server, then in this process
    copy = Lake(str(shutil.copytree(lake.root, tmp_path / "lake", symlinks=True)))
    steps(copy.root, w1)
    remote = window_outputs(copy, base, w1)
    for step in ("ingest", "priors", "pages"):
        refresh.run_step(step, copy.root, w1, SMALL_LAKE_OVERRIDES)
    local = window_outputs(copy, base, w1)
    pd.testing.assert_frame_equal(remote[0], local[0])
    pd.testing.assert_frame_equal(remote[1], local[1])
    assert remote[2] == local[2]


@pytest.fixture
def refresh_worker():
    """A `homepage refresh-server` in a thread of this process (its steps use this process's
    Spark); its URL and the server."""
    import threading

    from jobs.refresh.server import make_server

    server = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server
    finally:
        server.shutdown()
        server.server_close()


def test_dag_tasks_on_a_refresh_worker_give_the_same_window(
    scenario, refresh_worker, tmp_path, caplog
):
    """The window's steps as separate processes (as the DAG's tasks run them) that hand their
    work to a resident refresh worker: the same events, priors and delta as in one process;
    the worker's errors come back named, and an absent worker is a clear error."""
    import logging

    from jobs.refresh.client import RefreshWorkerError, call_step

    url, server = refresh_worker
    lake, base, (_, w2, _) = scenario["lake"], scenario["base"], scenario["windows"]
    before = window_outputs(lake, base, w2)
    reports = task_steps(lake.root, w2, f"refresh.worker_url={url}")
    for step, report in reports.items():
        assert f"refresh {step} ran on the worker at {url}" in report["_stderr"]
        assert report["watermark"] == w2.isoformat()
    assert server.steps == 3
    after = window_outputs(lake, base, w2)
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    assert before[2] == after[2] == scenario["rerun"][0][0]

    # the step's log lines come back to the task's log
    caplog.set_level(logging.INFO)
    overrides = {**SMALL_LAKE_OVERRIDES, "refresh.worker_url": url}
    refresh.run_step("publish", lake.root, scenario["windows"][2], overrides)
    assert any(r.getMessage().startswith("[worker] ") for r in caplog.records)
    # a lake with nothing published: the DAG task skips on NoExport, as in its own process
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(windows.NoExport):
        refresh.run_step("ingest", str(empty), w2, overrides)
    with pytest.raises(RefreshWorkerError, match="ValueError: unknown refresh step"):
        call_step(url, "nope", lake.root, w2.isoformat())
    server.shutdown()  # nobody listens any more
    server.server_close()
    with pytest.raises(RefreshWorkerError, match=f"no refresh worker at {url}"):
        refresh.run_step("pages", lake.root, w2, overrides)


def full_recompute(scenario) -> pd.DataFrame:
    """Every warm user's page from scratch: priors from all events before the last watermark
    with the daily feature functions, then the rank step's scoring with the daily models."""
    from pyspark.sql import functions as F

    from features.priors import advance_state, carousel_trials, trial_counts, user_carousel_priors
    from jobs.core.spark import get_spark
    from jobs.daily.bundle import read_bundle
    from jobs.daily.page_inputs import (
        carousel_calibration,
        load_inputs,
        page_params,
        slot_examination,
    )
    from models.ranking.batch_scoring import score_batch
    from models.ranking.pages import build_pages

    lake, base, cfg = scenario["lake"], scenario["base"], scenario["cfg"]
    spark = get_spark(cfg.spark)
    history = spark.read.parquet(lake.events).filter(F.col("ds") < base)
    past = trial_counts(
        carousel_trials(history, as_of=parse_ds(base)),
        as_of=parse_ds(base),
        half_life_days=cfg.features.prior_half_life_days,
    )
    today = spark.createDataFrame(scenario["today"].drop(columns=["ds"], errors="ignore"))
    today = today.dropDuplicates(["event_id"])
    day = carousel_trials(today, as_of=parse_ds(base) + dt.timedelta(days=1), since=parse_ds(base))
    state = advance_state(past, trial_counts(day, as_of=parse_ds(base), half_life_days=0.0), days=0)
    prior = spark.read.parquet(lake.feature("carousel_priors", base))
    post = user_carousel_priors(state, prior).toPandas()

    ranked = pd.read_json(os.path.join(lake.reports(base), "rank.json"), typ="series")
    bundle = read_bundle(ranked["bundle"])
    inputs = load_inputs(
        lake, base, cfg, bundle.mf_item, bundle.mf_cat, engagement=bundle.engagement
    )
    inputs = dataclasses.replace(
        inputs, priors=post.set_index(["user_id", "carousel_id"])[["lam", "a", "b"]]
    )
    users = np.array(sorted(pd.read_parquet(lake.users)["user_id"].astype(str)), dtype=object)
    warm = users[inputs.warm(users)]
    scored = score_batch(
        inputs, warm, inputs.user_matrices(warm), page_params(cfg), ranked["item_mode"]
    )
    return build_pages(
        scored,
        bundle.w,
        page_params(cfg),
        inputs.catalog.item_ids,
        exam=slot_examination(lake, base),
        calibration=carousel_calibration(bundle.info),
        randomise=True,
        seed=zlib.crc32(f"{base}:{cfg.page.seed}".encode()),
    ).frame


def test_refreshed_pages_equal_a_full_recompute_at_the_watermark(scenario):
    served = scenario["served_w3"]
    expected = full_recompute(scenario)
    got = served[served["user_id"].isin(set(expected["user_id"]))]
    got = got.sort_values(KEY).reset_index(drop=True)
    expected = expected.sort_values(KEY).reset_index(drop=True)
    assert len(got) == len(expected)
    for c in ("user_id", "slot", "item_rank", "carousel_id", "item_id", "reason", "family"):
        assert (got[c].astype(str).to_numpy() == expected[c].astype(str).to_numpy()).all(), c
    for c in ("carousel_score", "propensity"):
        np.testing.assert_allclose(got[c], expected[c], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(got["item_score"], expected["item_score"], rtol=1e-6)
    # and the refresh did change pages: the day's users' priors moved some carousels
    runs = scenario["runs"]
    assert runs["w3"]["pages"]["delta_users"] > 0
    daily = pd.read_parquet(
        os.path.join(scenario["lake"].export(scenario["base"]), "pages.parquet")
    )
    order = lambda f: f.drop_duplicates(["user_id", "slot"]).set_index(["user_id", "slot"])[  # noqa: E731
        "carousel_id"
    ]
    moved = (order(got).reindex(order(daily).index) != order(daily)).sum()
    assert moved > 0


def test_delta_pages_carry_refreshed_at_and_the_priors_count_each_trial_once(scenario):
    from serving_export.export.verify import open_lmdb_readonly

    lake, base, (_, _, w3) = scenario["lake"], scenario["base"], scenario["windows"]
    env = open_lmdb_readonly(windows.delta_dir(lake, base, w3))
    try:
        with env.begin(db=env.open_db(b"pages", create=False)) as txn:
            pages = [orjson.loads(bytes(v)) for _, v in txn.cursor()]
    finally:
        env.close()
    assert pages and all(p["refreshed_at"] == w3.strftime("%Y-%m-%dT%H:%M:%SZ") for p in pages)
    priors = pd.read_parquet(os.path.join(windows.window_dir(lake, base, w3), "priors.parquet"))
    assert not priors.duplicated(["user_id", "carousel_id"]).any()


def state_path(lake: Lake) -> str:
    with open(lake.current) as f:
        base = f.read().strip()
    return os.path.join(lake.warehouse, "pages", f"ds={base}", "state")


@pytest.fixture(scope="module")
def stock_change(scenario):
    """After the day: the item shown on most served pages goes out of stock; a window runs."""
    lake, base = scenario["lake"], scenario["base"]
    served = scenario["served_w3"]
    gone = served["item_id"].value_counts().index[0]
    path = glob.glob(os.path.join(lake.items, "*.parquet"))[0]
    items = pd.read_parquet(path)
    items.loc[items["item_id"] == gone, "in_stock"] = False
    items.to_parquet(path, index=False)
    w4 = at(fmt_ds(parse_ds(base) + dt.timedelta(days=1)), 0, 15)
    run = refresh.run(lake.root, w4, SMALL_LAKE_OVERRIDES)
    return lake, gone, run, served, windows.served_pages(lake, base)


def test_an_item_out_of_stock_leaves_every_served_page(stock_change):
    lake, gone, run, before, after = stock_change
    had = set(before.loc[before["item_id"] == gone, "user_id"])
    assert len(had) > 10 and DEFAULT_PAGE_KEY in had
    assert gone not in set(after["item_id"])
    assert run["pages"]["out_of_stock_items"] == 1
    assert run["pages"]["out_of_stock_pages"] == len(had)
    # warm users' pages are rebuilt and fill from deeper in the carousel's pool; the others
    # (cold users' context pages, default pages) lose the item
    from jobs.daily.page_state import StateReader

    warm = had & set(StateReader(state_path(lake)).index_users)
    assert run["pages"]["rebuilt_users"] >= len(warm) > 0
    assert run["pages"]["trimmed_pages"] == len(had - warm)
    size_before = before.groupby("user_id").size()
    size_after = after.groupby("user_id").size()
    warm_sizes = pd.DataFrame({"b": size_before[list(warm)], "a": size_after[list(warm)]})
    assert (warm_sizes["a"] >= warm_sizes["b"] - 1).all()
    assert (warm_sizes["a"] == warm_sizes["b"]).mean() > 0.8
    # pages of other users are untouched
    rest = before[~before["user_id"].isin(had)].sort_values(KEY).reset_index(drop=True)
    same = after[after["user_id"].isin(set(rest["user_id"]))].sort_values(KEY)
    assert (rest["item_id"].to_numpy() == same["item_id"].to_numpy()).all()


def test_the_refresh_dag_runs_a_window_through_airflow(stock_change):
    from jobs.runner.airflow_runs import run_refresh_dag_test
    from serving_export.publish import current_delta

    lake = stock_change[0]
    with open(lake.current) as f:
        base = f.read().strip()
    wm = at(fmt_ds(parse_ds(base) + dt.timedelta(days=1)), 0, 30)
    states = run_refresh_dag_test(
        lake.root,
        wm.isoformat(),
        overrides=SMALL_LAKE_OVERRIDES,
        home=os.environ["PYTEST_AIRFLOW_HOME"],
    )
    assert states == {
        "run": "success",
        "ingest": "success",
        "priors": "success",
        "pages": "success",
        "publish": "success",
    }
    assert current_delta(lake, base) == windows.stamp(wm)


def test_a_resident_worker_runs_windows_one_after_another(stock_change, tmp_path):
    """`homepage refresh --watermarks-from FILE`: one process, two windows, one JSON line each;
    the second window's delta carries the first's pages."""
    import json
    import subprocess
    import sys

    from serving_export.publish import current_delta

    lake = stock_change[0]
    with open(lake.current) as f:
        base = f.read().strip()
    day = fmt_ds(parse_ds(base) + dt.timedelta(days=1))
    wms = [at(day, 0, 45), at(day, 1, 0)]
    listing = tmp_path / "watermarks.txt"
    listing.write_text("".join(f"{w.isoformat()}\n" for w in wms))
    cmd = [sys.executable, "-m", "jobs.cli.main", "refresh", "--lake", lake.root]
    cmd += ["--watermarks-from", str(listing)]
    for k, v in SMALL_LAKE_OVERRIDES.items():
        cmd += ["--set", f"{k}={v}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    assert [x["watermark"] for x in lines] == [w.isoformat() for w in wms]
    assert all(x["ok"] and x["steps"]["publish"]["published"] for x in lines)
    first, second = (x["steps"]["pages"] for x in lines)
    # no new events: the second delta is the first one's pages, carried (the default page too)
    assert second["delta_users"] == first["delta_users"] > 0
    assert second["carried_users"] >= first["delta_users"] and second["rebuilt_users"] == 0
    assert current_delta(lake, base) == windows.stamp(wms[-1])


def test_watermarks_are_utc_times_on_the_refresh_grid():
    wm = windows.parse_watermark("2026-01-15T10:17:59+01:00")
    assert wm == dt.datetime(2026, 1, 15, 9, 17, 59, tzinfo=dt.UTC)
    assert windows.floor_watermark(wm, 15) == dt.datetime(2026, 1, 15, 9, 15, tzinfo=dt.UTC)
    assert windows.parse_watermark("20260115T091500Z") == at("2026-01-15", 9, 15)
    assert windows.stamp(at("2026-01-15", 9, 15)) == "20260115T091500Z"
    with pytest.raises(windows.RefreshError, match="not an ISO time"):
        windows.parse_watermark("yesterday")


def test_a_refresh_needs_a_published_export_and_a_watermark_after_its_day(tmp_path):
    from serving_export.publish import _point_current

    lake = Lake(str(tmp_path / "lake"))
    cfg = load_config(None, None)
    with pytest.raises(windows.NoExport, match="run the daily pipeline first"):
        windows.open_window(lake, at("2026-01-15", 10), cfg)
    os.makedirs(lake.exports)
    _point_current(lake.exports, "2026-01-15")
    with pytest.raises(windows.RefreshError, match="already covers every event before it"):
        windows.open_window(lake, at("2026-01-15", 0), cfg)
    win = windows.open_window(lake, at("2026-01-15", 10), cfg)
    assert (win.base, win.prev, win.lo) == ("2026-01-15", None, at("2026-01-15", 0))


def test_the_refresh_dag_skips_until_a_daily_export_is_published(tmp_path):
    from jobs.runner.airflow_runs import run_refresh_dag_test

    states = run_refresh_dag_test(
        str(tmp_path / "lake"), "2026-01-15T10:15Z", home=os.environ["PYTEST_AIRFLOW_HOME"]
    )
    assert states == {
        "run": "success",
        **{t: "skipped" for t in ("ingest", "priors", "pages", "publish")},
    }


def test_the_daily_publish_drops_older_days_intra_day_logs(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    for day in ("2026-01-14", "2026-01-15"):
        os.makedirs(os.path.join(refresh_root(lake, day), "wm=20260115T101500Z"))
    assert drop_refresh_logs(lake, "2026-01-15") == ["2026-01-14"]
    assert os.listdir(os.path.join(lake.warehouse, "refresh")) == ["ds=2026-01-15"]
