"""The lookup server: a minimal asyncio HTTP/1.1 server over the published LMDB export.

This module runs it: the listening sockets, the worker processes, the reload and idle-connection
loops (`serve`, `start_in_thread`). The routes are in serving_export.http.app, HTTP parsing in
serving_export.http.protocol, the opened export and its hot swap in serving_export.http.store.

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
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from jobs.core.errors import ServingError
from jobs.core.lake import Lake
from serving_export.http.app import App
from serving_export.http.protocol import MAX_CONNECTIONS, HttpProtocol

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 30.0  # idle keep-alive connections are closed after this
HEAD_TIMEOUT_S = 10.0  # a request head must arrive completely within this (slow-loris guard)
MAX_WORKERS = 64  # upper bound on worker processes (each maps the export and holds a loop)


async def reload_loop(app: App) -> None:
    """Check `exports/CURRENT` (and the delta) every `app.reload_interval_s`."""
    while True:
        try:
            await app.store.check_current()
        except Exception:
            log.exception("reload check failed")
        await asyncio.sleep(app.reload_interval_s)


async def sweep_loop(app: App) -> None:
    """Close idle keep-alive connections and requests whose head arrives too slowly."""
    while True:
        await asyncio.sleep(min(1.0, HEAD_TIMEOUT_S / 2, IDLE_TIMEOUT_S / 2))
        now = time.monotonic()
        for c in list(app.conns):
            if c.head_started is not None and now - c.head_started > HEAD_TIMEOUT_S:
                c.reply_and_close(408, "request head not received in time")
            elif now - c.last_active > IDLE_TIMEOUT_S:
                c.transport.close()


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
        await app.store.check_current()
    server = await loop.create_server(
        lambda: HttpProtocol(app), host, port, reuse_port=reuse_port or None, backlog=1024
    )
    tasks = [asyncio.create_task(reload_loop(app)), asyncio.create_task(sweep_loop(app))]
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
    _serve_workers(
        host,
        port,
        workers,
        ready,
        ready_event=ready_event,
        new_app=lambda: App(lake, reload_interval_s, verify_checksums, max_connections, cache_dir),
    )


def _serve_workers(
    host: str,
    port: int,
    workers: int,
    ready: Callable[[int, asyncio.Event], None],
    *,
    ready_event: Any,
    new_app: Callable[[], App],
) -> None:
    """`serve` with `workers` forked processes on one SO_REUSEPORT port, restarted when they die."""
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
                app = new_app()
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
        raise ServingError(f"server did not start: {box.get('error')!r}")

    def stop_fn() -> None:
        if thread.is_alive():
            box["loop"].call_soon_threadsafe(box["stop"].set)
            thread.join(10.0)

    return thread, box["port"], stop_fn
