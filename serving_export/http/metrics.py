"""The lookup server's per-process Prometheus counters: requests and latency by route and status,
reloads, the export served, and the worker's memory."""

from __future__ import annotations

import bisect
import os

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


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
