"""gate_alert step: after publish, fail loudly when the day's promotion gate rejected.

The promote step never stops the day: on a rejection it records the decision (promotion log and
`warehouse/reports/ds=<ds>/promote.json`), and rank, export and publish build and publish today's
pages with the champion. This last step reads that decision and, for a rejection, runs the
configured alert hook (`gate.alert_command`, see docs/operations.md) and raises `GateRejected`
listing every failed criterion with both values and its interval, so the Airflow run (and
`homepage pipeline`'s exit code) shows the rejection while the pages are fresh. A rejection is
final (the same models on the same rows decide the same way again), so inside an Airflow task
it fails the task without its retries.
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import subprocess
import sys
from typing import Any

from jobs.core import io
from jobs.core.config import Config
from jobs.core.errors import GateError, cut
from jobs.core.lake import Lake
from jobs.daily.promotion_log import decision_path
from validation.gate import GateDecision, GateRejected

log = logging.getLogger(__name__)

ALERT_TIMEOUT_S = 60.0


@functools.cache
def _final_rejection() -> type[GateRejected]:
    from airflow.sdk.exceptions import AirflowFailException

    class FinalGateRejected(GateRejected, AirflowFailException):
        """A GateRejected that Airflow fails without retrying (AirflowFailException)."""

    return FinalGateRejected


def final(exc: GateRejected) -> GateRejected:
    """`exc`, made an AirflowFailException when running inside an Airflow task (its SDK is
    loaded): a retry would reach the same decision and send the alert once more."""
    if "airflow.sdk" not in sys.modules:
        return exc
    return _final_rejection()(exc.decision, exc.challenger_version, exc.champion_version, exc.note)


def send_alert(command: str, message: str, env: dict[str, str]) -> str:
    """Run the alert hook `command` (split like a shell line, not run by a shell) with
    `message` on stdin and `env` added to the environment; what happened, in a few words.
    A failing hook is logged and reported, never raised: the rejection is raised anyway."""
    if not command.strip():
        return "no alert hook configured (gate.alert_command)"
    try:
        proc = subprocess.run(
            shlex.split(command),
            input=message,
            text=True,
            env=os.environ | env,
            capture_output=True,
            timeout=ALERT_TIMEOUT_S,
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        log.error("gate.alert_command %s failed: %s", cut(command), exc)
        return f"alert hook {cut(command, 80)} failed: {cut(str(exc), 120)}"
    if proc.returncode != 0:
        log.error(
            "gate.alert_command %s exited %d: %s", cut(command), proc.returncode, cut(proc.stderr)
        )
        return f"alert hook {cut(command, 80)} exited {proc.returncode}"
    return f"alert hook {cut(command, 80)} ran"


def run(lake: Lake, ds: str, cfg: Config) -> dict[str, Any]:
    path = decision_path(lake, ds)
    if not io.exists(path):
        raise GateError(
            f"no promotion gate decision for ds={ds} at {path}: run the promote step for this"
            " ds first"
        )
    record = io.read_json(path)
    if record.get("action") != "reject":
        return {"ds": ds, "action": str(record.get("action")), "alert": False}
    decision = GateDecision.from_dict(
        {"promote": False, "reason": record["reason"], "criteria": record["criteria"]}
    )
    serving = record["champion_after"]
    note = (
        f"today's pages (ds={ds}) were ranked with champion {serving or 'none'}; decision: {path}"
    )
    rejected = GateRejected(decision, str(record["challenger"]), record["champion_before"], note)
    outcome = send_alert(
        cfg.gate.alert_command,
        str(rejected),
        {
            "HOMEPAGE_GATE_DS": ds,
            "HOMEPAGE_GATE_CHALLENGER": str(record["challenger"]),
            "HOMEPAGE_GATE_CHAMPION": "" if serving is None else str(serving),
            "HOMEPAGE_GATE_FAILED": ",".join(c.name for c in decision.failed),
            "HOMEPAGE_GATE_DECISION": path,
            "HOMEPAGE_LAKE": lake.root,
        },
    )
    log.error("%s (%s)", rejected, outcome)
    raise final(
        GateRejected(
            decision, rejected.challenger_version, rejected.champion_version, note + f"; {outcome}"
        )
    )
