"""The product's exceptions: one base, one subclass per stage.

Catch `HomepageError` to catch anything the product raises on purpose; catch a stage's class to
handle that stage. Every message names the thing, the value (cut with `cut`) and the way out.
Specific errors (`SchemaError`, `GateRejected`, `MFFitError`, ...) subclass their stage's class,
and keep the built-in base they always had (ValueError, RuntimeError) so older handlers still
catch them.
"""

from __future__ import annotations

from typing import Any

MAX_VALUE_CHARS = 200


def cut(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """`repr(value)` cut to `limit` characters, with how much was left out: messages stay one
    readable line even when the value is a 1 MB id."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class HomepageError(Exception):
    """Base of every error the product raises on purpose."""


class ConfigError(HomepageError, ValueError):
    """A config file, override or DAG param is unknown, badly typed or out of range."""


class LakeError(HomepageError, RuntimeError):
    """A lake's files are missing, incomplete or cannot be written."""


class InputError(HomepageError, ValueError):
    """A dataset cannot be generated or imported as asked."""


class IngestError(HomepageError, RuntimeError):
    """Raw events or the catalogue cannot be accepted (the step fails; quarantine is kept)."""


class DataValidationError(HomepageError, RuntimeError):
    """A Great Expectations suite failed on a table the pipeline wrote or read."""


class FeatureError(HomepageError, RuntimeError):
    """A feature table cannot be built."""


class TrainingError(HomepageError, RuntimeError):
    """A model cannot be trained: no data, a failed fit, an inconsistent training set."""


class RegistryError(HomepageError, RuntimeError):
    """The MLflow model registry or the promotion log cannot be read or written as asked."""


class GateError(HomepageError, RuntimeError):
    """The promotion gate cannot run, or rejected the challenger."""


class RankError(HomepageError, RuntimeError):
    """Pages cannot be built for a day."""


class ExportError(HomepageError):
    """An export is invalid or cannot be written or published."""


class ServingError(HomepageError):
    """The lookup server cannot start or serve."""


class RefreshError(HomepageError):
    """An intra-day refresh cannot run for this watermark."""


class EvaluationError(HomepageError, RuntimeError):
    """An offline evaluation, experiment or simulation cannot run as asked."""


class OrchestrationError(HomepageError, RuntimeError):
    """Airflow, Spark or a helper process did not do what a run needs."""


class BenchError(HomepageError, RuntimeError):
    """A benchmark's set-up or measured run failed."""
