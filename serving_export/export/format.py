"""The export format: file names, the LMDB layout, the page and item JSON values, the manifest keys.

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

import re
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from jobs.core.lake import DEFAULT_PAGE_KEY

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


def page_values(
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


def item_values(items: pd.DataFrame, shown: set[str]) -> list[tuple[bytes, bytes]]:
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
