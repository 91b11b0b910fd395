"""Atomic publish of a verified export: `<lake>/exports/CURRENT` names the served `ds`.

A reader of CURRENT sees the old ds or the new one, never a partial write: the new content goes
to `CURRENT.tmp-<pid>`, is fsynced, then `os.replace`d over CURRENT. An export that fails
`verify_export` is never published. Publishing an older ds that still exists is a rollback.
"""

from __future__ import annotations

import logging
import os
import shutil

from jobs.lake import Lake, list_partitions, local_path, parse_ds
from serving_export.writer import ExportInvalid, fsync_path, verify_export

log = logging.getLogger(__name__)


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


def publish(lake: Lake, ds: str, *, keep_last: int = 7) -> str:
    """Verify `exports/ds=<ds>`, point `exports/CURRENT` at it atomically, prune old exports.

    Returns the published export directory. Raises `ExportInvalid` (CURRENT untouched) when the
    export fails verification, ValueError on a bad ds or keep_last.
    """
    parse_ds(ds)
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
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
    return export_dir
