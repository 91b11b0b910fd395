"""The promotion gate: tolerances per metric family, data checks, no-champion, the error text."""

from __future__ import annotations

import json
import math

import pytest

from validation.gate import (
    DATA_CHECKS,
    GateDecision,
    GateRejected,
    Tolerances,
    decide,
    enforce,
)

CHAMPION = {
    "click.auc": 0.75,
    "purchase.auc": 0.80,
    "ndcg": 0.40,
    "carousel.ndcg@10": 0.50,
    "click.ece": 0.02,
    "click.pr_auc": 0.30,  # not gated
    "item.nnz": 1000.0,  # not gated
}
TOL = Tolerances()


def by_name(decision: GateDecision) -> dict[str, object]:
    return {c.name: c for c in decision.criteria}


def test_promotes_when_every_metric_is_within_tolerance_including_exactly_at_the_limit() -> None:
    challenger = {
        "click.auc": 0.74,  # exactly champion - 0.01
        "purchase.auc": 0.85,
        "ndcg": 0.39,  # exactly at the limit
        "carousel.ndcg@10": 0.55,
        "click.ece": 0.03,  # exactly champion + 0.01
        "click.pr_auc": 0.01,  # a big drop, but not gated
        "item.nnz": 1.0,
    }
    d = decide(challenger, CHAMPION, TOL, data_checks_passed=True)
    assert d.promote, d.reason
    assert d.failed == ()
    names = [c.name for c in d.criteria]
    assert names[0] == DATA_CHECKS
    assert set(names[1:]) == {"click.auc", "purchase.auc", "ndcg", "carousel.ndcg@10", "click.ece"}
    assert by_name(d)["click.auc"].limit == "challenger >= champion - 0.01"
    assert by_name(d)["click.ece"].limit == "challenger <= champion + 0.01"
    assert json.loads(json.dumps(d.to_dict()))["promote"] is True


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("click.auc", 0.7389, "challenger >= champion - 0.01"),
        ("ndcg", 0.3889, "challenger >= champion - 0.01"),
        ("carousel.ndcg@10", 0.4, "challenger >= champion - 0.01"),
        ("click.ece", 0.0311, "challenger <= champion + 0.01"),
    ],
)
def test_rejects_a_metric_past_its_tolerance(key: str, value: float, rule: str) -> None:
    challenger = dict(CHAMPION, **{key: value})
    d = decide(challenger, CHAMPION, TOL, data_checks_passed=True)
    assert not d.promote
    assert [c.name for c in d.failed] == [key]
    assert str(value) in d.reason and str(CHAMPION[key]) in d.reason and rule in d.reason
    with pytest.raises(GateRejected) as info:
        enforce(d, "7", "6")
    msg = str(info.value)
    assert msg.startswith("promotion gate rejected challenger")
    assert "7" in msg and "6" in msg
    failed_lines = [line for line in msg.splitlines() if line.startswith("  - ")]
    assert len(failed_lines) == 1 and failed_lines[0].startswith(f"  - {key}:")
    assert rule in failed_lines[0]


def test_rejection_lists_every_failed_criterion_on_its_own_line() -> None:
    challenger = dict(CHAMPION, **{"click.auc": 0.5, "ndcg": 0.1, "click.ece": 0.2})
    d = decide(
        challenger, CHAMPION, TOL, data_checks_passed=False, data_checks_detail="3 rows null"
    )
    assert not d.promote
    assert {c.name for c in d.failed} == {DATA_CHECKS, "click.auc", "ndcg", "click.ece"}
    with pytest.raises(GateRejected) as info:
        enforce(d, "3", "2")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("promotion gate rejected challenger 3")
    items = [line for line in lines[1:] if line.startswith("  - ")]
    assert len(items) == 4
    assert any(DATA_CHECKS in line and "3 rows null" in line for line in items)
    for key in ("click.auc", "ndcg", "click.ece"):
        assert sum(line.startswith(f"  - {key}:") for line in items) == 1


def test_failed_data_checks_reject_even_with_better_metrics() -> None:
    better = dict(CHAMPION, **{"click.auc": 0.9})
    d = decide(better, CHAMPION, TOL, data_checks_passed=False, data_checks_detail="schema drift")
    assert not d.promote
    assert [c.name for c in d.failed] == [DATA_CHECKS]
    assert "schema drift" in d.reason


def test_no_champion_promotes_when_data_checks_pass_and_not_otherwise() -> None:
    d = decide({"click.auc": 0.6, "click.ece": math.nan}, None, TOL, data_checks_passed=True)
    assert d.promote and d.reason == "no champion yet"
    assert by_name(d)["click.auc"].champion is None
    assert "click.ece" not in by_name(d)  # NaN on the only side: nothing to report
    d = decide({"click.auc": 0.6}, None, TOL, data_checks_passed=False)
    assert not d.promote and [c.name for c in d.failed] == [DATA_CHECKS]


