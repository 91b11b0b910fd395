"""Page rows before they are written: the export's column types, key order (user_id bytes,
slot, item_rank), the structural checks the key-value layout depends on, and chunks of whole pages."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.lake import DEFAULT_PAGE_KEY
from serving_export.export.format import PAGES_SCHEMA, USER_ID_RE


def pages_table(df: pd.DataFrame | pa.Table, what: str = "pages") -> pa.Table:
    """Page rows (a frame or an Arrow table; categoricals become dictionaries) in the
    export's column types."""
    names = df.column_names if isinstance(df, pa.Table) else df.columns
    missing = [f.name for f in PAGES_SCHEMA if f.name not in names]
    if missing:
        raise ValueError(f"{what} is missing column(s): {', '.join(missing)}")
    t = (
        df
        if isinstance(df, pa.Table)
        else pa.Table.from_pandas(df, columns=PAGES_SCHEMA.names, preserve_index=False)
    )
    cols = [pc.cast(t[f.name], f.type) for f in PAGES_SCHEMA]
    return pa.Table.from_arrays(cols, schema=PAGES_SCHEMA)


def in_key_order(t: pa.Table) -> bool:
    """Rows sorted by (user_id bytes, slot, item_rank), ties allowed (duplicates are caught
    by `check_sorted_unique`)."""
    if t.num_rows < 2:
        return True
    u = t["user_id"].combine_chunks()
    s = t["slot"].combine_chunks()
    r = t["item_rank"].combine_chunks()
    u0, u1, s0, s1, r0, r1 = u[:-1], u[1:], s[:-1], s[1:], r[:-1], r[1:]
    same_u = pc.equal(u0, u1)
    ok = pc.or_(
        pc.less(u0, u1),
        pc.and_(
            same_u,
            pc.or_(pc.less(s0, s1), pc.and_(pc.equal(s0, s1), pc.less_equal(r0, r1))),
        ),
    )
    return bool(pc.all(ok).as_py())


def check_pages(t: pa.Table, default_rows: int, need_default: bool = True) -> None:
    """Cheap structural checks the key-value layout depends on (content rules live in validation/)."""
    for name in ("user_id", "slot", "item_rank", "carousel_id", "item_id"):
        if t[name].null_count:
            raise ValueError(f"pages.{name} has {t[name].null_count} null value(s)")
    if t.num_rows and (pc.min(t["slot"]).as_py() < 1 or pc.min(t["item_rank"]).as_py() < 1):
        raise ValueError("pages.slot and pages.item_rank must be >= 1")
    uids = pc.unique(t["user_id"])
    bad = pc.filter(uids, pc.invert(pc.match_substring_regex(uids, USER_ID_RE.pattern))).to_pylist()
    if bad:
        raise ValueError(
            f"{len(bad)} user_id(s) are not servable (need 1-128 chars of [A-Za-z0-9_.:@-]), "
            f"e.g. {bad[:3]!r}"
        )
    if default_rows == 0 and need_default:
        raise ValueError("default_page is empty: unknown users would get no page")


def check_sorted_unique(t: pa.Table) -> None:
    if t.num_rows < 2:
        return
    same = pc.and_(
        pc.equal(t["user_id"][1:], t["user_id"][:-1]),
        pc.and_(
            pc.equal(t["slot"][1:], t["slot"][:-1]),
            pc.equal(t["item_rank"][1:], t["item_rank"][:-1]),
        ),
    )
    dups = pc.sum(pc.cast(same, pa.int64())).as_py() or 0
    if dups:
        raise ValueError(f"pages has {dups} duplicate (user_id, slot, item_rank) row(s)")


def page_cuts(sorted_keys: np.ndarray, chunk_rows: int) -> list[tuple[int, int]]:
    """Row ranges of about `chunk_rows` rows that start where `sorted_keys` changes (whole pages)."""
    n = len(sorted_keys)
    if n == 0:
        return []
    new = np.ones(n, dtype=bool)
    new[1:] = sorted_keys[1:] != sorted_keys[:-1]
    starts = np.flatnonzero(new)
    targets = np.arange(0, n, max(1, chunk_rows))
    cuts = np.unique(starts[np.searchsorted(starts, targets, side="right") - 1])
    cuts = np.append(cuts, n)
    return [(int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)]


