"""The load clients of `homepage bench serve`, run in their own processes (multiprocessing,
spawn): each an asyncio loop over raw keep-alive TCP connections that write minimal
`GET /v1/users/<id>/homepage HTTP/1.1` requests and parse Content-Length framed responses, at a
scheduled rate (open loop) or as fast as answered (closed loop). See jobs.bench.serve."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import socket
import time
from array import array
from typing import Any

UNKNOWN_PREFIX = "zz-unknown-"  # never a key of a synthetic or pipeline export
REQ_TEMPLATE = b"GET /v1/users/%s/homepage HTTP/1.1\r\nHost: x\r\n\r\n"

_IDS: list[bytes] = []


def init_client(ids_blob: bytes) -> None:
    global _IDS
    _IDS = ids_blob.split(b"\n")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C


def client_started(_x: int) -> int:
    time.sleep(0.05)
    return os.getpid()


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.need = 0
        self.length = 0
        self.status = 0
        self.fallback = False
        self.busy = False
        self.unknown = False
        self.t_sched = 0.0
        self.t_sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.lost(self, exc)

    def send(self, t_sched: float) -> None:
        run = self.run
        j = run.next_req
        run.next_req = j + 1 if j + 1 < len(run.reqs) else 0
        self.unknown = run.unknown[j]
        self.busy = True
        self.t_sched = t_sched
        self.t_sent = time.monotonic()
        self.transport.write(run.reqs[j])  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.head:
            data = self.head + data
            self.head = b""
        pos, n = 0, len(data)
        while pos < n:
            need = self.need
            if need:
                if n - pos < need:
                    self.need = need - (n - pos)
                    return
                pos += need
                self.need = 0
                self.run.complete(self)
                continue
            end = data.find(b"\r\n\r\n", pos)
            if end < 0:
                self.head = data[pos:]
                return
            self.status = int(data[pos + 9 : pos + 12])
            i = data.find(b"Content-Length:", pos, end)
            self.need = self.length = int(data[i + 15 : data.find(b"\r\n", i)]) if i >= 0 else 0
            self.fallback = data.find(b"X-Fallback: true", pos, end) >= 0
            pos = end + 4
            if self.need == 0:
                self.run.complete(self)


class _Run:
    """One client process's share of one level."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.closed_loop = spec["mode"] == "closed"
        rnd = random.Random(spec["seed"])
        n_req = max(1, min(spec["quota"] * 2, 1 << 16))
        unknown_share = spec["unknown_share"]
        self.reqs: list[bytes] = []
        self.unknown: list[bool] = []
        for _ in range(n_req):
            if rnd.random() < unknown_share:
                uid = b"%s%d" % (UNKNOWN_PREFIX.encode(), rnd.randrange(1 << 30))
                self.unknown.append(True)
            else:
                uid = rnd.choice(_IDS)
                self.unknown.append(False)
            self.reqs.append(REQ_TEMPLATE % uid)
        self.next_req = 0
        self.mstart = spec["start"] + spec["warmup_s"]
        self.mend = self.mstart + spec["seconds"]
        self.quota = spec["quota"]
        self.sent_measured = 0
        self.stopping = False
        self.lat = array("d")  # from the scheduled time (open loop) / the send (closed loop)
        self.svc = array("d")  # from the actual send
        self.lag = array("d")  # send time - scheduled time (open loop)
        self.statuses: collections.Counter[int] = collections.Counter()
        self.errors = 0  # connections lost with a request in flight, or unanswered at the end
        self.error_kinds: collections.Counter[str] = collections.Counter()
        self.body_bytes = 0
        self.mismatch = 0  # fallback page for a known user or a personal page for an unknown one
        self.t_last = 0.0
        self.idle: collections.deque[_Conn] = collections.deque()
        self.pending: collections.deque[float] = collections.deque()
        self.conns: set[_Conn] = set()
        self.inflight = 0
        self.done: asyncio.Future[None] | None = None

    # -- callbacks from connections

    def complete(self, c: _Conn) -> None:
        now = time.monotonic()
        c.busy = False
        self.inflight -= 1
        if c.t_sched >= self.mstart:  # measured (warm-up responses are not recorded)
            self.lat.append(now - c.t_sched)
            self.svc.append(now - c.t_sent)
            self.lag.append(c.t_sent - c.t_sched)
            self.statuses[c.status] += 1
            self.body_bytes += c.length
            if c.fallback != c.unknown:
                self.mismatch += 1
            self.t_last = now
        self._next(c, now)

    def lost(self, c: _Conn, exc: Exception | None) -> None:
        self.conns.discard(c)
        if c.busy:
            c.busy = False
            self.inflight -= 1
            self.errors += 1
            self.error_kinds[f"connection lost ({type(exc).__name__ if exc else 'closed'})"] += 1
        if c in self.idle:
            self.idle.remove(c)
        if not self.stopping:
            asyncio.get_running_loop().create_task(self._reconnect())
        self._check_done()

    # -- scheduling

    def _may_send(self, t_sched: float) -> bool:
        if self.stopping:
            return False
        if t_sched >= self.mend or (t_sched >= self.mstart and self.sent_measured >= self.quota):
            self.stopping = True
            return False
        if t_sched >= self.mstart:
            self.sent_measured += 1
        return True

    def _next(self, c: _Conn, now: float) -> None:
        if self.closed_loop:
            if self._may_send(now):
                self.inflight += 1
                c.send(now)
                return
        elif self.pending:
            self.inflight += 1
            c.send(self.pending.popleft())
            return
        self.idle.append(c)
        self._check_done()

    def _check_done(self) -> None:
        done = self.done
        if self.stopping and not self.inflight and not self.pending and done and not done.done():
            done.set_result(None)

    def _dispatch(self, t_sched: float) -> None:
        if self.idle:
            c = self.idle.popleft()  # FIFO: spreads requests over all connections (and workers)
            self.inflight += 1
            c.send(t_sched)
        else:
            self.pending.append(t_sched)  # queued: its latency still runs from t_sched

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, c = await loop.create_connection(
            lambda: _Conn(self), self.spec["host"], self.spec["port"]
        )
        sock = c.transport.get_extra_info("socket")  # type: ignore[union-attr]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conns.add(c)
        return c

    async def _reconnect(self) -> None:
        try:
            c = await self._connect()
        except OSError as exc:
            self.errors += 1
            self.error_kinds[f"reconnect failed ({type(exc).__name__})"] += 1
            return
        self._next(c, time.monotonic())

    async def main(self) -> dict[str, Any]:
        spec = self.spec
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        conns = [await self._connect() for _ in range(spec["connections"])]
        await asyncio.sleep(max(0.0, spec["start"] - time.monotonic()))
        cpu0, wall0 = time.process_time(), time.monotonic()
        if self.closed_loop:
            for c in conns:
                self._next(c, time.monotonic())
        else:
            self.idle.extend(conns)
            interval = 1.0 / spec["rate"]
            i = 0
            t0 = spec["start"] + spec["offset"]
            while not self.stopping:
                t = t0 + i * interval
                now = time.monotonic()
                if t > now:
                    await asyncio.sleep(t - now)
                    now = time.monotonic()
                while t <= now:  # everything due (the loop may wake up late)
                    if not self._may_send(t):
                        break
                    self._dispatch(t)
                    i += 1
                    t = t0 + i * interval
        self._check_done()
        # closed loop: runs until mend (or the quota); then in-flight requests get drain_s
        timeout = max(0.0, self.mend - time.monotonic()) + spec["drain_s"]
        try:
            await asyncio.wait_for(asyncio.shield(self.done), timeout)
        except TimeoutError:
            self.errors += self.inflight + len(self.pending)
            self.error_kinds["unanswered"] += self.inflight + len(self.pending)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        for c in list(self.conns):
            if c.transport is not None:
                c.transport.close()
        return {
            "lat": self.lat.tobytes(),
            "svc": self.svc.tobytes(),
            "lag": self.lag.tobytes(),
            "statuses": dict(self.statuses),
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "mismatch": self.mismatch,
            "body_bytes": self.body_bytes,
            "mstart": self.mstart,
            "t_last": self.t_last,
            "cpu_s": cpu,
            "wall_s": wall,
        }


def client_level(spec: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_Run(spec).main())
