"""Reading an export back: `verify_export` (the export against its manifest), `parse_manifest`,
`ExportInvalid`, and `open_lmdb_readonly`, the way every reader opens the LMDB file."""

from __future__ import annotations

import json
import os
from typing import Any

import lmdb
import orjson

from jobs.core.errors import ExportError
from jobs.core.io import sha256_file
from jobs.core.lake import DEFAULT_PAGE_KEY
from serving_export.export.format import (
    FORMAT_VERSION,
    LMDB_FILE,
    MANIFEST_FILE,
    MANIFEST_KEYS,
    PAGES_DB,
    PARQUET_FILE,
)


class ExportInvalid(ExportError):
    """An export directory is incomplete, corrupt or inconsistent with its manifest."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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
