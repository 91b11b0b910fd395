"""Faults (issue 8, point 3), each a test, on one small generated lake.

    killed mid-write   build_features, train and export are run as real `homepage step ...`
                       subprocesses and SIGKILLed (with their Spark JVM) in the middle of
                       writing; the previous outputs stay whole, CURRENT and the lookup server
                       keep the previous export, and the retry writes what an uninterrupted
                       run wrote. Writers build each directory aside and swap it in
                       (jobs/core/io.py: staging_dir / replace_dir / recover_dir).
    corrupt export     refused by publish (CURRENT unchanged) and by the server (the previous
                       export keeps serving): tests/unit/test_export.py
                       test_verify_catches_corruption_and_bad_manifest,
                       test_publish_is_atomic_and_refuses_bad_exports and
                       test_publish_refuses_each_corruption_and_keeps_current; tests/unit/test_server.py
                       test_hot_swap_under_load_and_refusal and
                       test_server_refuses_each_corruption_and_keeps_serving.
    MLflow down        train and promote fail in seconds with TrackingUnavailable naming the
                       URI; the DAG retries both tasks.
    gate rejection     tests/e2e/test_rejected_challenger.py: a `dag.test()` run with a degraded
                       challenger publishes today's pages with the champion and fails at
                       gate_alert with the failed criteria, without retrying.

The kill point is chosen from outside the product code: the subprocess runs the `homepage`
CLI after wrapping one library function (RUNNER below), which kills the process group from
inside that call (or, for Spark, while the write job's `_temporary` directory exists).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import SMALL_LAKE_OVERRIDES, copy_lake
from support.servers import get, wait_for

os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

# the first test also pays for the module's lake (ingest, features twice, train): on a loaded
# 2-core machine that alone can take most of pytest-timeout's default 900 s
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
OVERRIDES: dict[str, Any] = dict(SMALL_LAKE_OVERRIDES)
# the degraded challenger of tests/e2e/test_train_promote.py: far below the champion's AUC and NDCG
BAD = OVERRIDES | {
    "engagement.n_estimators": 1,
    "engagement.max_depth": 1,
    "engagement.learning_rate": 0.01,
}
FEATURE_TABLES_BEFORE_KILL = 1  # rewritten before the kill, which lands in the next one

# Runs `homepage <argv>` with FAULT_AT ("module:attr.path") wrapped: its FAULT_CALL-th call
# kills the whole process group (the step and its Spark JVM, as when a worker dies), after
# writing a note saying where. FAULT_MODE: "spark" kills while the DataFrameWriter.parquet job
# has its `_temporary` directory; "torn" lets the call write its file, cuts the file in half and
# kills; "after" kills once the call returns.
RUNNER = r"""
import importlib, os, signal, sys, threading, time

def die(note):
    with open(os.environ["FAULT_NOTE"], "w") as f:
        f.write(note)
    os.killpg(0, signal.SIGKILL)

module, _, attr = os.environ["FAULT_AT"].partition(":")
owner = importlib.import_module(module)
*parents, name = attr.split(".")
for part in parents:
    owner = getattr(owner, part)
original = getattr(owner, name)
mode, nth, calls = os.environ["FAULT_MODE"], int(os.environ["FAULT_CALL"]), [0]

