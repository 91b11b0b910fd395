"""Write one day's export: `pages.parquet`, `pages.lmdb` and, last, `MANIFEST.json`.

Layout of `<lake>/exports/ds=YYYY-MM-DD/`:

    pages.parquet   one row per shown item (pages + the default page), zstd, sorted by
                    user_id, slot, item_rank
    pages.lmdb      ONE LMDB data file (`subdir=False`); the writer removes its lock file, as
                    exports are immutable and readers open them with `readonly=True, lock=False`.
                    Named sub-databases:
                      "pages": key = user_id (utf-8), value = the page as compact JSON, exactly
                               the bytes the lookup server sends; key "__default__" holds the
                               fallback page for unknown users.
                      "items": key = item_id (utf-8), value = {"item_id","title","category_id",
                               "brand","price"} as compact JSON, for the items shown on any page.
    MANIFEST.json   counts, checksums, model versions, config hash; written last, so its presence
                    marks a complete export.

Page value (keys in this order, scores and propensities rounded to 6 significant digits,
NaN -> null):

    {"user_id":"u1","ds":"2024-01-31","model_version":"v3","fallback":false,
     "carousels":[{"slot":1,"carousel_id":"c9","title":"Buy again","family":"buy_again",
                   "score":0.912345,"items":[{"item_id":"i1","rank":1,"score":0.5,
                                              "propensity":0.25,"reason":"buy_again"}, ...]},
                  ...]}

`propensity` is the probability with which the page policy made that placement (this carousel
in this slot and this item at this rank, given the page above it); 1.0 when deterministic.
`fallback` is true for the default page "__default__" and for context default pages (keys
starting with "__default__:", e.g. "__default__:mobile:north"), which the lookup server may
serve to unknown users; such context pages are stored like any other page and counted in `users`.

The JSON is built column-wise with Arrow compute kernels (string literals are escaped once per
distinct value with orjson), so the cost is O(rows) with no per-row Python.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import lmdb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.errors import ExportError
from jobs.core.io import fsync_path, sha256_file
from jobs.core.lake import DEFAULT_PAGE_KEY, parse_ds

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PARQUET_FILE = "pages.parquet"
LMDB_FILE = "pages.lmdb"
MANIFEST_FILE = "MANIFEST.json"
CONTEXT_DEFAULT_PREFIX = DEFAULT_PAGE_KEY + ":"  # context default pages, e.g. "__default__:mobile"
PAGES_DB = b"pages"
ITEMS_DB = b"items"
SCORE_DIGITS = 6
# The lookup server accepts exactly these ids; a page under any other key could never be served.
USER_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")

PAGES_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("slot", pa.int32()),
        ("carousel_id", pa.string()),
        ("carousel_title", pa.string()),
        ("family", pa.string()),
        ("carousel_score", pa.float64()),
        ("item_rank", pa.int32()),
        ("item_id", pa.string()),
        ("item_score", pa.float64()),
        ("propensity", pa.float64()),
        ("reason", pa.string()),
        ("model_version", pa.string()),
    ]
)
ITEM_FIELDS = ("item_id", "title", "category_id", "brand", "price")
MANIFEST_KEYS = (
    "ds",
    "created_at",
    "users",
    "rows",
    "slots_max",
    "model_versions",
    "config_hash",
    "files",
    "bytes_per_user",
    "format_version",
)


class ExportInvalid(ExportError):
    """An export directory is incomplete, corrupt or inconsistent with its manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- JSON fragments (vectorised)


def _json_strings(arr: pa.Array) -> pa.Array:
    """Quoted, escaped JSON literal per element (null -> `null`); one orjson call per distinct value."""
    enc = pc.dictionary_encode(arr)
    lits = pa.array([orjson.dumps(v).decode() for v in enc.dictionary.to_pylist()], pa.string())
    return pc.fill_null(pc.take(lits, enc.indices), "null")


