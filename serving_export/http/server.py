"""The lookup server: a minimal asyncio HTTP/1.1 server over the published LMDB export.

Routes (GET, HEAD; anything else is 405):

    /v1/users/{user_id}/homepage   the stored page bytes; unknown users get "__default__"
                                   (fallback: true). Headers X-Export-Ds and X-Fallback.
    /healthz                       200 while the process runs
    /readyz                        200 once an export is loaded and verified, else 503
    /metrics                       Prometheus text (per-process counters)

The hot path is one LMDB read transaction on a memory-mapped, read-only file: no JSON work.
A background task polls `exports/CURRENT`; a new ds is verified in a thread, then the reader
reference is swapped on the event loop, and the old environment is closed after a grace period,
so requests never see a half-loaded export. A bad export is refused and the old one keeps serving.
`workers > 1` forks processes that each bind the port with SO_REUSEPORT (the kernel balances
connections) and share the page cache of the same mapped file.

With a remote lake (s3a://…, see jobs/core/io.py for the endpoint and credentials) the server polls
the `exports/CURRENT` object, copies the export it names into a local cache directory
(`cache_dir`, default $HOMEPAGE_SERVE_CACHE or a temp dir; workers share it), verifies the copy
against its manifest with `verify_export` and serves it, with the same hot swap and refusals.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

import lmdb
import orjson

from jobs.core import io
from jobs.core.errors import ServingError
from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, local_path
from serving_export.export.format import ITEMS_DB, PAGES_DB
from serving_export.export.verify import open_lmdb_readonly, verify_export
from serving_export.publish import current_delta, current_ds, deltas_dir, fetch_export

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 8192  # request line + headers; larger -> 431
IDLE_TIMEOUT_S = 30.0  # idle keep-alive connections are closed after this
HEAD_TIMEOUT_S = 10.0  # a request head must arrive completely within this (slow-loris guard)
CLOSE_GRACE_S = 5.0  # an old export stays open this long after a swap
MAX_WORKERS = 64  # upper bound on worker processes (each maps the export and holds a loop)
MAX_CONNECTIONS = 1024  # default open connections per worker; beyond it a new one gets 503
USER_ID_BYTES_RE = re.compile(rb"[A-Za-z0-9_.:@-]{1,128}")  # same rule as writer.USER_ID_RE
PREFIX, SUFFIX = b"/v1/users/", b"/homepage"
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
    505: b"HTTP Version Not Supported",
}
JSON, TEXT = b"application/json", b"text/plain; version=0.0.4; charset=utf-8"
HTML = b"text/html; charset=utf-8"
PREVIEW = b"/preview/"
CLOSE = b"Connection: close\r\n"


def _err(message: str) -> bytes:
    return orjson.dumps({"error": message})


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


class Metrics:
    """Per-process Prometheus counters and a latency histogram per route and status."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.buckets: dict[tuple[str, int], list[int]] = {}
        self.sums: dict[tuple[str, int], float] = {}
        self.reloads = {"ok": 0, "refused": 0}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts = self.buckets.get(key)
        if counts is None:
            counts = self.buckets[key] = [0] * (len(BUCKETS) + 1)
            self.sums[key] = 0.0
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sums[key] += seconds

    def render(self, ds: str | None) -> bytes:
        out = [
            "# HELP homepage_requests_total HTTP requests by route and status.",
            "# TYPE homepage_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            out.append(f'homepage_requests_total{{route="{route}",status="{status}"}} {n}')
        out += [
            "# HELP homepage_request_seconds Request handling time.",
            "# TYPE homepage_request_seconds histogram",
        ]
        for (route, status), counts in sorted(self.buckets.items()):
            labels = f'route="{route}",status="{status}"'
            acc = 0
            for le, c in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                acc += c
                out.append(f'homepage_request_seconds_bucket{{{labels},le="{le}"}} {acc}')
            out.append(f"homepage_request_seconds_sum{{{labels}}} {self.sums[(route, status)]:.6f}")
            out.append(f"homepage_request_seconds_count{{{labels}}} {acc}")
        out += [
            "# HELP homepage_export_info The export being served.",
            "# TYPE homepage_export_info gauge",
        ]
        if ds is not None:
            out.append(f'homepage_export_info{{ds="{ds}"}} 1')
        out += [
            "# HELP homepage_reloads_total Export reload attempts.",
            "# TYPE homepage_reloads_total counter",
        ]
        for result, n in self.reloads.items():
            out.append(f'homepage_reloads_total{{result="{result}"}} {n}')
        rss, pss = _memory()
        out += [
            "# HELP homepage_worker_memory_bytes This worker process's memory (PSS counts the "
            "shared memory-mapped export once across workers).",
            "# TYPE homepage_worker_memory_bytes gauge",
            f'homepage_worker_memory_bytes{{kind="rss",pid="{os.getpid()}"}} {rss}',
            f'homepage_worker_memory_bytes{{kind="pss",pid="{os.getpid()}"}} {pss}',
        ]
        return ("\n".join(out) + "\n").encode()


def _memory() -> tuple[int, int]:
    """(RSS, PSS) of this process in bytes from /proc (0 where not available)."""
    vals = {"Rss:": 0, "Pss:": 0}
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if parts and parts[0] in vals:
                    vals[parts[0]] = int(parts[1]) * 1024
    except OSError:
        pass
    return vals["Rss:"], vals["Pss:"]


def _response(
    status: int, body: bytes, ctype: bytes, conn: bytes, extra: bytes = b"", head: bool = False
) -> bytes:
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            % (status, REASONS[status], ctype, len(body)),
            extra,
            conn,
            b"\r\n",
            b"" if head else body,
        )
    )


