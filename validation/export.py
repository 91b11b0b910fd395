"""Checks on a built page table before it may be published (GX suite on pandas)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from validation.gx import ValidationFailed, run_suite


def page_checks(pages: pd.DataFrame) -> pd.DataFrame:
    """Add boolean helper columns the suite asserts on (one row per shown item)."""
    df = pages.sort_values(["user_id", "slot", "item_rank"], kind="stable").reset_index(drop=True)
    df["_dup_item"] = df.duplicated(["user_id", "item_id"], keep=False)
    slots = df.drop_duplicates(["user_id", "slot"])[["user_id", "slot", "family"]]
    prev = slots.shift(1)
    slots = slots.assign(
        _adjacent_family=(slots["user_id"] == prev["user_id"])
        & (slots["slot"] == prev["slot"] + 1)
        & (slots["family"] == prev["family"])
    )
    df = df.merge(
        slots[["user_id", "slot", "_adjacent_family"]], on=["user_id", "slot"], how="left"
    )
    df["_finite"] = np.isfinite(df["carousel_score"].to_numpy(float)) & np.isfinite(
        df["item_score"].to_numpy(float)
    )
    df["_multi_carousel_slot"] = (
        df.groupby(["user_id", "slot"])["carousel_id"].transform("nunique") > 1
    )
    return df


def validate_pages(
    pages: pd.DataFrame, known_users: np.ndarray, *, slots: int, per_carousel: int
) -> dict[str, Any]:
    """Raise `ValidationFailed` unless every rule of the output contract holds."""
    missing = np.setdiff1d(np.asarray(known_users, dtype=object), pages["user_id"].unique())
    if len(missing):
        raise ValidationFailed(
            "export_pages", [f"{len(missing)} known user(s) have no page, e.g. {list(missing[:5])}"]
        )
    df = page_checks(pages)

    def build(e: Any) -> list[Any]:
        return [
            *[
                e.ExpectColumnValuesToNotBeNull(column=c)
                for c in (
                    "user_id",
                    "slot",
                    "carousel_id",
                    "family",
                    "item_id",
                    "item_rank",
                    "reason",
                    "model_version",
                )
            ],
            e.ExpectColumnValuesToBeBetween(column="slot", min_value=1, max_value=slots),
            e.ExpectColumnValuesToBeBetween(
                column="item_rank", min_value=1, max_value=per_carousel
            ),
            e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
            e.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "slot", "item_rank"]),
            e.ExpectColumnValuesToBeInSet(column="_adjacent_family", value_set=[False]),
            e.ExpectColumnValuesToBeInSet(column="_finite", value_set=[True]),
            e.ExpectColumnValuesToBeInSet(column="_multi_carousel_slot", value_set=[False]),
        ]

    return run_suite("export_pages", df, build, engine="pandas")