def _round_sig(x: np.ndarray, digits: int = SCORE_DIGITS) -> np.ndarray:
    """Round to `digits` significant digits so that Arrow's shortest float repr stays short.

    n / 10**k of two exactly representable numbers is correctly rounded, so the result is the
    double nearest to the decimal and its shortest repr has at most `digits` digits.
    """
    out = x.astype(np.float64, copy=True)
    nz = np.isfinite(out) & (out != 0.0)
    v = out[nz]
    if v.size:
        k = (digits - 1 - np.floor(np.log10(np.abs(v)))).astype(np.int64)
        p = 10.0 ** np.abs(k).astype(np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            out[nz] = np.where(k >= 0, np.round(v * p) / p, np.round(v / p) * p)
    return out


def _json_floats(arr: pa.Array) -> pa.Array:
    """JSON number per element: 6 significant digits, always float-typed, NaN/inf/null -> null."""
    x = arr.to_numpy(zero_copy_only=False).astype(np.float64)
    finite = np.isfinite(x)  # nulls arrive as NaN
    s = pc.cast(pa.array(_round_sig(x)), pa.string())
    # Arrow prints 1.0 as "1"; add ".0" so JSON readers keep the value a float.
    s = pc.if_else(
        pc.match_substring_regex(s, r"^-?\d+$"), pc.binary_join_element_wise(s, ".0", ""), s
    )
    return pc.if_else(pa.array(finite), s, "null")


def _json_ints(arr: pa.Array) -> pa.Array:
    return pc.fill_null(pc.cast(arr, pa.string()), "null")


def _join(*parts: Any) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _page_values(
    t: pa.Table, ds_lit: str, refreshed_lit: str | None = None
) -> tuple[pa.Array, pa.Array]:
    """(user_id, page JSON) for a table slice sorted by user_id, slot, item_rank; a delta's
    pages (`refreshed_lit`, a JSON string) carry "refreshed_at" after the model version."""
    n = t.num_rows
    uid = t["user_id"].combine_chunks()
    slot = t["slot"].combine_chunks()
    uid_new = np.ones(n, dtype=bool)
    car_new = np.ones(n, dtype=bool)
    if n > 1:
        uid_new[1:] = pc.not_equal(uid[1:], uid[:-1]).to_numpy(zero_copy_only=False)
        slot_np = slot.to_numpy(zero_copy_only=False)
        car_new[1:] = uid_new[1:] | (slot_np[1:] != slot_np[:-1])
    car_starts = np.flatnonzero(car_new)
    user_starts = np.flatnonzero(uid_new)

    def col(name: str, idx: np.ndarray | None = None) -> pa.Array:
        a = t[name].combine_chunks()
        return a if idx is None else a.take(pa.array(idx))

    item_frag = _join(
        '{"item_id":',
        _json_strings(col("item_id")),
        ',"rank":',
        _json_ints(col("item_rank")),
        ',"score":',
        _json_floats(col("item_score")),
        ',"propensity":',
        _json_floats(col("propensity")),
        ',"reason":',
        _json_strings(col("reason")),
        "}",
    )
    car_offsets = pa.array(np.append(car_starts, n).astype(np.int32))
    car_items = pc.binary_join(pa.ListArray.from_arrays(car_offsets, item_frag), ",")
    car_frag = _join(
        '{"slot":',
        _json_ints(col("slot", car_starts)),
        ',"carousel_id":',
        _json_strings(col("carousel_id", car_starts)),
        ',"title":',
        _json_strings(col("carousel_title", car_starts)),
        ',"family":',
        _json_strings(col("family", car_starts)),
        ',"score":',
        _json_floats(col("carousel_score", car_starts)),
        ',"items":[',
        car_items,
        "]}",
    )
    # Carousel index of each user's first carousel: positions of user starts among car starts.
    user_car_offsets = np.append(np.searchsorted(car_starts, user_starts), len(car_starts))
    user_cars = pc.binary_join(
        pa.ListArray.from_arrays(pa.array(user_car_offsets.astype(np.int32)), car_frag), ","
    )
    user_ids = col("user_id", user_starts)
    is_default = pc.or_(
        pc.equal(user_ids, DEFAULT_PAGE_KEY), pc.starts_with(user_ids, CONTEXT_DEFAULT_PREFIX)
    )
    fallback = pc.if_else(is_default, "true", "false")
    page = _join(
        '{"user_id":',
        _json_strings(user_ids),
        ',"ds":',
        ds_lit,
        ',"model_version":',
        _json_strings(col("model_version", user_starts)),  # the user's first row decides
        *([',"refreshed_at":', refreshed_lit] if refreshed_lit else []),
        ',"fallback":',
        fallback,
        ',"carousels":[',
        user_cars,
        "]}",
    )
    return user_ids, page


# ---------------------------------------------------------------- input checks


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


def _in_key_order(t: pa.Table) -> bool:
    """Rows sorted by (user_id bytes, slot, item_rank), ties allowed (duplicates are caught
    by `_check_sorted_unique`)."""
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


def _check_pages(t: pa.Table, default_rows: int, need_default: bool = True) -> None:
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


def _check_sorted_unique(t: pa.Table) -> None:
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


# ---------------------------------------------------------------- files


def _file_entries(paths: dict[str, str]) -> dict[str, dict[str, Any]]:
    """{name: {bytes, sha256}}, the files hashed in parallel (hashlib releases the GIL)."""
    with ThreadPoolExecutor(len(paths) or 1) as pool:
        sums = dict(zip(paths, pool.map(sha256_file, paths.values()), strict=True))
    return {name: {"bytes": os.path.getsize(p), "sha256": sums[name]} for name, p in paths.items()}


def _put_sorted(env: lmdb.Environment, db: Any, kv: list[tuple[bytes, Any]]) -> None:
    """Append already byte-sorted pairs in one transaction; grow the map when it is full."""
    while True:
        try:
            with env.begin(write=True, db=db) as txn:
                _, added = txn.cursor().putmulti(kv, dupdata=False, overwrite=False, append=True)
                if added != len(kv):  # raising here aborts the transaction
                    raise ValueError(f"LMDB took {added} of {len(kv)} keys: not unique or unsorted")
            return
        except lmdb.MapFullError:
            size = env.info()["map_size"] * 2
            log.warning("LMDB map full; growing map_size to %.1f GB", size / 1e9)
            env.set_mapsize(size)


def _item_values(items: pd.DataFrame, shown: set[str]) -> list[tuple[bytes, bytes]]:
    if "item_id" not in items.columns:
        raise ValueError("items is missing column item_id")
    df = items[items["item_id"].astype(str).isin(shown)]
    df = df.drop_duplicates("item_id", keep="last")
    cols = {c: (df[c].tolist() if c in df.columns else [None] * len(df)) for c in ITEM_FIELDS}
    out = []
    for i, item_id in enumerate(cols["item_id"]):
        rec = {c: cols[c][i] for c in ITEM_FIELDS}
        rec["item_id"] = str(item_id)
        price = rec["price"]
        rec["price"] = None if price is None or price != price else float(price)  # NaN -> null
        for c in ("title", "category_id", "brand"):
            if rec[c] is not None and not isinstance(rec[c], str):
                rec[c] = None if pd.isna(rec[c]) else str(rec[c])
        out.append((rec["item_id"].encode(), orjson.dumps(rec)))
    out.sort(key=lambda kv: kv[0])
    return out


def write_export(
    export_dir: str,
    pages: pd.DataFrame | pa.Table,
    default_page: pd.DataFrame | pa.Table,
    items: pd.DataFrame,
    *,
    ds: str,
    model_versions: dict[str, str],
    config_hash: str,
    map_size_gb: float = 8.0,
    chunk_rows: int = 1_000_000,
    delta: dict[str, str] | None = None,
    on_chunk: Callable[[pa.Table], None] | None = None,
) -> dict[str, Any]:
    """Write pages.parquet, pages.lmdb and MANIFEST.json (last) into `export_dir`; return the manifest.

    `pages` / `default_page` follow the export contract (one row per shown item, with the
    placement's `propensity`; the default page has user_id "__default__", context default pages
    "__default__:<context>" go in `pages`). `items` gives display fields for the items shown. Raises
    FileExistsError when the directory already holds a complete export (a MANIFEST.json), and
    ValueError on malformed input. `map_size_gb` is the initial LMDB map size; it doubles when full.

    `delta` ({"watermark", "refreshed_at"}) writes an intra-day delta instead: the pages changed
    since the daily export of `ds`, each with "refreshed_at"; it needs no default page (one
    whose default page changed holds it) and its manifest has kind "delta".

    `on_chunk` sees each sorted chunk of whole pages before it is written (e.g. to validate it);
    it is called from worker threads, for chunks in any order.

    `pages` and `default_page` may be Arrow tables (string columns plain or dictionary-encoded);
    rows already in key order are not sorted again.
    """
    pages_t, default_t = pages_table(pages, "pages"), pages_table(default_page, "default_page")
    if pc.any(pc.equal(pages_t["user_id"], DEFAULT_PAGE_KEY)).as_py():
        raise ValueError(f"pages must not contain the reserved user_id {DEFAULT_PAGE_KEY!r}")
    if pc.all(pc.equal(default_t["user_id"], DEFAULT_PAGE_KEY), min_count=0).as_py() is False:
        raise ValueError(f"default_page rows must all have user_id {DEFAULT_PAGE_KEY!r}")
    table = pa.concat_tables([pages_t, default_t])
    _check_pages(table, default_t.num_rows, need_default=delta is None)
    # Arrow sorts strings by bytes, which is LMDB's key order, so pages can be appended.
    if not _in_key_order(table):
        table = table.sort_by(
            [("user_id", "ascending"), ("slot", "ascending"), ("item_rank", "ascending")]
        )
    _check_sorted_unique(table)
    return _write(
        export_dir,
        _table_chunks(table, chunk_rows),
        items,
        ds=ds,
        model_versions=model_versions,
        config_hash=config_hash,
        map_size_gb=map_size_gb,
        delta=delta,
        on_chunk=on_chunk,
    )


def write_export_file(
    export_dir: str,
    pages_path: str,
    items: pd.DataFrame,
    *,
    ds: str,
    model_versions: dict[str, str],
    config_hash: str,
    map_size_gb: float = 8.0,
    chunk_rows: int = 1_000_000,
    filesystem: Any = None,
    on_chunk: Callable[[pa.Table], None] | None = None,
) -> dict[str, Any]:
    """`write_export` for the rank step's `pages.parquet` (pages and the default page, each
    page's rows together, in any order), in bounded memory: the strings are read as
    dictionaries, sorted by code, and the export is written chunk by chunk.

    At 1M users (~100M rows) this holds the columns as dictionary codes and numbers (~7 GB)
    instead of a pandas frame of several times that.
    """
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

    table = pa.Table.from_arrays([column(f) for f in PAGES_SCHEMA], names=names)
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
        _check_pages(part, default_rows)
        _check_sorted_unique(part)
        return part

    def chunks() -> Any:
        for lo, hi in _cuts(row_rank, chunk_rows):
            yield functools.partial(chunk, lo, hi)

    return _write(
        export_dir,
        chunks(),
        items,
        ds=ds,
        model_versions=model_versions,
        config_hash=config_hash,
        map_size_gb=map_size_gb,
        delta=None,
        on_chunk=on_chunk,
    )


def _cuts(sorted_keys: np.ndarray, chunk_rows: int) -> list[tuple[int, int]]:
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


def _table_chunks(table: pa.Table, chunk_rows: int) -> Any:
    """Slices (as thunks) of a table sorted by user_id, slot, item_rank, each holding whole pages."""
    n = table.num_rows
    if n == 0:
        return
    uid = table["user_id"].combine_chunks()
    codes = np.zeros(n, dtype=np.int64)
    if n > 1:
        codes[1:] = np.cumsum(pc.not_equal(uid[1:], uid[:-1]).to_numpy(zero_copy_only=False))
    for lo, hi in _cuts(codes, chunk_rows):
        yield functools.partial(table.slice, lo, hi - lo)


def _write(
    export_dir: str,
    chunks: Any,
    items: pd.DataFrame,
    *,
    ds: str,
    model_versions: dict[str, str],
    config_hash: str,
    map_size_gb: float,
    delta: dict[str, str] | None,
    on_chunk: Callable[[pa.Table], None] | None,
) -> dict[str, Any]:
    """Write `chunks` (thunks, each returning a table of whole pages sorted by user_id, slot,
    item_rank; the chunks in key order) as pages.parquet + pages.lmdb, then MANIFEST.json."""
    parse_ds(ds)
    mf_path = os.path.join(export_dir, MANIFEST_FILE)
    if os.path.exists(mf_path):
        raise FileExistsError(f"{export_dir} already holds a complete export ({MANIFEST_FILE})")
    os.makedirs(export_dir, exist_ok=True)
    pq_path = os.path.join(export_dir, PARQUET_FILE)
    db_path = os.path.join(export_dir, LMDB_FILE)
    for stale in (pq_path, db_path, db_path + "-lock"):  # leftovers of a crashed earlier run
        if os.path.exists(stale):
            os.remove(stale)

    ds_lit = orjson.dumps(ds).decode()
    refreshed_lit = orjson.dumps(delta["refreshed_at"]).decode() if delta else None
    env = lmdb.open(
        db_path,
        subdir=False,
        map_size=max(int(map_size_gb * (1 << 30)), 1 << 16),  # a few pages at least
        max_dbs=2,
        writemap=False,
        sync=False,  # one explicit sync at the end instead of one per commit
        metasync=False,
        readahead=False,
        # zero new pages before use: with meminit=False their unused bytes are whatever malloc
        # returned, so the same export written twice had different bytes (and sha256)
        meminit=True,
    )
    n = pages_n = default_rows = context_defaults = slots_max = 0
    shown_parts: list[pa.Array] = []
    try:
        pages_db = env.open_db(PAGES_DB)
        items_db = env.open_db(ITEMS_DB)

        def prepare(make: Callable[[], pa.Table]) -> tuple[pa.Table, pa.Array, pa.Array]:
            part = make()
            if on_chunk is not None:
                on_chunk(part)
            return (part, *_page_values(part, ds_lit, refreshed_lit))

        # chunks are prepared (sorted, checked, turned into JSON: Arrow and numpy release the
        # GIL) on a few threads ahead of the writer, and written strictly in order
        # and pages.parquet is written (compressed) on its own thread, in order, while this
        # one fills LMDB
        threads = os.cpu_count() or 1
        with (
            pq.ParquetWriter(pq_path, PAGES_SCHEMA, compression="zstd") as pw,
            ThreadPoolExecutor(threads) as pool,
            ThreadPoolExecutor(1) as pq_pool,
        ):
            pending: deque[Any] = deque()
            writing: deque[Any] = deque()

            def drain(limit: int) -> None:
                nonlocal n, pages_n, default_rows, context_defaults, slots_max
                while len(pending) > limit:
                    part, user_ids, page = pending.popleft().result()
                    while len(writing) >= threads:  # bounded: at most a few chunks held
                        writing.popleft().result()
                    writing.append(pq_pool.submit(pw.write_table, part))
                    # Zero-copy slices of the Arrow buffer are handed to LMDB as values.
                    offs = np.frombuffer(page.buffers()[1], dtype=np.int32)[
                        page.offset : page.offset + len(page) + 1
                    ]
                    data = memoryview(page.buffers()[2])
                    keys = [u.encode() for u in user_ids.to_pylist()]
                    kv = [(k, data[offs[i] : offs[i + 1]]) for i, k in enumerate(keys)]
                    _put_sorted(env, pages_db, kv)
                    n += part.num_rows
                    pages_n += len(keys)
                    is_default = pc.equal(part["user_id"], DEFAULT_PAGE_KEY)
                    default_rows += pc.sum(pc.cast(is_default, pa.int64())).as_py() or 0
                    in_context = pc.starts_with(user_ids, CONTEXT_DEFAULT_PREFIX)
                    context_defaults += pc.sum(pc.cast(in_context, pa.int64())).as_py() or 0
                    slots_max = max(slots_max, int(pc.max(part["slot"]).as_py() or 0))
                    shown_parts.append(pc.unique(part["item_id"].combine_chunks()))

            for make in chunks:
                pending.append(pool.submit(prepare, make))
                drain(threads)
            drain(0)
            while writing:
                writing.popleft().result()
        shown_ids = (
            pc.unique(pa.concat_arrays(shown_parts)) if shown_parts else pa.array([], pa.string())
        )
        shown = set(shown_ids.to_pylist())
        _put_sorted(env, items_db, _item_values(items, shown))
        env.sync(True)
    finally:
        env.close()
    if os.path.exists(db_path + "-lock"):
        os.remove(db_path + "-lock")  # readers use lock=False: the export is immutable
    fsync_path(pq_path)

    # minus the default page (context default pages count)
    users = pages_n - (1 if default_rows else 0)
    db_bytes = os.path.getsize(db_path)
    pq_bytes = os.path.getsize(pq_path)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "ds": ds,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "users": users,
        "rows": n,
        "default_rows": default_rows,
        "context_default_pages": context_defaults,
        "items": len(shown),
        "slots_max": slots_max,
        "model_versions": dict(model_versions),
        "config_hash": config_hash,
        "lmdb": {
            "file": LMDB_FILE,
            "subdir": False,
            "dbs": ["pages", "items"],
            "default_key": DEFAULT_PAGE_KEY,
        },
        "files": _file_entries({PARQUET_FILE: pq_path, LMDB_FILE: db_path}),
        "bytes_per_user": round(db_bytes / max(users, 1), 1),
        "bytes_per_user_parquet": round(pq_bytes / max(users, 1), 1),
    }
    if delta:
        manifest.update(kind="delta", has_default=bool(default_rows), **delta)
    tmp = mf_path + f".tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, mf_path)
    fsync_path(export_dir)
    log.info(
        "export ds=%s: %d users, %d rows, %.0f bytes/user (lmdb), %.0f bytes/user (parquet)",
        ds,
        users,
        n,
        manifest["bytes_per_user"],
        manifest["bytes_per_user_parquet"],
    )
    return manifest


