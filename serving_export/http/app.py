"""The lookup server's routes (GET, HEAD; anything else is 405), answering one request head:

    /v1/users/{user_id}/homepage   the stored page bytes; unknown users get "__default__"
                                   (fallback: true). Headers X-Export-Ds and X-Fallback.
    /preview/{user_id}             the same page as HTML (serving_export.http.preview)
    /healthz                       200 while the process runs
    /readyz                        200 once an export is loaded and verified, else 503
    /metrics                       Prometheus text (per-process counters)

The hot path is one LMDB read transaction on a memory-mapped, read-only file: no JSON work.
"""

from __future__ import annotations

import re
import time
from urllib.parse import unquote_to_bytes

import orjson

from jobs.core.lake import Lake
from serving_export.http.metrics import Metrics
from serving_export.http.preview import render_preview
from serving_export.http.protocol import (
    CLOSE,
    HTML,
    JSON,
    MAX_CONNECTIONS,
    TEXT,
    BadRequest,
    HttpProtocol,
    error_body,
    parse_head,
    response,
)
from serving_export.http.store import ExportReader, ExportStore

USER_ID_BYTES_RE = re.compile(rb"[A-Za-z0-9_.:@-]{1,128}")  # same rule as format.USER_ID_RE
PREFIX, SUFFIX = b"/v1/users/", b"/homepage"
PREVIEW = b"/preview/"


class App:
    """Server state shared by all connections of one process: the served export (`store`), the
    metrics, the open connections."""

    def __init__(
        self,
        lake: Lake,
        reload_interval_s: float,
        verify_checksums: bool,
        max_connections: int = MAX_CONNECTIONS,
        cache_dir: str | None = None,
    ) -> None:
        self.max_connections = max_connections
        self.reload_interval_s = reload_interval_s
        self.metrics = Metrics()
        self.store = ExportStore(lake, verify_checksums, cache_dir, self.metrics)
        self.conns: set[HttpProtocol] = set()

    def handle(self, head: bytes) -> tuple[bytes, bool]:
        """Response bytes and keep-alive flag for one request head (without the blank line)."""
        t0 = time.perf_counter()
        route, status = "other", 400
        try:
            try:
                method, path, conn, keep = parse_head(head)
            except BadRequest as exc:
                status = exc.status
                return response(status, error_body(str(exc)), JSON, CLOSE), False
            status, body, ctype, extra = self._route(method, path)
            n = len(PREFIX) + len(SUFFIX)
            if path.startswith(PREFIX) and path.endswith(SUFFIX) and len(path) > n:
                route = "homepage"
            elif path.startswith(PREVIEW) and len(path) > len(PREVIEW):
                route = "preview"
            elif path in (b"/healthz", b"/readyz", b"/metrics"):
                route = path[1:].decode()
            return response(status, body, ctype, conn, extra, method == b"HEAD"), keep
        finally:
            self.metrics.observe(route, status, time.perf_counter() - t0)

    def _route(self, method: bytes, path: bytes) -> tuple[int, bytes, bytes, bytes]:
        """(status, body, content type, extra headers) for a parsed request."""
        if method != b"GET" and method != b"HEAD":
            return 405, error_body("only GET is supported"), JSON, b"Allow: GET, HEAD\r\n"
        if (
            path.startswith(PREFIX)
            and path.endswith(SUFFIX)
            and len(path) > len(PREFIX) + len(SUFFIX)
        ):
            return self._homepage(path[len(PREFIX) : -len(SUFFIX)])
        if path.startswith(PREVIEW) and len(path) > len(PREVIEW):
            return self._preview(path[len(PREVIEW) :])
        reader = self.store.reader
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
        return 404, error_body("no such route"), JSON, b""

    def _preview(self, raw: bytes) -> tuple[int, bytes, bytes, bytes]:
        """The stored page as HTML (escaped); the same id rules and fallback as the API."""
        reader = self.store.reader  # one export for the page and its item fields
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
                error_body("invalid user_id: need 1-128 characters of [A-Za-z0-9_.:@-]"),
                JSON,
                b"",
            )
        if reader is None:
            # one read of the reference: a swap cannot split this request
            reader = self.store.reader
        if reader is None:
            return 503, error_body("no export loaded yet"), JSON, b""
        body, fallback = reader.page(raw)
        return 200, body, JSON, reader.hdr_fallback if fallback else reader.hdr_known

    def close(self) -> None:
        self.store.close()
