"""The product's one file lock: an advisory `flock` on a lock file on local disk.

Used wherever two processes (CLI, DAG tasks, experiments, the server) could otherwise interleave
a read-decide-write sequence: the promotion log, publishing an export, an evaluation lake, the
first touch of a SQLite MLflow store.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def file_lock(
    path: str,
    *,
    shared: bool = False,
    blocking: bool = True,
    waiting: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold an advisory lock on the file `path` (created if missing) for the `with` block.

    `shared` takes a read lock (many holders) instead of the exclusive one. With `waiting`, a
    lock held by someone else is first tried without blocking, and `waiting(path)` is called
    once before blocking on it, so a caller can say why it waits. With `blocking=False`, a lock
    held by someone else raises BlockingIOError at once instead.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a") as f:
        if not blocking:
            fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
        elif waiting is None:
            fcntl.flock(f.fileno(), mode)
        else:
            try:
                fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
            except BlockingIOError:
                waiting(path)
                fcntl.flock(f.fileno(), mode)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
