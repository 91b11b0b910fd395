"""training.label_windows: the engagement examples of the older label windows (jobs.daily.train).

`window_dataset` is replaced by a stand-in that records the windows asked for, so these tests
pin which windows are used and when the list ends, without a lake."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest

from jobs.core.config import ConfigError, load_config
from jobs.daily import train
from jobs.daily.training_data import TrainingDataError


def _stand_in(monkeypatch, fail_before: str | None = None, other_source_at: str | None = None):
    asked: list[tuple[str, str]] = []

    def window_dataset(lake, start, end, cfg):
        asked.append((start, end))
        if fail_before is not None and start < fail_before:
            raise TrainingDataError("too little history")
        source = "logged_impressions" if start == other_source_at else "time_window_candidates"
        return SimpleNamespace(
            examples=pd.DataFrame({"user_id": ["u"], "window": [start]}),
            source=source,
            features_seconds=1.0,
            mf_seconds=2.0,
        )

    monkeypatch.setattr(train, "window_dataset", window_dataset)
    return asked


def _run(windows: int) -> tuple[pd.DataFrame, list[str], dict[str, float]]:
    cfg = load_config(None, {"training.label_days": 7, "training.label_windows": windows})
    newest = pd.DataFrame({"user_id": ["u"], "window": ["2024-03-03"]})
    timings = {"cutoff_features_s": 0.0, "mf_cutoff_s": 0.0}
    examples, starts = train._older_windows(
        None, "2024-03-03", cfg, newest, "time_window_candidates", timings
    )
    return examples, starts, timings


def test_older_windows_are_appended_each_as_of_its_own_start(monkeypatch):
    asked = _stand_in(monkeypatch)
    examples, starts, timings = _run(3)
    assert asked == [("2024-02-25", "2024-03-03"), ("2024-02-18", "2024-02-25")]
    assert starts == ["2024-03-03", "2024-02-25", "2024-02-18"]
    assert examples["window"].tolist() == starts
    assert timings == {"cutoff_features_s": 2.0, "mf_cutoff_s": 4.0}


def test_one_window_asks_for_nothing_more(monkeypatch):
    asked = _stand_in(monkeypatch)
    examples, starts, _ = _run(1)
    assert asked == [] and starts == ["2024-03-03"] and len(examples) == 1


def test_a_window_the_lake_cannot_give_ends_the_list(monkeypatch):
    asked = _stand_in(monkeypatch, fail_before="2024-02-20")
    _, starts, _ = _run(4)
    assert starts == ["2024-03-03", "2024-02-25"]
    assert len(asked) == 2  # the failing window is the last one asked for


def test_a_window_of_another_source_ends_the_list(monkeypatch):
    _stand_in(monkeypatch, other_source_at="2024-02-18")
    _, starts, _ = _run(4)
    assert starts == ["2024-03-03", "2024-02-25"]


def test_label_windows_must_be_positive():
    with pytest.raises(ConfigError, match="label_windows"):
        load_config(None, {"training.label_windows": 0})
