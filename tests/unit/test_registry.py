"""The model registry (aliases on a real SQLite MLflow store) and the append-only promotion log."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import pytest
from oracles.registry import apply_decision

from jobs.core.config import load_config
from jobs.core.lake import Lake
from jobs.core.tracking import TrackingUnavailable, experiment
from jobs.daily import promotion_log, registry
from validation.gate import Tolerances, decide


def constant_model() -> Any:
    """The smallest real pyfunc model: every row scores 0.5 (mlflow imported lazily: slow)."""
    import mlflow.pyfunc

    class ConstantModel(mlflow.pyfunc.PythonModel):
        def predict(self, context: Any, model_input: list[str], params: Any = None) -> list[float]:
            return [0.5] * len(model_input)

    return ConstantModel()


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty, migrated MLflow SQLite database: creating one costs seconds, copying it none."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return str(path)


@pytest.fixture()
def lake(tmp_path: Any, empty_store: str) -> Lake:
    lake = Lake(str(tmp_path / "lake"))
    os.makedirs(lake.mlflow_dir)
    shutil.copyfile(empty_store, os.path.join(lake.mlflow_dir, "mlflow.db"))
    return lake


@pytest.fixture()
def cfg() -> Any:
    return load_config()


def train(lake: Lake, cfg: Any, ds: str) -> str:
    """Log a tiny model in a run tagged with `ds`, register it; returns the version."""
    import mlflow

    with mlflow.start_run(experiment_id=experiment(lake, cfg), run_name=f"train-{ds}") as run:
        mlflow.set_tags({"ds": ds})
        info = mlflow.pyfunc.log_model(
            name="ranker", python_model=constant_model(), pip_requirements=["mlflow"]
        )
    return registry.register(
        lake, cfg, run_id=run.info.run_id, model_uri=info.model_uri, tags={"bundle": f"b-{ds}"}
    )


PASS = decide({"click.auc": 0.8}, {"click.auc": 0.8}, Tolerances(), data_checks_passed=True)
FAIL = decide({"click.auc": 0.5}, {"click.auc": 0.8}, Tolerances(), data_checks_passed=True)


def champion(lake: Lake, cfg: Any) -> str | None:
    mv = registry.version_for(lake, cfg, "champion")
    return None if mv is None else str(mv.version)


def test_register_sets_challenger_and_gate_moves_champion(lake: Lake, cfg: Any) -> None:
    assert registry.version_for(lake, cfg, "challenger") is None  # no registered model yet
    assert registry.history(lake, cfg) == []

    v1 = train(lake, cfg, "2024-01-01")
    assert v1 == "1"
    mv = registry.version_for(lake, cfg, "challenger")
    assert str(mv.version) == "1" and mv.aliases == ["challenger"]
    assert mv.tags["ds"] == "2024-01-01" and mv.tags["bundle"] == "b-2024-01-01"
    assert champion(lake, cfg) is None  # registered model exists, alias does not

    rec = apply_decision(lake, cfg, PASS, ds="2024-01-01", challenger=v1)
    assert rec["action"] == "promote" and rec["champion_before"] is None
    assert champion(lake, cfg) == "1"

    v2 = train(lake, cfg, "2024-01-02")
    assert v2 == "2" and str(registry.version_for(lake, cfg, "challenger").version) == "2"
    rec = apply_decision(lake, cfg, FAIL, ds="2024-01-02", challenger=v2)
    assert rec["action"] == "reject"
    assert rec["champion_before"] == rec["champion_after"] == "1"
    assert any(c["name"] == "click.auc" and not c["passed"] for c in rec["criteria"])
    assert champion(lake, cfg) == "1"  # a reject leaves the champion alone

    hist = registry.history(lake, cfg)
    assert [h["version"] for h in hist] == ["2", "1"]
    assert hist[0]["aliases"] == ["challenger"] and hist[1]["aliases"] == ["champion"]
    assert [h["ds"] for h in hist] == ["2024-01-02", "2024-01-01"]
    assert all(h["run_id"] and h["created"].endswith("+00:00") for h in hist)

    log = promotion_log.read_log(lake)
    assert [r["action"] for r in log] == ["promote", "reject"]
    assert all(set(promotion_log.RECORD_KEYS) <= set(r) for r in log)


def test_rollback_walks_back_through_champions(lake: Lake, cfg: Any) -> None:
    versions = []
    for day in ("2024-01-01", "2024-01-02", "2024-01-03"):
        v = train(lake, cfg, day)
        apply_decision(lake, cfg, PASS, ds=day, challenger=v)
        versions.append(v)
    assert champion(lake, cfg) == "3"

    assert registry.rollback(lake, cfg) == ("3", "2")
    assert champion(lake, cfg) == "2"
    assert registry.rollback(lake, cfg) == ("2", "1")
    assert champion(lake, cfg) == "1"
    with pytest.raises(registry.RollbackError, match="no previous champion"):
        registry.rollback(lake, cfg)
    assert champion(lake, cfg) == "1"

    log = promotion_log.read_log(lake)
    assert [r["action"] for r in log] == ["promote"] * 3 + ["rollback"] * 2
    assert (log[-1]["champion_before"], log[-1]["champion_after"]) == ("2", "1")
    assert promotion_log.champion_stack(log) == ["1"]

    # a promotion after a rollback stacks on the restored champion
    v4 = train(lake, cfg, "2024-01-04")
    apply_decision(lake, cfg, PASS, ds="2024-01-04", challenger=v4)
    assert registry.rollback(lake, cfg) == ("4", "1")


def test_rollback_with_a_single_champion_errors(lake: Lake, cfg: Any) -> None:
    with pytest.raises(registry.RollbackError, match="no previous champion"):
        registry.rollback(lake, cfg)
    v1 = train(lake, cfg, "2024-01-01")
    apply_decision(lake, cfg, PASS, ds="2024-01-01", challenger=v1)
    with pytest.raises(registry.RollbackError, match="only champion 1"):
        registry.rollback(lake, cfg)
    assert [r["action"] for r in promotion_log.read_log(lake)] == ["promote"]


def test_rollback_refuses_when_registry_and_log_disagree(lake: Lake, cfg: Any) -> None:
    for day in ("2024-01-01", "2024-01-02"):
        v = train(lake, cfg, day)
        apply_decision(lake, cfg, PASS, ds=day, challenger=v)
    v3 = train(lake, cfg, "2024-01-03")
    registry.set_champion(lake, cfg, v3)  # moved by hand, not through the gate
    with pytest.raises(registry.RollbackError, match="champion of homepage-ranker is 3.*says 2"):
        registry.rollback(lake, cfg)
    assert champion(lake, cfg) == "3"


def record(action: str = "promote", **extra: Any) -> dict[str, Any]:
    return {
        "action": action,
        "ds": "2024-01-01",
        "challenger": "1",
        "champion_before": None,
        "champion_after": "1",
        "criteria": [],
        "reason": "no champion yet",
    } | extra


def test_log_is_append_only(lake: Lake) -> None:
    promotion_log.append_decision(lake, record())
    promotion_log.append_decision(lake, record("reject", challenger="2", champion_before="1"))
    path = promotion_log.log_path(lake)
    with open(path, "rb") as f:
        before = f.read()
    promotion_log.append_decision(
        lake, record(challenger="3", champion_before="1", champion_after="3")
    )
    with open(path, "rb") as f:
        after = f.read()
    assert after.startswith(before) and after.count(b"\n") == 3
    log = promotion_log.read_log(lake)
    assert [r["challenger"] for r in log] == ["1", "2", "3"]
    assert all(r["time"].endswith("+00:00") for r in log)  # filled in, UTC


def test_append_rejects_incomplete_or_non_json_records(lake: Lake) -> None:
    with pytest.raises(ValueError, match="lacks reason"):
        promotion_log.append_decision(lake, {k: v for k, v in record().items() if k != "reason"})
    with pytest.raises(ValueError, match="action must be one of"):
        promotion_log.append_decision(lake, record("demote"))
    with pytest.raises(ValueError, match="strict JSON"):
        promotion_log.append_decision(lake, record(criteria=[{"challenger": float("nan")}]))
    assert not os.path.exists(promotion_log.log_path(lake))


def test_malformed_log_line_names_its_line_number(lake: Lake) -> None:
    promotion_log.append_decision(lake, record())
    path = promotion_log.log_path(lake)
    with open(path, "a") as f:
        f.write('{"action": "promote", "ds": \n')
    promotion_log.append_decision(lake, record())
    with pytest.raises(promotion_log.PromotionLogCorrupt, match=r"promotions\.jsonl line 2"):
        promotion_log.read_log(lake)


def test_log_line_missing_keys_names_its_line_number(lake: Lake) -> None:
    path = promotion_log.log_path(lake)
    with open(path, "w") as f:
        f.write(json.dumps(record() | {"time": "t"}) + "\n" + json.dumps({"action": "x"}) + "\n")
    with pytest.raises(promotion_log.PromotionLogCorrupt, match="line 2.*lacks"):
        promotion_log.read_log(lake)


def test_unreachable_tracking_store_is_tracking_unavailable(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = load_config(overrides=["mlflow.tracking_uri=http://127.0.0.1:9"])
    with pytest.raises(TrackingUnavailable, match=r"127\.0\.0\.1:9.*unavailable"):
        registry.register(lake, cfg, run_id="0" * 32, model_uri="runs:/x/ranker")
    with pytest.raises(TrackingUnavailable, match=r"127\.0\.0\.1:9"):
        registry.version_for(lake, cfg, "champion")
    with pytest.raises(TrackingUnavailable):
        registry.history(lake, cfg)


def test_store_failure_inside_registry_calls_is_classified(
    lake: Lake, cfg: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5xx-type store errors become TrackingUnavailable; caller (4xx) errors pass through."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
    from mlflow.tracking import MlflowClient

    def down(self: Any, name: str) -> Any:
        raise MlflowException("database is locked", error_code=TEMPORARILY_UNAVAILABLE)

    monkeypatch.setattr(MlflowClient, "get_registered_model", down)
    with pytest.raises(TrackingUnavailable, match="reading alias 'champion'.*database is locked"):
        registry.version_for(lake, cfg, "champion")

    def bad(self: Any, name: str) -> Any:
        raise MlflowException("bad name", error_code=INVALID_PARAMETER_VALUE)

    monkeypatch.setattr(MlflowClient, "get_registered_model", bad)
    with pytest.raises(MlflowException, match="bad name") as info:
        registry.version_for(lake, cfg, "champion")
    assert not isinstance(info.value, TrackingUnavailable)


def test_set_champion_to_unknown_version_errors(lake: Lake, cfg: Any) -> None:
    from mlflow.exceptions import MlflowException

    train(lake, cfg, "2024-01-01")
    with pytest.raises(MlflowException, match="not found|does not exist"):
        registry.set_champion(lake, cfg, "99")
    assert champion(lake, cfg) is None


def _first_use(root: str, out: str) -> None:
    from jobs.core.config import load_config as load
    from jobs.core.lake import Lake as L
    from jobs.core.tracking import experiment as exp

    with open(out, "w") as f:
        f.write(str(exp(L(root), load())))


def test_two_processes_starting_on_a_new_lake_share_one_store_and_experiment(tmp_path):
    # MLflow creates and migrates a new SQLite store on first use: two evaluations starting
    # at once on a new lake must not both migrate it or both create the experiment
    import multiprocessing as mp

    root = str(tmp_path / "lake")
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_first_use, args=(root, str(tmp_path / f"id{k}"))) for k in range(3)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    ids = {(tmp_path / f"id{k}").read_text() for k in range(3)}
    assert len(ids) == 1