def table_chunks(table: pa.Table, chunk_rows: int) -> Any:
    """Slices (as thunks) of a table sorted by user_id, slot, item_rank, each holding whole pages."""
    n = table.num_rows
    if n == 0:
        return
    uid = table["user_id"].combine_chunks()
    codes = np.zeros(n, dtype=np.int64)
    if n > 1:
        codes[1:] = np.cumsum(pc.not_equal(uid[1:], uid[:-1]).to_numpy(zero_copy_only=False))
    for lo, hi in page_cuts(codes, chunk_rows):
        yield functools.partial(table.slice, lo, hi - lo)


def read_pages_file(pages_path: str, filesystem: Any) -> pa.Table:
    """The rank step's pages.parquet in the export's column types, strings as dictionaries."""
    names = PAGES_SCHEMA.names
    strings = [f.name for f in PAGES_SCHEMA if pa.types.is_string(f.type)]

    def column(f: pa.Field) -> pa.Array:
        # one column at a time, so only one column is ever held twice (chunks, then combined)
        t = pq.read_table(
            pages_path,
            columns=[f.name],
            read_dictionary=[f.name] if f.name in strings else None,
            filesystem=filesystem,
        )
        if f.name in strings:
            return t.unify_dictionaries().column(0).combine_chunks()
        return pc.cast(t.column(0).combine_chunks(), f.type)

    return pa.Table.from_arrays([column(f) for f in PAGES_SCHEMA], names=names)


def key_order_chunks(
    table: pa.Table, pages_path: str, chunk_rows: int
) -> Iterator[Callable[[], pa.Table]]:
    """Chunks (as thunks) of whole pages in key order, from a table of the rank step's pages
    (`read_pages_file`: each page's rows together, in any order). The rows are ordered by the
    rank of their page key's dictionary code in byte order, then by slot and item rank within a
    page. Raises ValueError, before any chunk is made, on no pages, a null user_id or no
    default page."""
    uid = table["user_id"].chunk(0) if table.num_rows else None
    if uid is None:
        raise ValueError(f"{pages_path} holds no pages")
    if uid.null_count:
        raise ValueError(f"pages.user_id has {uid.null_count} null value(s)")
    # each page key's rank in byte order (LMDB's), then the rows ordered by it
    keys = uid.dictionary
    rank_of = np.empty(len(keys), dtype=np.int32)
    rank_of[pc.array_sort_indices(keys).to_numpy()] = np.arange(len(keys), dtype=np.int32)
    row_rank = rank_of[uid.indices.to_numpy(zero_copy_only=False)]
    del uid
    order = np.argsort(row_rank, kind="stable")
    row_rank = row_rank[order]
    default_code = pc.index(keys, DEFAULT_PAGE_KEY).as_py()
    default_rows = 0
    if default_code >= 0:
        default_rows = int(np.count_nonzero(row_rank == rank_of[default_code]))
    if default_rows == 0:
        raise ValueError("default_page is empty: unknown users would get no page")

    def chunk(lo: int, hi: int) -> pa.Table:
        part = table.take(pa.array(order[lo:hi]))
        # within a page: by slot, then item rank
        perm = np.lexsort((part["item_rank"].to_numpy(), part["slot"].to_numpy(), row_rank[lo:hi]))
        part = part.take(pa.array(perm))
        part = pa.Table.from_arrays(
            [pc.cast(part[f.name], f.type) for f in PAGES_SCHEMA], schema=PAGES_SCHEMA
        )
        check_pages(part, default_rows)
        check_sorted_unique(part)
        return part

    def chunks() -> Any:
        for lo, hi in page_cuts(row_rank, chunk_rows):
            yield functools.partial(chunk, lo, hi)

    return chunks()