def faulty(*args, **kwargs):
    calls[0] += 1
    if calls[0] != nth:
        return original(*args, **kwargs)
    if mode == "spark":
        path = str(args[1])
        def watch():
            while not os.path.isdir(os.path.join(path, "_temporary")):
                time.sleep(0.002)
            die("during " + path)
        threading.Thread(target=watch, daemon=True).start()
        original(*args, **kwargs)
        die("after " + path)
    original(*args, **kwargs)
    if mode == "torn":
        target = str(args[1])
        os.truncate(target, os.path.getsize(target) // 2)
        die("torn " + target)
    die("after call %d of %s" % (nth, attr))

setattr(owner, name, faulty)
from jobs.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


# ------------------------------------------------------------------------------ helpers


def _canonical(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in a stable order (floats rounded for the sort key only), columns sorted."""
    df = df[sorted(df.columns)].reset_index(drop=True)
    key = pd.DataFrame(
        {
            c: df[c].round(9) if pd.api.types.is_float_dtype(df[c]) else df[c].astype(str)
            for c in df.columns
        }
    )
    return df.loc[key.sort_values(list(key.columns)).index].reset_index(drop=True)


def _assert_frames_equal(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    try:
        pd.testing.assert_frame_equal(
            _canonical(a), _canonical(b), check_exact=False, rtol=1e-9, atol=1e-12
        )
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None


def _feature_frames(lake: Any, ds: str) -> dict[str, pd.DataFrame]:
    base = os.path.join(lake.warehouse, "features")
    return {
        t: pd.read_parquet(lake.feature(t, ds))
        for t in sorted(os.listdir(base))
        if os.path.isdir(lake.feature(t, ds))
    }


def _bundle_snapshot(path: str) -> dict[str, Any]:
    """What a bundle holds, minus what differs per run: MLflow run id, registry version, timings
    and whether the label window's start features were built by this run or reused."""
    from jobs.daily.bundle import read_bundle

    b = read_bundle(path)
    holdout = pd.read_parquet(os.path.join(path, "holdout.parquet"))
    info = {
        k: v
        for k, v in b.info.items()
        if k not in ("run_id", "registry_version", "timings", "mf_fit_seconds", "cutoff_features")
    }
    return {
        "info": info,
        "mf": {
            name: (m.user_ids, m.item_ids, m.user_factors, m.item_factors)
            for name, m in (("item", b.mf_item), ("category", b.mf_cat))
        },
        "holdout": holdout,
        "predictions": b.engagement.predict(holdout, calibrated=True, position_override=None),
        "grid": pd.read_csv(os.path.join(path, "w_grid.csv")),
    }


def _assert_bundles_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["info"].keys() == b["info"].keys()
    for k, v in a["info"].items():
        if k == "gate_metrics":
            assert v == pytest.approx(b["info"][k], rel=1e-9, nan_ok=True), k
        elif k == "carousel_calibration":
            assert v["x"] == pytest.approx(b["info"][k]["x"]), k
            assert v["y"] == pytest.approx(b["info"][k]["y"]), k
        elif isinstance(v, float):
            assert v == pytest.approx(b["info"][k], rel=1e-9, nan_ok=True), k
        else:
            assert v == b["info"][k], k
    for name, (users, items, uf, itf) in a["mf"].items():
        users2, items2, uf2, itf2 = b["mf"][name]
        assert list(users) == list(users2) and list(items) == list(items2), name
        np.testing.assert_allclose(uf, uf2, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(itf, itf2, rtol=1e-5, atol=1e-6, err_msg=name)
    _assert_frames_equal(a["holdout"], b["holdout"], "holdout.parquet")
    _assert_frames_equal(a["grid"], b["grid"], "w_grid.csv")
    assert a["predictions"].keys() == b["predictions"].keys()
    for o, p in a["predictions"].items():
        np.testing.assert_allclose(p, b["predictions"][o], rtol=1e-6, atol=1e-9, err_msg=o)


def _export_snapshot(export_dir: str) -> dict[str, Any]:
    from serving_export.export.format import PARQUET_FILE
    from serving_export.export.verify import open_lmdb_readonly, verify_export

    manifest = verify_export(export_dir)
    env = open_lmdb_readonly(export_dir)
    try:
        values = {}
        for db in (b"pages", b"items"):
            with env.begin(db=env.open_db(db, create=False)) as txn:
                values[db] = {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()
    return {
        "manifest": {k: v for k, v in manifest.items() if k not in ("created_at", "files")},
        "kv": values,
        "parquet": pd.read_parquet(os.path.join(export_dir, PARQUET_FILE)),
    }


def _assert_exports_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["manifest"] == b["manifest"]
    assert a["kv"] == b["kv"]  # the exact page bytes the server sends
    pd.testing.assert_frame_equal(a["parquet"], b["parquet"])


def _leftovers(root: str) -> list[str]:
    """Staging or half-swapped directories anywhere under `root`."""
    from jobs.core.io import OLD_PREFIX, STAGING_PREFIX

    return sorted(
        os.path.join(d, n)
        for d, dirs, _ in os.walk(root)
        for n in dirs
        if n.startswith((STAGING_PREFIX, OLD_PREFIX))
    )


def _run_killed(fx: SimpleNamespace, step: str, at: str, mode: str, call: int = 1) -> str:
    """Run `homepage step <step>` with the fault; assert it died by SIGKILL; return its note."""
    note = os.path.join(fx.tmp, f"fault-{step}-{time.monotonic_ns()}.txt")
    argv = [sys.executable, "-c", RUNNER, "step", step, "--lake", fx.root, "--ds", fx.ds]
    for k, v in OVERRIDES.items():
        argv += ["--set", f"{k}={v}"]
    env = os.environ | {
        "FAULT_AT": at,
        "FAULT_MODE": mode,
        "FAULT_CALL": str(call),
        "FAULT_NOTE": note,
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    # its own process group, so the kill takes the Spark JVM it starts with it
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=1200)
    finally:  # a test timeout or failure must not leave the step or its JVM running
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f"{step} was not killed (rc={proc.returncode}):\n{stderr[-4000:]}"
    )
    assert os.path.exists(note), f"{step} died before reaching {at}:\n{stderr[-4000:]}"
    return Path(note).read_text()


def _assert_previous_export_served(fx: SimpleNamespace) -> None:
    """CURRENT still names the previous export; the running server sends its exact pages, and
    its files still match their manifest (what a restarted server verifies before loading;
    the LMDB itself cannot be opened twice in this process while the server holds it)."""
    from jobs.core.io import sha256_file
    from serving_export.export.format import MANIFEST_FILE
    from serving_export.publish import current_ds

    assert current_ds(fx.lake) == fx.prev_ds
    for user, body in fx.served.items():
        status, headers, got = get(fx.port, f"/v1/users/{user}/homepage")
        assert status == 200 and got == body, user
        assert headers["x-export-ds"] == fx.prev_ds
    export_dir = fx.lake.export(fx.prev_ds)
    manifest = json.loads(Path(export_dir, MANIFEST_FILE).read_text())
    assert manifest["ds"] == fx.prev_ds
    for name, meta in manifest["files"].items():
        assert sha256_file(os.path.join(export_dir, name)) == meta["sha256"], name


def _aliases(fx: SimpleNamespace) -> dict[str, str | None]:
    from jobs.daily import registry

    out = {}
    for alias in ("champion", "challenger"):
        mv = registry.version_for(fx.lake, fx.cfg, alias)
        out[alias] = None if mv is None else str(mv.version)
    return out


# ------------------------------------------------------------------------------ the lake


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory, spark: Any, story_lake: str) -> Any:
    """A lake with features, a champion (v1), ranked pages for ds, a published export of the
    day before (`prev_ds`, the ranked pages re-exported under that date) being served, and an
    unpublished export of ds; snapshots of every output the fault tests compare against."""
    from jobs.core.config import load_config
    from jobs.core.lake import Lake, shift_ds
    from jobs.daily.pipeline import default_ds, run_step
    from serving_export.http.server import start_in_thread

    tmp = str(tmp_path_factory.mktemp("faults"))
    # the story lake of tests/e2e/test_train_promote.py (the smallest known to train and promote),
    # ingested, with its features as of ds and the label window's start (conftest)
    root = copy_lake(story_lake, os.path.join(tmp, "lake"))
    lake = Lake(root)
    ds = default_ds(lake)
    prev = shift_ds(ds, -1)
    cfg = load_config(None, OVERRIDES)
    features = _feature_frames(lake, ds)
    trained = run_step("train", root, ds, OVERRIDES)
    run_step("promote", root, ds, OVERRIDES)
    bundle = _bundle_snapshot(trained["path"])
    run_step("rank", root, ds, OVERRIDES)

    # the previous day's export: the same ranked pages, exported and published as `prev`
    for src in (
        os.path.join(lake.warehouse, "pages", f"ds={ds}"),
        os.path.join(lake.warehouse, "items", f"ds={ds}"),
        lake.feature("user_activity", ds),
        lake.reports(ds),
    ):
        shutil.copytree(src, src[: -len(ds)] + prev)
    run_step("export", root, prev, OVERRIDES)
    run_step("publish", root, prev, OVERRIDES)
    run_step("export", root, ds, OVERRIDES)  # written, not published
    export = _export_snapshot(lake.export(ds))

    thread, port, stop = start_in_thread(lake, reload_interval_s=0.05)
    pages = pd.read_parquet(os.path.join(lake.export(prev), "pages.parquet"))
    users = sorted(u for u in set(pages["user_id"]) if not u.startswith("__default__"))
    users = users[:3] + ["nobody-at-all"]  # three known users and the fallback page
    wait_for(lambda: get(port, "/readyz")[0] == 200)
    served = {u: get(port, f"/v1/users/{u}/homepage")[2] for u in users}
    assert all(b'"ds":"' + prev.encode() + b'"' in body for body in served.values())
    yield SimpleNamespace(
        tmp=tmp,
        root=root,
        lake=lake,
        ds=ds,
        prev_ds=prev,
        cfg=cfg,
        features=features,
        bundle_path=trained["path"],
        bundle=bundle,
        export=export,
        port=port,
        served=served,
    )
    stop()


# ------------------------------------------------------------------------------ killed mid-write


def test_killed_feature_write_leaves_whole_partitions_and_retry_rebuilds_them(fx):
    from jobs.core import io
    from jobs.daily.pipeline import run_step

    base = os.path.join(fx.lake.warehouse, "features")
    note = _run_killed(
        fx,
        "build_features",
        "pyspark.sql.readwriter:DataFrameWriter.parquet",
        "spark",
        call=FEATURE_TABLES_BEFORE_KILL + 1,
    )
    assert note.startswith("during "), note  # killed while Spark's write job was running
    killed_in = note.removeprefix("during ")
    table = os.path.relpath(killed_in, base).split(os.sep)[0]
    assert os.path.basename(killed_in) == f"ds={fx.ds}"
    # the half-written table was being built aside, never at its partition
    assert os.path.basename(os.path.dirname(killed_in)).startswith(io.STAGING_PREFIX), note
    assert os.path.isdir(os.path.join(killed_in, "_temporary"))

    # every table (the ones rewritten before the kill, the one being written, the ones after)
    # reads whole, with what the uninterrupted run wrote; hidden leftovers are no partition
    after = _feature_frames(fx.lake, fx.ds)
    assert after.keys() == fx.features.keys() and table in after
    for name, frame in fx.features.items():
        _assert_frames_equal(after[name], frame, name)
        assert io.partitions(os.path.join(base, name)) == sorted(
            d[3:] for d in os.listdir(os.path.join(base, name)) if d.startswith("ds=")
        )
    assert _leftovers(base), "the killed run left nothing behind: was it killed mid-write?"
    _assert_previous_export_served(fx)

    # the retry (Airflow's next try) cleans up and writes the same tables
    result = run_step("build_features", fx.root, fx.ds, OVERRIDES)
    assert set(result["tables"]) >= set(fx.features)
    retried = _feature_frames(fx.lake, fx.ds)
    for name, frame in fx.features.items():
        _assert_frames_equal(retried[name], frame, name)
        assert os.path.exists(os.path.join(fx.lake.feature(name, fx.ds), "_SUCCESS")), name
    assert _leftovers(base) == []


def test_killed_train_keeps_the_serving_bundle_and_retry_reproduces_it(fx):
    from jobs.daily import registry
    from jobs.daily.bundle import load_bundle
    from jobs.daily.pipeline import run_step

    before = _aliases(fx)
    versions = len(registry.history(fx.lake, fx.cfg))
    # the second MFModel.save of the bundle (mf_category.npz) is cut in half, then the kill
    note = _run_killed(fx, "train", "models.ranking.mf:MFModel.save", "torn", call=2)
    assert note.startswith("torn ") and note.endswith("mf_category.npz"), note
    torn = note.removeprefix("torn ")
    assert os.path.dirname(torn) != fx.bundle_path  # written aside, not over the bundle

    # the bundle of the same ds and config (the champion's) is untouched and loads
    _assert_bundles_equal(_bundle_snapshot(fx.bundle_path), fx.bundle)
    champion = load_bundle(fx.lake, fx.cfg, alias="champion")
    assert champion.path == fx.bundle_path and champion.registry_version == before["champion"]
    assert _aliases(fx) == before  # nothing was registered
    assert len(registry.history(fx.lake, fx.cfg)) == versions
    models_dir = os.path.dirname(fx.bundle_path)
    assert _leftovers(models_dir), "the killed run left nothing behind: was it killed mid-write?"
    _assert_previous_export_served(fx)

    # the retry writes the same bundle and makes it the challenger (at most one new version)
    result = run_step("train", fx.root, fx.ds, OVERRIDES)
    assert result["path"] == fx.bundle_path
    _assert_bundles_equal(_bundle_snapshot(fx.bundle_path), fx.bundle)
    assert _aliases(fx) == {
        "champion": before["champion"],
        "challenger": result["registry_version"],
    }
    assert len(registry.history(fx.lake, fx.cfg)) <= versions + 1
    assert _leftovers(models_dir) == []


def test_killed_export_keeps_current_and_retry_writes_the_same_export(fx):
    from jobs.core.lake import list_partitions
    from jobs.daily.pipeline import run_step
    from serving_export.export.format import LMDB_FILE, MANIFEST_FILE
    from serving_export.export.verify import ExportInvalid, verify_export

    exports = fx.lake.exports
    final = fx.lake.export(fx.ds)
    # 1. re-exporting ds over its existing (unpublished) export: killed after the first LMDB
    #    commit, with pages.parquet still open and no items, no manifest
    note = _run_killed(fx, "export", "serving_export.export.writer:_put_sorted", "after")
    assert note.startswith("after call 1"), note
    [staged] = _leftovers(exports)
    staging = os.path.join(staged, f"ds={fx.ds}")
    assert os.path.exists(os.path.join(staging, LMDB_FILE))
    assert not os.path.exists(os.path.join(staging, MANIFEST_FILE))
    _assert_exports_equal(_export_snapshot(final), fx.export)
    _assert_previous_export_served(fx)

    # 2. a first export of ds killed the same way: no ds partition, and publish refuses it
    shutil.rmtree(final)
    _run_killed(fx, "export", "serving_export.export.writer:_put_sorted", "after")
    assert fx.ds not in list_partitions(exports)
    with pytest.raises(ExportInvalid, match="MANIFEST.json is missing"):
        run_step("publish", fx.root, fx.ds, OVERRIDES)
    _assert_previous_export_served(fx)

    # 3. the retry cleans up and writes what the uninterrupted export wrote
    run_step("export", fx.root, fx.ds, OVERRIDES)
    verify_export(final)
    _assert_exports_equal(_export_snapshot(final), fx.export)
    assert _leftovers(exports) == []
    _assert_previous_export_served(fx)


def test_interrupted_directory_swap_is_undone_on_retry(tmp_path, monkeypatch):
    """The two-rename fallback (no RENAME_EXCHANGE): a writer killed between moving the old
    version aside and moving the new one in leaves `final` missing; the next writer restores it
    before anything else. Live writers' staging directories are left alone."""
    from jobs.core import io

    final = tmp_path / "ds=2024-01-02"
    final.mkdir()
    (final / "part").write_text("old")
    dead = subprocess.Popen(["true"])
    dead.wait()
    # the crash state: final moved aside, the new version staged, by a process now gone
    os.rename(final, tmp_path / f"{io.OLD_PREFIX}{final.name}-{dead.pid}")
    staged = tmp_path / f"{io.STAGING_PREFIX}{final.name}-{dead.pid}" / final.name
    staged.mkdir(parents=True)
    (staged / "part").write_text("half")
    alive = tmp_path / f"{io.STAGING_PREFIX}{final.name}-1"  # pid 1 is always alive
    alive.mkdir()
    assert not final.exists()

    done = io.recover_dir(str(final))
    assert len(done) == 2 and (final / "part").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, alive.name])

    # the fallback swap itself, with a reader holding the old file open throughout
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    with open(final / "part") as held:
        with io.atomic_dir(str(final)) as tmp:
            Path(tmp, "part").write_text("new")
            assert (final / "part").read_text() == "old"  # not visible before the swap
        assert (final / "part").read_text() == "new"
        assert held.read() == "old"  # an open reader keeps the version it opened
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, alive.name])
    # an exception inside the block leaves `final` as it was and removes the staging
    with pytest.raises(RuntimeError), io.atomic_dir(str(final)) as tmp:
        Path(tmp, "part").write_text("never")
        raise RuntimeError("writer failed")
    assert (final / "part").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([final.name, alive.name])


