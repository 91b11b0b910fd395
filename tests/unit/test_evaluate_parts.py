"""Parts of `homepage evaluate` (jobs.experiments.evaluate) on hand-made inputs: the engagement heads' own
ranked list (scored the same way as the pages, skipped for logged impressions) and the rows by
item kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.core.config import load_config
from jobs.experiments.evaluation_pages import PageFrames, ranked_list_evaluation
from models.evaluation.baselines import _grid
from models.evaluation.page_eval import evaluate_pages

ITEMS = pd.DataFrame(
    {
        "item_id": [f"i{k}" for k in range(6)],
        "brand": ["b"] * 6,
        "category_id": ["c"] * 6,
        "in_stock": [True] * 5 + [False],
    }
)


def frames() -> PageFrames:
    # u1 bought i0 and i1 before, buys i1 (repeat) and i3 (explore) after; u2 buys i2 (explore)
    history = pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["i0", "i1"]})
    truth = pd.DataFrame({"user_id": ["u1", "u1", "u2"], "item_id": ["i1", "i3", "i2"]})
    users = ["u1", "u2"]
    pages = {
        "pipeline": _grid(users, [["i0", "i1"], ["i4", "i2"]], 2, "pipeline"),
        "top_freq": _grid(users, [["i0", "i1"], ["i2", "i3"]], 2, "top_freq"),
        "popularity": _grid(users, [["i2", "i4"], ["i2", "i4"]], 2, "popularity"),
        "static": _grid(users, [["i2", "i4"], ["i2", "i4"]], 2, "static"),
    }
    return PageFrames(pages, truth, history, ITEMS, lambda k: pages["top_freq"])


def evaluations(f: PageFrames) -> dict:
    """What `page_evaluation` gives `ranked_list_evaluation`: each policy on every user."""
    return {
        name: evaluate_pages(page, f.truth, f.history, f.items, split_ds="2026-01-10")
        for name, page in f.pages.items()
    }


def test_ranked_list_is_scored_with_the_pages_on_the_same_users():
    scored = pd.DataFrame(
        {
            "user_id": ["u1"] * 4 + ["u2"] * 2,
            "item_id": ["i1", "i3", "i0", "i5", "i2", "i4"],
            "score": [0.9, 0.8, 0.1, 1.0, 0.2, 0.3],  # i5 is out of stock: never listed
        }
    )
    cfg = load_config(None, {"page.items_per_carousel": 2, "page.min_items": 1})
    f = frames()
    out = ranked_list_evaluation(
        f, evaluations(f), scored, "2026-01-10", cfg, "time_window_candidates"
    )
    assert out["users"] == 2
    rl = out["pages"]["ranked_list"]
    # u1: i1, i3 -> both relevant; u2: i4, i2 -> i2
    assert rl["page_recall"] == pytest.approx(1.0)
    assert rl["repeat_recall"] == pytest.approx(1.0)
    assert rl["explore_recall"] == pytest.approx(1.0)
    pipe = out["pages"]["pipeline"]  # u1: i1 of {i1, i3}; u2: i2
    assert pipe["page_recall"] == pytest.approx(0.75)
    assert out["pages"]["top_freq"]["page_recall"] == pytest.approx(0.75)
    assert out["pages"]["popularity"]["page_recall"] == pytest.approx(0.5)  # u2's i2 only
    assert out["bar"]["met"]


def test_ranked_list_is_skipped_for_logged_impressions():
    scored = pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "score": [1.0]})
    cfg = load_config(None, {"page.items_per_carousel": 2, "page.min_items": 1})
    f = frames()
    out = ranked_list_evaluation(f, evaluations(f), scored, "2026-01-10", cfg, "logged_impressions")
    assert out["users"] == 0 and "logged_impressions" in out["skipped"]


def test_rows_by_item_kind_leave_out_a_kind_without_rows():
    """A lake without purchases (Open Bandit: impressions and clicks) has no bought-before rows:
    only the never-bought rows are ranked, instead of failing on an empty kind."""
    from jobs.experiments.evaluation_heads import item_kind_ranking

    ex = pd.DataFrame(
        {"ui_n_purchase": [0, 0, 0, 0], "item_pop_30d": [4, 3, 2, 1], "click": [1, 0, 1, 0]}
    )
    out = item_kind_ranking(ex, {"click": np.array([0.9, 0.1, 0.2, 0.3])}, ["click"])
    assert {r["items"] for r in out} == {"never bought"}
    assert {r["scorer"] for r in out} == {"model", "popularity"}
    assert all(r["rows"] == 4 and r["positives"] == 2 for r in out)


def test_a_test_window_without_relevant_events_names_what_it_logs():
    from jobs.experiments.evaluation_pages import relevant_pairs

    after = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["i1", "i1", "i2", None],
            "event_type": ["impression", "click", "click", "purchase"],
        }
    )
    with pytest.raises(ValueError, match=r"no purchase/add_to_cart events .* logs click, "
                       r"impression, purchase: set eval.relevant_events"):  # fmt: skip
        relevant_pairs(after, ("purchase", "add_to_cart"), "[2019-11-27, 2019-11-29)")
    clicks = relevant_pairs(after, ("click",), "w")
    assert clicks.to_dict("list") == {"user_id": ["u1", "u2"], "item_id": ["i1", "i2"]}
