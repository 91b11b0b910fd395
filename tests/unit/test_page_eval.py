"""Hand-computed known answers for models.evaluation.page_eval on tiny pages (2 carousels x 3 items).

Cell discounts of a 2x3 grid, 1/log2(s + l):

    slot 1:  (1,1) 1        (1,2) 1/log2 3   (1,3) 1/2
    slot 2:  (2,1) 1/log2 3 (2,2) 1/2        (2,3) 1/log2 5

Reading order (s + l, then s): (1,1) (1,2) (2,1) (1,3) (2,2) (2,3).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from jobs.core.lake import DEFAULT_PAGE_KEY
from models.evaluation.page_eval import (
    cell_yield,
    evaluate_pages,
    lift,
    page_shape,
    pages_for_users,
)

L3 = math.log2(3)
L5 = math.log2(5)
SPLIT = "2024-03-01"


def grid(user: str, rows: list[list[str]], family: list[str | None] | None = None) -> pd.DataFrame:
    """One page: rows[s-1][l-1] is the item in slot s, position l (1-based)."""
    out = [
        {"user_id": user, "slot": s, "item_rank": r, "item_id": item}
        for s, row in enumerate(rows, start=1)
        for r, item in enumerate(row, start=1)
    ]
    frame = pd.DataFrame(out)
    if family is not None:
        frame["family"] = frame["slot"].map(lambda s: family[s - 1])
    return frame


def pairs(d: dict[str, list[str]]) -> pd.DataFrame:
    rows = [(u, i) for u, its in d.items() for i in its]
    return pd.DataFrame(rows, columns=["user_id", "item_id"])


def catalogue(ids: list[str], **cols) -> pd.DataFrame:
    frame = pd.DataFrame({"item_id": ids, "category_id": "c", "brand": None})
    for k, v in cols.items():
        frame[k] = v
    return frame


NO_HISTORY = pd.DataFrame(columns=["user_id", "item_id"])


# ------------------------------------------------------------------ the main worked example


@pytest.fixture(scope="module")
def worked():
    """u1: own page, 4 relevant items (one not shown); u2: own page showing P twice;
    u3: no page, gets the default page; u9: a page but no relevant items (not evaluated)."""
    pages = pd.concat(
        [
            grid("u1", [["A", "B", "C"], ["D", "E", "F"]]),
            grid("u2", [["P", "Q", "R"], ["P", "S", "T"]]),
            grid(DEFAULT_PAGE_KEY, [["G", "H", "I"], ["J", "K", "L"]]),
            grid("u9", [["M", "N", "O"]]),
        ],
        ignore_index=True,
    )
    pages = pages.sample(frac=1.0, random_state=3).reset_index(drop=True)  # row order is noise
    truth = pairs({"u1": ["C", "D", "E", "Z"], "u2": ["P", "T"], "u3": ["H"]})
    history = pairs({"u1": ["C", "Z", "A"], "u3": ["H"], "u2": ["X"]})
    ids = list("ABCDEFGHIJKLMNOPQRSTZ")
    first_seen = {"D": "2024-02-20", "Z": "2024-02-25", "T": "2024-02-15", "E": "2023-12-01"}
    items = catalogue(ids, first_seen=[first_seen.get(i, "2023-01-01") for i in ids])
    ev = evaluate_pages(pages, truth, history, items, split_ds=SPLIT, ks=(1, 2, 3, 4, 5, 6))
    return ev


def test_users_evaluated_are_those_with_relevant_items(worked):
    assert sorted(worked.per_user.index) == ["u1", "u2", "u3"]
    assert sorted(worked.per_page.index) == ["u1", "u2", "u3"]
    assert worked.summary["users"] == 3.0
    assert worked.summary["items_per_page"] == 6.0


def test_ndcg_2d_missed_relevant_items_count_in_the_ideal(worked):
    # u1: R = {C, D, E, Z}; C (1,3) 1/2, D (2,1) 1/log2 3, E (2,2) 1/2; Z not shown
    # ideal: the 4 best cells of the page: 1, 1/log2 3, 1/log2 3, 1/2
    dcg = 0.5 + 1 / L3 + 0.5
    idcg = 1 + 2 / L3 + 0.5
    assert worked.per_user.loc["u1", "ndcg_2d"] == pytest.approx(dcg / idcg, rel=1e-12)


def test_ndcg_2d_item_shown_twice_gains_once(worked):
    # u2: R = {P, T}; P at (1,1) and again at (2,1): gains once; T at (2,3)
    dcg = 1 + 1 / L5
    idcg = 1 + 1 / L3
    assert worked.per_user.loc["u2", "ndcg_2d"] == pytest.approx(dcg / idcg, rel=1e-12)


def test_user_without_page_gets_default_page(worked):
    # u3: default page, R = {H} at (1,2); ideal = the best cell (1,1)
    u3 = worked.per_user.loc["u3"]
    assert u3["ndcg_2d"] == pytest.approx(1 / L3, rel=1e-12)
    assert u3["page_recall"] == 1.0
    assert u3["mrr"] == 0.5


def test_page_recall(worked):
    pr = worked.per_user["page_recall"]
    assert pr.to_dict() == pytest.approx({"u1": 0.75, "u2": 1.0, "u3": 1.0})
    assert worked.summary["page_recall"] == pytest.approx((0.75 + 1 + 1) / 3)


def test_repeat_and_explore_recall_split_by_history(worked):
    pu = worked.per_user
    # u1: repeat = R ∩ history = {C, Z} (A is history but not relevant): C shown -> 1/2
    #     explore = {D, E}: both shown -> 1
    assert pu.loc["u1", "repeat_recall"] == 0.5
    assert pu.loc["u1", "explore_recall"] == 1.0
    # u2: no relevant item in the history -> repeat NaN; u3: no explore item -> explore NaN
    assert np.isnan(pu.loc["u2", "repeat_recall"])
    assert pu.loc["u2", "explore_recall"] == 1.0
    assert pu.loc["u3", "repeat_recall"] == 1.0
    assert np.isnan(pu.loc["u3", "explore_recall"])
    # NaN users are left out of the means
    assert worked.summary["repeat_recall"] == pytest.approx((0.5 + 1.0) / 2)
    assert worked.summary["explore_recall"] == pytest.approx((1.0 + 1.0) / 2)


def test_new_recall(worked):
    # new = first_seen within 30 days before 2024-03-01: D, Z, T (E is old)
    pu = worked.per_user
    assert pu.loc["u1", "new_recall"] == 0.5  # D shown, Z not
    assert pu.loc["u2", "new_recall"] == 1.0  # T shown
    assert np.isnan(pu.loc["u3", "new_recall"])  # no new relevant item
    assert worked.summary["new_recall"] == pytest.approx(0.75)
    assert worked.summary["new_relevant_items"] == 3.0


def test_carousel_ndcg(worked):
    pu = worked.per_user
    # u1: slot gains (1, 2): dcg = 1/log2 2 + 2/log2 3, ideal (2, 1): 2 + 1/log2 3
    assert pu.loc["u1", "carousel_ndcg"] == pytest.approx((1 + 2 / L3) / (2 + 1 / L3))
    # u2: P counts in slot 1 only (its first place), T in slot 2: gains (1, 1) -> ideal
    assert pu.loc["u2", "carousel_ndcg"] == pytest.approx(1.0)
    # u3: H in slot 1 -> ideal
    assert pu.loc["u3", "carousel_ndcg"] == pytest.approx(1.0)


def test_mrr_and_recall_at_k_in_reading_order(worked):
    pu = worked.per_user
    # u1 reading ranks: A1 B2 D3 C4 E5 F6 -> first relevant D at 3
    assert pu.loc["u1", "mrr"] == pytest.approx(1 / 3)
    got = [pu.loc["u1", f"recall@{k}"] for k in (1, 2, 3, 4, 5, 6)]
    assert got == pytest.approx([0, 0, 0.25, 0.5, 0.75, 0.75])
    # u2 ranks over distinct items: P1 Q2 (P again: no rank) R3 S4 T5
    assert pu.loc["u2", "mrr"] == 1.0
    got = [pu.loc["u2", f"recall@{k}"] for k in (1, 2, 3, 4, 5, 6)]
    assert got == pytest.approx([0.5, 0.5, 0.5, 0.5, 1.0, 1.0])


# ------------------------------------------------------------------ focused cases


def _one(page_rows, relevant, **kw):
    pages = grid("u", page_rows)
    items = catalogue(sorted({i for r in page_rows for i in r} | set(relevant)))
    ev = evaluate_pages(pages, pairs({"u": relevant}), NO_HISTORY, items, split_ds=SPLIT, **kw)
    return ev.per_user.loc["u"]


@pytest.mark.parametrize(
    ("item", "rank"),
    [("A", 1), ("B", 2), ("D", 3), ("C", 4), ("E", 5), ("F", 6)],
)
def test_reading_order_is_diagonal_then_slot(item, rank):
    u = _one([["A", "B", "C"], ["D", "E", "F"]], [item], ks=(rank - 1, rank) if rank > 1 else (1,))
    assert u["mrr"] == pytest.approx(1 / rank)
    assert u[f"recall@{rank}"] == 1.0
    if rank > 1:
        assert u[f"recall@{rank - 1}"] == 0.0


def test_ndcg_2d_page_with_fewer_cells_than_relevant_items():
    # 2 cells, 3 relevant items: the ideal sums the 2 cells the page has
    u = _one([["A", "B"]], ["A", "B", "C"])
    assert u["ndcg_2d"] == pytest.approx(1.0)
    assert u["page_recall"] == pytest.approx(2 / 3)
    u = _one([["A", "B"]], ["B", "C", "D"])
    assert u["ndcg_2d"] == pytest.approx((1 / L3) / (1 + 1 / L3))


def test_ndcg_2d_ideal_uses_the_users_own_cells():
    # a 1x3 page has cells 1, 1/log2 3, 1/2 (no second 1/log2 3 as a 2-row page would):
    # showing all 3 relevant items is ideal
    u = _one([["A", "B", "C"]], ["A", "B", "C"])
    assert u["ndcg_2d"] == pytest.approx(1.0)
    # a 2x2 page has cells 1, 1/log2 3, 1/log2 3, 1/2: the ideal of 2 items is its best 2
    u = _one([["A", "B"], ["C", "D"]], ["B", "D"])
    assert u["ndcg_2d"] == pytest.approx((1 / L3 + 0.5) / (1 + 1 / L3))
    # a 3x1 page: C at (3,1) discounted by log2 4; Z not shown; ideal 1 + 1/log2 3
    u = _one([["A"], ["B"], ["C"]], ["C", "Z"])
    assert u["ndcg_2d"] == pytest.approx(0.5 / (1 + 1 / L3))


def test_nothing_relevant_shown_scores_zero():
    u = _one([["A", "B", "C"], ["D", "E", "F"]], ["Y", "Z"], ks=(3,))
    assert u["ndcg_2d"] == 0.0
    assert u["carousel_ndcg"] == 0.0
    assert u["mrr"] == 0.0
    assert u["page_recall"] == 0.0
    assert u["recall@3"] == 0.0


def test_carousel_ndcg_three_slots():
    # gains by slot (0, 1, 2): dcg = 1/log2 3 + 2/log2 4; ideal (2, 1, 0): 2 + 1/log2 3
    u = _one([["A", "B"], ["C", "D"], ["E", "F"]], ["D", "E", "F"])
    assert u["carousel_ndcg"] == pytest.approx((1 / L3 + 1.0) / (2 + 1 / L3))


def test_missing_default_page_is_a_clear_error():
    pages = grid("u1", [["A", "B"]])
    truth = pairs({"u1": ["A"], "u2": ["A"]})
    with pytest.raises(ValueError, match=DEFAULT_PAGE_KEY):
        evaluate_pages(pages, truth, NO_HISTORY, catalogue(["A", "B"]), split_ds=SPLIT)


def test_empty_truth_is_an_error():
    pages = grid("u1", [["A", "B"]])
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate_pages(pages, pairs({}), NO_HISTORY, catalogue(["A", "B"]), split_ds=SPLIT)


def test_pages_for_users_copies_default_page():
    pages = pd.concat([grid("u1", [["A"]]), grid(DEFAULT_PAGE_KEY, [["G", "H"]])])
    out = pages_for_users(pages.reset_index(drop=True), ["u1", "u2", "u3", "u2"])
    by_user = out.groupby("user_id")["item_id"].apply(list).to_dict()
    assert by_user == {"u1": ["A"], "u2": ["G", "H"], "u3": ["G", "H"]}


def test_pages_for_users_default_page_with_repeated_index_labels():
    default = pd.concat([grid(DEFAULT_PAGE_KEY, [["G"]]), grid(DEFAULT_PAGE_KEY, [["H"]])])
    default["item_rank"] = [1, 2]  # index labels (0, 0)
    out = pages_for_users(default, ["u1", "u2"])
    assert sorted(out["user_id"]) == ["u1", "u1", "u2", "u2"]
    assert out.groupby("user_id")["item_id"].apply(list).to_dict() == {
        "u1": ["G", "H"],
        "u2": ["G", "H"],
    }


def test_coverage_distinct_shown_over_in_stock():
    # shown: A, B, C (u1) and C, D (u2); in stock: A, B, C, D, E, F, G, H (X, Y out of stock)
    pages = pd.concat([grid("u1", [["A", "B"], ["C", "A"]]), grid("u2", [["C", "D"]])])
    ids = ["A", "B", "C", "D", "E", "F", "G", "H", "X", "Y"]
    items = catalogue(ids, in_stock=[True] * 8 + [False] * 2)
    truth = pairs({"u1": ["A"], "u2": ["D"]})
    ev = evaluate_pages(pages, truth, NO_HISTORY, items, split_ds=SPLIT)
    assert ev.summary["coverage"] == pytest.approx(4 / 8)
    assert ev.summary["items_per_page"] == pytest.approx(3.0)


# ------------------------------------------------------------------ page shape


def _shape_items():
    brand = {"a1": "a", "a2": "a", "a3": "a", "a4": "a", "b1": "b", "b2": "b", "x": None}
    cat = {"a1": "c1", "a2": "c1", "a3": "c2", "a4": "c2", "b1": "c3", "b2": "c3", "x": "c4"}
    return pd.DataFrame(
        {"item_id": list(brand), "brand": list(brand.values()), "category_id": list(cat.values())}
    )


def test_longest_brand_run_stays_inside_a_carousel():
    # u1: slot 1 (b1, a1, a2), slot 2 (a3, a4, b2): 4 a's in a row across the slot
    # boundary, but at most 2 inside one carousel
    # u2: slot 1 (a1, a2, a3): 3; slot 2 (x, x, b1): unbranded x never makes a run
    # u3: (x, x): no brand shown -> 0
    pages = pd.concat(
        [
            grid("u1", [["b1", "a1", "a2"], ["a3", "a4", "b2"]]),
            grid("u2", [["a1", "a2", "a3"], ["x", "x", "b1"]]),
            grid("u3", [["x", "x"]]),
        ],
        ignore_index=True,
    ).sample(frac=1.0, random_state=1)
    shape = page_shape(pages, _shape_items())
    assert shape["longest_brand_run"].to_dict() == {"u1": 2, "u2": 3, "u3": 0}
    # distinct categories: u1 c3 c1 c2 -> 3; u2 c1 c2 c4 c3 -> 4; u3 c4 -> 1
    assert shape["distinct_categories"].to_dict() == {"u1": 3, "u2": 4, "u3": 1}
    # no family column -> NaN
    assert shape["adjacent_family_violations"].isna().all()


def test_page_shape_in_evaluate_pages_summary():
    pages = pd.concat(
        [
            grid("u1", [["b1", "a1", "a2"], ["a3", "a4", "b2"]]),
            grid("u2", [["a1", "a2", "a3"], ["x", "x", "b1"]]),
        ],
        ignore_index=True,
    )
    truth = pairs({"u1": ["a1"], "u2": ["b1"]})
    ev = evaluate_pages(pages, truth, NO_HISTORY, _shape_items(), split_ds=SPLIT)
    assert ev.summary["longest_brand_run"] == 2.5
    assert ev.summary["longest_brand_run_max"] == 3.0
    assert ev.summary["distinct_categories"] == 3.5
    assert math.isnan(ev.summary["adjacent_family_violations"])
    assert math.isnan(ev.summary["adjacent_family_violations_total"])


def test_longest_brand_run_nan_when_catalogue_has_no_brands():
    pages = grid("u1", [["a1", "a2"], ["a3", "a4"]])
    items = _shape_items().assign(brand=None)
    shape = page_shape(pages, items)
    assert np.isnan(shape.loc["u1", "longest_brand_run"])
    ev = evaluate_pages(pages, pairs({"u1": ["a1"]}), NO_HISTORY, items, split_ds=SPLIT)
    assert math.isnan(ev.summary["longest_brand_run"])


def test_adjacent_family_violations():
    pages = pd.concat(
        [
            grid("u1", [["a1"], ["a2"], ["a3"]], family=["f", "f", "g"]),  # 1
            grid("u2", [["a1"], ["a2"], ["a3"]], family=["f", "g", "f"]),  # 0: not adjacent
            grid("u3", [["a1"], ["a2"], ["a3"]], family=["f", "f", "f"]),  # 2
            grid("u4", [["a1", "a2"], ["a3", "a4"]], family=["g", "g"]),  # 1 (per slot)
        ],
        ignore_index=True,
    ).sample(frac=1.0, random_state=2)
    shape = page_shape(pages, _shape_items())
    assert shape["adjacent_family_violations"].to_dict() == {"u1": 1, "u2": 0, "u3": 2, "u4": 1}
    truth = pairs({u: ["a1"] for u in ("u1", "u2", "u3", "u4")})
    ev = evaluate_pages(pages, truth, NO_HISTORY, _shape_items(), split_ds=SPLIT)
    assert ev.summary["adjacent_family_violations"] == 1.0
    assert ev.summary["adjacent_family_violations_total"] == 4.0


def test_adjacent_family_violations_counts_only_neighbouring_slot_numbers():
    # slots 1 and 3 share a family but slot 2 is absent: not neighbours
    pages = grid("u1", [["a1"], ["a2"], ["a3"]], family=["f", "g", "f"])
    pages = pages[pages["slot"] != 2]
    shape = page_shape(pages, _shape_items())
    assert shape.loc["u1", "adjacent_family_violations"] == 0


def test_page_without_families_is_nan_among_pages_with_families():
    pages = pd.concat(
        [
            grid("u1", [["a1"], ["a2"]], family=["f", "f"]),
            grid("u2", [["a1"], ["a2"], ["a3"]], family=[None, None, None]),
        ],
        ignore_index=True,
    )
    shape = page_shape(pages, _shape_items())
    assert shape.loc["u1", "adjacent_family_violations"] == 1
    assert np.isnan(shape.loc["u2", "adjacent_family_violations"])


# ------------------------------------------------------------------ lift


def _per_user(values, name="m", users=None):
    users = users if users is not None else [f"u{i}" for i in range(len(values))]
    return pd.DataFrame({name: np.asarray(values, dtype=np.float64)}, index=pd.Index(users))


def test_lift_identical_is_zero():
    b = _per_user(np.random.default_rng(0).uniform(0.1, 1.0, 20))
    row = lift(b.copy(), b, ["m"], resamples=300).iloc[0]
    assert row["lift"] == 0.0
    assert row["diff"] == 0.0
    assert row["ci_low"] <= 0.0 <= row["ci_high"]
    assert row["diff_low"] == 0.0 and row["diff_high"] == 0.0
    assert row["users"] == 20


def test_lift_constant_ratio_is_exact_with_degenerate_interval():
    y = np.random.default_rng(1).uniform(0.1, 5.0, 25)
    row = lift(_per_user(2 * y), _per_user(y), ["m"], resamples=300).iloc[0]
    assert row["lift"] == 1.0
    assert row["ci_low"] == 1.0 and row["ci_high"] == 1.0
    assert row["a"] == pytest.approx(2 * y.mean())
    assert row["b"] == pytest.approx(y.mean())


def test_lift_resamples_pairs_jointly():
    # b varies a lot across users, a = b + 0.01: paired resampling sees a tiny, steady gain
    b = np.array([0.1, 50.0, 1.0, 200.0, 5.0, 0.5, 120.0, 3.0, 80.0, 10.0])
    a = b + 0.01
    row = lift(_per_user(a), _per_user(b), ["m"], resamples=500, seed=7).iloc[0]
    assert row["lift"] == pytest.approx(0.01 / b.mean())
    assert row["diff_low"] == pytest.approx(0.01) and row["diff_high"] == pytest.approx(0.01)
    assert 0.0 < row["ci_low"] <= row["lift"] <= row["ci_high"]
    paired_width = row["ci_high"] - row["ci_low"]
    assert paired_width < 1e-3
    # resampling a and b independently would give a wide interval around 0
    rng = np.random.default_rng(7)
    ia, ib = rng.integers(0, len(b), (2, 500, len(b)))
    unpaired = a[ia].mean(axis=1) / b[ib].mean(axis=1) - 1
    lo, hi = np.percentile(unpaired, [2.5, 97.5])
    assert lo < 0 < hi
    assert hi - lo > 100 * paired_width


def test_lift_drops_missing_and_nan_users():
    a = _per_user([1.0, np.nan, 3.0, 4.0], users=["u1", "u2", "u3", "u4"])
    b = _per_user([2.0, 2.0, 1.0, 2.0], users=["u2", "u3", "u4", "u5"])
    row = lift(a, b, ["m"], resamples=100).iloc[0]
    # both define u3 (3 vs 2) and u4 (4 vs 1): u1 only in a, u5 only in b, u2 NaN in a
    assert row["users"] == 2
    assert row["a"] == pytest.approx(3.5)
    assert row["b"] == pytest.approx(1.5)
    assert row["lift"] == pytest.approx(3.5 / 1.5 - 1)
    assert row["diff"] == pytest.approx(2.0)


def test_lift_no_common_users_and_zero_baseline():
    a = _per_user([1.0, 2.0], users=["u1", "u2"])
    b = _per_user([1.0, 2.0], users=["u3", "u4"])
    row = lift(a, b, ["m"], resamples=50).iloc[0]
    assert row["users"] == 0 and np.isnan(row["lift"]) and np.isnan(row["ci_low"])
    zero = _per_user([0.0, 0.0], users=["u1", "u2"])
    row = lift(a, zero, ["m"], resamples=50).iloc[0]
    assert np.isnan(row["lift"]) and np.isnan(row["ci_low"])
    assert row["diff"] == pytest.approx(1.5)


def test_lift_seed_reproducible():
    rng = np.random.default_rng(5)
    a = pd.DataFrame({"m": rng.uniform(size=30), "n": rng.uniform(size=30)})
    b = pd.DataFrame({"m": rng.uniform(size=30), "n": rng.uniform(size=30)})
    one = lift(a, b, ["m", "n"], resamples=200, seed=11)
    two = lift(a, b, ["m", "n"], resamples=200, seed=11)
    pd.testing.assert_frame_equal(one, two)
    other = lift(a, b, ["m", "n"], resamples=200, seed=12)
    assert list(other["metric"]) == ["m", "n"]
    assert (other["lift"] == one["lift"]).all()  # the point estimate does not depend on it
    assert not np.allclose(other["ci_low"], one["ci_low"])


def test_cell_yield_by_carousel_kind_and_item_kind():
    ids = {1: "for_you", 2: "buy_again:2"}
    u1 = grid("u1", [["a", "b", "c"], ["a", "d", "e"]])  # "a" again in slot 2: counted once
    dflt = grid(DEFAULT_PAGE_KEY, [["x", "y", "z"], ["a", "b", "c"]])
    pages = pd.concat([u1, dflt], ignore_index=True)
    pages["carousel_id"] = pages["slot"].map(ids)
    history = pairs({"u1": ["a", "d"], "u2": ["x"]})
    truth = pairs({"u1": ["a", "c", "d", "q"], "u2": ["y", "x"]})  # u2 gets the default page
    out = cell_yield(pages, truth, history).set_index(["kind", "item"])
    # u1: for_you a (repeat, hit) b c (explore, c hit); buy_again d (repeat, hit) e (explore)
    # u2: for_you x (repeat, hit) y (explore, hit) z; buy_again a b c (explore, no hit)
    assert out.loc[("for_you", "repeat"), ["cells", "hits"]].tolist() == [2, 2]
    assert out.loc[("for_you", "explore"), ["cells", "hits"]].tolist() == [4, 2]
    assert out.loc[("buy_again", "repeat"), ["cells", "hits"]].tolist() == [1, 1]
    assert out.loc[("buy_again", "explore"), ["cells", "hits"]].tolist() == [4, 0]
    assert out.loc[("for_you", "explore"), "hit_rate"] == pytest.approx(0.5)
    assert out.loc[("for_you", "explore"), "cells_per_page"] == pytest.approx(2.0)
    assert out["cells"].sum() == 11  # 12 cells, "a" twice on u1's page
    assert list(out.index.get_level_values("item")[:2]) == ["repeat", "repeat"]