# ------------------------------------------------------------------------------ MLflow down


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_store_fails_train_and_promote_fast_and_the_dag_retries(
    fx, monkeypatch
):
    from airflow.dag_processing.dagbag import DagBag

    from jobs.core.tracking import TrackingUnavailable
    from jobs.daily import registry
    from jobs.daily.pipeline import run_step

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{_closed_port()}"
    before = _aliases(fx)
    versions = len(registry.history(fx.lake, fx.cfg))

    def trains(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("train started training before checking the tracking store")

    monkeypatch.setattr("jobs.daily.train.window_dataset", trains)  # its first piece of work
    for step in ("train", "promote"):
        t0 = time.monotonic()
        with pytest.raises(TrackingUnavailable) as err:
            run_step(step, fx.root, fx.ds, OVERRIDES | {"mlflow.tracking_uri": uri})
        seconds = time.monotonic() - t0
        message = str(err.value)
        assert message.startswith(f"MLflow tracking store {uri} is unavailable (unreachable"), (
            message
        )
        assert "Connection refused" in message, message
        assert seconds < 30, f"{step} took {seconds:.1f}s to notice the store is down"
    assert _leftovers(os.path.join(fx.lake.warehouse, "models")) == []
    assert _aliases(fx) == before
    assert len(registry.history(fx.lake, fx.cfg)) == versions

    # TrackingUnavailable is an ordinary failure: Airflow retries these tasks
    bag = DagBag(dag_folder=str(REPO / "dags" / "homepage_daily.py"))
    dag = bag.dags["homepage_daily"]
    for task_id in ("train", "promote"):
        task = dag.get_task(task_id)
        assert task.retries >= 1 and task.retry_delay > dt.timedelta(0), task_id
