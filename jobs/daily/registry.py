"""The MLflow model registry of the ranker (its promotion log is jobs/daily/promotion_log.py).

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
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from jobs.core.lake import Lake
from jobs.core.tracking import TrackingUnavailable
from jobs.daily.promotion_log import (
    RollbackError,
    append_decision,
    champion_stack,
    locked,
    log_path,
    now_iso,
    read_log,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

DEFAULT_MODEL_NAME = "homepage-ranker"
CHAMPION = "champion"
CHALLENGER = "challenger"


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


def rollback(lake: Lake, cfg: Any, *, reason: str = "") -> tuple[str, str]:
    """Re-point `champion` to the previous champion in the log; returns (from, to)."""
    from mlflow.exceptions import MlflowException

    with locked(lake):
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
