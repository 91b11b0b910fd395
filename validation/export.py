"""Checks on a built page table before it may be published: a GX suite on one row per page.

Every rule of the output contract is evaluated over every shown item with vectorised Arrow and
numpy kernels (`page_summary`) and summarised as one row per page key. Each rule is a column
that is null on a good page and otherwise holds an example of what broke it (the item shown
twice, the out-of-stock item, the slot with two carousels, the repeated family, the page key…).
The GX suite (`check_summary`) then asserts that every rule column is null, so a failure names
the rule, counts the pages that break it (`unexpected_count`) and shows examples. A summary is
computed chunk by chunk (each chunk holding whole pages), so a 1M-user export (~100M rows) is
checked in bounded memory and the suite runs on 1M rows, not 100M.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
# rule columns of the summary, in the order the suite asserts them (null on a good page)
ROW_RULES = (
    *(f"_null_{c}" for c in NOT_NULL_COLUMNS if c != "user_id"),
    "_slot_out_of_range",
    "_item_rank_out_of_range",
    "_propensity_not_in_0_1",
    "_score_not_finite",
    "_duplicate_item",
    "_duplicate_slot_and_rank",
    "_multi_carousel_slot",
    "_adjacent_family",
    "_slots_not_1_to_n",
)
STOCK_RULE = "_out_of_stock_item"
STATS_RULES = ("_no_page_stats", "_slot_count_differs_from_page_stats", "_short_page_not_exhausted")


def _ids(values: Iterable[Any] | np.ndarray | pd.Series) -> np.ndarray:
    if isinstance(values, (set, frozenset)):
        values = list(values)
    return np.asarray(values, dtype=object)


def _codes(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, pa.Array]:
    """(int64 code per row, -1 where null; the dictionary of values as strings)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if not pa.types.is_dictionary(arr.type):
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = pc.cast(arr, pa.string())
        arr = pc.dictionary_encode(arr)
    codes = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.dictionary
    if not pa.types.is_string(values.type):
        values = pc.cast(values, pa.string())
    return codes, values


