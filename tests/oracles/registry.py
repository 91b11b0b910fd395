"""The gate decision applied to the registry and the promotion log in one call: how the tests
drive a promotion without the promote step (the step itself does it in jobs.daily.promote)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobs.core.lake import Lake
from jobs.daily.promotion_log import append_decision, locked, now_iso
from jobs.daily.registry import CHAMPION, set_champion, version_for

if TYPE_CHECKING:
    from validation.gate import GateDecision


def apply_decision(
    lake: Lake, cfg: Any, decision: GateDecision, *, ds: str, challenger: str
) -> dict[str, Any]:
    """Act on a gate decision: on promote point `champion` at `challenger`; log it either way.

    Returns the appended record. Does not raise on a reject (see `validation.gate.enforce`).
    """
    with locked(lake):
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
