"""The gate_alert step: silent after a promotion, loud (and the alert hook run) after a
rejection, and last in `homepage pipeline`, so a rejection is raised after publishing."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

from jobs.core import io
from jobs.core.config import load_config
from jobs.core.errors import GateError
from jobs.core.lake import Lake
from jobs.daily import gate_alert, pipeline
from jobs.daily.promotion_log import decision_path
from validation.gate import GateRejected, Tolerances, decide

DS = "2026-01-06"
CHAMPION = {"click.auc": 0.75, "ndcg": 0.40, "click.ece": 0.02}


def _record(challenger: dict[str, float], intervals: dict[str, tuple[float, float]]) -> dict:
    d = decide(challenger, CHAMPION, Tolerances(), data_checks_passed=True, intervals=intervals)
    return {
        "time": "2026-01-06T00:00:00+00:00",
        "action": "promote" if d.promote else "reject",
        "ds": DS,
        "challenger": "2",
        "champion_before": "1",
        "champion_after": "2" if d.promote else "1",
        "criteria": d.to_dict()["criteria"],
        "reason": d.reason,
    }


def test_no_decision_names_the_way_out(tmp_path: Any) -> None:
    with pytest.raises(GateError, match=f"no promotion gate decision for ds={DS}.*promote step"):
        gate_alert.run(Lake(str(tmp_path)), DS, load_config(None, None))


def test_a_promotion_raises_nothing(tmp_path: Any) -> None:
    lake = Lake(str(tmp_path))
    io.write_json(decision_path(lake, DS), _record(CHAMPION, {}))
    got = gate_alert.run(lake, DS, load_config(None, None))
    assert got == {"ds": DS, "action": "promote", "alert": False}


def test_a_rejection_runs_the_hook_and_raises_every_failed_criterion(tmp_path: Any) -> None:
    lake = Lake(str(tmp_path))
    record = _record(
        dict(CHAMPION, **{"click.auc": 0.6, "ndcg": 0.2}),
        {"click.auc": (-0.2, -0.1), "ndcg": (-0.3, -0.1), "click.ece": (-0.01, 0.01)},
    )
    io.write_json(decision_path(lake, DS), record)
    out = tmp_path / "alert.json"
    hook = (
        "import json, os, sys; json.dump({'stdin': sys.stdin.read(), 'failed': "
        "os.environ['HOMEPAGE_GATE_FAILED'], 'ds': os.environ['HOMEPAGE_GATE_DS']}, "
        "open(sys.argv[1], 'w'))"
    )
    command = f"{sys.executable} -c {json.dumps(hook)} {out}"
    cfg = load_config(None, {"gate.alert_command": command})
    with pytest.raises(GateRejected) as info:
        gate_alert.run(lake, DS, cfg)
    message = str(info.value)
    lines = message.splitlines()
    assert lines[0] == "promotion gate rejected challenger 2 (champion: 1); failed criteria:"
    assert [line.split(":")[0] for line in lines[1:3]] == ["  - click.auc", "  - ndcg"]
    assert "challenger - champion interval [-0.2, -0.1]" in lines[1]
    assert f"today's pages (ds={DS}) were ranked with champion 1" in lines[3]
    assert lines[3].endswith("ran")
    sent = json.loads(out.read_text())
    assert sent["ds"] == DS and sent["failed"] == "click.auc,ndcg"
    assert sent["stdin"].startswith("promotion gate rejected challenger 2")


def test_a_failing_hook_is_named_and_the_rejection_still_raised(tmp_path: Any) -> None:
    lake = Lake(str(tmp_path))
    io.write_json(decision_path(lake, DS), _record(dict(CHAMPION, ndcg=0.1), {}))
    cfg = load_config(None, {"gate.alert_command": f"{sys.executable} -c 'raise SystemExit(3)'"})
    with pytest.raises(GateRejected, match="exited 3"):
        gate_alert.run(lake, DS, cfg)


def test_pipeline_publishes_before_it_raises_the_rejection(monkeypatch: Any) -> None:
    ran = []

    def step(name: str, *args: Any) -> dict[str, Any]:
        ran.append(name)
        if name == "gate_alert":
            raise GateRejected(decide({}, None, Tolerances(), data_checks_passed=False), "2", "1")
        return {"seconds": 0.0}

    monkeypatch.setattr(pipeline, "run_step", step)
    with pytest.raises(GateRejected):
        pipeline.run_pipeline("unused", DS, progress=lambda _: None)
    assert ran == [*pipeline.STEP_NAMES] and ran[-2:] == ["publish", "gate_alert"]
    assert ran.index("promote") < ran.index("rank")
