"""Atomic publish of a verified export: `<lake>/exports/CURRENT` names the served `ds`.

A reader of CURRENT sees the old ds or the new one, never a partial write: the new content goes
to `CURRENT.tmp-<pid>`, is fsynced, then `os.replace`d over CURRENT. An export that fails
`verify_export` is never published. Publishing an older ds that still exists is a rollback.

On a remote lake (s3a://…) CURRENT is one small object replaced by a single PUT (atomic on S3:
a reader gets the old or the new content). The export is checked where it lies
(`verify_remote_export`: the manifest, which the export step uploads last, and every file's
size and sha256, streamed); `fetch_export` copies it into a local cache for the lookup server,
which then runs the full `verify_export` (LMDB included) on the copy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from typing import Any

from jobs.core import io, remote
from jobs.core.io import fsync_path
from jobs.core.lake import Lake, join, list_partitions, local_path, parse_ds
from jobs.core.locks import file_lock
from serving_export.export.format import MANIFEST_FILE
from serving_export.export.verify import ExportInvalid, parse_manifest, verify_export

log = logging.getLogger(__name__)

SERVE_CACHE_ENV = "HOMEPAGE_SERVE_CACHE"
CACHED_EXPORTS = 3  # exports of a remote lake kept in the server's local cache


def read_manifest_uri(uri: str) -> tuple[bytes, dict[str, Any]]:
    """The export at `uri`'s manifest: (its bytes, parsed). Raises ExportInvalid naming the
    manifest when it is missing (an unfinished export) or does not parse."""
    mf_uri = join(uri, MANIFEST_FILE)
    try:
        raw = io.read_bytes(mf_uri)
    except FileNotFoundError:
        raise ExportInvalid(f"{mf_uri} is missing (export incomplete?)") from None
    return raw, parse_manifest(raw, mf_uri)


def verify_remote_export(uri: str, *, checksums: bool = True) -> dict[str, Any]:
    """Check an export on an object store against its manifest, without copying it: the
    manifest parses and lists each file, which exists with the listed size and (when
    `checksums`) sha256. Returns the manifest or raises ExportInvalid(reason naming `uri`).

    The LMDB-level checks of `verify_export` ran on these very bytes before the upload (the
    export step verifies its local build), and the lookup server runs them again on its copy.
    """
    manifest = read_manifest_uri(uri)[1]
    sizes = io.file_sizes(uri)
    for name, meta in manifest["files"].items():
        if name not in sizes or sizes[name] is None:
            raise ExportInvalid(f"{name} is missing from {uri}")
        if sizes[name] != meta.get("bytes"):
            raise ExportInvalid(
                f"{name} in {uri} has {sizes[name]} bytes, manifest says {meta.get('bytes')}"
            )
        if checksums and io.sha256_uri(join(uri, name)) != meta.get("sha256"):
            raise ExportInvalid(f"{name} in {uri}: sha256 differs from the manifest (corrupt file)")
    return manifest


def verify_export_uri(uri: str, *, checksums: bool = True) -> dict[str, Any]:
    """`verify_export` for a local export directory, `verify_remote_export` for a remote one."""
    if io.is_remote(uri):
        return verify_remote_export(uri, checksums=checksums)
    return verify_export(local_path(uri), checksums=checksums)


def default_cache_dir() -> str:
    """Where a lookup server keeps its copies of a remote lake's exports: $HOMEPAGE_SERVE_CACHE,
    else `homepage-serve-cache` in the system's temp dir."""
    import tempfile

    return os.environ.get(SERVE_CACHE_ENV) or os.path.join(
        tempfile.gettempdir(), "homepage-serve-cache"
    )


