"""The client side of the resident refresh worker (`jobs.refresh.server`): send one step to the
worker at `refresh.worker_url` and wait for its result."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from jobs.core.errors import OrchestrationError
from jobs.refresh.windows import NoExport, RefreshError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 3600.0  # a step's longest wait for its result; Airflow's own timeout governs


class RefreshWorkerError(OrchestrationError):
    """The refresh worker could not be reached, or a step failed there (named)."""


# ---------------------------------------------------------------- server


def call_step(
    url: str,
    step: str,
    lake_root: str,
    watermark: str,
    overrides: Any = None,
    config_path: str | None = None,
    *,
    timeout: float = REQUEST_TIMEOUT_S,
) -> dict[str, Any]:
    """Run one step on the worker at `url`; its result. The worker's log lines are logged here;
    NoExport and RefreshError come back as themselves, anything else as RefreshWorkerError."""
    body = json.dumps(
        {
            "step": step,
            "lake": lake_root,
            "watermark": watermark,
            "overrides": overrides,
            "config": config_path,
        },
        default=str,
    ).encode()
    req = urllib.request.Request(
        url.rstrip("/") + "/step",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            reply = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            reply = json.loads(exc.read())
        except ValueError:
            raise RefreshWorkerError(
                f"the refresh worker at {url} answered {exc.code} {exc.reason}"
            ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RefreshWorkerError(
            f"no refresh worker at {url} ({reason}); start one with `homepage refresh-server`, "
            "or clear refresh.worker_url to run the step in this process"
        ) from None
    for line in reply.get("log") or []:
        log.info("[worker] %s", line)
    if reply.get("ok"):
        log.info(
            "refresh %s ran on the worker at %s: %.1f s (%.1f s with the call)",
            step,
            url,
            reply.get("seconds", 0.0),
            time.perf_counter() - t0,
        )
        return reply["result"]
    kind, message = reply.get("type", ""), reply.get("error", "unknown error")
    if kind == "NoExport":
        raise NoExport(message)
    if kind == "RefreshError":
        raise RefreshError(message)
    raise RefreshWorkerError(
        f"refresh step {step} failed on the worker at {url}: {kind}: {message}"
    )
