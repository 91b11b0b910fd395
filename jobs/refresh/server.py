"""A resident refresh worker that the `homepage_refresh` DAG's tasks hand their steps to.

Each DAG task is a fresh process: run in the task, a refresh step pays for the interpreter's
imports (Great Expectations alone takes seconds) and, for ingest and priors, a Spark driver's
start and warm-up, every 15 minutes. `homepage refresh-server` keeps one warm process instead,
as a Spark Connect server keeps a warm driver; with `refresh.worker_url` set
(`http://host:port`), `jobs.refresh.run.run_step` sends its step there and waits for the result.
The DAG keeps its four tasks, their order, retries and logs: a task's log shows the step's log
lines, returned with the result.

Protocol (JSON over HTTP, loopback by default: the worker runs any step on any lake path it is
given, so bind it to a private address only):

    POST /step   {"step", "lake", "watermark", "overrides", "config"}
                 200 {"ok": true, "result": {...}, "log": [...], "seconds": s}
                 500 {"ok": false, "error": "...", "type": "NoExport" | "RefreshError" | ...,
                      "log": [...]}
    GET  /health 200 {"ok": true, "busy": bool, "steps": n}

Steps run one at a time (a lock): the windows of a lake must not race, and the DAG runs one
window at a time anyway. The step runs with the request's config (`overrides`, `config`), read
on the worker's machine; the worker's Spark driver is started by the first step that needs one,
with that step's Spark settings, and kept.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jobs.refresh import run as refresh

log = logging.getLogger(__name__)

MAX_LOG_LINES = 2000


class _Collect(logging.Handler):
    """The step's log lines, returned to the task that asked for it."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < MAX_LOG_LINES:
            self.lines.append(self.format(record))


class StepServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.steps = 0

    def run_step(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        missing = [k for k in ("step", "lake", "watermark") if not req.get(k)]
        if missing:
            return 400, {"ok": False, "type": "BadRequest", "error": f"missing {missing}"}
        with self.lock:
            collect = _Collect()
            root = logging.getLogger()
            root.addHandler(collect)
            t0 = time.perf_counter()
            try:
                result = refresh.run_step(
                    req["step"],
                    req["lake"],
                    req["watermark"],
                    req.get("overrides"),
                    req.get("config") or None,
                    local=True,
                )
            except Exception as exc:  # noqa: BLE001 - returned to the task, named
                log.exception("refresh step %s %s failed", req["step"], req["watermark"])
                return 500, {
                    "ok": False,
                    "type": type(exc).__name__,
                    "error": str(exc),
                    "log": collect.lines,
                }
            finally:
                root.removeHandler(collect)
                self.steps += 1
            seconds = round(time.perf_counter() - t0, 3)
            return 200, {"ok": True, "result": result, "log": collect.lines, "seconds": seconds}


class _Handler(BaseHTTPRequestHandler):
    server: StepServer

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, default=str).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path != "/health":
            self._reply(404, {"ok": False, "error": f"no route {self.path}"})
            return
        busy = self.server.lock.locked()
        self._reply(200, {"ok": True, "busy": busy, "steps": self.server.steps})

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/step":
            self._reply(404, {"ok": False, "error": f"no route {self.path}"})
            return
        try:
            size = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(size) or b"{}")
            if not isinstance(req, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._reply(400, {"ok": False, "type": "BadRequest", "error": str(exc)})
            return
        self._reply(*self.server.run_step(req))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.info("%s %s", self.address_string(), format % args)


def make_server(host: str = "127.0.0.1", port: int = 15003) -> StepServer:
    """A bound worker (port 0: any free port; `server.server_address` says which)."""
    return StepServer((host, port))