def fetch_export(
    lake: Lake, ds: str, cache_dir: str | None = None, *, checksums: bool = True
) -> tuple[str, dict[str, Any]]:
    """A verified local copy of the remote export `exports/ds=<ds>`: (its directory, manifest).

    The copy lives in `<cache_dir>/<hash of the lake root>/ds=<ds>`: the manifest's files are
    downloaded aside, then the manifest, `verify_export` checks the whole (LMDB included; sha256
    when `checksums`), and only then is it swapped in (jobs/io.atomic_dir), so the cache never
    holds a copy that failed. A copy whose manifest is the remote one byte for byte is reused
    (verified again). Worker processes of one server share the cache (a lock per ds); the newest
    CACHED_EXPORTS copies are kept. Raises ExportInvalid, naming the remote export, when it has
    no manifest (an unfinished upload), lacks a file or fails verification.
    """
    uri = lake.export(ds)
    raw, manifest = read_manifest_uri(uri)
    root = os.path.join(
        cache_dir or default_cache_dir(), hashlib.sha256(lake.root.encode()).hexdigest()[:16]
    )
    os.makedirs(root, exist_ok=True)
    local = os.path.join(root, f"ds={ds}")
    with file_lock(os.path.join(root, f".lock-ds={ds}")):
        try:
            with open(os.path.join(local, MANIFEST_FILE), "rb") as f:
                cached = f.read() == raw
        except FileNotFoundError:
            cached = False
        verified = None
        if cached:
            try:
                verified = verify_export(local, checksums=checksums)
            except ExportInvalid as exc:
                log.warning(
                    "cached copy %s of %s is damaged (%s): downloading again", local, uri, exc
                )
        if verified is None:
            log.info("downloading export %s to %s", uri, local)
            with io.atomic_dir(local) as staging:
                try:
                    remote.download(uri, staging, sorted(manifest["files"]))
                except FileNotFoundError as exc:
                    raise ExportInvalid(f"{exc} (listed in {join(uri, MANIFEST_FILE)})") from None
                with open(os.path.join(staging, MANIFEST_FILE), "wb") as f:
                    f.write(raw)
                try:
                    verified = verify_export(staging, checksums=checksums)
                except ExportInvalid as exc:
                    raise ExportInvalid(f"{uri}: {exc}") from None
    _prune_cache(root, keep={ds})
    return local, verified


def _prune_cache(root: str, keep: set[str]) -> None:
    """Delete cached exports beyond the newest CACHED_EXPORTS (never one in `keep`, nor one
    another process holds the lock of)."""
    days = sorted(d for d in list_partitions(root) if d not in keep)
    for ds in days[: max(0, len(days) - (CACHED_EXPORTS - len(keep)))]:
        try:
            with file_lock(os.path.join(root, f".lock-ds={ds}"), blocking=False):
                shutil.rmtree(os.path.join(root, f"ds={ds}"), ignore_errors=True)
        except BlockingIOError:
            continue  # being fetched right now


def _read_current(path: str) -> str | None:
    try:
        with open(path) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return None
    parse_ds(value)  # a garbled CURRENT is an error, not "nothing published"
    return value


def current_ds(lake: Lake) -> str | None:
    """The published ds named by `exports/CURRENT`, or None when nothing is published yet.

    Raises ValueError when CURRENT exists but does not hold a YYYY-MM-DD date.
    """
    if io.is_remote(lake.current):
        try:
            value = io.read_bytes(lake.current).decode().strip()
        except FileNotFoundError:
            return None
        parse_ds(value)
        return value
    return _read_current(local_path(lake.current))


def _point_current(exports_dir: str, ds: str) -> None:
    target = os.path.join(exports_dir, "CURRENT")
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(ds + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)  # atomic on POSIX: readers see the old or the new name
    fsync_path(exports_dir)


