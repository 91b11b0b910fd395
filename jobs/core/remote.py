"""Remote lakes (s3://, s3a://, …): directories built locally and uploaded whole.

An object store has no directory rename, so a step that writes a directory to a remote lake
(a model bundle, ranked pages, an export) builds it in a local scratch directory exactly as it
would on local disk, then `upload_dir`s it: the previous completion marker is deleted first,
every file is uploaded, and the marker is written last (one PUT each; an object appears whole
or not at all). The marker is `_COMPLETE` (the uploaded files, as JSON), or for an export its
`MANIFEST.json`. Readers call `check_complete` (or verify the manifest) and refuse a directory
without its marker: an upload killed half-way is never read. Spark's outputs carry Spark's own
`_SUCCESS` marker, which `read_parquet(..., marker="_SUCCESS")` requires on a remote lake.

The S3 endpoint and credentials come from the environment, as for the AWS SDK and boto3:
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_REGION, and for MinIO or another
S3-compatible store AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (e.g. http://minio:9000), which
pyarrow's S3FileSystem honours (path-style addressing).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import pyarrow.fs as pafs

from jobs.core.io import IncompleteOutput, filesystem, is_remote, pid_alive, read_bytes
from jobs.core.lake import join

log = logging.getLogger(__name__)


COMPLETE_MARKER = "_COMPLETE"


def scratch_dir(what: str) -> str:
    """A new local directory `homepage-<what>-<pid>-*` to build a remote output in, under
    $HOMEPAGE_SCRATCH if set, else the system's temp dir. The caller deletes it when done; the
    ones a killed process left behind are deleted by the next call for the same `what`."""
    base = os.environ.get("HOMEPAGE_SCRATCH") or tempfile.gettempdir()
    os.makedirs(base, exist_ok=True)
    head = f"homepage-{what}-"
    for entry in os.listdir(base):
        pid = entry[len(head) :].split("-", 1)[0]
        if entry.startswith(head) and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(os.path.join(base, entry), ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{head}{os.getpid()}-", dir=base)


def _local_files(local_dir: str) -> list[str]:
    out = []
    for d, dirs, files in os.walk(local_dir):
        dirs.sort()
        for name in sorted(files):
            out.append(os.path.relpath(os.path.join(d, name), local_dir).replace(os.sep, "/"))
    return sorted(out)


def upload_dir(local_dir: str, uri: str, *, last: str | None = None) -> list[str]:
    """Replace the remote directory `uri` with the local directory `local_dir`, completion
    marker last; returns the uploaded relative names.

    `last` names a file of `local_dir` that is the completion marker (an export's
    MANIFEST.json); without it a `_COMPLETE` marker listing the files is written. The old marker
    goes first and the old files next, so from the first write until the marker lands a reader
    sees an incomplete directory (and refuses it), never a mix of two versions.
    """
    if not is_remote(uri):
        raise ValueError(f"upload_dir needs a remote URI, got {uri!r}")
    fs, base = filesystem(uri)
    local_fs = pafs.LocalFileSystem()
    marker = last or COMPLETE_MARKER
    names = _local_files(local_dir)
    if last is not None and last not in names:
        raise FileNotFoundError(f"{os.path.join(local_dir, last)} does not exist")
    if fs.get_file_info(join(base, marker)).type != pafs.FileType.NotFound:
        fs.delete_file(join(base, marker))
    if fs.get_file_info(base).type != pafs.FileType.NotFound:
        fs.delete_dir_contents(base, missing_dir_ok=True)
    body = [n for n in names if n != marker]
    for name in body:
        pafs.copy_files(
            os.path.join(local_dir, name),
            join(base, name),
            source_filesystem=local_fs,
            destination_filesystem=fs,
        )
    if last is not None:
        pafs.copy_files(
            os.path.join(local_dir, last),
            join(base, last),
            source_filesystem=local_fs,
            destination_filesystem=fs,
        )
    else:
        listing = {n: os.path.getsize(os.path.join(local_dir, n)) for n in body}
        with fs.open_output_stream(join(base, COMPLETE_MARKER)) as f:
            f.write(json.dumps({"files": listing}, indent=1, sort_keys=True).encode())
    log.info("uploaded %d files to %s (%s last)", len(names), uri, marker)
    return names


def check_complete(uri: str, what: str = "directory") -> dict[str, int]:
    """The files of an uploaded remote directory (name -> size, from its `_COMPLETE` marker);
    IncompleteOutput, naming the URI and what is missing, when the marker or a file is absent."""
    fs, base = filesystem(uri)
    try:
        listing = json.loads(read_bytes(join(uri, COMPLETE_MARKER)))["files"]
    except FileNotFoundError:
        raise IncompleteOutput(
            f"{what} {uri} is incomplete: it has no {COMPLETE_MARKER} marker (its upload did "
            "not finish, or it was never written); re-run the step that writes it"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IncompleteOutput(
            f"{what} {uri}: unreadable {COMPLETE_MARKER} marker: {exc}"
        ) from None
    infos = fs.get_file_info([join(base, n) for n in listing])
    missing = [n for n, info in zip(listing, infos, strict=True) if info.type != pafs.FileType.File]
    if missing:
        raise IncompleteOutput(
            f"{what} {uri} is incomplete: {', '.join(sorted(missing))} missing (listed in its "
            f"{COMPLETE_MARKER} marker); re-run the step that writes it"
        )
    return dict(listing)


def download(uri: str, local_dir: str, names: list[str] | None = None) -> None:
    """Copy a remote directory (or only `names` in it: files or sub-directories) into
    `local_dir`."""
    fs, base = filesystem(uri)
    local_fs = pafs.LocalFileSystem()
    os.makedirs(local_dir, exist_ok=True)
    for name in names if names is not None else [""]:
        src = join(base, name) if name else base
        dst = os.path.join(local_dir, name) if name else local_dir
        info = fs.get_file_info(src)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{join(uri, name) if name else uri} does not exist")
        if info.type == pafs.FileType.File:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        else:
            os.makedirs(dst, exist_ok=True)
        pafs.copy_files(src, dst, source_filesystem=fs, destination_filesystem=local_fs)
