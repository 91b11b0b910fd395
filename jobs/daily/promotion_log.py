"""The append-only promotion log of the ranker's registry:

    <lake>/_mlflow/promotions.jsonl

one JSON line per gate decision and per rollback, never rewritten. Replaying it gives the stack
of champions (`champion_stack`): a promote pushes its `champion_after`, a rollback pops. It
lives next to the SQLite tracking store, so it needs a lake on local disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from jobs.core.errors import RegistryError
from jobs.core.io import fsync_path
from jobs.core.lake import Lake, join, local_path
from jobs.core.locks import file_lock

ACTIONS = ("promote", "reject", "rollback")


RECORD_KEYS = (
    "time",
    "action",
    "ds",
    "challenger",
    "champion_before",
    "champion_after",
    "criteria",
    "reason",
)


LOG_NAME = "promotions.jsonl"
DECISION_FILE = "promote.json"  # the day's gate decision, in warehouse/reports/ds=<ds>/


class RollbackError(RegistryError):
    """There is no previous champion, or the registry and the promotion log disagree."""


class PromotionLogCorrupt(RegistryError):
    """A line of the promotion log is not a valid record."""


def log_path(lake: Lake) -> str:
    try:
        return os.path.join(local_path(lake.mlflow_dir), LOG_NAME)
    except ValueError as exc:
        raise RegistryError(
            f"the promotion log needs a lake on local disk; {lake.root!r} is not"
        ) from exc


def decision_path(lake: Lake, ds: str) -> str:
    """Where the promote step writes day `ds`'s decision (a record as in the log) and the
    gate_alert step reads it; on any lake, local or remote."""
    return join(lake.reports(ds), DECISION_FILE)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a promotion record must be a JSON object, got {record!r}")
    missing = [k for k in RECORD_KEYS if k not in record]
    if missing:
        raise ValueError(f"{where}: promotion record lacks {', '.join(missing)}")
    if record["action"] not in ACTIONS:
        raise ValueError(
            f"{where}: promotion record action must be one of {', '.join(ACTIONS)},"
            f" got {record['action']!r}"
        )
    if not isinstance(record["criteria"], list):
        raise ValueError(f"{where}: promotion record criteria must be a list")


def append_decision(lake: Lake, record: dict[str, Any]) -> None:
    """Append one record as one line (fsynced). `time` defaults to now (UTC)."""
    record = {"time": now_iso(), **record}
    _check_record(record, "append_decision")
    try:
        line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    except ValueError as exc:
        raise ValueError(f"promotion record is not strict JSON (NaN/inf?): {exc}") from exc
    path = log_path(lake)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    created = not os.path.exists(path)
    data = line.encode("utf-8")
    # O_APPEND and one write() per line: existing bytes are never touched, lines never interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # make the new directory entry durable too
        fsync_path(os.path.dirname(path))


def read_log(lake: Lake) -> list[dict[str, Any]]:
    """Every record, oldest first; [] when there is no log yet."""
    path = log_path(lake)
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            where = f"{path} line {lineno}"
            try:
                record = json.loads(line)
                _check_record(record, where)
            except ValueError as exc:  # JSONDecodeError is a ValueError
                msg = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
                raise PromotionLogCorrupt(f"malformed promotion log: {msg}") from exc
            out.append(record)
    return out


def champion_stack(records: list[dict[str, Any]]) -> list[str]:
    """Replay the log: promote pushes `champion_after`, rollback pops. Bottom first."""
    stack: list[str] = []
    for i, rec in enumerate(records, start=1):
        if rec["action"] == "promote":
            after = rec["champion_after"]
            if after is not None and (not stack or stack[-1] != str(after)):
                stack.append(str(after))
        elif rec["action"] == "rollback":
            if not stack:
                raise RollbackError(f"promotion log record {i} rolls back an empty history")
            stack.pop()
            if rec["champion_after"] is not None and (
                not stack or stack[-1] != str(rec["champion_after"])
            ):
                raise RollbackError(
                    f"promotion log record {i} rolled back to {rec['champion_after']}"
                    f" but the replayed history says {stack[-1] if stack else 'nothing'}"
                )
    return stack


def past_day(lake: Lake, ds: str) -> dict[str, Any] | None:
    """The champions of day `ds` when a later day has been decided since; else None.

    The live `champion` alias (and `exports/CURRENT`) belong to the newest day decided. A run
    for an older day (a re-run, or a backfill reaching back) recomputes that day as it was,
    from the promotion log, and changes neither: its gate compares the challenger with
    `champion_before` (the champion when the day was decided) and its pages are ranked by
    `champion_after` (the version that served the day). A day never decided before is taken as
    of the newest earlier decision (its challenger was never champion). Returns
    {"champion_before", "champion_after", "decided"} (versions as strings, or None).
    """
    try:
        records = read_log(lake)
    except RegistryError:  # no promotion log off local disk: the live aliases apply
        return None
    decisions = [r for r in records if r["action"] in ("promote", "reject") and r.get("ds")]
    if not any(str(r["ds"]) > ds for r in decisions):
        return None
    mine = [r for r in decisions if str(r["ds"]) == ds]
    if mine:
        before, after, decided = mine[-1]["champion_before"], mine[-1]["champion_after"], True
    else:
        earlier = sorted((r for r in decisions if str(r["ds"]) < ds), key=lambda r: str(r["ds"]))
        before = after = earlier[-1]["champion_after"] if earlier else None
        decided = False
    return {
        "champion_before": None if before is None else str(before),
        "champion_after": None if after is None else str(after),
        "decided": decided,
    }


def same_decision(lake: Lake, record: Mapping[str, Any]) -> bool:
    """Whether the latest decision logged for `record`'s ds is `record` again (a re-run of the
    day with the same challenger and champion): it is not logged twice."""
    keys = ("action", "challenger", "champion_before", "champion_after")
    mine = [
        r
        for r in read_log(lake)
        if r["action"] in ("promote", "reject") and r.get("ds") == record["ds"]
    ]
    return bool(mine) and all(
        (None if mine[-1][k] is None else str(mine[-1][k]))
        == (None if record[k] is None else str(record[k]))
        for k in keys
    )


@contextlib.contextmanager
def locked(lake: Lake) -> Iterator[None]:
    """Serialise read-decide-append sequences on the log (advisory flock, local disk)."""
    with file_lock(log_path(lake) + ".lock"):
        yield
