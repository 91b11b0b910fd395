"""MLflow set-up: SQLite + local artifacts under the lake by default, a server URI on a cluster."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from jobs.core.config import Config
from jobs.core.errors import RegistryError
from jobs.core.lake import Lake, is_local
from jobs.core.locks import file_lock


class TrackingUnavailable(RegistryError):
    """The MLflow tracking store could not be reached; the task fails and Airflow retries it."""


def tracking_uri(lake: Lake, cfg: Config) -> str:
    if cfg.mlflow.tracking_uri:
        return cfg.mlflow.tracking_uri
    if not is_local(lake.root):
        raise ValueError("mlflow.tracking_uri must be set when the lake is not on local disk")
    os.makedirs(lake.mlflow_dir, exist_ok=True)
    return f"sqlite:///{os.path.join(lake.mlflow_dir, 'mlflow.db')}"


@contextlib.contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Serialise the first touches of a SQLite store between processes: MLflow creates and
    migrates the schema on first use, and two evaluations starting at once on a new lake would
    both migrate it (`duplicate column name`) or both create the experiment. The lock is a file
    next to the database (`<db>.lock`); other stores need none."""
    prefix = "sqlite:///"
    db = uri[len(prefix) :] if uri.startswith(prefix) else ""
    if not db or db == ":memory:":
        yield
        return
    with file_lock(os.path.abspath(db) + ".lock"):
        yield


def experiment(lake: Lake, cfg: Config, name: str | None = None) -> Any:
    """Configure MLflow for this lake and return the experiment id (created on first use)."""
    import logging

    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import mlflow

    uri = tracking_uri(lake, cfg)
    mlflow.set_tracking_uri(uri)
    exp_name = name or cfg.mlflow.experiment
    try:
        with _first_use_lock(uri):
            exp = mlflow.get_experiment_by_name(exp_name)
            if exp is not None:
                return exp.experiment_id
            location = None
            if uri.startswith("sqlite:"):
                location = "file://" + os.path.join(lake.mlflow_dir, "artifacts")
            return mlflow.create_experiment(exp_name, artifact_location=location)
    except Exception as exc:  # the store itself is down: say so plainly
        raise TrackingUnavailable(
            f"MLflow tracking store {uri} is unavailable (unreachable or failing: check "
            f"mlflow.tracking_uri and that the store is up): {type(exc).__name__}: {exc}"
        ) from exc