class BadRequest(ServingError):
    """A request that cannot be answered normally; the connection is closed after the reply."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _parse_head(head: bytes) -> tuple[bytes, bytes, bytes, bool]:
    """(method, path, Connection header to send, keep-alive) of one request head."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        http = len(parts) == 3 and parts[2].startswith(b"HTTP/")
        raise BadRequest(505 if http else 400, "malformed request line")
    method, target, version = parts
    conn = b""
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise BadRequest(400, "malformed header line")
        name = name.strip().lower()
        if name == b"connection":
            conn = value.strip().lower()
        elif name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            raise BadRequest(400, "request bodies are not accepted")  # keeps the stream in sync
    if version == b"HTTP/1.1":
        keep, conn_out = conn != b"close", b""
    else:
        keep, conn_out = conn == b"keep-alive", b"Connection: keep-alive\r\n"
    return method, target.split(b"?", 1)[0], conn_out if keep else CLOSE, keep


class App:
    """Server state shared by all connections of one process."""

    def __init__(
        self,
        lake: Lake,
        reload_interval_s: float,
        verify_checksums: bool,
        max_connections: int = MAX_CONNECTIONS,
        cache_dir: str | None = None,
    ) -> None:
        self.lake = lake
        self.max_connections = max_connections
        self.remote = io.is_remote(lake.root)
        self.cache_dir = cache_dir  # local copies of a remote lake's exports
        self.current_path = lake.current if self.remote else local_path(lake.current)
        self.reload_interval_s = reload_interval_s
        self.verify_checksums = verify_checksums
        self.reader: ExportReader | None = None
        self.retiring: dict[str, tuple[ExportReader, asyncio.TimerHandle]] = {}
        self.refused: tuple[str, int] | None = None
        self.refused_delta: tuple[str, str, int] | None = None
        self.retiring_deltas: list[tuple[DeltaReader, asyncio.TimerHandle]] = []
        self.metrics = Metrics()
        self.conns: set[HttpProtocol] = set()

    # ------------------------------------------------------------ requests

    def handle(self, head: bytes) -> tuple[bytes, bool]:
        """Response bytes and keep-alive flag for one request head (without the blank line)."""
        t0 = time.perf_counter()
        route, status = "other", 400
        try:
            try:
                method, path, conn, keep = _parse_head(head)
            except BadRequest as exc:
                status = exc.status
                return _response(status, _err(str(exc)), JSON, CLOSE), False
            status, body, ctype, extra = self._route(method, path)
            n = len(PREFIX) + len(SUFFIX)
            if path.startswith(PREFIX) and path.endswith(SUFFIX) and len(path) > n:
                route = "homepage"
            elif path.startswith(PREVIEW) and len(path) > len(PREVIEW):
                route = "preview"
            elif path in (b"/healthz", b"/readyz", b"/metrics"):
                route = path[1:].decode()
            return _response(status, body, ctype, conn, extra, method == b"HEAD"), keep
        finally:
            self.metrics.observe(route, status, time.perf_counter() - t0)

    def _route(self, method: bytes, path: bytes) -> tuple[int, bytes, bytes, bytes]:
        """(status, body, content type, extra headers) for a parsed request."""
        if method != b"GET" and method != b"HEAD":
            return 405, _err("only GET is supported"), JSON, b"Allow: GET, HEAD\r\n"
        if (
            path.startswith(PREFIX)
            and path.endswith(SUFFIX)
            and len(path) > len(PREFIX) + len(SUFFIX)
        ):
            return self._homepage(path[len(PREFIX) : -len(SUFFIX)])
        if path.startswith(PREVIEW) and len(path) > len(PREVIEW):
            return self._preview(path[len(PREVIEW) :])
        reader = self.reader
        if path == b"/healthz":
            return 200, b'{"status":"ok"}', JSON, b""
        if path == b"/readyz":
            if reader is None:
                return 503, b'{"status":"no export loaded"}', JSON, b""
            delta = reader.delta
            return (
                200,
                orjson.dumps(
                    {
                        "status": "ready",
                        "ds": reader.ds,
                        "delta": delta.stamp if delta else None,
                        "refreshed_at": delta.refreshed_at if delta else None,
                    }
                ),
                JSON,
                b"",
            )
        if path == b"/metrics":
            return 200, self.metrics.render(reader.ds if reader else None), TEXT, b""
        return 404, _err("no such route"), JSON, b""

    def _preview(self, raw: bytes) -> tuple[int, bytes, bytes, bytes]:
        """The stored page as HTML (escaped); the same id rules and fallback as the API."""
        from serving_export.http.preview import render_preview

        reader = self.reader  # one export for the page and its item fields
        status, body, ctype, extra = self._homepage(raw, reader)
        if status != 200 or reader is None:
            return status, body, ctype, extra
        html = render_preview(
            orjson.loads(body), reader.item, fallback=extra == reader.hdr_fallback
        )
        return 200, html, HTML, extra

    def _homepage(
        self, raw: bytes, reader: ExportReader | None = None
    ) -> tuple[int, bytes, bytes, bytes]:
        if b"%" in raw:
            raw = unquote_to_bytes(raw)
        if not USER_ID_BYTES_RE.fullmatch(raw):  # the id is only ever an LMDB key
            return (
                400,
                _err("invalid user_id: need 1-128 characters of [A-Za-z0-9_.:@-]"),
                JSON,
                b"",
            )
        if reader is None:
            reader = self.reader  # one read of the reference: a swap cannot split this request
        if reader is None:
            return 503, _err("no export loaded yet"), JSON, b""
        body, fallback = reader.page(raw)
        return 200, body, JSON, reader.hdr_fallback if fallback else reader.hdr_known

    # ------------------------------------------------------------ hot swap

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

    async def reload_loop(self) -> None:
        while True:
            try:
                await self.check_current()
            except Exception:
                log.exception("reload check failed")
            await asyncio.sleep(self.reload_interval_s)

    async def sweep_loop(self) -> None:
        """Close idle keep-alive connections and requests whose head arrives too slowly."""
        while True:
            await asyncio.sleep(min(1.0, HEAD_TIMEOUT_S / 2, IDLE_TIMEOUT_S / 2))
            now = time.monotonic()
            for c in list(self.conns):
                if c.head_started is not None and now - c.head_started > HEAD_TIMEOUT_S:
                    c.reply_and_close(408, "request head not received in time")
                elif now - c.last_active > IDLE_TIMEOUT_S:
                    c.transport.close()

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


class HttpProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive and pipelining, GET only, no bodies."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.buf = bytearray()
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.last_active = time.monotonic()
        self.head_started: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if len(self.app.conns) >= self.app.max_connections:
            self.reply_and_close(
                503, f"server at its connection limit ({self.app.max_connections} per worker)"
            )
            return
        self.app.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.conns.discard(self)

    def pause_writing(self) -> None:  # a client that does not read gets no more parsing
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def reply_and_close(self, status: int, message: str) -> None:
        self.app.metrics.observe("other", status, 0.0)
        self.transport.write(_response(status, _err(message), JSON, CLOSE))
        self.transport.close()
        self.buf.clear()
        self.head_started = None

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.head_started is None:
            self.head_started = self.last_active
        self.buf += data
        while self.buf:
            end = self.buf.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
            if end < 0:
                if len(self.buf) > MAX_HEAD_BYTES:
                    self.reply_and_close(431, f"request head exceeds {MAX_HEAD_BYTES} bytes")
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            response, keep = self.app.handle(head)
            self.transport.write(response)
            if not keep:
                self.transport.close()
                self.buf.clear()
                break
        self.head_started = self.last_active if self.buf else None


async def _run(
    app: App,
    host: str,
    port: int,
    on_ready: Callable[[int, asyncio.Event], None],
    *,
    reuse_port: bool = False,
    install_signals: bool = True,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    if reuse_port:
        # A sibling worker may already be serving: load before joining the SO_REUSEPORT group,
        # so the kernel never hands this not-yet-ready worker a connection.
        await app.check_current()
    server = await loop.create_server(
        lambda: HttpProtocol(app), host, port, reuse_port=reuse_port or None, backlog=1024
    )
    tasks = [asyncio.create_task(app.reload_loop()), asyncio.create_task(app.sweep_loop())]
    on_ready(server.sockets[0].getsockname()[1], stop)
    try:
        await stop.wait()
    finally:
        server.close()
        for c in list(app.conns):
            c.transport.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        app.close()


def serve(
    lake: Lake,
    host: str,
    port: int,
    *,
    workers: int = 1,
    reload_interval_s: float = 2.0,
    ready_event: Any = None,
    verify_checksums: bool = True,
    max_connections: int = MAX_CONNECTIONS,
    cache_dir: str | None = None,
) -> None:
    """Serve `lake`'s published export on http://host:port until SIGINT/SIGTERM (blocking).

    `workers > 1` forks that many processes, each with its own SO_REUSEPORT listening socket;
    a worker that dies is restarted. `ready_event` (anything with `.set()`) is set once listening
    (with workers, once they are forked). `verify_checksums=False` skips the sha256 pass on
    reload (publish already did it), which matters for multi-GB exports times many workers.
    Each worker holds at most `max_connections` open connections; a connection beyond that gets
    503 and is closed, so a flood cannot exhaust file descriptors or memory. `cache_dir` is where
    the exports of a remote lake are copied to (see serving_export.publish.fetch_export).
    """
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, got {workers}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be >= 1, got {max_connections}")

    def ready(bound: int, _stop: asyncio.Event) -> None:
        if workers == 1:
            print(f"homepage server listening on http://{host}:{bound}", flush=True)
            if ready_event is not None:
                ready_event.set()

    if workers == 1:
        app = App(lake, reload_interval_s, verify_checksums, max_connections, cache_dir)
        asyncio.run(_run(app, host, port, ready))
        return
    # Reserve the port (this resolves port 0) with a bound but non-listening socket: the kernel
    # balances connections only among the workers' listening sockets.
    holder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    port = holder.getsockname()[1]
    children: dict[int, float] = {}
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:  # worker: opens its own LMDB environment after the fork
            code = 0
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # not the parent's forwarding handler
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            holder.close()
            try:
                app = App(lake, reload_interval_s, verify_checksums, max_connections, cache_dir)
                asyncio.run(_run(app, host, port, ready, reuse_port=True))
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                os._exit(code)
        children[pid] = time.monotonic()

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for _ in range(workers):
        spawn()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"homepage server listening on http://{host}:{port} ({workers} workers)", flush=True)
    if ready_event is not None:
        ready_event.set()
    try:
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            started = children.pop(pid, None)
            if not stopping and started is not None:
                log.error("worker %d exited with status %d; restarting it", pid, status)
                time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))  # no tight crash loop
                spawn()
    finally:
        holder.close()


def start_in_thread(
    lake: Lake,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    reload_interval_s: float = 2.0,
    verify_checksums: bool = True,
    max_connections: int = MAX_CONNECTIONS,
    cache_dir: str | None = None,
) -> tuple[threading.Thread, int, Callable[[], None]]:
    """Run one server in a daemon thread (for tests); returns (thread, bound port, stop_fn)."""
    box: dict[str, Any] = {}
    started = threading.Event()

    def ready(bound: int, stop: asyncio.Event) -> None:
        box.update(port=bound, stop=stop, loop=asyncio.get_running_loop())
        started.set()

    def run() -> None:
        try:
            app = App(lake, reload_interval_s, verify_checksums, max_connections, cache_dir)
            asyncio.run(_run(app, host, port, ready, install_signals=False))
        except BaseException as exc:
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="homepage-server", daemon=True)
    thread.start()
    if not started.wait(10.0) or "error" in box:
        raise RuntimeError(f"server did not start: {box.get('error')!r}")

    def stop_fn() -> None:
        if thread.is_alive():
            box["loop"].call_soon_threadsafe(box["stop"].set)
            thread.join(10.0)

    return thread, box["port"], stop_fn