def prune_exports(lake: Lake, current: str, keep_last: int) -> list[str]:
    """Delete exports older than `current` beyond the newest `keep_last` at or before it.

    The current export and anything newer than it (e.g. after a rollback) are never deleted.
    Returns the deleted ds values.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    if io.is_remote(lake.exports):
        return _prune_remote(lake, current, keep_last)
    exports_dir = local_path(lake.exports)
    older_or_current = [d for d in list_partitions(exports_dir) if d <= current]
    doomed = older_or_current[:-keep_last] if len(older_or_current) > keep_last else []
    deleted = []
    for ds in doomed:
        if ds == current:  # cannot happen with keep_last >= 1; kept as a guard
            continue
        src = local_path(lake.export(ds))
        # Rename first so a half-deleted directory never looks like an export.
        trash = os.path.join(exports_dir, f".trash-ds={ds}-{os.getpid()}")
        try:
            os.rename(src, trash)
        except FileNotFoundError:
            continue  # another publisher pruned it
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(ds)
    if deleted:
        log.info("pruned exports: %s", ", ".join(deleted))
    return deleted


def _prune_remote(lake: Lake, current: str, keep_last: int) -> list[str]:
    older_or_current = [d for d in io.partitions(lake.exports) if d <= current]
    doomed = older_or_current[:-keep_last] if len(older_or_current) > keep_last else []
    deleted = []
    for ds in doomed:
        if ds == current:
            continue
        uri = lake.export(ds)
        # the manifest first: a half-deleted export is an incomplete one, which readers refuse
        io.delete_file(join(uri, MANIFEST_FILE))
        io.delete_dir(uri)
        deleted.append(ds)
    if deleted:
        log.info("pruned exports: %s", ", ".join(deleted))
    return deleted


# ---------------------------------------------------------------- intra-day deltas
#
# `exports/deltas/ds=<B>/wm=<stamp>/` are deltas over the daily export B (jobs.refresh.run);
# `exports/deltas/ds=<B>/CURRENT` names the served one, replaced atomically like CURRENT.


def deltas_dir(lake: Lake, ds: str) -> str:
    return os.path.join(local_path(lake.exports), "deltas", f"ds={ds}")


def current_delta(lake: Lake, ds: str) -> str | None:
    """The stamp of the delta served over export `ds`, or None."""
    try:
        with open(os.path.join(deltas_dir(lake, ds), "CURRENT")) as f:
            value = f.read().strip()
    except FileNotFoundError:
        return None
    return value or None


def point_delta(lake: Lake, ds: str, wm_stamp: str) -> str:
    """Serve delta `wm_stamp` over export `ds`, unless a newer one is served already (a re-run
    of an older window must not take the page back in time). Returns the served stamp."""
    served = current_delta(lake, ds)
    if served is not None and served > wm_stamp:
        log.info("delta %s not published over %s: %s is newer", wm_stamp, ds, served)
        return served
    root = deltas_dir(lake, ds)
    tmp = os.path.join(root, f"CURRENT.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(wm_stamp + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(root, "CURRENT"))
    fsync_path(root)
    log.info("published delta %s over ds=%s", wm_stamp, ds)
    return wm_stamp


def prune_deltas(lake: Lake, ds: str, *, keep_last: int) -> list[str]:
    """Delete deltas of other days than `ds`, and all but the newest `keep_last` of `ds` (never
    the served one). Returns what was deleted ("<ds>" for a whole day, "<ds>/<stamp>")."""
    root = os.path.join(local_path(lake.exports), "deltas")
    if not os.path.isdir(root):
        return []
    deleted = []
    for name in sorted(os.listdir(root)):
        day = name[len("ds=") :] if name.startswith("ds=") else None
        if day is None or day == ds:
            continue
        trash = os.path.join(root, f".trash-{name}-{os.getpid()}")
        os.rename(os.path.join(root, name), trash)
        shutil.rmtree(trash, ignore_errors=True)
        deleted.append(day)
    day_dir = deltas_dir(lake, ds)
    if os.path.isdir(day_dir):
        served = current_delta(lake, ds)
        stamps = sorted(n[len("wm=") :] for n in os.listdir(day_dir) if n.startswith("wm="))
        older = [s for s in stamps if served is None or s < served]
        for stamp in older[: max(len(older) - (keep_last - 1), 0)]:
            trash = os.path.join(day_dir, f".trash-{stamp}-{os.getpid()}")
            os.rename(os.path.join(day_dir, f"wm={stamp}"), trash)
            shutil.rmtree(trash, ignore_errors=True)
            deleted.append(f"{ds}/{stamp}")
    if deleted:
        log.info("pruned deltas: %s", ", ".join(deleted))
    return deleted


def publish(lake: Lake, ds: str, *, keep_last: int = 7) -> str:
    """Verify `exports/ds=<ds>`, point `exports/CURRENT` at it atomically, prune old exports.

    Returns the published export directory. Raises `ExportInvalid` (CURRENT untouched) when the
    export fails verification, ValueError on a bad ds or keep_last.
    """
    parse_ds(ds)
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    if io.is_remote(lake.root):
        return _publish_remote(lake, ds, keep_last)
    export_dir = local_path(lake.export(ds))
    manifest = verify_export(export_dir)
    if manifest["ds"] != ds:
        raise ExportInvalid(f"{export_dir} holds ds={manifest['ds']}, not {ds}")
    exports_dir = local_path(lake.exports)
    try:
        previous = _read_current(os.path.join(exports_dir, "CURRENT"))
    except ValueError:
        previous = "<garbled>"  # publishing repairs it
    _point_current(exports_dir, ds)
    log.info("published ds=%s (was %s): %d users", ds, previous, manifest["users"])
    prune_exports(lake, ds, keep_last)
    # the new daily export holds everything the older days' deltas did
    prune_deltas(lake, ds, keep_last=1 << 30)
    return export_dir


def _publish_remote(lake: Lake, ds: str, keep_last: int) -> str:
    uri = lake.export(ds)
    manifest = verify_remote_export(uri)
    if manifest["ds"] != ds:
        raise ExportInvalid(f"{uri} holds ds={manifest['ds']}, not {ds}")
    try:
        previous = current_ds(lake)
    except ValueError:
        previous = "<garbled>"  # publishing repairs it
    io.write_bytes(lake.current, (ds + "\n").encode())  # one PUT: atomic on the store
    log.info("published ds=%s (was %s): %d users", ds, previous, manifest["users"])
    prune_exports(lake, ds, keep_last)
    return uri