def _floats(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 per row, NaN where null (or not a number)."""
    arr = pc.cast(col, pa.float64())
    return pc.fill_null(arr, np.nan).to_numpy(zero_copy_only=False)


class _SortedPages:
    """A page table's rows sorted by (page key, slot, rank), with per-page bookkeeping."""

    def __init__(self, t: pa.Table) -> None:
        self.table = t
        self.n = n = t.num_rows
        ucode, uvals = _codes(t["user_id"])
        slot, rank = _floats(t["slot"]), _floats(t["item_rank"])
        order = np.lexsort((rank, slot, ucode))  # NaN sorts last
        self.slot, self.rank = slot[order], rank[order]
        ucode = ucode[order]
        self.idx = pa.array(order)
        self.page_start = np.ones(n, dtype=bool)
        self.page_start[1:] = ucode[1:] != ucode[:-1]
        self.pid = np.cumsum(self.page_start) - 1
        self.first_rows = np.flatnonzero(self.page_start)
        self.n_pages = len(self.first_rows)
        page_codes = ucode[self.first_rows]
        self.keys = np.full(self.n_pages, None, dtype=object)
        known = page_codes >= 0
        self.keys[known] = np.asarray(
            uvals.take(pa.array(page_codes[known])).to_pylist(), dtype=object
        )
        # rows in the same page and slot as the row before them
        self.same_slot = np.zeros(n, dtype=bool)
        self.same_slot[1:] = ~self.page_start[1:] & (self.slot[1:] == self.slot[:-1])

    def sorted_col(self, name: str) -> pa.Array:
        t = self.table
        col = t[name].combine_chunks() if isinstance(t[name], pa.ChunkedArray) else t[name]
        return col.take(self.idx)

    def example(self, mask: np.ndarray, value: Callable[[np.ndarray], list[Any]]) -> np.ndarray:
        """Per page: `value` of its first row where `mask`, else None."""
        col = np.full(self.n_pages, None, dtype=object)
        rows = np.flatnonzero(mask)
        if rows.size:
            pages, first = np.unique(self.pid[rows], return_index=True)
            col[pages] = value(rows[first])
        return col

    def page_key(self, rows: np.ndarray) -> list[Any]:
        return self.keys[self.pid[rows]].tolist()


def _text(codes: np.ndarray, values: pa.Array) -> Callable[[np.ndarray], list[Any]]:
    return lambda rows: values.take(pa.array(codes[rows])).to_pylist()


def _as_int(values: np.ndarray) -> Callable[[np.ndarray], list[Any]]:
    return lambda rows: [int(x) for x in values[rows]]


def page_summary(
    t: pa.Table,
    *,
    slots: int,
    per_carousel: int,
    in_stock_items: pa.Array | None = None,
) -> pd.DataFrame:
    """One row per page key of `t` (which holds whole pages, in any order): `user_id`, `rows`,
    `slots` (distinct slots shown) and one column per rule (`ROW_RULES`, and `STOCK_RULE` when
    `in_stock_items` is given), null unless the page breaks the rule.

    `_slots_not_1_to_n`: the slots are not exactly 1..n. `_adjacent_family`: two neighbouring
    slots (n, n+1) show carousels of the same family. `_score_not_finite`: a carousel or item
    score is null, NaN or infinite.
    """
    absent = [c for c in REQUIRED_COLUMNS if c not in t.column_names]
    if absent:
        raise ValidationFailed(SUITE, [f"pages is missing column(s): {', '.join(absent)}"])
    pg = _SortedPages(t)
    out: dict[str, Any] = {"user_id": pg.keys, "rows": np.bincount(pg.pid, minlength=pg.n_pages)}
    for c in NOT_NULL_COLUMNS[1:]:
        nulls = pg.sorted_col(c).is_null(nan_is_null=True).to_numpy(zero_copy_only=False)
        out[f"_null_{c}"] = pg.example(nulls, pg.page_key)
    slot, rank = pg.slot, pg.rank
    out["_slot_out_of_range"] = pg.example(
        ~np.isnan(slot) & ((slot < 1) | (slot > slots)), _as_int(slot)
    )
    out["_item_rank_out_of_range"] = pg.example(
        ~np.isnan(rank) & ((rank < 1) | (rank > per_carousel)), _as_int(rank)
    )
    prop = _floats(pg.sorted_col("propensity"))
    out["_propensity_not_in_0_1"] = pg.example(
        ~np.isnan(prop) & ~((prop > 0) & (prop <= 1)), lambda rows: prop[rows].tolist()
    )
    icode, ivals = _codes(pg.sorted_col("item_id"))
    finite = np.isfinite(_floats(pg.sorted_col("carousel_score"))) & np.isfinite(
        _floats(pg.sorted_col("item_score"))
    )
    out["_score_not_finite"] = pg.example(~finite, _text(icode, ivals))
    out.update(_duplicate_rules(pg, icode, ivals))
    out.update(_slot_rules(pg))
    if in_stock_items is not None:
        stock = pa.array(_ids(in_stock_items).astype(str).tolist(), pa.string())
        ok = pc.is_in(ivals, value_set=stock).to_numpy(zero_copy_only=False)
        gone = (icode >= 0) & ~ok[np.maximum(icode, 0)]
        out[STOCK_RULE] = pg.example(gone, _text(icode, ivals))
    return pd.DataFrame(out)


def _duplicate_rules(pg: _SortedPages, icode: np.ndarray, ivals: pa.Array) -> dict[str, np.ndarray]:
    """`_duplicate_item` (an item twice on a page) and `_duplicate_slot_and_rank`."""
    n, slot, rank = pg.n, pg.slot, pg.rank
    pair = pg.pid * (len(ivals) + 1) + icode
    by_pair = np.argsort(pair, kind="stable")
    sp = pair[by_pair]
    twin = np.zeros(n, dtype=bool)
    if n > 1:
        same = (sp[1:] == sp[:-1]) & (icode[by_pair][1:] >= 0)
        twin[by_pair[1:][same]] = True
    out = {"_duplicate_item": pg.example(twin, _text(icode, ivals))}

    # rows sorted by (page, slot, rank): neighbours that share all three
    twin_rank = np.zeros(n, dtype=bool)
    twin_rank[1:] = pg.same_slot[1:] & (rank[1:] == rank[:-1])
    out["_duplicate_slot_and_rank"] = pg.example(
        twin_rank, lambda rows: [f"slot {int(slot[r])} rank {int(rank[r])}" for r in rows]
    )
    return out


def _slot_rules(pg: _SortedPages) -> dict[str, np.ndarray]:
    """`_multi_carousel_slot`, `_adjacent_family`, `slots` and `_slots_not_1_to_n`."""
    n, slot, pid = pg.n, pg.slot, pg.pid
    out = {}
    # one carousel per slot: each row against its slot's first row
    slot_start = ~pg.same_slot
    group_first = np.maximum.accumulate(np.where(slot_start, np.arange(n), 0))
    ccode, _ = _codes(pg.sorted_col("carousel_id"))
    out["_multi_carousel_slot"] = pg.example(ccode != ccode[group_first], _as_int(slot))

    # neighbouring slots n, n+1 of one page with the same family
    fcode, fvals = _codes(pg.sorted_col("family"))
    starts = np.flatnonzero(slot_start)
    adjacent = np.zeros(n, dtype=bool)
    if len(starts) > 1:
        cur, prev = starts[1:], starts[:-1]
        adjacent[cur] = (
            (pid[cur] == pid[prev])
            & (slot[cur] == slot[prev] + 1)
            & (fcode[cur] == fcode[prev])
            & (fcode[cur] >= 0)
        )
    out["_adjacent_family"] = pg.example(adjacent, _text(fcode, fvals))

    # slots exactly 1..n: the largest slot (the page's last row) equals the number of slots
    n_slots = np.bincount(pid[starts], minlength=pg.n_pages)
    last_rows = np.append(pg.first_rows[1:], n) - 1
    bad_slots = ~(slot[last_rows] == n_slots)  # NaN slots count as bad
    out["slots"] = n_slots
    out["_slots_not_1_to_n"] = np.where(bad_slots, pg.keys, None)
    return out


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


def check_summary(
    summary: pd.DataFrame,
    known_users: Iterable[Any] | np.ndarray,
    *,
    slots: int,
    page_stats: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Raise `ValidationFailed` unless every rule holds on every page of `summary` (the
    concatenated `page_summary` of all chunks).

    `known_users` must each have a page. `page_stats` (one row per page key: `user_id`, `slots`,
    `exhausted`; None skips these rules, for page dirs written before it existed) must describe
    every page, and a page has `slots` slots unless its policy ran out of candidates.
    """
    keys = summary["user_id"]
    # sets: np.setdiff1d on object arrays is quadratic-slow at 1M keys
    missing = sorted(set(_ids(known_users).tolist()) - set(keys.dropna().tolist()))
    if missing:
        raise ValidationFailed(
            SUITE, [f"{len(missing)} known user(s) have no page, e.g. {list(missing[:5])}"]
        )
    df = summary
    if page_stats is not None:
        problems = _page_stats_problems(page_stats, keys.to_numpy(object))
        if problems:
            raise ValidationFailed(SUITE, problems)
        stats = page_stats.drop_duplicates("user_id", keep="first").set_index("user_id")
        has = keys.isin(stats.index).to_numpy()
        stat_slots = keys.map(stats["slots"]).to_numpy(dtype=float, na_value=np.nan)
        # null / missing `exhausted` counts as not exhausted: a short page then fails
        exhausted = keys.map(stats["exhausted"].astype("boolean").fillna(False).astype(bool))
        exhausted = exhausted.eq(True).to_numpy()
        n_slots = summary["slots"].to_numpy()
        k = keys.to_numpy(object)
        df = summary.assign(
            _no_page_stats=np.where(~has, k, None),
            _slot_count_differs_from_page_stats=np.where(has & (stat_slots != n_slots), k, None),
            _short_page_not_exhausted=np.where(has & (n_slots < slots) & ~exhausted, k, None),
        )
    rules = [c for c in (*ROW_RULES, STOCK_RULE, *STATS_RULES) if c in df.columns]
    df = df[["user_id", *rules]].astype(object)

    def build(e: Any) -> list[Any]:
        return [
            e.ExpectColumnValuesToNotBeNull(column="user_id"),
            e.ExpectColumnValuesToBeUnique(column="user_id"),
            *[e.ExpectColumnValuesToBeNull(column=c) for c in rules],
        ]

    result = run_suite(SUITE, df, build, engine="pandas")
    return {**result, "pages": len(summary), "rows": int(summary["rows"].sum())}
