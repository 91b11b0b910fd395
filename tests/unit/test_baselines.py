"""Hand-computed known answers for the baseline pages (models.evaluation.baselines)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs.core.lake import DEFAULT_PAGE_KEY
from models.evaluation.baselines import (
    WEIGHTS,
    item_popularity,
    popularity_page,
    ranked_list_pages,
    static_page,
    top_frequency_pages,
)

PAGE_COLUMNS = ["user_id", "slot", "item_rank", "item_id", "carousel_id", "family"]


def events(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item_id", "event_type"])


# ------------------------------------------------------------------ item_popularity


def _popularity_events() -> pd.DataFrame:
    return events(
        [
            ("i1", "purchase"),  # i1: 5 + 1 = 6
            ("i1", "click"),
            ("i2", "add_to_cart"),  # i2: 3 + 3 = 6
            ("i2", "add_to_cart"),
            ("i3", "click"),  # i3: 1
            ("i4", "purchase"),  # i4: 5 + 5 = 10, but out of stock
            ("i4", "purchase"),
            ("i5", "impression"),  # i5: unweighted event type -> 0, dropped
            ("i6", "purchase"),  # i6: 5 + 3 + 1 = 9
            ("i6", "add_to_cart"),
            ("i6", "click"),
            *[("i0", "click")] * 6,  # i0: 6
        ]
    )


def _stock_items() -> pd.DataFrame:
    ids = ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7"]
    return pd.DataFrame({"item_id": ids, "in_stock": [True] * 4 + [False] + [True] * 3})


def test_weights_are_the_feature_stage_weights():
    assert WEIGHTS == {"purchase": 5.0, "add_to_cart": 3.0, "click": 1.0}


def test_item_popularity_weights_stock_and_ties():
    pop = item_popularity(_popularity_events(), _stock_items())
    # descending; i0, i1, i2 tie at 6 -> by item id
    assert list(pop.index) == ["i6", "i0", "i1", "i2", "i3"]
    assert list(pop.to_numpy()) == [9.0, 6.0, 6.0, 6.0, 1.0]


def test_item_popularity_independent_of_event_order():
    ev = _popularity_events()
    a = item_popularity(ev, _stock_items())
    for seed in (0, 1, 2):
        b = item_popularity(ev.sample(frac=1.0, random_state=seed), _stock_items())
        pd.testing.assert_series_equal(a, b)


def test_item_popularity_without_stock_column_keeps_everything():
    items = _stock_items().drop(columns="in_stock")
    pop = item_popularity(_popularity_events(), items)
    assert list(pop.index) == ["i4", "i6", "i0", "i1", "i2", "i3"]
    assert pop["i4"] == 10.0


def test_item_popularity_custom_weights():
    pop = item_popularity(_popularity_events(), _stock_items(), weights={"click": 2.0})
    assert pop.to_dict() == {"i0": 12.0, "i1": 2.0, "i3": 2.0, "i6": 2.0}
    assert list(pop.index) == ["i0", "i1", "i3", "i6"]


# ------------------------------------------------------------------ popularity_page


def test_popularity_page_grid():
    popular = pd.Series([7.0, 6, 5, 4, 3, 2, 1], index=[f"p{i}" for i in range(7)])
    page = popularity_page(popular, slots=2, per_row=3)
    assert list(page.columns) == PAGE_COLUMNS
    assert (page["user_id"] == DEFAULT_PAGE_KEY).all()
    assert list(page["item_id"]) == ["p0", "p1", "p2", "p3", "p4", "p5"]  # Z*M, p6 cut
    assert list(page["slot"]) == [1, 1, 1, 2, 2, 2]
    assert list(page["item_rank"]) == [1, 2, 3, 1, 2, 3]
    assert list(page["carousel_id"]) == ["popular:1"] * 3 + ["popular:2"] * 3
    assert page["family"].isna().all()  # a ranked list, not carousels


def test_popularity_page_short_list():
    popular = pd.Series([4.0, 3, 2, 1], index=["a", "b", "c", "d"])
    page = popularity_page(popular, slots=3, per_row=3)
    assert list(page["slot"]) == [1, 1, 1, 2]
    assert list(page["item_rank"]) == [1, 2, 3, 1]
    assert list(page["item_id"]) == ["a", "b", "c", "d"]


# ------------------------------------------------------------------ static_page


def _static_inputs():
    # category sums: B 9 + 8 = 17, A 10 + 1 + 1 + 1 = 13, D 5, C 2. A holds the single most
    # popular item, but B has more engagement in total
    popular = pd.Series(
        [10.0, 9, 8, 5, 2, 1, 1, 1, 7],
        index=["a1", "b1", "b2", "d1", "c1", "a2", "a3", "a4", "ghost"],
    )
    items = pd.DataFrame(
        {
            "item_id": ["a1", "a2", "a3", "a4", "b1", "b2", "c1", "d1"],
            "category_id": ["A", "A", "A", "A", "B", "B", "C", "D"],
        }
    )
    return popular, items


def test_static_page_categories_by_summed_popularity():
    popular, items = _static_inputs()  # "ghost" has no catalogue row: dropped
    page = static_page(popular, items, slots=3, per_row=3)
    assert list(page.columns) == PAGE_COLUMNS
    assert (page["user_id"] == DEFAULT_PAGE_KEY).all()
    assert list(page["slot"]) == [1, 1, 2, 2, 2, 3]
    assert list(page["item_rank"]) == [1, 2, 1, 2, 3, 1]
    # each carousel its top M items in popularity order
    assert list(page["item_id"]) == ["b1", "b2", "a1", "a2", "a3", "d1"]
    assert list(page["carousel_id"]) == ["static:B"] * 2 + ["static:A"] * 3 + ["static:D"]
    # one distinct family per carousel: no adjacent-family constraint
    fam = page.drop_duplicates("slot")["family"]
    assert fam.nunique() == 3
    assert list(fam) == ["static:B", "static:A", "static:D"]


def test_static_page_fewer_categories_than_slots():
    popular, items = _static_inputs()
    page = static_page(popular, items, slots=10, per_row=1)
    assert list(page["item_id"]) == ["b1", "a1", "d1", "c1"]
    assert list(page["slot"]) == [1, 2, 3, 4]


def test_static_page_nothing_popular_is_an_error():
    _, items = _static_inputs()
    with pytest.raises(ValueError, match="no static page"):
        static_page(pd.Series([], dtype=np.float64), items, slots=2, per_row=3)
    # popular items none of which is in the catalogue: nothing to show either
    with pytest.raises(ValueError, match="no static page"):
        static_page(pd.Series([3.0], index=["ghost"]), items, slots=2, per_row=3)


# ------------------------------------------------------------------ top_frequency_pages


def _purchases() -> pd.DataFrame:
    rows = [
        # u1: x 3 times, w twice, y once (latest ts 10), z once (ts 5), o 5 times (out of stock)
        ("u1", "x", 1),
        ("u1", "x", 2),
        ("u1", "x", 3),
        ("u1", "w", 1),
        ("u1", "w", 2),
        ("u1", "y", 10),
        ("u1", "z", 5),
        *[("u1", "o", t) for t in range(5)],
        # u2: three items bought once: latest first c, b, a
        ("u2", "a", 1),
        ("u2", "b", 2),
        ("u2", "c", 3),
        # u4: same count and same last purchase: by item id
        ("u4", "e", 7),
        ("u4", "d", 7),
        # u9: not among the users
        ("u9", "x", 1),
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "ts"])
    frame["ts"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame["ts"], unit="h")
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


POPULAR = pd.Series([9.0, 8, 7, 6, 5, 4], index=["x", "p1", "y", "p2", "p3", "p4"])
IN_STOCK = pd.Index(["x", "w", "y", "z", "a", "b", "c", "d", "e", "p1", "p2", "p3", "p4"])


def _lists(page: pd.DataFrame) -> dict[str, list[str]]:
    return page.groupby("user_id", sort=False)["item_id"].apply(list).to_dict()


def test_top_frequency_pages():
    shown = pd.Series({"u1": 6, "u2": 2, "u3": 4, "u4": 3})
    page = top_frequency_pages(_purchases(), POPULAR, shown, per_row=3, in_stock=IN_STOCK)
    assert list(page.columns) == PAGE_COLUMNS
    assert _lists(page) == {
        # most-bought first (x 3, w 2), ties by latest purchase (y then z), then popular
        # items not already there (x and y skipped), cut to 6
        "u1": ["x", "w", "y", "z", "p1", "p2"],
        # cut to 2
        "u2": ["c", "b"],
        # no purchases: the popularity list
        "u3": ["x", "p1", "y", "p2"],
        # tie on count and time: by item id; padded with the top popular item
        "u4": ["d", "e", "x"],
    }
    u1 = page[page["user_id"] == "u1"]
    assert list(u1["slot"]) == [1, 1, 1, 2, 2, 2]
    assert list(u1["item_rank"]) == [1, 2, 3, 1, 2, 3]
    assert list(u1["carousel_id"]) == ["top_freq:1"] * 3 + ["top_freq:2"] * 3
    assert page["family"].isna().all()
    assert not page["item_id"].isin(["o"]).any()
    assert set(page["user_id"]) == {"u1", "u2", "u3", "u4"}


def test_top_frequency_pages_without_stock_filter_keeps_bought_items():
    shown = pd.Series({"u1": 3})
    page = top_frequency_pages(_purchases(), POPULAR, shown, per_row=3)
    assert _lists(page) == {"u1": ["o", "x", "w"]}  # o bought 5 times


def test_top_frequency_pages_short_popularity_list_and_zero_items():
    shown = pd.Series({"u2": 6, "u3": 0})
    page = top_frequency_pages(_purchases(), POPULAR.iloc[:2], shown, per_row=3)
    # 3 own items + the 2 popular ones: 5 < 6, nothing more to pad with; u3 shows nothing
    assert _lists(page) == {"u2": ["c", "b", "a", "x", "p1"]}
    assert list(page["slot"]) == [1, 1, 1, 2, 2]


def test_top_frequency_pages_with_history_cells_pads_with_never_bought_popular_items():
    shown = pd.Series({"u1": 5, "u2": 4, "u3": 2})
    page = top_frequency_pages(
        _purchases(), POPULAR, shown, per_row=3, in_stock=IN_STOCK, history_cells=2
    )
    assert _lists(page) == {
        # the 2 most-bought (x, w), then popular items u1 never bought: y is skipped although
        # it is not on the page, because u1 bought it
        "u1": ["x", "w", "p1", "p2", "p3"],
        "u2": ["c", "b", "x", "p1"],
        "u3": ["x", "p1"],  # no history: the popularity list
    }
    zero = top_frequency_pages(
        _purchases(), POPULAR, shown, per_row=3, in_stock=IN_STOCK, history_cells=0
    )
    assert _lists(zero)["u1"] == ["p1", "p2", "p3", "p4"]  # 4 never-bought popular items exist
    # a cap at least the page size is top frequency itself
    whole = top_frequency_pages(
        _purchases(), POPULAR, shown, per_row=3, in_stock=IN_STOCK, history_cells=5
    )
    plain = top_frequency_pages(_purchases(), POPULAR, shown, per_row=3, in_stock=IN_STOCK)
    pd.testing.assert_frame_equal(whole, plain)
    with pytest.raises(ValueError, match="history_cells"):
        top_frequency_pages(_purchases(), POPULAR, shown, per_row=3, history_cells=-1)


def test_ranked_list_pages_best_first_cut_to_the_cells_shown():
    scored = pd.DataFrame(
        {
            "user_id": ["a"] * 5 + ["b"] * 2 + ["c"],
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i1", "i2", "i9"],
            "score": [0.1, 0.5, 0.3, 0.5, 0.9, 0.2, 0.7, 1.0],
        }
    )
    shown = pd.Series({"a": 4, "b": 3, "d": 2})  # c is not evaluated, d has no scored items
    pages = ranked_list_pages(scored, shown, per_row=2, in_stock=pd.Index(["i1", "i2", "i4", "i5"]))
    a = pages[pages["user_id"] == "a"]
    # i3 is out of stock; i2 and i4 tie at 0.5 and keep the item id order
    assert a["item_id"].tolist() == ["i5", "i2", "i4", "i1"]
    assert a["slot"].tolist() == [1, 1, 2, 2] and a["item_rank"].tolist() == [1, 2, 1, 2]
    assert pages[pages["user_id"] == "b"]["item_id"].tolist() == ["i2", "i1"]  # all it has
    assert set(pages["user_id"]) == {"a", "b"}
    assert (pages["carousel_id"].str.startswith("ranked_list:")).all()
    assert pages["family"].isna().all()
