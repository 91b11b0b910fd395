"""Small filesystem helpers that work on local paths and on URIs (via pyarrow.fs)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import pyarrow.fs as pafs

from jobs.lake import is_local, local_path


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if is_local(uri):
        return pafs.LocalFileSystem(), local_path(uri)
    return pafs.FileSystem.from_uri(pyarrow_uri(uri))


def pyarrow_uri(uri: str) -> str:
    """The URI pyarrow.fs understands: Hadoop's `s3a://` and `s3n://` are its `s3://` (the
    endpoint and credentials come from the AWS_* environment, as for boto)."""
    scheme, sep, rest = uri.partition("://")
    return f"s3://{rest}" if sep and scheme.lower() in ("s3a", "s3n") else uri


def exists(uri: str) -> bool:
    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def write_json(uri: str, obj: Any) -> None:
    """Write JSON atomically on local disk (temp file + rename); plain write elsewhere."""
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    if is_local(uri):
        path = local_path(uri)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; reports are meant to be read
        os.replace(tmp, path)
        return
    fs, path = _fs(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def read_json(uri: str) -> Any:
    fs, path = _fs(uri)
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def list_files(uri: str) -> list[tuple[str, int]]:
    """(relative name, size) of the data files under a directory, sorted; [] if absent."""
    fs, path = _fs(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    out = []
    for info in infos:
        base = info.base_name
        if info.type == pafs.FileType.File and not base.startswith((".", "_")):
            out.append((info.path[len(path) :].lstrip("/"), info.size))
    return sorted(out)


def partitions(uri: str) -> list[str]:
    """Sorted `ds` values of a partitioned table directory (local or remote)."""
    fs, path = _fs(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return []
    out = []
    for info in fs.get_file_info(pafs.FileSelector(path)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("ds="):
            out.append(info.base_name[3:])
    return sorted(out)
