"""The export's GX suite rejects pages that break the output contract, naming the rule."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from oracles.export_checks import validate_pages

from validation.export import check_summary, page_summary
from validation.gx import ValidationFailed


def page(rows):
    cols = [
        "user_id",
        "slot",
        "carousel_id",
        "family",
        "item_rank",
        "item_id",
        "carousel_score",
        "item_score",
    ]
    df = pd.DataFrame(rows, columns=cols)
    return df.assign(reason="r", model_version="v1", propensity=0.5)


def stats(rows):
    return pd.DataFrame(rows, columns=["user_id", "slots", "exhausted"])


GOOD = [
    ("u1", 1, "c1", "x", 1, "a", 1.0, 0.5),
    ("u1", 1, "c1", "x", 2, "b", 1.0, 0.4),
    ("u1", 2, "c2", "y", 1, "c", 0.9, 0.3),
    ("__default__", 1, "c1", "x", 1, "a", 1.0, 0.5),
    ("__default__", 2, "c2", "y", 1, "c", 0.9, 0.3),
]
GOOD_STATS = [("u1", 2, False), ("__default__", 2, False)]
IN_STOCK = {"a", "b", "c"}


def check(df, known=("u1", "__default__"), *, slots=2, **kw):
    return validate_pages(df, list(known), slots=slots, per_carousel=2, **kw)


def refused(df, *needles, **kw):
    with pytest.raises(ValidationFailed) as err:
        check(df, **kw)
    for needle in needles:
        assert needle in str(err.value)
    return str(err.value)


def test_a_good_page_passes():
    assert check(page(GOOD))["success"]
    full = check(
        page(GOOD), in_stock_items=np.array(sorted(IN_STOCK)), page_stats=stats(GOOD_STATS)
    )
    assert full["success"] and full["expectations"] > check(page(GOOD))["expectations"]


@pytest.mark.parametrize(
    ("rows", "known", "needle"),
    [
        (
            GOOD[:2] + [("u1", 2, "c2", "x", 1, "c", 0.9, 0.3)] + GOOD[3:],
            ["u1"],
            "_adjacent_family",
        ),
        (
            GOOD[:2] + [("u1", 2, "c2", "y", 1, "a", 0.9, 0.3)] + GOOD[3:],
            ["u1"],
            "_duplicate_item",
        ),
        (
            GOOD[:2] + [("u1", 2, "c2", "y", 1, "c", np.nan, 0.3)] + GOOD[3:],
            ["u1"],
            "_score_not_finite",
        ),
        (
            GOOD[:2] + [("u1", 3, "c2", "y", 1, "c", 0.9, 0.3)] + GOOD[3:],
            ["u1"],
            "_slot_out_of_range",
        ),
        (GOOD, ["u1", "u2"], "1 known user(s) have no page, e.g. ['u2']"),
        (GOOD[:2] + [("u1", 2, "c2", "y", 3, "c", 0.9, 0.3)] + GOOD[3:], ["u1"], "_item_rank_out"),
        (GOOD[:1] + [("u1", 1, "c1", "x", 1, "b", 1.0, 0.4)] + GOOD[2:], ["u1"], "slot 1 rank 1"),
        (GOOD[:1] + [("u1", 1, "c9", "x", 2, "b", 1.0, 0.4)] + GOOD[2:], ["u1"], "_multi_carousel"),
        (GOOD[:1] + [("u1", 1, "c1", "x", 2, None, 1.0, 0.4)] + GOOD[2:], ["u1"], "_null_item_id"),
    ],
)
def test_bad_pages_are_refused_with_the_rule_named(rows, known, needle):
    with pytest.raises(ValidationFailed) as err:
        validate_pages(page(rows), known, slots=2, per_carousel=2)
    assert needle in str(err.value)


def test_out_of_stock_items_are_refused_naming_rows_and_items():
    df = page(GOOD)
    refused(df, "_out_of_stock_item", "unexpected_count=1", "['b']", in_stock_items={"a", "c"})
    # every row showing an out-of-stock item counts, on any page (the default page too)
    msg = refused(df, "_out_of_stock_item", in_stock_items=np.array(["b", "c"]))
    assert "unexpected_count=2" in msg and "'a'" in msg


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (0.0, "_propensity_not_in_0_1"),
        (1.5, "_propensity_not_in_0_1"),
        (-0.2, "_propensity_not_in_0_1"),
        (None, "_null_propensity"),
    ],
)
def test_propensity_must_be_in_0_1(value, needle):
    df = page(GOOD)
    df.loc[2, "propensity"] = value
    refused(df, needle, "unexpected_count=1")


def test_propensity_bounds_are_0_exclusive_1_inclusive():
    df = page(GOOD)
    df["propensity"] = [1.0, 1e-12, 1.0, 1.0, 0.25]
    assert check(df)["success"]


def test_short_page_must_be_exhausted():
    df = page(GOOD)  # u1 and the default page have 2 slots
    # Z = 3: both pages are short; only u1's policy still had candidates
    short = stats([("u1", 2, False), ("__default__", 2, True)])
    refused(
        df,
        "_short_page_not_exhausted",
        "unexpected_count=1",
        "examples=['u1']",
        slots=3,
        page_stats=short,
    )
    # null `exhausted` counts as not exhausted
    refused(
        df,
        "_short_page_not_exhausted",
        slots=3,
        page_stats=stats([("u1", 2, None), ("__default__", 2, True)]),
    )


def test_short_exhausted_page_passes_and_the_rule_needs_page_stats():
    df = page(GOOD)
    assert check(df, slots=3, page_stats=stats([("u1", 2, True), ("__default__", 2, True)]))[
        "success"
    ]
    assert check(df, slots=3)["success"]  # older page dirs without page_stats: rule skipped


def test_page_stats_must_describe_every_page():
    df = page(GOOD)
    refused(
        df,
        "_slot_count_differs_from_page_stats",
        "['u1']",
        page_stats=stats([("u1", 3, True), ("__default__", 2, False)]),
    )
    refused(df, "_no_page_stats", "['__default__']", page_stats=stats([("u1", 2, False)]))
    refused(
        df,
        "1 page(s) in page_stats with slots > 0 have no rows in pages, e.g. ['u9']",
        page_stats=stats(GOOD_STATS + [("u9", 1, True)]),
    )
    refused(df, "duplicated page key", page_stats=stats(GOOD_STATS + [("u1", 2, False)]))
    refused(
        df,
        "page_stats is missing column(s): exhausted",
        page_stats=stats(GOOD_STATS).drop(columns="exhausted"),
    )
    # a page the policy could not fill at all may be listed with 0 slots
    assert check(df, page_stats=stats(GOOD_STATS + [("u9", 0, True)]))["success"]


def test_slots_must_be_1_to_n():
    rows = GOOD[:2] + [("u1", 3, "c2", "y", 1, "c", 0.9, 0.3)] + GOOD[3:]  # u1: slots 1 and 3
    refused(page(rows), "_slots_not_1_to_n", "['u1']", slots=3)


def test_context_default_pages_are_pages_not_known_users():
    ctx = [
        ("__default__:mobile:north", 1, "c1", "x", 1, "a", 1.0, 0.5),
        ("__default__:mobile:north", 2, "c2", "y", 1, "b", 0.9, 0.3),
    ]
    df = page(GOOD + ctx)
    st = stats(GOOD_STATS + [("__default__:mobile:north", 2, False)])
    assert check(df, in_stock_items=IN_STOCK, page_stats=st)["success"]
    # and they are held to the same rules as any page
    refused(df, "_no_page_stats", "['__default__:mobile:north']", page_stats=stats(GOOD_STATS))
    refused(
        df,
        "_short_page_not_exhausted",
        "'__default__:mobile:north'",
        slots=3,
        page_stats=stats(
            [("u1", 2, True), ("__default__", 2, True), ("__default__:mobile:north", 2, False)]
        ),
    )


def test_a_page_without_propensity_is_refused():
    refused(page(GOOD).drop(columns="propensity"), "pages is missing column(s): propensity")


def test_the_summary_of_chunks_is_the_summary_of_the_whole():
    """The export job summarises chunk by chunk (whole pages each, any row order)."""
    rows = []
    for u in range(30):
        for s in (1, 2, 3):
            for r in (1, 2):
                fam = "x" if (s == 2 and u % 7 == 0) or s != 2 else "y"  # some adjacent repeats
                item = f"i{(u + s * 2 + r) % 9}" if u % 5 else f"i{s}"  # some duplicates
                rows.append((f"u{u:02d}", s, f"c{s}", fam, r, item, 1.0, 0.5))
    df = page(rows).sample(frac=1.0, random_state=2)
    table = pa.Table.from_pandas(df, preserve_index=False)
    kw = {"slots": 3, "per_carousel": 2, "in_stock_items": [f"i{k}" for k in range(8)]}
    whole = page_summary(table, **kw).sort_values("user_id", ignore_index=True)
    users = df["user_id"].to_numpy()
    parts = [
        page_summary(pa.Table.from_pandas(df[np.isin(users, g)], preserve_index=False), **kw)
        for g in (sorted(set(users))[:11], sorted(set(users))[11:])
    ]
    chunked = pd.concat(parts).sort_values("user_id", ignore_index=True)
    pd.testing.assert_frame_equal(whole, chunked)
    assert whole["_adjacent_family"].notna().sum() == 5  # u % 7 == 0: families x, x, x
    assert whole["_duplicate_item"].notna().any() and whole["_out_of_stock_item"].notna().any()
    with pytest.raises(ValidationFailed) as err:
        check_summary(chunked, [], slots=3)
    assert "_adjacent_family" in str(err.value) and "unexpected_count=5" in str(err.value)
    # a page split across two chunks is caught
    with pytest.raises(ValidationFailed, match="expect_column_values_to_be_unique"):
        check_summary(pd.concat([chunked, chunked.head(1)]), [], slots=3)
