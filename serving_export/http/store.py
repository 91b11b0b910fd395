"""The export the lookup server reads: the opened LMDB export with the intra-day delta overlaid on
it, and the hot swap that replaces them when `exports/CURRENT` (or the delta's CURRENT) changes.

A new ds is verified in a thread, then the reader reference is swapped on the event loop, and the
old environment is closed after a grace period, so requests never see a half-loaded export. A bad
export or delta is refused and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from typing import Any

import lmdb
import orjson

from jobs.core import io
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, local_path
from serving_export.export.format import ITEMS_DB, PAGES_DB
from serving_export.export.verify import open_lmdb_readonly, verify_export
from serving_export.http.metrics import Metrics
from serving_export.publish import current_delta, current_ds, deltas_dir, fetch_export

log = logging.getLogger(__name__)

CLOSE_GRACE_S = 5.0  # an old export stays open this long after a swap


class DeltaReader:
    """One opened intra-day delta (jobs.refresh.run): the pages changed since the daily export."""

    def __init__(self, delta_dir: str, manifest: dict[str, Any], stamp: str) -> None:
        self.stamp = stamp
        self.ds: str = manifest["ds"]
        self.users: int = manifest["users"]
        self.refreshed_at: str | None = manifest.get("refreshed_at")
        self.env = open_lmdb_readonly(delta_dir)
        self.pages = self.env.open_db(PAGES_DB, create=False)
        self.items = self.env.open_db(ITEMS_DB, create=False)
        with self.env.begin(db=self.pages) as txn:
            self.default: bytes | None = txn.get(DEFAULT_PAGE_KEY.encode())

    def get(self, key: bytes, items: bool = False) -> bytes | None:
        with self.env.begin(db=self.items if items else self.pages) as txn:
            return txn.get(key)

    def close(self) -> None:
        self.env.close()


class ExportReader:
    """One opened export, and the delta overlaid on it (if any). Built in a worker thread,
    then used only on the event loop. `with_delta` makes a reader that shares the export."""

    def __init__(self, export_dir: str, manifest: dict[str, Any]) -> None:
        self.ds: str = manifest["ds"]
        self.users: int = manifest["users"]
        self.env = open_lmdb_readonly(export_dir)
        self.pages = self.env.open_db(PAGES_DB, create=False)
        try:
            self.items = self.env.open_db(ITEMS_DB, create=False)
        except lmdb.Error:
            self.items = None
        with self.env.begin(db=self.pages) as txn:
            self.default: bytes = txn.get(DEFAULT_PAGE_KEY.encode())
        self.delta: DeltaReader | None = None
        self.hdr_known = f"X-Export-Ds: {self.ds}\r\nX-Fallback: false\r\n".encode()
        self.hdr_fallback = f"X-Export-Ds: {self.ds}\r\nX-Fallback: true\r\n".encode()

    def with_delta(self, delta: DeltaReader | None) -> ExportReader:
        """A reader over the same export with `delta` overlaid (the export is not reopened)."""
        new = copy.copy(self)
        new.delta = delta
        return new

    def page(self, key: bytes) -> tuple[bytes, bool]:
        """(page bytes, is_fallback) for a user_id key: the delta's page wins."""
        delta = self.delta
        if delta is not None:
            value = delta.get(key)
            if value is not None:
                return value, False
        with self.env.begin(db=self.pages) as txn:
            value = txn.get(key)
        if value is not None:
            return value, False
        if delta is not None and delta.default is not None:
            return delta.default, True
        return self.default, True

    def item(self, item_id: str) -> dict[str, Any] | None:
        """Display fields of one shown item (for a preview page), or None."""
        value = self.delta.get(item_id.encode(), items=True) if self.delta else None
        if value is None and self.items is not None:
            with self.env.begin(db=self.items) as txn:
                value = txn.get(item_id.encode())
        return None if value is None else orjson.loads(value)

    def close(self) -> None:
        """Close the export and its delta (readers made by `with_delta` share them)."""
        if self.delta is not None:
            self.delta.close()
        self.env.close()


