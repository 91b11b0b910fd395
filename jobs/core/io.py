"""Small filesystem helpers that work on local paths and on URIs (via pyarrow.fs)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs

from jobs.core.errors import LakeError
from jobs.core.lake import is_local, join, local_path

log = logging.getLogger(__name__)

# Sibling directories of an output being replaced (hidden: no reader lists names starting "."):
# `.staging-<name>-<pid>/<name>` is the new version being written, `.old-<name>-<pid>` the
# previous one for the instant between two renames where the exchange is not supported.
STAGING_PREFIX = ".staging-"
OLD_PREFIX = ".old-"


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The Arrow filesystem of a local path or remote URI, and the path within it."""
    return _fs(uri)


def _fs(uri: str) -> tuple[pafs.FileSystem, str]:
    if is_local(uri):
        return pafs.LocalFileSystem(), local_path(uri)
    return _remote_fs(pyarrow_uri(uri))


# S3 filesystems by (process, bucket, AWS environment): `from_uri` resolves the bucket's region
# with a request each time, and a step makes hundreds of calls
_S3_CACHE: dict[tuple[Any, ...], pafs.FileSystem] = {}
_S3_ENV = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
)


def _remote_fs(uri: str) -> tuple[pafs.FileSystem, str]:
    scheme, _, rest = uri.partition("://")
    if scheme != "s3" or any(c in rest for c in "?@%"):  # options, credentials, escapes
        return pafs.FileSystem.from_uri(uri)
    path = rest.rstrip("/")
    key = (os.getpid(), path.split("/", 1)[0], tuple(os.environ.get(k) for k in _S3_ENV))
    fs = _S3_CACHE.get(key)
    if fs is None:
        fs, path = pafs.FileSystem.from_uri(uri)
        _S3_CACHE[key] = fs
    return fs, path


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
    out: list[tuple[str, int]] = []
    for info in infos:
        base = info.base_name
        if info.type == pafs.FileType.File and not base.startswith((".", "_")):
            out.append((info.path[len(path) :].lstrip("/"), info.size))
    return sorted(out)


def parquet_columns(uri: str) -> list[str]:
    """Column names of a Parquet directory, from its first data file; [] if it has none."""
    import pyarrow.parquet as pq

    files = list_files(uri)
    if not files:
        return []
    fs, path = _fs(uri)
    return list(pq.read_schema(f"{path}/{files[0][0]}", filesystem=fs).names)


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


# --- directories replaced whole (local disk) -------------------------------------------------
#
# A step that writes a directory (a feature partition, a model bundle, an export) writes it
# aside and swaps it in complete, so a reader, or a step killed half-way and retried, sees the
# previous version or the new one, never a mix or a partial one:
#
#     recover_dir(final)          a retry first cleans up what a killed attempt left
#     staging = staging_dir(final)
#     ... write everything into staging ...
#     replace_dir(staging, final)
#
# `atomic_dir` does the three in a `with` block. Remote lakes (s3://, hdfs://) have no atomic
# directory rename; Spark writes them in place and its `_SUCCESS` marker flags a complete write.


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def fsync_path(path: str) -> None:
    """fsync a file or a directory (a directory's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str, bufsize: int = 1 << 20) -> str:
    """Hex sha256 of a local file, read in 1 MiB blocks (hashlib releases the GIL)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _exchange(a: str, b: str) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False when the
    platform or the filesystem cannot, and the caller falls back to two renames."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # glibc < 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a, None, b)


def recover_dir(final: str) -> list[str]:
    """Clean up after a killed writer of the local directory `final`; returns what it did.

    A `.staging-<name>-<pid>` of a process that is gone (or of this one) is deleted: it never
    became visible. An `.old-<name>-<pid>` (a writer killed between its two renames) is moved
    back to `final` when `final` is missing, else deleted. Directories of live processes are
    left alone.
    """
    parent, name = os.path.split(final.rstrip("/"))
    try:
        entries = sorted(os.listdir(parent))
    except FileNotFoundError:
        return []
    done = []
    for entry in entries:
        for prefix in (STAGING_PREFIX, OLD_PREFIX):
            head = f"{prefix}{name}-"
            pid = entry[len(head) :]
            if not entry.startswith(head) or not pid.isdigit():
                continue
            if int(pid) != os.getpid() and pid_alive(int(pid)):
                continue
            path = os.path.join(parent, entry)
            if prefix == OLD_PREFIX and not os.path.exists(final):
                os.rename(path, final)
                done.append(f"restored {final} from {entry}")
            else:
                shutil.rmtree(path, ignore_errors=True)
                done.append(f"removed {path}")
    if done:
        log.warning("recovered from an interrupted write of %s: %s", final, "; ".join(done))
    return done


