"""Write one day's export: `pages.parquet`, `pages.lmdb` and, last, `MANIFEST.json`.

The layout and the JSON values are described in serving_export.export.format; the pages are
checked and cut into chunks of whole pages by serving_export.export.page_rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import lmdb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.core.io import fsync_path, sha256_file
from jobs.core.lake import DEFAULT_PAGE_KEY, parse_ds
from serving_export.export.format import (
    CONTEXT_DEFAULT_PREFIX,
    FORMAT_VERSION,
    ITEMS_DB,
    LMDB_FILE,
    MANIFEST_FILE,
    PAGES_DB,
    PAGES_SCHEMA,
    PARQUET_FILE,
    item_values,
    page_values,
)
from serving_export.export.page_rows import (
    check_pages,
    check_sorted_unique,
    in_key_order,
    key_order_chunks,
    pages_table,
    read_pages_file,
    table_chunks,
)

log = logging.getLogger(__name__)


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
    check_pages(table, default_t.num_rows, need_default=delta is None)
    # Arrow sorts strings by bytes, which is LMDB's key order, so pages can be appended.
    if not in_key_order(table):
        table = table.sort_by(
            [("user_id", "ascending"), ("slot", "ascending"), ("item_rank", "ascending")]
        )
    check_sorted_unique(table)
    return _write(
        export_dir,
        table_chunks(table, chunk_rows),
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
    chunks = key_order_chunks(read_pages_file(pages_path, filesystem), pages_path, chunk_rows)
    return _write(
        export_dir,
        chunks,
        items,
        ds=ds,
        model_versions=model_versions,
        config_hash=config_hash,
        map_size_gb=map_size_gb,
        delta=None,
        on_chunk=on_chunk,
    )


@dataclass
class _Totals:
    """What the manifest counts, summed over the chunks written."""

    rows: int = 0
    pages: int = 0
    default_rows: int = 0
    context_defaults: int = 0
    slots_max: int = 0
    shown_parts: list[pa.Array] = field(default_factory=list)

    def add(self, part: pa.Table, user_ids: pa.Array, pages: int) -> None:
        self.rows += part.num_rows
        self.pages += pages
        is_default = pc.equal(part["user_id"], DEFAULT_PAGE_KEY)
        self.default_rows += pc.sum(pc.cast(is_default, pa.int64())).as_py() or 0
        in_context = pc.starts_with(user_ids, CONTEXT_DEFAULT_PREFIX)
        self.context_defaults += pc.sum(pc.cast(in_context, pa.int64())).as_py() or 0
        self.slots_max = max(self.slots_max, int(pc.max(part["slot"]).as_py() or 0))
        self.shown_parts.append(pc.unique(part["item_id"].combine_chunks()))

    def shown_items(self) -> set[str]:
        """The item ids shown on any page."""
        shown_ids = (
            pc.unique(pa.concat_arrays(self.shown_parts))
            if self.shown_parts
            else pa.array([], pa.string())
        )
        return set(shown_ids.to_pylist())


def _clear_export_dir(export_dir: str) -> tuple[str, str, str]:
    """(manifest, parquet, lmdb) paths of a fresh export in `export_dir`: refuses a complete
    export, removes what a crashed earlier run left."""
    mf_path = os.path.join(export_dir, MANIFEST_FILE)
    if os.path.exists(mf_path):
        raise FileExistsError(f"{export_dir} already holds a complete export ({MANIFEST_FILE})")
    os.makedirs(export_dir, exist_ok=True)
    pq_path = os.path.join(export_dir, PARQUET_FILE)
    db_path = os.path.join(export_dir, LMDB_FILE)
    for stale in (pq_path, db_path, db_path + "-lock"):  # leftovers of a crashed earlier run
        if os.path.exists(stale):
            os.remove(stale)
    return mf_path, pq_path, db_path


def _open_lmdb_for_writing(db_path: str, map_size_gb: float) -> lmdb.Environment:
    return lmdb.open(
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


def _prepare_chunk(
    make: Callable[[], pa.Table],
    *,
    on_chunk: Callable[[pa.Table], None] | None,
    ds_lit: str,
    refreshed_lit: str | None,
) -> tuple[pa.Table, pa.Array, pa.Array]:
    part = make()
    if on_chunk is not None:
        on_chunk(part)
    return (part, *page_values(part, ds_lit, refreshed_lit))


def _put_pages(env: lmdb.Environment, pages_db: Any, user_ids: pa.Array, page: pa.Array) -> int:
    """Store one chunk's pages under their user ids; returns how many."""
    # Zero-copy slices of the Arrow buffer are handed to LMDB as values.
    offs = np.frombuffer(page.buffers()[1], dtype=np.int32)[
        page.offset : page.offset + len(page) + 1
    ]
    data = memoryview(page.buffers()[2])
    keys = [u.encode() for u in user_ids.to_pylist()]
    kv = [(k, data[offs[i] : offs[i + 1]]) for i, k in enumerate(keys)]
    _put_sorted(env, pages_db, kv)
    return len(keys)


