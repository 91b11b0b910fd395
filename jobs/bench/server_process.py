"""The lookup server under test, as a subprocess (`python -m jobs.cli.main serve`), and what
/proc says about it: CPU time, worker processes, listening sockets, memory per mapping."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

from jobs.core.errors import BenchError
from jobs.core.lake import Lake

HOST = "127.0.0.1"
LISTEN_RE = re.compile(r"listening on http://[^\s]+:(\d+)")


def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    """utime + stime of a process in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _ticks()


def machine_busy_s() -> float:
    """CPU seconds spent not idle by the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return (sum(vals[:8]) - idle) / _ticks()


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(out)


def _listeners(port: int) -> int:
    """How many TCP sockets are in LISTEN state on `port` (one per ready worker)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            continue
    return n


def _get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head[9:12]), body


class ServerProcess:
    """`python -m jobs.cli.main serve` on a free loopback port; stopped with SIGTERM."""

    def __init__(self, lake: Lake, workers: int, log_path: str, timeout_s: float = 600.0) -> None:
        self.workers = workers
        self.log_path = log_path
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.cmd = [sys.executable, "-m", "jobs.cli.main", "serve", "--lake", lake.root]
        self.cmd += ["--host", HOST, "--port", "0", "--workers", str(workers)]
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=repo
        )
        try:
            self.port = self._wait_port(timeout_s)
            self.pids = self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        if self.proc.poll() is not None:
            with open(self.log_path, errors="replace") as f:
                tail = f.read()[-2000:]
            raise BenchError(f"server exited with {self.proc.returncode}:\n{tail}")

    def _wait_port(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            with open(self.log_path, errors="replace") as f:
                m = LISTEN_RE.search(f.read())
            if m:
                return int(m.group(1))
            time.sleep(0.05)
        raise TimeoutError(f"server did not report its port within {timeout_s:.0f}s")

    def _wait_ready(self, timeout_s: float) -> list[int]:
        """Wait for /readyz and for every worker to listen (a worker joins once it has loaded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            pids = [self.proc.pid] if self.workers == 1 else _children(self.proc.pid)
            try:
                ready = _get(self.port, "/readyz")[0] == 200
            except OSError:
                ready = False
            if ready and len(pids) == self.workers and _listeners(self.port) == self.workers:
                return pids
            time.sleep(0.1)
        raise TimeoutError(f"server not ready within {timeout_s:.0f}s (see {self.log_path})")

    def cpu_s(self) -> list[float]:
        return [_proc_cpu_s(p) for p in self.pids]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


def memory_of(pid: int, mapped_file: str) -> dict[str, float]:
    """RSS/PSS of a process (smaps_rollup) and of its mapping of `mapped_file` (smaps), in MiB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty"):
                out[key.lower() + "_mib"] = round(int(rest.split()[0]) / 1024, 1)
    rss = pss = 0
    inside = False
    target = os.path.realpath(mapped_file)
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping header line
                parts = line.split()
                inside = len(parts) >= 6 and parts[5] == target
            elif inside and first == "Rss:":
                rss += int(line.split()[1])
            elif inside and first == "Pss:":
                pss += int(line.split()[1])
    out["export_rss_mib"] = round(rss / 1024, 1)
    out["export_pss_mib"] = round(pss / 1024, 1)
    return out
