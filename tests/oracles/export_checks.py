"""Reference check of a page table held in memory: the export's summary + GX suite in one call
(the export itself checks chunk by chunk with `page_summary` and `check_summary`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from validation.export import REQUIRED_COLUMNS, SUITE, check_summary, page_summary
from validation.gx import ValidationFailed


def validate_pages(
    pages: pd.DataFrame,
    known_users: Iterable[Any] | np.ndarray,
    *,
    slots: int,
    per_carousel: int,
    in_stock_items: Iterable[Any] | np.ndarray | None = None,
    page_stats: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """`page_summary` + `check_summary` for a page table in memory (see both).

    `in_stock_items` (ids of the items in stock; None skips the rule) bounds what may be shown.
    """
    absent = [c for c in REQUIRED_COLUMNS if c not in pages.columns]
    if absent:
        raise ValidationFailed(SUITE, [f"pages is missing column(s): {', '.join(absent)}"])
    table = pa.Table.from_pandas(pages[list(REQUIRED_COLUMNS)], preserve_index=False)
    summary = page_summary(
        table, slots=slots, per_carousel=per_carousel, in_stock_items=in_stock_items
    )
    return check_summary(summary, known_users, slots=slots, page_stats=page_stats)
