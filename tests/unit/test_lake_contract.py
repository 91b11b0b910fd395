"""The promises of jobs.core.io (and jobs.core.remote) that a local lake and an object-store lake
must both keep: one suite, run on a temporary directory and on an S3 bucket served by moto's
in-process server (the AWS_* environment points pyarrow at it, as on a cluster)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator

import pandas as pd
import pytest
from support.moto_s3 import moto_bucket

from jobs.core import io, remote
from jobs.core.io import IncompleteOutput
from jobs.core.lake import join

BUCKET = "contract"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server with an empty bucket; the AWS_* environment points at it."""
    with moto_bucket(BUCKET) as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A fresh, empty lake directory: a local path, or an s3a:// prefix of the moto bucket."""
    if request.param == "local":
        return str(tmp_path / "lake")
    request.getfixturevalue("s3_endpoint")
    return f"s3a://{BUCKET}/{uuid.uuid4().hex}"


def test_json_round_trip_and_exists(root: str) -> None:
    uri = join(root, "reports", "ds=2024-01-01", "rank.json")
    assert not io.exists(uri)
    io.write_json(uri, {"b": [1, 2], "a": "x"})
    assert io.exists(uri)
    assert io.read_json(uri) == {"a": "x", "b": [1, 2]}
    io.write_json(uri, {"a": "y"})  # replaced whole
    assert io.read_json(uri) == {"a": "y"}


def test_bytes_round_trip(root: str) -> None:
    uri = join(root, "models", "mf.npz")
    with pytest.raises(FileNotFoundError, match="mf.npz does not exist"):
        io.read_bytes(uri)
    with pytest.raises(FileNotFoundError):
        io.mtime_ns(uri)
    io.write_bytes(uri, b"\x00\x01factors")
    assert io.read_bytes(uri) == b"\x00\x01factors"
    assert io.mtime_ns(uri) > 0
    io.write_bytes(uri, b"new")
    assert io.read_bytes(uri) == b"new"


def test_list_files_skips_markers_and_hidden_files(root: str) -> None:
    table = join(root, "table")
    assert io.list_files(table) == []
    for name, data in {
        "part-1.parquet": b"abc",
        "sub/part-0.parquet": b"a",
        "_SUCCESS": b"",
        ".part-1.crc": b"crc",
    }.items():
        io.write_bytes(join(table, name), data)
    assert io.list_files(table) == [("part-1.parquet", 3), ("sub/part-0.parquet", 1)]
    assert io.file_sizes(table) == {
        "part-1.parquet": 3,
        "sub": None,
        "_SUCCESS": 0,
        ".part-1.crc": 3,
    }
    assert io.file_sizes(join(root, "absent")) == {}


def test_partitions(root: str) -> None:
    events = join(root, "events")
    assert io.partitions(events) == []
    for ds in ("2024-01-03", "2024-01-01", "2024-01-02"):
        io.write_bytes(join(events, f"ds={ds}", "part-0.parquet"), b"x")
    io.write_bytes(join(events, "other", "part-0.parquet"), b"x")
    io.write_bytes(join(events, "ds=2024-01-09.parquet"), b"x")  # a file, not a partition
    assert io.partitions(events) == ["2024-01-01", "2024-01-02", "2024-01-03"]


def test_delete_file_and_dir(root: str) -> None:
    io.delete_file(join(root, "absent.json"))  # no error when absent
    io.delete_dir(join(root, "absent"))
    keep, gone = join(root, "d", "keep.json"), join(root, "d", "gone.json")
    io.write_json(keep, 1)
    io.write_json(gone, 2)
    io.delete_file(gone)
    assert not io.exists(gone) and io.exists(keep)
    io.write_bytes(join(root, "d", "sub", "x.bin"), b"x")
    io.delete_dir(join(root, "d"))
    assert not io.exists(keep)
    assert io.list_files(join(root, "d")) == []


def test_sha256(root: str, tmp_path) -> None:
    data = b"some bytes" * 1000
    uri = join(root, "export", "pages.parquet")
    io.write_bytes(uri, data)
    assert io.sha256_uri(uri) == hashlib.sha256(data).hexdigest()
    local = tmp_path / "copy.bin"
    local.write_bytes(data)
    assert io.sha256_file(str(local)) == io.sha256_uri(uri)


def test_parquet_round_trip(root: str, tmp_path) -> None:
    frame = pd.DataFrame({"user_id": ["u1", "u2"], "eta": [1.5, 0.0]})
    local = tmp_path / "t.parquet"
    frame.to_parquet(local, index=False)
    table = join(root, "features", "user_item_counts", "ds=2024-01-01")
    io.write_bytes(join(table, "part-0.parquet"), local.read_bytes())
    io.write_bytes(join(table, "_SUCCESS"), b"")
    assert io.parquet_columns(table) == ["user_id", "eta"]
    assert io.parquet_columns(join(root, "absent")) == []
    back = io.read_parquet(table, ["user_id", "eta"], marker="_SUCCESS")
    pd.testing.assert_frame_equal(back.reset_index(drop=True), frame)


def test_check_complete(root: str) -> None:
    out = join(root, "bundle")
    io.write_bytes(join(out, "a.txt"), b"a")
    with pytest.raises(IncompleteOutput, match="has no _COMPLETE marker"):
        remote.check_complete(out, "bundle")
    marker = join(out, remote.COMPLETE_MARKER)
    io.write_bytes(marker, json.dumps({"files": {"a.txt": 1, "b.txt": 1}}).encode())
    with pytest.raises(IncompleteOutput, match="b.txt missing"):
        remote.check_complete(out, "bundle")
    io.write_bytes(join(out, "b.txt"), b"b")
    assert remote.check_complete(out, "bundle") == {"a.txt": 1, "b.txt": 1}
    io.write_bytes(marker, b"not json")
    with pytest.raises(IncompleteOutput, match="unreadable _COMPLETE marker"):
        remote.check_complete(out, "bundle")


def test_upload_and_download(root: str, tmp_path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"a")
    (src / "sub" / "b.bin").write_bytes(b"bb")
    out = join(root, "pages")
    if io.is_remote(root):
        assert remote.upload_dir(str(src), out) == ["a.txt", "sub/b.bin"]
        assert remote.check_complete(out, "pages") == {"a.txt": 1, "sub/b.bin": 2}
    else:  # a local lake writes in place (atomic directories): nothing to upload
        with pytest.raises(ValueError, match="upload_dir needs a remote URI"):
            remote.upload_dir(str(src), out)
        io.write_bytes(join(out, "a.txt"), b"a")
        io.write_bytes(join(out, "sub", "b.bin"), b"bb")
    back = tmp_path / "back"
    remote.download(out, str(back), ["sub"])
    assert (back / "sub" / "b.bin").read_bytes() == b"bb"
    assert not (back / "a.txt").exists()
    remote.download(out, str(tmp_path / "all"))
    assert (tmp_path / "all" / "a.txt").read_bytes() == b"a"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        remote.download(out, str(back), ["missing"])
