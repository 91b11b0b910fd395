"""Checks on a built page table before it may be published (GX suite on pandas).

Each rule is a GX expectation, most of them on a helper column that `page_checks` adds, so a
failure names the rule. Helper columns starting with `_` and holding an id (not a bool) are
null on good rows and carry the offending item id / page key otherwise, so the failure also
shows examples; per-page rules mark only the page's first row, so `unexpected_count` counts pages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from validation.gx import ValidationFailed, run_suite

SUITE = "export_pages"
NOT_NULL_COLUMNS = (
    "user_id",
    "slot",
    "carousel_id",
    "family",
    "item_id",
    "item_rank",
    "reason",
    "model_version",
    "propensity",
)
REQUIRED_COLUMNS = (*NOT_NULL_COLUMNS, "carousel_score", "item_score")


def _ids(values: Iterable[Any] | np.ndarray | pd.Series) -> np.ndarray:
    if isinstance(values, (set, frozenset)):
        values = list(values)
    return np.asarray(values, dtype=object)


def page_checks(
    pages: pd.DataFrame,
    *,
    slots: int | None = None,
    in_stock_items: Iterable[Any] | np.ndarray | None = None,
    page_stats: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Add the helper columns the suite asserts on (one row per shown item).

    Always: `_dup_item`, `_adjacent_family`, `_finite`, `_multi_carousel_slot` (bools) and
    `_slots_not_1_to_n` (page key where the page's slots are not exactly 1..n).
    With `in_stock_items`: `_out_of_stock_item` (the item id where the item is not in stock).
    With `page_stats` (and `slots`): `_no_page_stats`, `_slot_count_differs_from_page_stats` and
    `_short_page_not_exhausted` (page key where the page has fewer than `slots` slots while its
    policy was not exhausted).
    """
    df = pages.sort_values(["user_id", "slot", "item_rank"], kind="stable").reset_index(drop=True)
    df["_dup_item"] = df.duplicated(["user_id", "item_id"], keep=False)
    by_slot = df.drop_duplicates(["user_id", "slot"])[["user_id", "slot", "family"]]
    prev = by_slot.shift(1)
    by_slot = by_slot.assign(
        _adjacent_family=(by_slot["user_id"] == prev["user_id"])
        & (by_slot["slot"] == prev["slot"] + 1)
        & (by_slot["family"] == prev["family"])
    )
    df = df.merge(
        by_slot[["user_id", "slot", "_adjacent_family"]], on=["user_id", "slot"], how="left"
    )
    df["_finite"] = np.isfinite(df["carousel_score"].to_numpy(float)) & np.isfinite(
        df["item_score"].to_numpy(float)
    )
    df["_multi_carousel_slot"] = (
        df.groupby(["user_id", "slot"])["carousel_id"].transform("nunique") > 1
    )

    # Per page: distinct slots n and the largest slot; slots are 1..n iff max == n (slots >= 1
    # is its own expectation). `first` marks each page's first row (df is sorted by user_id).
    uid = df["user_id"]
    first = (uid != uid.shift(1)).to_numpy()
    per_page = by_slot.groupby("user_id", sort=False)["slot"].agg(["size", "max"])
    n_slots = uid.map(per_page["size"]).to_numpy()
    max_slot = uid.map(per_page["max"]).to_numpy()

    def flag(bad: np.ndarray) -> pd.Series:
        """Page key on the page's first row where `bad`, else null."""
        return uid.where(first & np.asarray(bad, dtype=bool), None).astype(object)

    df["_slots_not_1_to_n"] = flag(max_slot != n_slots)

    if in_stock_items is not None:
        ok = df["item_id"].isin(_ids(in_stock_items)).to_numpy()
        df["_out_of_stock_item"] = df["item_id"].where(~ok, None).astype(object)

    if page_stats is not None:
        stats = page_stats.drop_duplicates("user_id", keep="first").set_index("user_id")
        has_stats = uid.isin(stats.index).to_numpy()
        stat_slots = uid.map(stats["slots"]).to_numpy(dtype=float, na_value=np.nan)
        # null / missing `exhausted` counts as not exhausted: a short page then fails
        exhausted = uid.map(stats["exhausted"].astype("boolean").fillna(False).astype(bool))
        exhausted = exhausted.eq(True).to_numpy()
        df["_no_page_stats"] = flag(~has_stats)
        df["_slot_count_differs_from_page_stats"] = flag(has_stats & (stat_slots != n_slots))
        if slots is not None:
            df["_short_page_not_exhausted"] = flag(has_stats & (n_slots < slots) & ~exhausted)
    return df