def staging_dir(final: str) -> str:
    """A new, empty `<parent>/.staging-<name>-<pid>/<name>` to write `final`'s next version in
    (the same base name as `final`, for writers that record it). Cleans up first."""
    parent, name = os.path.split(final.rstrip("/"))
    os.makedirs(parent, exist_ok=True)
    recover_dir(final)
    wrapper = os.path.join(parent, f"{STAGING_PREFIX}{name}-{os.getpid()}")
    shutil.rmtree(wrapper, ignore_errors=True)
    staging = os.path.join(wrapper, name)
    os.makedirs(staging)
    return staging


def discard_staging(staging: str) -> None:
    shutil.rmtree(os.path.dirname(staging), ignore_errors=True)


def replace_dir(staging: str, final: str) -> None:
    """Make the complete directory `staging` (from `staging_dir`) the new `final`, atomically.

    A missing `final` is renamed into place; an existing one is exchanged with `staging` in one
    step where the kernel can (readers see the old tree or the new, never neither), else moved
    aside to `.old-<name>-<pid>` first (a kill between the two renames is undone by
    `recover_dir`). Files a reader has open stay readable until it closes them.
    """
    final = final.rstrip("/")
    parent, name = os.path.split(final)
    wrapper = os.path.dirname(staging)
    if not os.path.exists(final):
        os.rename(staging, final)
    elif _exchange(staging, final):
        pass  # `staging` now holds the previous version, deleted with its wrapper below
    else:
        old = os.path.join(parent, f"{OLD_PREFIX}{name}-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    fsync_path(parent)
    shutil.rmtree(wrapper, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: str) -> Iterator[str]:
    """`with atomic_dir(final) as tmp:` write into `tmp`; on success it replaces `final`
    (see `replace_dir`), on an exception it is deleted and `final` is left as it was."""
    staging = staging_dir(final)
    try:
        yield staging
    except BaseException:
        discard_staging(staging)
        raise
    replace_dir(staging, final)


# --- remote lakes (s3://, s3a://, …): see jobs/core/remote.py for the upload protocol --------
class IncompleteOutput(LakeError):
    """A remote directory lacks its completion marker or a file its marker lists: the upload
    that writes it did not finish (re-run the step that writes it; jobs/core/remote.py)."""


def is_remote(uri: str) -> bool:
    return not is_local(uri)


def read_bytes(uri: str) -> bytes:
    """The content of one file; FileNotFoundError (naming `uri`) when it does not exist."""
    fs, path = _fs(uri)
    if fs.get_file_info(path).type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri} does not exist")
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(uri: str, data: bytes) -> None:
    """Write one file whole: temp file + rename on local disk, one object PUT on a store (an
    object is replaced atomically: a reader gets the old content or the new)."""
    if is_local(uri):
        path = local_path(uri)
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return
    fs, path = _fs(uri)
    with fs.open_output_stream(path) as f:
        f.write(data)


def mtime_ns(uri: str) -> int:
    """Modification time of a file (an object's Last-Modified on a store); FileNotFoundError
    when it does not exist."""
    fs, path = _fs(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{uri} does not exist")
    return int(info.mtime_ns or 0)


def read_parquet(uri: str, columns: list[str] | None = None, *, marker: str | None = None) -> Any:
    """A Parquet file or directory as a pandas DataFrame.

    Local paths are read exactly as `pd.read_parquet(path)`. Remote ones go through pyarrow.fs
    (files starting with "_" or "." are skipped, as Spark's `_SUCCESS` and `.crc`); with
    `marker` (e.g. "_SUCCESS" for a Spark output) the directory must hold that file.
    """
    import pandas as pd

    if is_local(uri):
        return pd.read_parquet(local_path(uri), columns=columns)
    fs, path = _fs(uri)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{uri} does not exist")
    if marker and not exists(join(uri, marker)):
        raise IncompleteOutput(
            f"{uri} has no {marker} marker: the job that writes it did not finish"
        )
    return pd.read_parquet(path, columns=columns, filesystem=fs)


def delete_file(uri: str) -> None:
    """Delete one file (no error if it is absent)."""
    fs, path = _fs(uri)
    if fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def delete_dir(uri: str) -> None:
    """Delete a (local or remote) directory and everything under it (no error if it is absent)."""
    fs, base = _fs(uri)
    if fs.get_file_info(base).type != pafs.FileType.NotFound:
        fs.delete_dir(base)


def sha256_uri(uri: str, bufsize: int = 1 << 22) -> str:
    """sha256 of one (local or remote) file, streamed."""
    import hashlib

    fs, path = _fs(uri)
    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def file_sizes(uri: str) -> dict[str, int | None]:
    """name -> size of the entries directly under a (local or remote) directory; None for a
    sub-directory; {} when it is absent."""
    fs, base = _fs(uri)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return {}
    return {
        info.base_name: (info.size if info.type == pafs.FileType.File else None)
        for info in fs.get_file_info(pafs.FileSelector(base))
    }
