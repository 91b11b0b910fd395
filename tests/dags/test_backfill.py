"""Backfill (issue 8, point 2): a 7-day Airflow backfill of homepage_daily on a generated lake
gives exactly the outputs of seven single runs of those days, and re-running a day changes
nothing.

Lake A is backfilled through Airflow: `airflow backfill create` (the real CLI) writes one
backfill dag run per day, with the lake and the config overrides in the run conf, and
`jobs.runner.backfill.run_backfill(executor="inline")` runs them in the backfill's order in this
process, with the loop of `dag.test()` (the scheduler's `DagRun.update_state` picks the ready
task, the Task SDK runs it). `homepage backfill`'s default executor, the real `airflow
scheduler` (LocalExecutor, one process and one Spark JVM per task), runs the same dag runs the
same way but several times slower (a process, imports and a Spark JVM per task); its test
(two days, through the CLI) is the last of the slow tests.

Lake B, an identical copy of the generated input, gets seven single runs of the same days, in
order, with `jobs.daily.pipeline.run_pipeline` (the DAG's steps in one process, without Airflow).

The seven-day tests take ~25 min on this 2-core machine (~75 s a day and lake in steady state,
most of it build_features' Spark jobs and their validations; the first days also build the label
window's feature tables): more than `make test` can carry, so they are marked slow and run with
`pytest -m slow tests/dags/test_backfill.py`. The fast tests at the end (CLI input checks, the LMDB
export's byte determinism, the promotion-log history a re-run relies on) run in `make test`.

Every output file of both lakes is reduced to a content checksum (`lake_checksums`): Spark's
part files (named with a random UUID) by their rows, the LMDB key-value export by its keys and
values as well as by its bytes (the manifest's sha256), everything else by its bytes. Left out,
because they differ between any two runs of the same day: wall-clock times and durations in
the JSON reports, MLflow run ids, the lake's own absolute path, and MLflow's store (SQLite and
artefacts keyed by run ids; the registry is compared through its champion instead).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import SMALL_LAKE_OVERRIDES

from jobs.daily.pipeline import STEP_NAMES

# Dates no other test of the session uses: all tests share one Airflow metadata DB, and a
# backfill refuses logical dates taken by runs of another ds.
START = "2025-05-01"
GEN_DAYS = 11  # events 2025-05-01 .. 2025-05-11
DATES = [f"2025-05-{d:02d}" for d in range(6, 13)]  # ds 2025-05-06 .. 2025-05-12: 7 days
MIDDLE = DATES[3]
OVERRIDES: dict[str, object] = {
    **SMALL_LAKE_OVERRIDES,
    "scoring.w_grid_steps": 2,
    "engagement.n_estimators": 10,
    # every day promotes (the gate has its own tests in test_train_promote.py), so every day
    # ranks, exports and publishes, and a re-run of a past day could replace the champion
    "gate.auc_drop": 1.0,
    "gate.ndcg_drop": 1.0,
    "gate.ece_rise": 1.0,
}

# JSON keys whose values are wall-clock times, durations or MLflow run ids
VOLATILE_KEYS = frozenset(
    {"time", "created_at", "timings", "run_id", "mlflow_run_id", "mf_fit_seconds"}
)


def _volatile(key: str) -> bool:
    return key in VOLATILE_KEYS or key.endswith(("_s", "_seconds"))


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not _volatile(k)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rows_checksum(files: list[str]) -> str:
    """The rows of a Spark-written Parquet directory, whatever their split into part files."""
    import pyarrow.parquet as pq

    schema, rows = "", []
    for f in files:
        table = pq.ParquetFile(f).read()
        schema = schema or str(table.schema.remove_metadata())
        rows.extend(repr(r) for r in table.to_pylist())
    return _sha(schema.encode() + b"\n" + "\n".join(sorted(rows)).encode())


def _lmdb_checksum(path: str) -> str:
    """Keys and values of every named database of an LMDB file."""
    import lmdb

    h = hashlib.sha256()
    env = lmdb.open(path, subdir=False, readonly=True, lock=False, max_dbs=64)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        for name in names:
            with env.begin(db=env.open_db(name, create=False)) as txn:
                for k, v in txn.cursor():
                    h.update(name + b"/" + bytes(k) + b"\0" + bytes(v) + b"\0")
    finally:
        env.close()
    return f"{len(names)} dbs:{h.hexdigest()}"


def lake_checksums(root: str) -> dict[str, str]:
    """A content checksum per output (and input) file of a lake, by path relative to it."""
    root = os.path.abspath(root)
    out: dict[str, str] = {}

    def json_bytes(obj) -> bytes:
        return json.dumps(_strip(obj), sort_keys=True).replace(root, "<lake>").encode()

    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))  # no staging leftovers
        if rel == "_mlflow":
            with open(os.path.join(d, "promotions.jsonl")) as f:
                out["_mlflow/promotions.jsonl"] = _sha(json_bytes([json.loads(x) for x in f]))
            dirs[:] = []
            continue
        parts = sorted(f for f in files if f.startswith("part-"))
        if parts:
            key = os.path.join(rel, "part-*")
            out[key] = _rows_checksum([os.path.join(d, f) for f in parts])
        for f in files:
            if f in parts or f.startswith(".") or f in ("_SUCCESS", "pages.lmdb-lock"):
                continue
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                data = fh.read()
            if f.endswith(".json"):
                data = json_bytes(json.loads(data))
            elif f.endswith(".lmdb"):
                out[os.path.join(rel, f + "#content")] = _lmdb_checksum(path)
            out[os.path.join(rel, f)] = _sha(data)
    return out


def _diff(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _registry(root: str) -> dict[str, object]:
    """The champion (by the bundle it serves) and the number of registered versions."""
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.daily.registry import history, version_for

    lake, cfg = Lake(root), load_config(None, OVERRIDES)
    champion = version_for(lake, cfg, "champion")
    tags = dict(champion.tags or {})
    return {
        "champion": str(champion.version),
        "champion_ds": tags.get("ds"),
        "champion_bundle": os.path.relpath(tags["bundle"], root),
        "versions": len(history(lake, cfg)),
    }


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> str:
    from jobs.inputs.generate import generate_lake

    src = str(tmp_path_factory.mktemp("backfill") / "generated")
    generate_lake(src, users=1500, items=300, days=GEN_DAYS, seed=3, start=START)
    return src


@pytest.fixture(scope="module")
def backfilled(generated, spark):
    """(lake A: backfilled through Airflow, its run records; lake B: seven single runs)."""
    from jobs.daily.pipeline import run_pipeline
    from jobs.runner.backfill import run_backfill

    lake_a, lake_b = generated + "-A", generated + "-B"
    shutil.copytree(generated, lake_a)
    shutil.copytree(generated, lake_b)
    runs = run_backfill(
        lake_a,
        DATES[0],
        DATES[-1],
        overrides=OVERRIDES,
        home=os.environ["PYTEST_AIRFLOW_HOME"],
        executor="inline",
        progress=lambda _m: None,
    )
    for ds in DATES:
        run_pipeline(lake_b, ds, OVERRIDES, progress=lambda _m: None)
    return lake_a, lake_b, runs


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(5400)  # the module's lakes are built in the first test's setup
def test_backfill_makes_one_successful_airflow_run_per_day_in_order(backfilled):
    _, _, runs = backfilled
    assert [r["ds"] for r in runs] == DATES
    for r in runs:
        # the run for ds covers [ds - 1, ds): its logical date is the day before
        logical = dt.date.fromisoformat(r["ds"]) - dt.timedelta(days=1)
        assert r["logical_date"] == logical.isoformat()
        assert r["run_id"] == f"backfill__{r['ds']}T00:00:00+00:00"
        assert r["state"] == "success", r
        assert r["tasks"] == dict.fromkeys(STEP_NAMES, "success")


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(5400)  # the module's lakes are built in the first test's setup
def test_backfill_outputs_equal_seven_single_runs(backfilled):
    from jobs.core.config import load_config

    lake_a, lake_b, _ = backfilled
    a, b = lake_checksums(lake_a), lake_checksums(lake_b)
    # the run conf reached the tasks: lake A holds every day's outputs, made with the overrides
    config_hash = load_config(None, OVERRIDES).hash()
    for ds in DATES:
        assert f"warehouse/features/user_activity/ds={ds}/part-*" in a
        assert f"warehouse/models/ds={ds}/{config_hash[:8]}/engagement/model.json" in a
        assert f"warehouse/pages/ds={ds}/pages.parquet" in a
        assert f"exports/ds={ds}/pages.lmdb#content" in a
        manifests = []
        for lake in (lake_a, lake_b):
            with open(os.path.join(lake, "exports", f"ds={ds}", "MANIFEST.json")) as f:
                manifests.append(json.load(f))
        assert manifests[0]["config_hash"] == config_hash
        # the manifest's own sha256 of pages.parquet and pages.lmdb: byte-identical exports
        assert manifests[0]["files"] == manifests[1]["files"]
        assert _strip(manifests[0]["model_versions"]) == _strip(manifests[1]["model_versions"])
    assert len(a) > 200
    assert _diff(a, b) == []
    with open(os.path.join(lake_a, "exports", "CURRENT")) as f:
        assert f.read().strip() == DATES[-1]
    assert (
        _registry(lake_a)
        == _registry(lake_b)
        == {
            "champion": "7",
            "champion_ds": DATES[-1],
            "champion_bundle": f"warehouse/models/ds={DATES[-1]}/{config_hash[:8]}",
            "versions": 7,
        }
    )


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(5400)  # the module's lakes are built in the first test's setup
@pytest.mark.parametrize("ds", [MIDDLE, DATES[-1]])
def test_rerunning_a_day_through_airflow_changes_nothing(backfilled, ds):
    """The middle day (a past day: the champion and CURRENT belong to a later one) and the
    newest day, each run again through Airflow (a backfill reprocessing a completed day)."""
    from jobs.runner.backfill import run_backfill

    lake_a, _, _ = backfilled
    before, registry = lake_checksums(lake_a), _registry(lake_a)
    runs = run_backfill(
        lake_a,
        ds,
        ds,
        overrides=OVERRIDES,
        home=os.environ["PYTEST_AIRFLOW_HOME"],
        executor="inline",
        reprocess="completed",
        progress=lambda _m: None,
    )
    assert [(r["ds"], r["state"]) for r in runs] == [(ds, "success")]
    # Every checksum is unchanged but the ingest report's: it says what this run ingested
    # (the first run: the day before ds; now: nothing, every partition is up to date)
    report = f"warehouse/reports/ds={ds}/ingest.json"
    assert _diff(before, lake_checksums(lake_a)) == [report]
    with open(os.path.join(lake_a, report)) as f:
        ingest = json.load(f)
    assert ingest["ingested"] == {} and ingest["up_to_date"][-1] == DATES[DATES.index(ds) - 1]
    assert _registry(lake_a) == registry  # no new version, the same champion
    with open(os.path.join(lake_a, "exports", "CURRENT")) as f:
        assert f.read().strip() == DATES[-1]


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(5400)  # the module's lakes are built in the first test's setup
def test_homepage_backfill_with_the_airflow_scheduler(generated, backfilled, tmp_path):
    """The operator's command: `homepage backfill` with its default executor, the Airflow
    scheduler (LocalExecutor) and the execution API server it starts and stops, in its own
    Airflow home; two days, whose outputs equal lake A's. Minutes per day: not in `make test`."""
    from jobs.core.config import load_config

    lake_a, _, _ = backfilled
    lake_c = str(tmp_path / "C")
    shutil.copytree(generated, lake_c)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}
    for key in [k for k in env if k.startswith("AIRFLOW__")]:
        del env[key]
    sets = [a for k, v in OVERRIDES.items() for a in ("--set", f"{k}={v}")]
    proc = subprocess.run(
        [sys.executable, "-m", "jobs.cli.main", "backfill", "--lake", lake_c, "--from", DATES[0]]
        + ["--to", DATES[1], "--timeout", "3000", *sets],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for ds in DATES[:2]:
        assert f"ds={ds}  logical_date=" in proc.stdout and ": success" in proc.stdout
    c = lake_checksums(lake_c)
    a = lake_checksums(lake_a)
    config_hash = load_config(None, OVERRIDES).hash()
    assert f"exports/ds={DATES[1]}/pages.lmdb#content" in c
    assert f"warehouse/models/ds={DATES[1]}/{config_hash[:8]}/mf_item.npz" in c
    # lake A went on to five more days: compare what C has, but CURRENT, the log and the
    # factorisations A's later days dropped from the cache (older than A's newest cutoff)
    cutoff = (
        dt.date.fromisoformat(DATES[-1])
        - dt.timedelta(days=load_config(None, OVERRIDES).training.label_days)
    ).isoformat()
    dropped = [k for k in c if k.startswith("warehouse/mf_cache/") and k not in a]
    assert dropped and all(k.split("/")[2] < f"ds={cutoff}" for k in dropped)
    shared = {
        k: v
        for k, v in c.items()
        if k not in ("exports/CURRENT", "_mlflow/promotions.jsonl", *dropped)
    }
    assert _diff(shared, {k: a.get(k) for k in shared}) == []


# --- fast checks of the pieces --------------------------------------------------------------


def test_backfill_command_rejects_bad_dates_with_one_line(tmp_path, capsys):
    from jobs.cli.main import main

    lake = str(tmp_path / "lake")
    assert main(["backfill", "--lake", lake, "--from", "2025-05-08", "--to", "2025-05-06"]) == 1
    assert "--from 2025-05-08 is after --to 2025-05-06" in capsys.readouterr().err
    future = (dt.date.today() + dt.timedelta(days=3)).isoformat()
    assert main(["backfill", "--lake", lake, "--from", "2025-05-06", "--to", future]) == 1
    assert "is in the future" in capsys.readouterr().err
    assert main(["backfill", "--lake", lake, "--from", "2025-5-6", "--to", "2025-05-06"]) == 1
    assert "ds must look like YYYY-MM-DD" in capsys.readouterr().err


def test_backfill_dates_are_the_ds_values_inclusive():
    from jobs.runner.backfill import backfill_dates

    assert backfill_dates("2025-05-06", "2025-05-08") == ["2025-05-06", "2025-05-07", "2025-05-08"]
    assert backfill_dates("2025-05-06", "2025-05-06") == ["2025-05-06"]


def test_the_same_export_written_twice_has_the_same_bytes(tmp_path):
    """The manifest's sha256 of pages.lmdb is a content checksum: LMDB pages are zeroed before
    use (meminit), or their unused bytes would be whatever memory held before."""
    from support.exports import DS, write

    from jobs.core.lake import Lake

    first = write(Lake(str(tmp_path / "a")), DS, users=[f"u{i}" for i in range(300)])
    second = write(Lake(str(tmp_path / "b")), DS, users=[f"u{i}" for i in range(300)])
    assert first["files"] == second["files"]


def test_past_day_reads_the_champions_of_its_time_from_the_promotion_log(tmp_path):
    from jobs.core.lake import Lake
    from jobs.daily.promotion_log import append_decision, past_day, same_decision

    lake = Lake(str(tmp_path / "lake"))

    def decide(ds, action, challenger, before):
        after = challenger if action == "promote" else before
        record = {
            "action": action,
            "ds": ds,
            "challenger": challenger,
            "champion_before": before,
            "champion_after": after,
            "criteria": [],
            "reason": "",
        }
        append_decision(lake, record)
        return record

    decide("2025-05-06", "promote", "1", None)
    decide("2025-05-07", "reject", "2", "1")
    last = decide("2025-05-09", "promote", "3", "1")
    append_decision(lake, {**last, "action": "rollback", "ds": None, "champion_after": "1"})
    # the newest decided day, and anything later, is not in the past: the live aliases apply
    assert past_day(lake, "2025-05-09") is None and past_day(lake, "2025-05-10") is None
    assert past_day(lake, "2025-05-06") == {
        "champion_before": None,
        "champion_after": "1",
        "decided": True,
    }
    assert past_day(lake, "2025-05-07") == {
        "champion_before": "1",
        "champion_after": "1",  # rejected: the champion stayed
        "decided": True,
    }
    # never decided: as of the newest earlier decision
    assert past_day(lake, "2025-05-08") == {
        "champion_before": "1",
        "champion_after": "1",
        "decided": False,
    }
    assert past_day(lake, "2025-05-01") == {
        "champion_before": None,
        "champion_after": None,
        "decided": False,
    }
    assert same_decision(lake, {**last, "time": "later"})
    assert not same_decision(lake, {**last, "challenger": "4"})
