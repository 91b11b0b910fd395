"""Export helpers shared by the export, server and fault tests: tiny hand-written pages, a
writer over them, and the ways an export on disk goes bad."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pandas as pd

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake
from serving_export.export.format import LMDB_FILE, MANIFEST_FILE, PARQUET_FILE
from serving_export.export.verify import open_lmdb_readonly
from serving_export.export.writer import write_export

DS = "2024-03-01"


def make_pages(users: list[str], slots: int = 2, items: int = 3, mv: str = "mf-7") -> pd.DataFrame:
    """Pages with distinctive values: scores and propensities that need rounding, a quote in a
    title, a null reason."""
    rows = []
    for u, user in enumerate(users):
        for s in range(1, slots + 1):
            for r in range(1, items + 1):
                rows.append(
                    {
                        "user_id": user,
                        "slot": s,
                        "carousel_id": f"car{s}",
                        "carousel_title": f'Top "{s}" für dich',
                        "family": "buy_again" if s % 2 else "discover",
                        "carousel_score": 1.0 / (s + 2) + u,
                        "item_rank": r,
                        "item_id": f"it{(u + s * 7 + r) % 11}",
                        "item_score": 123456789.0 / (r * 7) if r == 1 else 1e-9 * r,
                        "propensity": 1.0 if r == 1 else 1.0 / (3 * r + s),
                        "reason": None if r == 3 else "discover",
                        "model_version": mv,
                    }
                )
    return pd.DataFrame(rows)


def make_default(slots: int = 2, items: int = 3) -> pd.DataFrame:
    d = make_pages(["x"], slots, items, mv="popular-1")
    d["user_id"] = DEFAULT_PAGE_KEY
    return d


ITEMS = pd.DataFrame(
    {
        "item_id": [f"it{i}" for i in range(12)],
        "title": [f"Item {i}" for i in range(12)],
        "category_id": ["c1"] * 12,
        "brand": ["b"] * 11 + [None],
        "price": [float(i) + 0.5 for i in range(11)] + [float("nan")],
    }
)


def expected_page(df: pd.DataFrame, user: str, ds: str) -> dict:
    """The page built row by row in plain Python: the reference the vectorised writer must match."""
    rows = df[df.user_id == user].sort_values(["slot", "item_rank"])
    carousels = []
    for slot, g in rows.groupby("slot", sort=True):
        first = g.iloc[0]
        carousels.append(
            {
                "slot": int(slot),
                "carousel_id": first.carousel_id,
                "title": first.carousel_title,
                "family": first.family,
                "score": float(f"{first.carousel_score:.6g}"),
                "items": [
                    {
                        "item_id": r.item_id,
                        "rank": int(r.item_rank),
                        "score": float(f"{r.item_score:.6g}"),
                        "propensity": float(f"{r.propensity:.6g}"),
                        "reason": r.reason,
                    }
                    for r in g.itertuples()
                ],
            }
        )
    return {
        "user_id": user,
        "ds": ds,
        "model_version": rows.iloc[0].model_version,
        "fallback": user == DEFAULT_PAGE_KEY or user.startswith(DEFAULT_PAGE_KEY + ":"),
        "carousels": carousels,
    }


def read_all(export_dir: str, db: bytes = b"pages") -> dict[bytes, bytes]:
    env = open_lmdb_readonly(export_dir)
    try:
        with env.begin(db=env.open_db(db, create=False)) as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def write(lake: Lake, ds: str, users: list[str] | None = None, **kw) -> dict:
    pages = make_pages(users or ["u1", "u2", "u3"])
    return write_export(
        lake.export(ds),
        pages,
        make_default(),
        ITEMS,
        ds=ds,
        model_versions={"mf": "7", "engagement": "3"},
        config_hash="cafe",
        map_size_gb=0.01,
        **kw,
    )


def _flip_byte(path: str) -> None:
    data = bytearray(Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(data))


def _edit_manifest(export_dir: str, edit) -> None:
    path = os.path.join(export_dir, MANIFEST_FILE)
    manifest = json.loads(Path(path).read_text())
    edit(manifest)
    Path(path).write_text(json.dumps(manifest))


def _garbage_lmdb_with_matching_manifest(export_dir: str) -> None:
    """Not an LMDB file, but the manifest's size and sha256 agree: the LMDB open must catch it."""
    path = os.path.join(export_dir, LMDB_FILE)
    Path(path).write_bytes(b"\0" * 8192)
    digest = hashlib.sha256(b"\0" * 8192).hexdigest()
    _edit_manifest(
        export_dir, lambda m: m["files"].update({LMDB_FILE: {"bytes": 8192, "sha256": digest}})
    )


# Ways an export on disk goes bad -> the reason verify_export must name. Used by
# test_publish_refuses_each_corruption_and_keeps_current here and by tests/unit/test_server.py.
CORRUPTIONS = {
    "lmdb byte flipped": (
        lambda d: _flip_byte(os.path.join(d, LMDB_FILE)),
        f"{LMDB_FILE} sha256 differs from the manifest",
    ),
    "lmdb truncated": (
        lambda d: os.truncate(os.path.join(d, LMDB_FILE), 4096),
        f"{LMDB_FILE} has 4096 bytes, manifest says",
    ),
    "lmdb missing": (lambda d: os.remove(os.path.join(d, LMDB_FILE)), f"{LMDB_FILE} is missing"),
    "lmdb not an lmdb file": (
        _garbage_lmdb_with_matching_manifest,
        f"{LMDB_FILE} does not open: .*not an LMDB file",
    ),
    "manifest not json": (
        lambda d: Path(d, MANIFEST_FILE).write_text('{"ds": "2024-03-0'),
        f"{MANIFEST_FILE} is not valid JSON",
    ),
    "manifest wrong checksum": (
        lambda d: _edit_manifest(d, lambda m: m["files"][PARQUET_FILE].update(sha256="0" * 64)),
        f"{PARQUET_FILE} sha256 differs from the manifest",
    ),
    "manifest missing": (
        lambda d: os.remove(os.path.join(d, MANIFEST_FILE)),
        f"{MANIFEST_FILE} is missing",
    ),
}
