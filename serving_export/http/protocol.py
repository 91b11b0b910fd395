"""HTTP/1.1 on one connection: request heads framed and parsed by hand, responses, limits.

Keep-alive and pipelining, GET and HEAD only, no bodies. The parsing lives here alone (the request
head framing in `HttpProtocol.data_received` and `parse_head`), so it can be replaced as a unit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import orjson

from jobs.core.errors import ServingError
from serving_export.http.metrics import Metrics

MAX_HEAD_BYTES = 8192  # request line + headers; larger -> 431
MAX_CONNECTIONS = 1024  # default open connections per worker; beyond it a new one gets 503
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
CLOSE = b"Connection: close\r\n"


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def response(
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


def parse_head(head: bytes) -> tuple[bytes, bytes, bytes, bool]:
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


class RequestHandler(Protocol):
    """What a connection needs from its process's server state (serving_export.http.app.App)."""

    max_connections: int
    conns: set[HttpProtocol]
    metrics: Metrics

    def handle(self, head: bytes) -> tuple[bytes, bool]: ...


class HttpProtocol(asyncio.Protocol):
    """One client connection: HTTP/1.1 keep-alive and pipelining, GET only, no bodies."""

    def __init__(self, app: RequestHandler) -> None:
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
        self.transport.write(response(status, error_body(message), JSON, CLOSE))
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
