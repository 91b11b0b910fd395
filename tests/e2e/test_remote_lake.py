"""Every step after build_features on an object-store lake (s3a://), against a real S3 API.

A moto S3 server runs on a loopback port; pyarrow reaches it through the same environment a
cluster sets (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_REGION, AWS_ENDPOINT_URL_S3). The
session's story lake (conftest: generated, ingested, features as of ds and as of the label
window's start) is uploaded to s3://homepage/lake, and train, promote, rank, export and publish
run on `s3a://homepage/lake` through `jobs.daily.pipeline.run_step`; the same steps run on a local copy
of the same lake, and both must give the same pages, export files and served bytes.

One thing is not remote: Spark reads the label window's events (jobs.daily.training_data
.window_events) from the local copy, as this machine has no S3A connector jars (the cluster image
has them; ingest and build_features already write the lake through Spark there). Everything the
steps themselves read and write goes through S3.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pandas as pd
import pytest
from conftest import SMALL_LAKE_OVERRIDES, copy_lake
from support.moto_s3 import moto_bucket
from support.servers import get, served_ds, wait_for

pytestmark = pytest.mark.e2e

os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"

BUCKET = "homepage"
REMOTE = f"s3a://{BUCKET}/lake"
STEPS = ("train", "promote", "rank", "export", "publish")


@contextlib.contextmanager
def server(lake: Any, **kwargs: Any) -> Iterator[int]:
    from serving_export.http.server import start_in_thread

    thread, port, stop = start_in_thread(lake, reload_interval_s=0.1, **kwargs)
    try:
        yield port
    finally:
        stop()
        assert not thread.is_alive()


@contextlib.contextmanager
def restored(*uris: str) -> Iterator[None]:
    """Put the files at `uris` back as they were (or absent) on the way out."""
    from jobs.core import io

    saved = {u: io.read_bytes(u) if io.exists(u) else None for u in uris}
    try:
        yield
    finally:
        for u, data in saved.items():
            if data is None:
                io.delete_file(u)
            else:
                io.write_bytes(u, data)


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """A moto S3 server with an empty bucket; the AWS_* environment points at it."""
    with moto_bucket(BUCKET) as endpoint:
        yield endpoint


# ---- the remote helpers on their own (no Spark) ---------------------------------------------


def test_upload_dir_writes_the_marker_last_and_readers_check_it(s3: str, tmp_path) -> None:
    from jobs.core import io, remote

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "sub" / "b.bin").write_bytes(b"bb")
    uri = f"s3a://{BUCKET}/t/dir"
    with pytest.raises(io.IncompleteOutput, match=f"bundle {uri} is incomplete: it has no _COMP"):
        remote.check_complete(uri, "bundle")
    assert remote.upload_dir(str(src), uri) == ["a.txt", "sub/b.bin"]
    assert remote.check_complete(uri, "bundle") == {"a.txt": 1, "sub/b.bin": 2}
    # a new version replaces the old one whole: a file it no longer has is gone
    (src / "a.txt").unlink()
    (src / "c.txt").write_bytes(b"ccc")
    remote.upload_dir(str(src), uri)
    assert not io.exists(f"{uri}/a.txt")
    assert remote.check_complete(uri, "bundle") == {"c.txt": 3, "sub/b.bin": 2}
    remote.download(uri, str(tmp_path / "back"), ["sub"])
    assert (tmp_path / "back" / "sub" / "b.bin").read_bytes() == b"bb"
    io.delete_file(f"{uri}/sub/b.bin")
    with pytest.raises(io.IncompleteOutput, match=r"sub/b\.bin missing"):
        remote.check_complete(uri, "bundle")


def test_read_parquet_of_a_remote_spark_output_needs_its_success_marker(s3: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.core import io

    uri = f"s3a://{BUCKET}/t/table/ds=2024-01-01"
    fs, path = io._fs(uri)
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "eta": [1.0, 2.0]})
    pq.write_table(pa.Table.from_pandas(frame), f"{path}/part-0.parquet", filesystem=fs)
    io.write_bytes(f"{uri}/.part-0.parquet.crc", b"not parquet")
    with pytest.raises(io.IncompleteOutput, match=f"{uri} has no _SUCCESS marker"):
        io.read_parquet(uri, marker="_SUCCESS")
    io.write_bytes(f"{uri}/_SUCCESS", b"")
    pd.testing.assert_frame_equal(io.read_parquet(uri, ["eta"], marker="_SUCCESS"), frame[["eta"]])
    with pytest.raises(FileNotFoundError, match="s3a://homepage/t/nothing does not exist"):
        io.read_parquet(f"s3a://{BUCKET}/t/nothing")


def test_publish_and_hot_swap_of_a_remote_lake(s3: str, tmp_path) -> None:
    """Small hand-written exports (tests/unit/test_server.py) uploaded to S3: publish, serve, swap."""
    from support.servers import DS1, DS2, write

    from jobs.core import io
    from jobs.core.lake import Lake
    from jobs.core.remote import upload_dir
    from serving_export.export.format import MANIFEST_FILE
    from serving_export.publish import current_ds, publish

    local, remote = Lake(str(tmp_path / "lake")), Lake(f"s3a://{BUCKET}/swap/lake")
    values = {ds: write(local, ds) for ds in (DS1, DS2)}
    upload_dir(local.export(DS1), remote.export(DS1), last=MANIFEST_FILE)
    assert current_ds(remote) is None
    assert publish(remote, DS1) == remote.export(DS1)
    assert current_ds(remote) == DS1
    cache = str(tmp_path / "cache")
    with server(remote, cache_dir=cache) as port:
        wait_for(lambda: served_ds(port) == DS1)
        assert get(port, "/v1/users/u1/homepage")[2] == values[DS1][b"u1"]
        upload_dir(local.export(DS2), remote.export(DS2), last=MANIFEST_FILE)
        publish(remote, DS2, keep_last=1)  # and prunes DS1 from the store
        wait_for(lambda: served_ds(port) == DS2)
        status, headers, body = get(port, "/v1/users/u2/homepage")
        assert status == 200 and body == values[DS2][b"u2"] and headers["x-export-ds"] == DS2
    assert io.partitions(remote.exports) == [DS2]
    [root] = os.listdir(cache)  # one directory per lake, one verified copy per ds
    copies = sorted(d for d in os.listdir(os.path.join(cache, root)) if d.startswith("ds="))
    assert copies == [f"ds={DS1}", f"ds={DS2}"]


# ---- the pipeline's steps on an S3 lake ---------------------------------------------------


@pytest.fixture(scope="module")
def runs(
    s3: str, story_lake: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SimpleNamespace]:
    """The five steps on the S3 lake and on a local copy of the same lake."""
    import mlflow
    import pyarrow.fs as pafs

    from jobs.core import io
    from jobs.core.lake import Lake
    from jobs.daily import training_data as td
    from jobs.daily.pipeline import default_ds, run_step

    tmp = tmp_path_factory.mktemp("remote")
    local = copy_lake(story_lake, str(tmp / "local" / "lake"))
    fs, path = io._fs(REMOTE)
    pafs.copy_files(
        story_lake, path, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs
    )
    # one tracking store for both runs (the same config, so the same model_version in pages);
    # the experiment is made here with local artifacts, as a remote lake has no `_mlflow/` dir
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("homepage", artifact_location=f"file://{tmp / 'artifacts'}")
    overrides = dict(SMALL_LAKE_OVERRIDES) | {"mlflow.tracking_uri": uri}
    ds = default_ds(Lake(local))
    assert default_ds(Lake(REMOTE)) == ds

    out = SimpleNamespace(ds=ds, local=Lake(local), remote=Lake(REMOTE), tmp=tmp)
    out.local_results = {s: run_step(s, local, ds, overrides) for s in STEPS}

    window_events = td.window_events

    def local_spark_read(lake: Any, cutoff: str, day: str, cfg: Any) -> Any:
        return window_events(Lake(story_lake) if lake.root == REMOTE else lake, cutoff, day, cfg)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(td, "window_events", local_spark_read)
        out.remote_results = {s: run_step(s, REMOTE, ds, overrides) for s in STEPS}
    out.overrides = overrides
    yield out


def test_remote_run_writes_complete_outputs_to_s3(runs: SimpleNamespace) -> None:
    from jobs.core import io, remote
    from jobs.core.lake import join
    from serving_export.publish import current_ds, verify_remote_export

    r, lake, ds = runs.remote_results, runs.remote, runs.ds
    bundle = r["train"]["path"]
    assert bundle.startswith(f"{REMOTE}/warehouse/models/ds={ds}/")
    files = remote.check_complete(bundle, "model bundle")
    assert {"MODEL.json", "mf_item.npz", "mf_category.npz", "holdout.parquet"} <= set(files)
    assert any(n.startswith("engagement/") for n in files)
    assert (
        io.read_json(join(bundle, "MODEL.json"))["registry_version"]
        == r["train"]["registry_version"]
    )
    assert r["promote"]["champion"] == r["train"]["registry_version"]
    assert r["rank"]["bundle"] == bundle

    pages = join(lake.warehouse, "pages", f"ds={ds}")
    state = {f"state/{n}" for n in ("blobs.bin", "index.parquet", "arrays.npz", "meta.json")}
    assert (
        set(remote.check_complete(pages, "pages"))
        == {"pages.parquet", "page_stats.parquet"} | state
    )
    assert set(remote.check_complete(lake.candidates(ds), "candidates")) == {"candidates.parquet"}
    assert io.read_json(join(lake.reports(ds), "rank.json"))["bundle"] == bundle

    assert r["export"]["path"] == lake.export(ds)
    manifest = verify_remote_export(lake.export(ds))
    assert manifest["ds"] == ds and manifest["users"] == r["export"]["users"]
    assert io.read_bytes(lake.current) == f"{ds}\n".encode()
    assert current_ds(lake) == ds
    assert r["publish"]["current"] == lake.export(ds)
    # nothing was left in the local scratch directories
    import glob
    import tempfile

    assert not glob.glob(os.path.join(tempfile.gettempdir(), f"homepage-*-{os.getpid()}-*"))


def test_remote_pages_and_export_equal_the_local_run(runs: SimpleNamespace) -> None:
    from jobs.core import io
    from jobs.core.lake import join

    ds = runs.ds
    for lake_pages in ("pages.parquet", "page_stats.parquet"):
        a = io.read_parquet(join(runs.local.warehouse, "pages", f"ds={ds}", lake_pages))
        b = io.read_parquet(join(runs.remote.warehouse, "pages", f"ds={ds}", lake_pages))
        pd.testing.assert_frame_equal(a, b)
    a = io.read_json(join(runs.local.export(ds), "MANIFEST.json"))
    b = io.read_json(join(runs.remote.export(ds), "MANIFEST.json"))
    assert a["files"] == b["files"]  # byte-identical pages.parquet and pages.lmdb
    assert (a["users"], a["rows"]) == (b["users"], b["rows"])
    assert a["model_versions"]["model"] == b["model_versions"]["model"]


def test_server_on_the_s3_lake_serves_the_local_bytes(runs: SimpleNamespace, tmp_path) -> None:
    from jobs.core import io
    from jobs.core.lake import join

    pages = io.read_parquet(join(runs.local.warehouse, "pages", f"ds={runs.ds}", "pages.parquet"))
    users = sorted(pages["user_id"].astype(str).unique())[
        :: max(1, pages["user_id"].nunique() // 25)
    ]
    cache = str(tmp_path / "cache")
    with server(runs.local) as lp, server(runs.remote, cache_dir=cache) as rp:
        wait_for(lambda: served_ds(lp) == runs.ds and served_ds(rp) == runs.ds)
        for user in [*users, "nobody-at-all"]:
            for route in (f"/v1/users/{user}/homepage", f"/preview/{user}"):
                a, b = get(lp, route), get(rp, route)
                assert a[0] == b[0] == 200, route
                assert a[2] == b[2], route
                assert a[1]["x-fallback"] == b[1]["x-fallback"]
    [copy] = [d for d, _, files in os.walk(cache) if "MANIFEST.json" in files]
    assert os.path.basename(copy) == f"ds={runs.ds}"
    assert sorted(os.listdir(copy)) == ["MANIFEST.json", "pages.lmdb", "pages.parquet"]


def test_incomplete_remote_bundle_and_pages_are_refused(runs: SimpleNamespace) -> None:
    from jobs.core import io
    from jobs.core.io import IncompleteOutput
    from jobs.core.lake import join
    from jobs.core.remote import COMPLETE_MARKER
    from jobs.daily.pipeline import run_step

    bundle = runs.remote_results["train"]["path"]
    with restored(join(bundle, COMPLETE_MARKER)):
        io.delete_file(join(bundle, COMPLETE_MARKER))
        with pytest.raises(IncompleteOutput, match=f"model bundle {bundle} is incomplete"):
            run_step("rank", REMOTE, runs.ds, runs.overrides)
    with restored(join(bundle, "mf_item.npz")):
        io.delete_file(join(bundle, "mf_item.npz"))
        with pytest.raises(IncompleteOutput, match=r"mf_item\.npz missing"):
            run_step("promote", REMOTE, runs.ds, runs.overrides)
    pages = join(runs.remote.warehouse, "pages", f"ds={runs.ds}")
    with restored(join(pages, COMPLETE_MARKER)):
        io.delete_file(join(pages, COMPLETE_MARKER))
        with pytest.raises(IncompleteOutput, match=f"ranked pages {pages} is incomplete"):
            run_step("export", REMOTE, runs.ds, runs.overrides)


def test_corrupt_or_incomplete_remote_export_is_refused_by_publish_and_server(
    runs: SimpleNamespace, tmp_path
) -> None:
    from jobs.core import io
    from jobs.core.lake import join
    from jobs.daily.pipeline import run_step
    from serving_export.export.verify import ExportInvalid

    lake, ds = runs.remote, runs.ds
    export = lake.export(ds)
    uris = [join(export, n) for n in ("pages.lmdb", "pages.parquet", "MANIFEST.json")]
    lmdb_uri, parquet_uri, manifest_uri = uris
    current = io.read_bytes(lake.current)
    with restored(*uris, lake.current):
        good = {u: io.read_bytes(u) for u in uris}
        data = good[lmdb_uri]
        io.write_bytes(lmdb_uri, data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other bytes
        with pytest.raises(ExportInvalid, match=r"pages\.lmdb in s3a://.*sha256 differs"):
            run_step("publish", REMOTE, ds, runs.overrides)
        assert io.read_bytes(lake.current) == current

        # a server starting now (no local copy yet) refuses the corrupt export CURRENT names
        with server(lake, cache_dir=str(tmp_path / "cache")) as port:
            time.sleep(1.0)
            assert get(port, "/readyz")[0] == 503
            assert get(port, "/v1/users/nobody/homepage")[0] == 503
            metrics = get(port, "/metrics")[2].decode()
            assert 'homepage_reloads_total{result="refused"} 1' in metrics

            io.write_bytes(lmdb_uri, good[lmdb_uri])
            io.delete_file(parquet_uri)
            with pytest.raises(ExportInvalid, match=r"pages\.parquet is missing from s3a://"):
                run_step("publish", REMOTE, ds, runs.overrides)
            io.delete_file(manifest_uri)
            with pytest.raises(ExportInvalid, match=r"MANIFEST\.json is missing"):
                run_step("publish", REMOTE, ds, runs.overrides)
            assert get(port, "/readyz")[0] == 503

            # repaired (manifest last) and published again: the waiting server loads it
            for uri in uris:
                io.write_bytes(uri, good[uri])
            time.sleep(1.1)  # a new CURRENT object: S3's Last-Modified has 1 s resolution
            run_step("publish", REMOTE, ds, runs.overrides)
            wait_for(lambda: served_ds(port) == ds)
            status, _, body = get(port, "/v1/users/nobody/homepage")
            assert status == 200 and orjson.loads(body)["fallback"] is True