def open_lmdb_readonly(export_dir: str) -> lmdb.Environment:
    """Open an export's LMDB file read-only and lock-free (safe: published exports never change)."""
    return lmdb.open(
        os.path.join(export_dir, LMDB_FILE),
        subdir=False,
        readonly=True,
        lock=False,
        max_dbs=2,
        readahead=False,
    )


def parse_manifest(raw: bytes, mf_path: str) -> dict[str, Any]:
    """The manifest in `raw` (read from `mf_path`), checked: a JSON object with every required
    key, a supported format, and a `files` list naming the Parquet and LMDB files by base name;
    raises ExportInvalid(reason) otherwise."""
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise ExportInvalid(f"{mf_path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ExportInvalid(f"{mf_path} does not hold a JSON object")
    missing = [k for k in MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ExportInvalid(f"{mf_path} lacks key(s): {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise ExportInvalid(f"unsupported format_version {manifest['format_version']!r}")
    files = manifest["files"]
    if not isinstance(files, dict) or LMDB_FILE not in files or PARQUET_FILE not in files:
        raise ExportInvalid(f"manifest files must list {PARQUET_FILE} and {LMDB_FILE}")
    for name in files:
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise ExportInvalid(f"manifest lists a file outside the export: {name!r}")
    return manifest


def verify_export(export_dir: str, *, checksums: bool = True) -> dict[str, Any]:
    """Check an export against its manifest; return the manifest or raise ExportInvalid(reason).

    Checks: MANIFEST.json parses and has every required key; each listed file exists with the
    listed size and (when `checksums`) sha256; the LMDB opens read-only, its "pages" DB holds
    exactly users + 1 keys, and "__default__" is a fallback page of the same ds.
    """
    mf_path = os.path.join(export_dir, MANIFEST_FILE)
    try:
        with open(mf_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ExportInvalid(f"{mf_path} is missing (export incomplete?)") from None
    manifest = parse_manifest(raw, mf_path)
    for name, meta in manifest["files"].items():
        path = os.path.join(export_dir, name)
        if not os.path.isfile(path):
            raise ExportInvalid(f"{name} is missing")
        size = os.path.getsize(path)
        if size != meta.get("bytes"):
            raise ExportInvalid(f"{name} has {size} bytes, manifest says {meta.get('bytes')}")
        if checksums and sha256_file(path) != meta.get("sha256"):
            raise ExportInvalid(f"{name} sha256 differs from the manifest (corrupt file)")
    try:
        env = open_lmdb_readonly(export_dir)
    except lmdb.Error as exc:
        raise ExportInvalid(f"{LMDB_FILE} does not open: {exc}") from None
    try:
        try:
            db = env.open_db(PAGES_DB, create=False)
        except lmdb.Error:
            raise ExportInvalid(f"{LMDB_FILE} has no 'pages' database") from None
        with env.begin(db=db) as txn:
            entries = txn.stat(db)["entries"]
            default = txn.get(DEFAULT_PAGE_KEY.encode())
    except lmdb.Error as exc:
        raise ExportInvalid(f"{LMDB_FILE} is unreadable: {exc}") from None
    finally:
        env.close()
    is_delta = manifest.get("kind") == "delta"
    with_default = manifest.get("has_default", True) if is_delta else True
    if entries != manifest["users"] + int(with_default):
        raise ExportInvalid(
            f"'pages' holds {entries} keys, manifest says {manifest['users']} users"
            + (" + default" if with_default else "")
        )
    if not with_default:
        if default is not None:
            raise ExportInvalid(f"the delta's manifest lists no {DEFAULT_PAGE_KEY!r} page")
        return manifest
    if default is None:
        raise ExportInvalid(f"'pages' has no {DEFAULT_PAGE_KEY!r} page")
    try:
        page = orjson.loads(default)
    except orjson.JSONDecodeError:
        raise ExportInvalid(f"the {DEFAULT_PAGE_KEY!r} page is not valid JSON") from None
    if page.get("fallback") is not True or page.get("ds") != manifest["ds"]:
        raise ExportInvalid(
            f"the {DEFAULT_PAGE_KEY!r} page must have fallback=true and ds={manifest['ds']}"
        )
    return manifest