def _page_stats_problems(page_stats: pd.DataFrame, page_keys: np.ndarray) -> list[str]:
    """Rules on page_stats itself that no row of `pages` can carry."""
    missing = [c for c in ("user_id", "slots", "exhausted") if c not in page_stats.columns]
    if missing:
        return [f"page_stats is missing column(s): {', '.join(missing)}"]
    problems = []
    dup = page_stats["user_id"][page_stats["user_id"].duplicated()].unique()
    if len(dup):
        problems.append(f"page_stats has {len(dup)} duplicated page key(s), e.g. {list(dup[:5])}")
    lost = page_stats[(page_stats["slots"] > 0) & ~page_stats["user_id"].isin(page_keys)]
    if len(lost):
        problems.append(
            f"_slot_count_differs_from_page_stats: {len(lost)} page(s) in page_stats with slots > 0 "
            f"have no rows in pages, e.g. {lost['user_id'].head(5).tolist()}"
        )
    return problems


def validate_pages(
    pages: pd.DataFrame,
    known_users: Iterable[Any] | np.ndarray,
    *,
    slots: int,
    per_carousel: int,
    in_stock_items: Iterable[Any] | np.ndarray | None = None,
    page_stats: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Raise `ValidationFailed` unless every rule of the output contract holds.

    `known_users` must each have a page. `in_stock_items` (ids of the items in stock; None skips
    the rule) bounds what may be shown. `page_stats` (one row per page key: `user_id`, `slots`,
    `exhausted`; None skips these rules, for page dirs written before it existed) must describe
    every page, and a page has `slots` slots unless its policy ran out of candidates.
    """
    absent = [c for c in REQUIRED_COLUMNS if c not in pages.columns]
    if absent:
        raise ValidationFailed(SUITE, [f"pages is missing column(s): {', '.join(absent)}"])
    page_keys = pages["user_id"].unique()
    missing = np.setdiff1d(_ids(known_users), page_keys)
    if len(missing):
        raise ValidationFailed(
            SUITE, [f"{len(missing)} known user(s) have no page, e.g. {list(missing[:5])}"]
        )
    if page_stats is not None:
        problems = _page_stats_problems(page_stats, page_keys)
        if problems:
            raise ValidationFailed(SUITE, problems)
    df = page_checks(pages, slots=slots, in_stock_items=in_stock_items, page_stats=page_stats)

    def build(e: Any) -> list[Any]:
        out = [
            *[e.ExpectColumnValuesToNotBeNull(column=c) for c in NOT_NULL_COLUMNS],
            e.ExpectColumnValuesToBeBetween(column="slot", min_value=1, max_value=slots),
            e.ExpectColumnValuesToBeBetween(
                column="item_rank", min_value=1, max_value=per_carousel
            ),
            e.ExpectColumnValuesToBeBetween(
                column="propensity", min_value=0.0, max_value=1.0, strict_min=True
            ),
            e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
            e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "slot", "item_rank"]),
            e.ExpectColumnValuesToBeInSet(column="_adjacent_family", value_set=[False]),
            e.ExpectColumnValuesToBeInSet(column="_finite", value_set=[True]),
            e.ExpectColumnValuesToBeInSet(column="_multi_carousel_slot", value_set=[False]),
            e.ExpectColumnValuesToBeNull(column="_slots_not_1_to_n"),
        ]
        for col in (
            "_out_of_stock_item",
            "_no_page_stats",
            "_slot_count_differs_from_page_stats",
            "_short_page_not_exhausted",
        ):
            if col in df.columns:
                out.append(e.ExpectColumnValuesToBeNull(column=col))
        return out

    return run_suite(SUITE, df, build, engine="pandas")
