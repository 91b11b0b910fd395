"""The MLflow model registry of the ranker, and the append-only promotion log.

Versions of one registered model (`cfg.gate.model_name`, default `homepage-ranker`) carry two
aliases: `challenger` (the latest registered version) and `champion` (the version serving).
Every gate decision and every rollback is appended as one JSON line to

    <lake>/_mlflow/promotions.jsonl

which is never rewritten. Replaying it gives the stack of champions: a promote pushes its
`champion_after`, a rollback pops; `rollback` re-points `champion` to the element below the top.
The log lives next to the SQLite tracking store, so it needs a lake on local disk.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jobs.core.errors import RegistryError
from jobs.core.lake import Lake, local_path
from jobs.core.locks import file_lock
from jobs.core.tracking import TrackingUnavailable

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from validation.gate import GateDecision

DEFAULT_MODEL_NAME = "homepage-ranker"
CHAMPION = "champion"
CHALLENGER = "challenger"
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


class RollbackError(RegistryError):
    """There is no previous champion, or the registry and the promotion log disagree."""


class PromotionLogCorrupt(RegistryError):
    """A line of the promotion log is not a valid record."""


def model_name(cfg: Any) -> str:
    name = getattr(getattr(cfg, "gate", None), "model_name", DEFAULT_MODEL_NAME)
    if not name or "'" in name:
        raise ValueError(f"registered model name must be non-empty without quotes, got {name!r}")
    return name


# --- MLflow plumbing -------------------------------------------------------------------------


@contextlib.contextmanager
def _store_errors(what: str, uri: str) -> Iterator[None]:
    """Turn an unreachable/failing store into TrackingUnavailable; let caller errors through.

    MLflow reports connection failures, timeouts and database errors as `MlflowException`s
    whose HTTP status is >= 500; 4xx ones (unknown run, bad name, ...) are the caller's mistake.
    """
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except MlflowException as exc:
        if exc.get_http_status_code() < 500:
            raise
        raise TrackingUnavailable(f"MLflow store {uri} failed while {what}: {exc}") from exc
    except (OSError, SQLAlchemyError) as exc:
        raise TrackingUnavailable(f"MLflow store {uri} failed while {what}: {exc}") from exc


def _client(lake: Lake, cfg: Any) -> tuple[MlflowClient, str]:
    """A client on this lake's tracking store (which is also the registry store)."""
    from mlflow.tracking import MlflowClient

    from jobs.core.tracking import experiment, tracking_uri

    experiment(lake, cfg)  # sets the tracking URI; TrackingUnavailable when the store is down
    uri = tracking_uri(lake, cfg)
    return MlflowClient(tracking_uri=uri, registry_uri=uri), uri