class ExportStore:
    """The reader requests use (`reader`, None until an export is loaded) and its hot swap."""

    def __init__(
        self, lake: Lake, verify_checksums: bool, cache_dir: str | None, metrics: Metrics
    ) -> None:
        self.lake = lake
        self.remote = io.is_remote(lake.root)
        self.cache_dir = cache_dir  # local copies of a remote lake's exports
        self.current_path = lake.current if self.remote else local_path(lake.current)
        self.verify_checksums = verify_checksums
        self.metrics = metrics
        self.reader: ExportReader | None = None
        self.retiring: dict[str, tuple[ExportReader, asyncio.TimerHandle]] = {}
        self.refused: tuple[str, int] | None = None
        self.refused_delta: tuple[str, str, int] | None = None
        self.retiring_deltas: list[tuple[DeltaReader, asyncio.TimerHandle]] = []

    def _load(self, ds: str) -> ExportReader:
        if self.remote:  # a local copy, verified before it is cached
            export_dir, manifest = fetch_export(
                self.lake, ds, self.cache_dir, checksums=self.verify_checksums
            )
        else:
            export_dir = local_path(self.lake.export(ds))
            manifest = verify_export(export_dir, checksums=self.verify_checksums)
        if manifest["ds"] != ds:
            raise ValueError(f"{export_dir} holds ds={manifest['ds']}")
        return ExportReader(export_dir, manifest)

    async def check_current(self) -> None:
        """Load the export CURRENT names if it is new; refuse (and keep serving) a bad one."""
        try:
            if self.remote:  # network calls: off the event loop
                loop = asyncio.get_running_loop()
                mtime, ds = await loop.run_in_executor(None, self._remote_current)
            else:
                mtime = os.stat(self.current_path).st_mtime_ns
                ds = current_ds(self.lake)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            if self.refused != (str(exc), -1):  # log and count each distinct problem once
                log.error("cannot read %s: %s", self.current_path, exc)
                self.metrics.reloads["refused"] += 1
                self.refused = (str(exc), -1)
            return
        if (
            ds is None
            or (self.reader is not None and self.reader.ds == ds)
            or self.refused == (ds, mtime)
        ):
            await self.check_delta()
            return
        loop = asyncio.get_running_loop()
        if ds in self.retiring:  # rolled back within the grace period: still open and verified
            new, handle = self.retiring.pop(ds)
            handle.cancel()
        else:
            try:
                new = await loop.run_in_executor(None, self._load, ds)
            except Exception as exc:  # any failure refuses the export; the old one keeps serving
                log.error("refusing export ds=%s: %s", ds, exc)
                self.metrics.reloads["refused"] += 1
                self.refused = (ds, mtime)
                return
        old, self.reader = self.reader, new  # one reference assignment: requests see old or new
        self.refused = None
        self.metrics.reloads["ok"] += 1
        log.info("serving export ds=%s (%d users)", new.ds, new.users)
        if old is not None:
            self.retiring[old.ds] = (old, loop.call_later(CLOSE_GRACE_S, self._retire, old.ds))
        await self.check_delta()

    async def check_delta(self) -> None:
        """Overlay the newest valid delta of the served export (local lakes); a bad one is
        refused and the current pages keep serving."""
        reader = self.reader
        if reader is None or self.remote:
            return
        try:
            stamp = current_delta(self.lake, reader.ds)
            mtime = (
                os.stat(os.path.join(deltas_dir(self.lake, reader.ds), "CURRENT")).st_mtime_ns
                if stamp
                else 0
            )
        except OSError:
            return
        served = reader.delta.stamp if reader.delta else None
        if stamp == served or self.refused_delta == (reader.ds, stamp or "", mtime):
            return
        new_delta = None
        if stamp is not None:
            loop = asyncio.get_running_loop()
            try:
                new_delta = await loop.run_in_executor(None, self._load_delta, reader.ds, stamp)
            except Exception as exc:  # refused: the export (and any delta on it) keeps serving
                log.error("refusing delta %s over ds=%s: %s", stamp, reader.ds, exc)
                self.metrics.reloads["refused"] += 1
                self.refused_delta = (reader.ds, stamp, mtime)
                return
        if self.reader is not reader:  # a new export arrived meanwhile: it checks its own
            if new_delta is not None:
                new_delta.close()
            return
        self.reader = reader.with_delta(new_delta)
        self.refused_delta = None
        self.metrics.reloads["ok"] += 1
        log.info("serving ds=%s with delta %s", reader.ds, stamp)
        old = reader.delta
        if old is not None:
            loop = asyncio.get_running_loop()
            handle = loop.call_later(CLOSE_GRACE_S, self._retire_delta, old)
            self.retiring_deltas.append((old, handle))

    def _load_delta(self, ds: str, stamp: str) -> DeltaReader:
        path = os.path.join(deltas_dir(self.lake, ds), f"wm={stamp}")
        manifest = verify_export(path, checksums=self.verify_checksums)
        if manifest.get("kind") != "delta" or manifest["ds"] != ds:
            raise ValueError(f"{path} is not a delta over ds={ds}")
        return DeltaReader(path, manifest, stamp)

    def _retire_delta(self, delta: DeltaReader) -> None:
        self.retiring_deltas = [(d, h) for d, h in self.retiring_deltas if d is not delta]
        delta.close()

    def _remote_current(self) -> tuple[int, str | None]:
        mtime = io.mtime_ns(self.current_path)
        ds = current_ds(self.lake)
        if ds is None:
            raise FileNotFoundError(self.current_path)
        return mtime, ds

    def _retire(self, ds: str) -> None:
        entry = self.retiring.pop(ds, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        for reader, handle in self.retiring.values():
            handle.cancel()
            reader.close()
        self.retiring.clear()
        for delta, handle in self.retiring_deltas:
            handle.cancel()
            delta.close()
        self.retiring_deltas.clear()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
