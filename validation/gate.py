"""The promotion gate: may a freshly trained challenger replace the serving champion?

Pure logic, no MLflow. The caller collects both models' offline metrics (same held-out data)
and the outcome of the training-data checks, and `decide` compares them metric by metric:

    <head>.auc     (last dotted part exactly `auc`)    higher is better, may drop by `auc_drop`
    <head>.ndcg*   (last dotted part starts `ndcg`)    higher is better, may drop by `ndcg_drop`
    <head>.ece     (last dotted part exactly `ece`)    lower is better, may rise by `ece_rise`

A criterion fails only when the drop is beyond its tolerance *and* beyond the noise: given the
paired-bootstrap interval of challenger − champion on the same held-out rows (`intervals`, from
`models.evaluation.holdout.paired_holdout_metrics`), a higher-is-better metric fails when the
point drop exceeds the tolerance and the whole interval lies below −tolerance (an ECE, when the
rise exceeds it and the whole interval lies above +tolerance). A metric without an interval
(none given, or NaN) is judged on the point estimates alone.

Every other key (`click.pr_auc`, `item.nnz`, ...) is ignored. A gated metric the champion has
but the challenger lacks (missing or NaN) fails; one only the challenger has passes, reported
with `champion=None`. Without a champion the challenger is promoted once the data checks pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from jobs.core.errors import GateError

DATA_CHECKS = "training_data_checks"
# Slack for float round-off, so a challenger exactly at the limit (0.74 vs 0.75 - 0.01) passes.
_EPS = 1e-9


@dataclass(frozen=True)
class Tolerances:
    """How much worse than the champion a challenger may be, per metric family (absolute)."""

    auc_drop: float = 0.01
    ndcg_drop: float = 0.01
    ece_rise: float = 0.01

    def __post_init__(self) -> None:
        for name in ("auc_drop", "ndcg_drop", "ece_rise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"gate tolerance {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"gate tolerance {name} must be finite and >= 0, got {value!r}")


@dataclass(frozen=True)
class Criterion:
    """One rule of the gate and how the challenger fared against it."""

    name: str
    challenger: float | None
    champion: float | None
    limit: str  # human-readable rule, e.g. "challenger >= champion - 0.01"
    passed: bool
    detail: str = ""
    # paired-bootstrap interval of challenger − champion (None: judged on point estimates)
    interval: tuple[float, float] | None = None

    def describe(self) -> str:
        text = (
            f"{self.name}: challenger={_fmt(self.challenger)} champion={_fmt(self.champion)}"
            f" (rule: {self.limit})"
        )
        if self.interval is not None:
            lo, hi = self.interval
            text += f"; challenger - champion interval [{_fmt(lo)}, {_fmt(hi)}]"
        return f"{text}; {self.detail}" if self.detail else text

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["challenger"] = _finite_or_none(self.challenger)
        out["champion"] = _finite_or_none(self.champion)
        if self.interval is not None:
            out["interval"] = [_finite_or_none(v) for v in self.interval]
        return out


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    criteria: tuple[Criterion, ...]
    reason: str

    @property
    def failed(self) -> tuple[Criterion, ...]:
        return tuple(c for c in self.criteria if not c.passed)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (NaN/inf become null), as written to the promotion log."""
        return {
            "promote": self.promote,
            "reason": self.reason,
            "criteria": [c.to_dict() for c in self.criteria],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        """The decision `to_dict` wrote (null values come back as None)."""
        criteria = []
        for c in data["criteria"]:
            interval = c.get("interval")
            criteria.append(
                Criterion(
                    name=c["name"],
                    challenger=c["challenger"],
                    champion=c["champion"],
                    limit=c["limit"],
                    passed=bool(c["passed"]),
                    detail=c.get("detail", ""),
                    interval=None if interval is None else tuple(interval),
                )
            )
        return cls(bool(data["promote"]), tuple(criteria), str(data["reason"]))


class GateRejected(GateError):
    """The gate rejected the challenger; the message lists every failed criterion."""

    def __init__(
        self,
        decision: GateDecision,
        challenger_version: str,
        champion_version: str | None,
        note: str = "",
    ) -> None:
        self.decision = decision
        self.challenger_version = challenger_version
        self.champion_version = champion_version
        self.note = note
        lines = [
            f"promotion gate rejected challenger {challenger_version} "
            f"(champion: {champion_version or 'none'}); failed criteria:"
        ]
        lines += [f"  - {c.describe()}" for c in decision.failed]
        if note:
            lines.append(note)
        super().__init__("\n".join(lines))


def _fmt(value: float | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.6g}"


def _finite_or_none(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _rule(key: str, tol: Tolerances) -> tuple[bool, float] | None:
    """(higher_is_better, tolerance) for a gated metric key, None for an ignored one."""
    last = key.rsplit(".", 1)[-1]
    if last == "auc":
        return True, tol.auc_drop
    if last.startswith("ndcg"):
        return True, tol.ndcg_drop
    if last == "ece":
        return False, tol.ece_rise
    return None


def _value(metrics: Mapping[str, float] | None, key: str, side: str) -> float | None:
    """The metric as a float, None when missing or NaN."""
    if metrics is None or key not in metrics or metrics[key] is None:
        return None
    raw = metrics[key]
    if isinstance(raw, bool):
        raise TypeError(f"{side} metric {key!r} must be a number, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{side} metric {key!r} must be a number, got {raw!r}") from exc
    return None if math.isnan(value) else value


def _metric_criterion(
    key: str,
    higher: bool,
    tol: float,
    challenger: float | None,
    champion: float | None,
    interval: tuple[float, float] | None,
    level: float,
) -> Criterion:
    sign = ">= champion -" if higher else "<= champion +"
    limit = f"challenger {sign} {tol:g}"
    if champion is None:
        return Criterion(key, challenger, None, "no champion value to compare", True)
    if challenger is None:
        return Criterion(key, None, champion, limit, False, "missing or NaN for the challenger")
    beyond = challenger < champion - tol - _EPS if higher else challenger > champion + tol + _EPS
    if interval is None or not all(math.isfinite(v) for v in interval):
        return Criterion(key, challenger, champion, limit, not beyond)
    lo, hi = interval
    noisy = hi >= -tol - _EPS if higher else lo <= tol + _EPS
    side = "below -" if higher else "above +"
    limit += f", unless the {level:.0%} interval of challenger - champion is not all {side}{tol:g}"
    return Criterion(
        key, challenger, champion, limit, not beyond or noisy, interval=(float(lo), float(hi))
    )


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    tolerances: Tolerances,
    *,
    data_checks_passed: bool,
    data_checks_detail: str = "",
    intervals: Mapping[str, tuple[float, float]] | None = None,
    level: float = 0.95,
) -> GateDecision:
    """Compare the challenger's metrics with the champion's (None: there is no champion yet);
    `intervals`: per gated metric, the `level` paired-bootstrap interval of challenger −
    champion."""
    criteria = [
        Criterion(
            DATA_CHECKS,
            1.0 if data_checks_passed else 0.0,
            None,
            "training data checks must pass",
            bool(data_checks_passed),
            data_checks_detail,
        )
    ]
    rules = {
        key: rule
        for key in [*challenger, *(champion or {})]
        if (rule := _rule(key, tolerances)) is not None
    }
    for key in sorted(rules):
        higher, tol = rules[key]
        cha = _value(challenger, key, "challenger")
        cpn = _value(champion, key, "champion")
        if cha is None and cpn is None:
            continue  # neither side measured it: nothing to compare, nothing to report
        interval = (intervals or {}).get(key)
        criteria.append(_metric_criterion(key, higher, tol, cha, cpn, interval, level))

    failed = [c for c in criteria if not c.passed]
    if failed:
        reason = "rejected: " + "; ".join(c.describe() for c in failed)
        return GateDecision(False, tuple(criteria), reason)
    if champion is None:
        return GateDecision(True, tuple(criteria), "no champion yet")
    return GateDecision(True, tuple(criteria), f"all {len(criteria)} criteria passed")


def enforce(decision: GateDecision, challenger_version: str, champion_version: str | None) -> None:
    """Raise `GateRejected` unless the decision is to promote."""
    if not decision.promote:
        raise GateRejected(decision, challenger_version, champion_version)