def _write_chunks(
    env: lmdb.Environment,
    pages_db: Any,
    chunks: Iterable[Callable[[], pa.Table]],
    pq_path: str,
    prepare: Callable[[Callable[[], pa.Table]], tuple[pa.Table, pa.Array, pa.Array]],
) -> _Totals:
    """Write the chunks, in order, to pages.parquet and the "pages" database."""
    totals = _Totals()
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
            while len(pending) > limit:
                part, user_ids, page = pending.popleft().result()
                while len(writing) >= threads:  # bounded: at most a few chunks held
                    writing.popleft().result()
                writing.append(pq_pool.submit(pw.write_table, part))
                totals.add(part, user_ids, _put_pages(env, pages_db, user_ids, page))

        for make in chunks:
            pending.append(pool.submit(prepare, make))
            drain(threads)
        drain(0)
        while writing:
            writing.popleft().result()
    return totals


def _manifest(
    totals: _Totals,
    items: int,
    *,
    ds: str,
    model_versions: dict[str, str],
    config_hash: str,
    pq_path: str,
    db_path: str,
    delta: dict[str, str] | None,
) -> dict[str, Any]:
    # minus the default page (context default pages count)
    users = totals.pages - (1 if totals.default_rows else 0)
    db_bytes = os.path.getsize(db_path)
    pq_bytes = os.path.getsize(pq_path)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "ds": ds,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "users": users,
        "rows": totals.rows,
        "default_rows": totals.default_rows,
        "context_default_pages": totals.context_defaults,
        "items": items,
        "slots_max": totals.slots_max,
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
        manifest.update(kind="delta", has_default=bool(totals.default_rows), **delta)
    return manifest


def _write(
    export_dir: str,
    chunks: Iterable[Callable[[], pa.Table]],
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
    mf_path, pq_path, db_path = _clear_export_dir(export_dir)
    prepare = functools.partial(
        _prepare_chunk,
        on_chunk=on_chunk,
        ds_lit=orjson.dumps(ds).decode(),
        refreshed_lit=orjson.dumps(delta["refreshed_at"]).decode() if delta else None,
    )
    env = _open_lmdb_for_writing(db_path, map_size_gb)
    try:
        pages_db = env.open_db(PAGES_DB)
        items_db = env.open_db(ITEMS_DB)
        totals = _write_chunks(env, pages_db, chunks, pq_path, prepare)
        shown = totals.shown_items()
        _put_sorted(env, items_db, item_values(items, shown))
        env.sync(True)
    finally:
        env.close()
    if os.path.exists(db_path + "-lock"):
        os.remove(db_path + "-lock")  # readers use lock=False: the export is immutable
    fsync_path(pq_path)
    manifest = _manifest(
        totals,
        len(shown),
        ds=ds,
        model_versions=model_versions,
        config_hash=config_hash,
        pq_path=pq_path,
        db_path=db_path,
        delta=delta,
    )
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
        manifest["users"],
        totals.rows,
        manifest["bytes_per_user"],
        manifest["bytes_per_user_parquet"],
    )
    return manifest
