"""The evaluation lake: links to the source's input tables, and outputs only the current code
wrote (a re-run after a code change starts afresh instead of measuring stale tables)."""

from __future__ import annotations

import os

import pytest

from jobs.core.lake import Lake
from jobs.experiments import evaluation_lake as lake_setup
from jobs.experiments.evaluation_lake import CODE_STAMP, evaluation_lake


def _source(tmp_path) -> Lake:
    root = tmp_path / "lake"
    for table in ("events", "items"):
        (root / table / "ds=2026-01-01").mkdir(parents=True)
        (root / table / "ds=2026-01-01" / "part.parquet").write_bytes(b"x")
    return Lake(str(root))


def _write_outputs(work: str) -> None:
    os.makedirs(os.path.join(work, "warehouse", "features"), exist_ok=True)
    with open(os.path.join(work, "warehouse", "features", "_SUCCESS"), "w"):
        pass


def test_outputs_of_the_current_code_are_reused(tmp_path):
    lake, work = _source(tmp_path), str(tmp_path / "_eval" / "2026-01-10-abcdef12")
    evaluation_lake(lake, work)
    assert os.path.islink(os.path.join(work, "events")) and os.path.islink(
        os.path.join(work, "items")
    )
    _write_outputs(work)
    said: list[str] = []
    evaluation_lake(lake, work, say=said.append)
    assert os.path.exists(os.path.join(work, "warehouse", "features", "_SUCCESS"))
    assert said == []


@pytest.mark.parametrize("stamp", ["0" * 64, None])
def test_outputs_of_other_code_are_removed_and_the_source_is_untouched(tmp_path, stamp):
    lake, work = _source(tmp_path), str(tmp_path / "_eval" / "2026-01-10-abcdef12")
    evaluation_lake(lake, work)
    _write_outputs(work)
    if stamp is None:  # written before lakes recorded their code
        os.remove(os.path.join(work, CODE_STAMP))
    else:
        with open(os.path.join(work, CODE_STAMP), "w") as f:
            f.write(stamp)
    said: list[str] = []
    evaluation_lake(lake, work, say=said.append)
    assert not os.path.exists(os.path.join(work, "warehouse"))
    assert len(said) == 1 and "written by other code (warehouse)" in said[0]
    # the links and what they point to survive
    assert os.path.islink(os.path.join(work, "events"))
    assert (tmp_path / "lake" / "events" / "ds=2026-01-01" / "part.parquet").exists()
    with open(os.path.join(work, CODE_STAMP)) as f:
        assert f.read().strip() == lake_setup.code_fingerprint()


def test_a_code_change_changes_the_fingerprint(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    for d in ("jobs", "models", "conf"):
        (repo / d).mkdir(parents=True)
    (repo / "models" / "ranking.py").write_text("A = 1\n")
    (repo / "jobs" / "cli").mkdir()
    (repo / "jobs" / "cli" / "main.py").write_text("B = 1\n")
    (repo / "conf" / "default.yaml").write_text("page: {}\n")
    monkeypatch.setattr(lake_setup, "REPO", repo)
    before = lake_setup.code_fingerprint()
    (repo / "jobs" / "cli" / "main.py").write_text("B = 2\n")  # an entry point: same evaluation
    assert lake_setup.code_fingerprint() == before
    (repo / "models" / "ranking.py").write_text("A = 2\n")
    assert lake_setup.code_fingerprint() != before
    (repo / "models" / "ranking.py").write_text("A = 1\n")
    (repo / "conf" / "default.yaml").write_text("page: {slots: 5}\n")
    assert lake_setup.code_fingerprint() != before


def test_a_directory_with_real_input_tables_is_not_an_evaluation_lake(tmp_path):
    lake = _source(tmp_path)
    other = tmp_path / "other"
    (other / "events").mkdir(parents=True)
    _write_outputs(str(other))
    with pytest.raises(ValueError, match="not an evaluation lake: its input table"):
        evaluation_lake(lake, str(other))
    assert (other / "warehouse" / "features" / "_SUCCESS").exists()  # nothing removed