def _is_missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def register(
    lake: Lake,
    cfg: Any,
    *,
    run_id: str,
    model_uri: str,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Register `model_uri` (logged by run `run_id`) as a new version, alias it `challenger`.

    The version is created with tags `run_id`, the run's `ds` and `tags` (which win), so the
    `challenger` alias never points at a version that lacks them. Returns the version number.
    """
    import mlflow

    client, uri = _client(lake, cfg)
    name = model_name(cfg)
    with _store_errors(f"registering {model_uri} as {name}", uri):
        run = client.get_run(run_id)
        version_tags = {"run_id": run_id}
        if run.data.tags.get("ds"):
            version_tags["ds"] = run.data.tags["ds"]
        version_tags |= {str(k): str(v) for k, v in (tags or {}).items()}
        mv = mlflow.register_model(model_uri, name, tags=version_tags)
        client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def version_for(lake: Lake, cfg: Any, alias: str) -> ModelVersion | None:
    """The version `alias` points to; None when the alias or the registered model is absent."""
    from mlflow.exceptions import MlflowException

    client, uri = _client(lake, cfg)
    name = model_name(cfg)
    with _store_errors(f"reading alias {alias!r} of {name}", uri):
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if _is_missing(exc):
                return None
            raise
        version = (model.aliases or {}).get(alias)
        if version is None:
            return None
        return client.get_model_version(name, str(version))


def set_champion(lake: Lake, cfg: Any, version: str) -> None:
    """Point `champion` at `version` (which must exist)."""
    client, uri = _client(lake, cfg)
    name = model_name(cfg)
    with _store_errors(f"setting {CHAMPION} of {name} to version {version}", uri):
        client.get_model_version(name, str(version))  # a clear 4xx error if it does not exist
        client.set_registered_model_alias(name, CHAMPION, str(version))


def get_version(lake: Lake, cfg: Any, version: str) -> ModelVersion:
    """Version `version` of the registered model (a clear 4xx error if it does not exist)."""
    client, uri = _client(lake, cfg)
    name = model_name(cfg)
    with _store_errors(f"reading version {version} of {name}", uri):
        return client.get_model_version(name, str(version))


def find_version(lake: Lake, cfg: Any, tags: Mapping[str, str]) -> str | None:
    """The newest version whose tags include all of `tags`; None if there is none."""
    from mlflow.exceptions import MlflowException

    client, uri = _client(lake, cfg)
    name = model_name(cfg)
    found: list[int] = []
    with _store_errors(f"searching versions of {name}", uri):
        token = None
        while True:
            try:
                page = client.search_model_versions(f"name='{name}'", page_token=token)
            except MlflowException as exc:
                if _is_missing(exc):
                    return None
                raise
            for mv in page:
                have = mv.tags or {}
                if all(have.get(k) == str(v) for k, v in tags.items()):
                    found.append(int(mv.version))
            token = page.token
            if not token:
                break
    return str(max(found)) if found else None


def set_challenger(lake: Lake, cfg: Any, version: str) -> None:
    """Point `challenger` at an existing `version` (a re-trained, identical bundle)."""
    client, uri = _client(lake, cfg)
    name = model_name(cfg)
    with _store_errors(f"setting {CHALLENGER} of {name} to version {version}", uri):
        client.get_model_version(name, str(version))
        client.set_registered_model_alias(name, CHALLENGER, str(version))


def history(lake: Lake, cfg: Any) -> list[dict[str, Any]]:
    """Every version of the registered model, newest first, with aliases, run id and ds."""
    from mlflow.exceptions import MlflowException

    client, uri = _client(lake, cfg)
    name = model_name(cfg)
    with _store_errors(f"listing versions of {name}", uri):
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if _is_missing(exc):
                return []
            raise
        by_version: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            by_version.setdefault(str(version), []).append(alias)
        versions = []
        token = None
        while True:
            page = client.search_model_versions(f"name='{name}'", page_token=token)
            versions.extend(page)
            token = page.token
            if not token:
                break
        run_ds: dict[str, str | None] = {}
        out = []
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            tags = dict(mv.tags or {})
            run_id = mv.run_id or tags.get("run_id")
            ds = tags.get("ds")
            if ds is None and run_id:
                if run_id not in run_ds:
                    try:
                        run_ds[run_id] = client.get_run(run_id).data.tags.get("ds")
                    except MlflowException as exc:
                        if exc.get_http_status_code() >= 500:
                            raise
                        run_ds[run_id] = None  # run deleted: the version outlived it
                ds = run_ds[run_id]
            created = dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=dt.UTC)
            out.append(
                {
                    "version": str(mv.version),
                    "aliases": sorted(by_version.get(str(mv.version), [])),
                    "run_id": run_id,
                    "ds": ds,
                    "created": created.isoformat(timespec="seconds"),
                    "status": mv.status,
                }
            )
    return out


# --- the promotion log -----------------------------------------------------------------------


def log_path(lake: Lake) -> str:
    try:
        return os.path.join(local_path(lake.mlflow_dir), LOG_NAME)
    except ValueError as exc:
        raise RegistryError(
            f"the promotion log needs a lake on local disk; {lake.root!r} is not"
        ) from exc


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
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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
def _locked(lake: Lake) -> Iterator[None]:
    """Serialise read-decide-append sequences on the log (advisory flock, local disk)."""
    with file_lock(log_path(lake) + ".lock"):
        yield


def apply_decision(
    lake: Lake, cfg: Any, decision: GateDecision, *, ds: str, challenger: str
) -> dict[str, Any]:
    """Act on a gate decision: on promote point `champion` at `challenger`; log it either way.

    Returns the appended record. Does not raise on a reject (see `validation.gate.enforce`).
    """
    with _locked(lake):
        current = version_for(lake, cfg, CHAMPION)
        before = str(current.version) if current is not None else None
        if decision.promote:
            set_champion(lake, cfg, challenger)
        record = {
            "time": now_iso(),
            "action": "promote" if decision.promote else "reject",
            "ds": ds,
            "challenger": str(challenger),
            "champion_before": before,
            "champion_after": str(challenger) if decision.promote else before,
            "criteria": [c.to_dict() for c in decision.criteria],
            "reason": decision.reason,
        }
        append_decision(lake, record)
    return record


def rollback(lake: Lake, cfg: Any, *, reason: str = "") -> tuple[str, str]:
    """Re-point `champion` to the previous champion in the log; returns (from, to)."""
    from mlflow.exceptions import MlflowException

    with _locked(lake):
        stack = champion_stack(read_log(lake))
        current = version_for(lake, cfg, CHAMPION)
        registry_top = str(current.version) if current is not None else None
        log_top = stack[-1] if stack else None
        if registry_top != log_top:
            raise RollbackError(
                f"the registry's {CHAMPION} of {model_name(cfg)} is {registry_top or 'unset'}"
                f" but the promotion log ({log_path(lake)}) says {log_top or 'none'};"
                " fix the alias or the log before rolling back"
            )
        if len(stack) < 2:
            raise RollbackError(
                f"no previous champion to roll back to: {model_name(cfg)} has"
                f" {'only champion ' + stack[-1] if stack else 'no champion'} in the promotion log"
            )
        from_version, to_version = stack[-1], stack[-2]
        try:
            set_champion(lake, cfg, to_version)
        except MlflowException as exc:
            if _is_missing(exc):
                raise RollbackError(
                    f"previous champion version {to_version} of {model_name(cfg)}"
                    f" no longer exists in the registry: {exc}"
                ) from exc
            raise
        append_decision(
            lake,
            {
                "time": now_iso(),
                "action": "rollback",
                "ds": None,
                "challenger": None,
                "champion_before": from_version,
                "champion_after": to_version,
                "criteria": [],
                "reason": reason or f"rollback from version {from_version} to {to_version}",
            },
        )
    return from_version, to_version
