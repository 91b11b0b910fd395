"""Hand-computed answers for the recall frontier of the mixed baselines (models.evaluation.frontier)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from models.evaluation.frontier import dominance, explore_at, frontier, history_steps


def test_history_steps_end_at_the_page_size():
    assert history_steps(30, 10) == [0, 10, 20, 30]
    assert history_steps(25, 10) == [0, 10, 20, 25]
    assert history_steps(0, 10) == [0]
    with pytest.raises(ValueError, match="step"):
        history_steps(10, 0)


def test_frontier_scores_each_mix():
    built: list[int] = []

    def build(k: int) -> pd.DataFrame:
        built.append(k)
        return pd.DataFrame({"k": [k]})

    def score(page: pd.DataFrame) -> dict[str, float]:
        k = int(page["k"].iloc[0])
        return {"page_recall": 0.1 + k / 100, "explore_recall": 0.2 - k / 1000,
                "repeat_recall": k / 50, "mrr": 9.0}  # fmt: skip

    f = frontier(build, score, [0, 10, 20])
    assert built == [0, 10, 20]
    assert list(f.columns) == ["history_cells", "page_recall", "explore_recall", "repeat_recall"]
    assert f["page_recall"].tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert f["explore_recall"].tolist() == pytest.approx([0.2, 0.19, 0.18])


def test_explore_at_interpolates_between_frontier_points():
    f = pd.DataFrame(
        {
            "history_cells": [0, 50, 100],
            "page_recall": [0.05, 0.60, 0.67],
            "explore_recall": [0.14, 0.10, 0.07],
        }
    )
    assert explore_at(f, 0.60) == pytest.approx(0.10)
    assert explore_at(f, 0.635) == pytest.approx(0.085)  # half-way between k=50 and k=100
    assert explore_at(f.iloc[::-1], 0.325) == pytest.approx(0.12)  # row order does not matter
    assert math.isnan(explore_at(f, 0.70))  # beyond top frequency: no frontier point there
    assert math.isnan(explore_at(f, 0.01))
    assert math.isnan(explore_at(f.iloc[:0], 0.5))


def test_dominance_names_every_shortfall():
    s = {
        "pipeline": {"page_recall": 0.65, "explore_recall": 0.09},
        "top_freq": {"page_recall": 0.67, "explore_recall": 0.07},
        "popularity": {"page_recall": 0.21, "explore_recall": 0.13},
    }
    d = dominance(s, "pipeline", ["top_freq", "popularity"], ["page_recall", "explore_recall"])
    assert d["met"] is False
    assert [(x["baseline"], x["metric"]) for x in d["short"]] == [
        ("top_freq", "page_recall"),
        ("popularity", "explore_recall"),
    ]
    assert d["short"][0]["policy"] == 0.65 and d["short"][0]["value"] == 0.67
    s["pipeline"] = {"page_recall": 0.70, "explore_recall": 0.15}
    assert dominance(s, "pipeline", ["top_freq", "popularity"], ["page_recall"])["met"] is True
    # a tie is not a win, and NaN never wins
    s["pipeline"] = {"page_recall": 0.67, "explore_recall": float("nan")}
    d = dominance(s, "pipeline", ["top_freq"], ["page_recall", "explore_recall"])
    assert len(d["short"]) == 2


def test_frontier_plot_writes_a_png_with_and_without_the_bar_region(tmp_path):
    from models.evaluation.plots import frontier_plot

    f = pd.DataFrame(
        {"history_cells": [0, 10], "page_recall": [0.05, 0.6], "explore_recall": [0.14, 0.07]}
    )
    points = {"pipeline": (0.5, 0.1), "popularity": (0.2, 0.13), "nan": (float("nan"), 0.1)}
    for bar in ((0.6, 0.13), None):
        path = frontier_plot(f, points, tmp_path / f"f{bar is None}.png", bar=bar)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