def test_missing_or_nan_challenger_metric_fails_and_challenger_only_metric_passes() -> None:
    challenger = {k: v for k, v in CHAMPION.items() if k != "purchase.auc"}
    challenger["click.ece"] = math.nan
    challenger["add_to_cart.auc"] = 0.7  # champion never measured it
    d = decide(challenger, CHAMPION, TOL, data_checks_passed=True)
    assert {c.name for c in d.failed} == {"purchase.auc", "click.ece"}
    new = by_name(d)["add_to_cart.auc"]
    assert new.passed and new.champion is None
    # NaN becomes null in the JSON form
    as_json = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    ece = next(c for c in as_json["criteria"] if c["name"] == "click.ece")
    assert ece["challenger"] is None and ece["passed"] is False


def test_only_exact_last_parts_are_gated() -> None:
    champion = {"click.pr_auc": 0.9, "aucx": 0.9, "click.auc_lift": 0.9, "ece_total": 0.0}
    challenger = {k: 0.0 for k in champion} | {"ece_total": 1.0}
    d = decide(challenger, champion, TOL, data_checks_passed=True)
    assert d.promote and [c.name for c in d.criteria] == [DATA_CHECKS]


def test_custom_tolerances_and_validation() -> None:
    loose = Tolerances(auc_drop=0.1, ndcg_drop=0.0, ece_rise=0.0)
    d = decide(dict(CHAMPION, **{"click.auc": 0.66}), CHAMPION, loose, data_checks_passed=True)
    assert d.promote
    d = decide(dict(CHAMPION, **{"ndcg": 0.3999}), CHAMPION, loose, data_checks_passed=True)
    assert not d.promote
    with pytest.raises(ValueError, match="auc_drop"):
        Tolerances(auc_drop=-0.01)
    with pytest.raises(ValueError, match="ece_rise"):
        Tolerances(ece_rise=math.inf)


def test_non_numeric_metric_is_named() -> None:
    with pytest.raises(TypeError, match="click.auc"):
        decide({"click.auc": "high"}, CHAMPION, TOL, data_checks_passed=True)  # type: ignore[dict-item]


def test_enforce_passes_a_promotion() -> None:
    d = decide(CHAMPION, CHAMPION, TOL, data_checks_passed=True)
    enforce(d, "2", "1")  # no exception


# ---- intervals: a criterion fails only beyond both the tolerance and the bootstrap noise ----


@pytest.mark.parametrize(
    ("key", "value", "interval", "passed"),
    [
        # AUC 0.05 below the champion (tolerance 0.01)
        ("click.auc", 0.70, (-0.08, -0.02), False),  # the whole interval below -0.01: a drop
        ("click.auc", 0.70, (-0.12, 0.02), True),  # the interval reaches -0.01: noise
        ("click.auc", 0.70, (-0.09, -0.01), True),  # exactly at -tolerance: not beyond it
        ("click.auc", 0.745, (-0.03, -0.02), True),  # within tolerance on the point estimate
        ("ndcg", 0.30, (-0.15, -0.05), False),
        ("ndcg", 0.30, (-0.25, 0.05), True),
        # ECE 0.05 above the champion: lower is better, so the interval must lie above +0.01
        ("click.ece", 0.07, (0.02, 0.08), False),
        ("click.ece", 0.07, (-0.01, 0.11), True),
    ],
)
def test_a_drop_fails_only_beyond_both_tolerance_and_interval(
    key: str, value: float, interval: tuple[float, float], passed: bool
) -> None:
    challenger = dict(CHAMPION, **{key: value})
    intervals = {k: (0.0, 0.0) for k in CHAMPION} | {key: interval}
    d = decide(challenger, CHAMPION, TOL, data_checks_passed=True, intervals=intervals)
    c = by_name(d)[key]
    assert c.passed is passed and d.promote is passed
    assert c.interval == interval
    assert "95% interval of challenger - champion" in c.limit
    record = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    row = next(r for r in record["criteria"] if r["name"] == key)
    assert row["interval"] == list(interval)
    if not passed:
        assert f"interval [{interval[0]:.6g}, {interval[1]:.6g}]" in d.reason


def test_without_a_finite_interval_the_point_estimates_decide() -> None:
    challenger = dict(CHAMPION, **{"click.auc": 0.70})
    for intervals in (None, {"click.auc": (math.nan, math.nan)}):
        d = decide(challenger, CHAMPION, TOL, data_checks_passed=True, intervals=intervals)
        assert [c.name for c in d.failed] == ["click.auc"]
        assert d.failed[0].interval is None


def test_a_decision_round_trips_through_its_record() -> None:
    challenger = dict(CHAMPION, **{"click.auc": 0.70, "ndcg": 0.1})
    intervals = {"click.auc": (-0.08, -0.02), "ndcg": (-0.4, -0.2)}
    d = decide(challenger, CHAMPION, TOL, data_checks_passed=True, intervals=intervals)
    back = GateDecision.from_dict(json.loads(json.dumps(d.to_dict())))
    assert back == d
    assert str(GateRejected(back, "2", "1", "note")).endswith("\nnote")
