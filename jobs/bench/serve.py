"""`homepage bench serve`: a loopback load test of the lookup server against a real export.

The server runs as a subprocess (`python -m jobs.cli.main serve --workers W`: W forked workers sharing
the port with SO_REUSEPORT and memory-mapping the same LMDB file). The load comes from separate
client processes (multiprocessing, spawn), each an asyncio loop over raw keep-alive TCP
connections that write minimal `GET /v1/users/<id>/homepage HTTP/1.1` requests and parse
Content-Length framed responses (no HTTP library, no pipelining: one request in flight per
connection). Two kinds of level:

* rate (open loop): requests are sent at scheduled times (a fixed rate, spread over the client
  processes and a pool of connections); latency runs from the *scheduled* time, so a slow server
  cannot hide its queueing (no coordinated omission). Service latency (from the actual send)
  and the client's send lag are reported too.
* closed loop (saturation): C connections each send the next request as soon as the previous
  response is complete; requests/s at C is the throughput.

Every level has a short warm-up whose responses are not recorded, and is bounded by `seconds`
and by `requests`. User ids are drawn at random from the export (plus a small share of unknown
ids, which must come back as the fallback page; a mismatch is counted). Per level: achieved
requests/s, p50/p95/p99/max latency, non-200 responses and transport errors, and the CPU used by
the server workers, the clients and the whole machine (to say where the time goes). At the end,
each worker's RSS and PSS (from /proc/<pid>/smaps_rollup) and the share of the mapped export in
them: PSS splits the shared file pages between workers, so it shows that the mapping is not copied.
"""

from __future__ import annotations

import asyncio
import collections
import json
import multiprocessing
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from jobs.core.lake import DEFAULT_PAGE_KEY, Lake, local_path

BENCH_DS = "2026-01-01"
UNKNOWN_PREFIX = "zz-unknown-"  # never a key of a synthetic or pipeline export
HOST = "127.0.0.1"
REQ_TEMPLATE = b"GET /v1/users/%s/homepage HTTP/1.1\r\nHost: x\r\n\r\n"
LISTEN_RE = re.compile(r"listening on http://[^\s]+:(\d+)")

# ---------------------------------------------------------------- the export

CATEGORIES = (
    "Fresh produce",
    "Dairy & eggs",
    "Bakery",
    "Snacks",
    "Beverages",
    "Household",
    "Personal care",
    "Frozen",
    "Pantry",
    "Baby",
    "Pet supplies",
    "Electronics",
)
FAMILIES = (  # (family, title template); "{c}" is replaced by a category name
    ("buy_again", "Buy it again"),
    ("top_picks", "Top picks for you"),
    ("because_viewed", "Because you viewed {c}"),
    ("trending", "Trending in {c}"),
    ("new_arrivals", "New in {c}"),
    ("deals", "Deals on {c}"),
)
BRANDS = ("Acme", "Northwind", "Contoso", "Globex", "Initech", "Umbrella", "Soylent", "Hooli")
NOUNS = ("Oat Milk", "Crackers", "Sparkling Water", "Dish Soap", "Granola", "Coffee Beans",
         "Shampoo", "Frozen Peas", "Olive Oil", "Dog Treats", "Baby Wipes", "USB-C Cable")  # fmt: skip
SIZES = ("250 g", "500 g", "1 kg", "6-pack", "1 l", "2 l", "family size", "travel size")


def _carousels() -> tuple[list[str], list[str], list[str]]:
    """(carousel_id, title, family) of the synthetic carousel catalogue."""
    ids, titles, fams = [], [], []
    for fam, title in FAMILIES:
        for cat in CATEGORIES if "{c}" in title else (None,):
            slug = "" if cat is None else ":" + re.sub(r"[^a-z]+", "-", cat.lower()).strip("-")
            ids.append(f"{fam}{slug}")
            titles.append(title.format(c=cat))
            fams.append(fam)
    return ids, titles, fams


def synthetic_frames(
    *, users: int, slots: int, items: int, catalog: int, seed: int
) -> tuple[Any, Any, Any]:
    """(pages, default_page, items) frames of the export contract, built column-wise with numpy."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    car_ids, car_titles, car_fams = _carousels()
    n_car = len(car_ids)
    if slots > n_car:
        raise ValueError(f"at most {n_car} slots (distinct synthetic carousels), got {slots}")

    fam_names = [f for f, _ in FAMILIES]
    fam_codes = np.array([fam_names.index(f) for f in car_fams])
    item_cats = "i" + pd.Index(np.arange(catalog).astype(str)).str.zfill(7)

    def frame(n_users: int, user_cats: Any) -> pd.DataFrame:
        n_car_rows = n_users * slots
        n = n_car_rows * items
        # S distinct carousels per user, carousel scores descending by slot.
        chosen = rng.random((n_users, n_car)).argsort(axis=1)[:, :slots].ravel()
        car_score = -np.sort(-rng.random((n_users, slots)), axis=1).ravel()
        item_score = -np.sort(-rng.random((n_car_rows, items)), axis=1).ravel()
        car_rows = np.repeat(chosen, items)
        return pd.DataFrame(
            {
                "user_id": pd.Categorical.from_codes(
                    np.repeat(np.arange(n_users, dtype=np.int32), slots * items), user_cats
                ),
                "slot": np.tile(np.repeat(np.arange(1, slots + 1, dtype=np.int32), items), n_users),
                "carousel_id": pd.Categorical.from_codes(car_rows, car_ids),
                "carousel_title": pd.Categorical.from_codes(car_rows, car_titles),
                "family": pd.Categorical.from_codes(fam_codes[car_rows], fam_names),
                "carousel_score": np.repeat(car_score * 0.9 + 0.05, items),
                "item_rank": np.tile(np.arange(1, items + 1, dtype=np.int32), n_car_rows),
                # popularity-skewed items: low ids are shown far more often
                "item_id": pd.Categorical.from_codes(
                    (catalog * rng.random(n) ** 2).astype(np.int32), item_cats
                ),
                "item_score": item_score * np.repeat(car_score, items),
                "propensity": rng.uniform(0.05, 1.0, n),
                "reason": pd.Categorical.from_codes(fam_codes[car_rows], fam_names),
                "model_version": pd.Categorical.from_codes(
                    np.zeros(n, dtype=np.int8), ["bench-synthetic-v1"]
                ),
            }
        )

    user_cats = "u" + pd.Index(np.arange(users).astype(str)).str.zfill(7)
    pages = frame(users, user_cats)
    default = frame(1, [DEFAULT_PAGE_KEY])
    k = np.arange(catalog)
    brand = np.array(BRANDS)[k % len(BRANDS)]
    noun = np.array(NOUNS)[(k // len(BRANDS)) % len(NOUNS)]
    size = np.array(SIZES)[(k * 7) % len(SIZES)]
    items_df = pd.DataFrame(
        {
            "item_id": np.asarray(item_cats),
            "title": pd.Series(brand) + " " + noun + ", " + size,
            "category_id": pd.Series(k % len(CATEGORIES)).map(lambda c: f"cat-{c:02d}"),
            "brand": brand,
            "price": np.round(rng.lognormal(1.5, 0.7, catalog), 2),
        }
    )
    return pages, default, items_df


def synthetic_export(
    root: str,
    *,
    users: int,
    slots: int = 10,
    items: int = 10,
    seed: int = 11,
    catalog: int | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> Lake:
    """A lake at `root` with one published export of `users` pages of `slots` x `items` items.

    Written (and published) only when `root` has no published export yet; later runs reuse it.
    """
    from serving_export.export.writer import write_export
    from serving_export.publish import current_ds, publish

    lake = Lake(root)
    if current_ds(lake) is not None:
        return lake
    catalog = catalog or max(1000, users // 10)
    t0 = time.perf_counter()
    say(f"writing a synthetic export: {users:,} users x {slots} x {items} items into {root}")
    pages, default, items_df = synthetic_frames(
        users=users, slots=slots, items=items, catalog=catalog, seed=seed
    )
    write_export(
        local_path(lake.export(BENCH_DS)),
        pages,
        default,
        items_df,
        ds=BENCH_DS,
        model_versions={"bench": "synthetic-v1"},
        config_hash="bench-serve",
        map_size_gb=max(0.01, users * slots * items * 120 / 1e9),
    )
    del pages
    publish(lake, BENCH_DS)
    say(f"export written and published in {time.perf_counter() - t0:.1f}s")
    return lake


def export_user_ids(lake: Lake) -> tuple[str, list[str], dict[str, Any]]:
    """(ds, known user ids, manifest) of the lake's published export."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from serving_export.export.format import MANIFEST_FILE, PARQUET_FILE
    from serving_export.publish import current_ds

    ds = current_ds(lake)
    if ds is None:
        raise ValueError(f"{lake.root} has no published export (exports/CURRENT)")
    export_dir = local_path(lake.export(ds))
    with open(os.path.join(export_dir, MANIFEST_FILE)) as f:
        manifest = json.load(f)
    col = pq.read_table(os.path.join(export_dir, PARQUET_FILE), columns=["user_id"]).column(0)
    ids = pc.unique(col)
    ids = pc.filter(ids, pc.invert(pc.starts_with(ids, DEFAULT_PAGE_KEY)))
    return ds, ids.to_pylist(), manifest


# ---------------------------------------------------------------- the client (own processes)

_IDS: list[bytes] = []


def _init_client(ids_blob: bytes) -> None:
    global _IDS
    _IDS = ids_blob.split(b"\n")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C


def _noop(_x: int) -> int:
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


def _client_level(spec: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_Run(spec).main())


# ---------------------------------------------------------------- the server (a subprocess)


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


def _machine_busy_s() -> float:
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
            raise RuntimeError(f"server exited with {self.proc.returncode}:\n{tail}")

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


# ---------------------------------------------------------------- levels and report


def _pct(x: Any, q: float) -> float:
    import numpy as np

    return round(float(np.percentile(x, q)) * 1000, 3) if len(x) else float("nan")


def _summarise(
    level: dict[str, Any],
    parts: list[dict[str, Any]],
    server_cpu: list[float],
    wall: float,
    machine_busy: float,
) -> dict[str, Any]:
    import numpy as np

    lat = np.concatenate([np.frombuffer(p["lat"], dtype=np.float64) for p in parts])
    svc = np.concatenate([np.frombuffer(p["svc"], dtype=np.float64) for p in parts])
    lag = np.concatenate([np.frombuffer(p["lag"], dtype=np.float64) for p in parts])
    statuses: collections.Counter[int] = collections.Counter()
    for p in parts:
        statuses.update({int(k): v for k, v in p["statuses"].items()})
    n = int(lat.size)
    mstart = min(p["mstart"] for p in parts)
    t_last = max(p["t_last"] for p in parts)
    span = max(t_last - mstart, 1e-9)
    res = dict(level)
    res.update(
        requests=n,
        rps=round(n / span, 1) if n else 0.0,
        p50_ms=_pct(lat, 50),
        p95_ms=_pct(lat, 95),
        p99_ms=_pct(lat, 99),
        max_ms=round(float(lat.max()) * 1000, 3) if n else float("nan"),
        mean_ms=round(float(lat.mean()) * 1000, 3) if n else float("nan"),
        non_200=n - statuses.get(200, 0),
        statuses={str(k): v for k, v in sorted(statuses.items())},
        errors=sum(p["errors"] for p in parts),
        error_kinds=dict(
            sum((collections.Counter(p["error_kinds"]) for p in parts), collections.Counter())
        ),
        fallback_mismatch=sum(p["mismatch"] for p in parts),
        body_bytes_mean=round(sum(p["body_bytes"] for p in parts) / max(n, 1), 1),
        seconds=round(span, 3),
        server_cpu_cores=round(sum(server_cpu) / wall, 2),
        server_cpu_per_worker=[round(c / wall, 2) for c in server_cpu],
        client_cpu_cores=round(sum(p["cpu_s"] / max(p["wall_s"], 1e-9) for p in parts), 2),
        machine_busy_cores=round(machine_busy / wall, 2),
    )
    if level["mode"] == "rate":
        res.update(
            service_p50_ms=_pct(svc, 50),
            service_p99_ms=_pct(svc, 99),
            send_lag_p99_ms=_pct(lag, 99),
        )
    return res


def run_level(
    pool: Any,
    server: ServerProcess,
    *,
    mode: str,
    value: float,
    clients: int,
    seconds: float,
    requests: int,
    warmup_s: float,
    unknown_share: float,
    seed: int,
    rate_connections: int = 16,
) -> dict[str, Any]:
    """One rate (open loop, `value` = requests/s) or closed-loop (`value` = connections) level."""
    if mode == "rate":
        procs = max(1, min(clients, int(-(-value // 5000))))  # about 5k req/s per client process
        conns = [rate_connections] * procs
        level = {"mode": "rate", "target_rps": value, "connections": rate_connections * procs}
        requests = min(requests, int(value * seconds))
    else:
        c = int(value)
        procs = max(1, min(clients, c))
        conns = [c // procs + (1 if k < c % procs else 0) for k in range(procs)]
        level = {"mode": "closed", "concurrency": c, "connections": c}
    start = time.monotonic() + 0.5 + 0.002 * sum(conns)  # all clients connected by then
    specs = [
        {
            "mode": mode,
            "host": HOST,
            "port": server.port,
            "connections": conns[k],
            "rate": value / procs if mode == "rate" else 0.0,
            "offset": k / value if mode == "rate" else 0.0,
            "start": start,
            "warmup_s": warmup_s,
            "seconds": seconds,
            "quota": requests // procs + (1 if k < requests % procs else 0),
            "unknown_share": unknown_share,
            "seed": seed * 1000 + k,
            "drain_s": 10.0,
        }
        for k in range(procs)
    ]
    async_res = pool.map_async(_client_level, specs, chunksize=1)
    mstart = start + warmup_s
    time.sleep(max(0.0, mstart - time.monotonic()))
    cpu0, busy0, t0 = server.cpu_s(), _machine_busy_s(), time.monotonic()
    parts = async_res.get(seconds + warmup_s + 120)
    cpu1, busy1, t1 = server.cpu_s(), _machine_busy_s(), time.monotonic()
    wall = max(t1 - t0, 1e-9)
    server_cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    level["clients"] = procs
    return _summarise(level, parts, server_cpu, wall, busy1 - busy0)


def bench_serve(
    *,
    lake: str | None = None,
    root: str = "var/bench",
    users: int = 100_000,
    slots: int = 10,
    items: int = 10,
    catalog: int | None = None,
    seed: int = 11,
    workers: int = 2,
    rates: Sequence[float] = (1000.0,),
    concurrency: Sequence[int] = (1, 8, 32, 64),
    seconds: float = 10.0,
    requests: int = 200_000,
    clients: int | None = None,
    warmup_s: float = 1.0,
    unknown_share: float = 0.02,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Load-test the lookup server (a subprocess with `workers` workers) on loopback; see module doc."""
    from serving_export.export.format import LMDB_FILE

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if seconds <= 0 or requests < 1:
        raise ValueError("seconds and requests must be positive")
    if lake is None:
        lake_root = os.path.join(root, f"serve-u{users}-p{slots}x{items}-s{seed}")
        the_lake = synthetic_export(
            lake_root, users=users, slots=slots, items=items, seed=seed, catalog=catalog, say=say
        )
    else:
        the_lake = Lake(lake)
    ds, ids, manifest = export_user_ids(the_lake)
    if not ids:
        raise ValueError(f"the export of ds={ds} has no users")
    export_dir = local_path(the_lake.export(ds))
    lmdb_path = os.path.join(export_dir, LMDB_FILE)
    clients = clients or max(1, min(4, os.cpu_count() or 1))
    say(
        f"export ds={ds}: {len(ids):,} users, {manifest.get('rows', 0):,} rows, "
        f"{os.path.getsize(lmdb_path) / 2**20:,.1f} MiB LMDB "
        f"({manifest.get('bytes_per_user', 0):,.0f} bytes/user)"
    )
    os.makedirs(root, exist_ok=True)
    log_path = os.path.join(root, f"bench-serve-w{workers}.log")
    say(f"starting the server: {workers} worker(s) (log: {log_path})")
    server = ServerProcess(the_lake, workers, log_path)
    ctx = multiprocessing.get_context("spawn")
    ids_blob = b"\n".join(u.encode() for u in ids)
    levels: list[dict[str, Any]] = []
    try:
        say(f"server on port {server.port}, worker pids {server.pids}; {clients} client processes")
        with ctx.Pool(clients, initializer=_init_client, initargs=(ids_blob,)) as pool:
            pool.map(_noop, range(clients), chunksize=1)  # all clients started and imported
            plan = [("rate", float(r)) for r in rates] + [("closed", float(c)) for c in concurrency]
            for mode, value in plan:
                res = run_level(
                    pool,
                    server,
                    mode=mode,
                    value=value,
                    clients=clients,
                    seconds=seconds,
                    requests=requests,
                    warmup_s=warmup_s,
                    unknown_share=unknown_share,
                    seed=seed + len(levels),
                )
                levels.append(res)
                say(_level_line(res))
        memory = [{"pid": p, **memory_of(p, lmdb_path)} for p in server.pids]
    finally:
        server.stop()
    rate_levels = [x for x in levels if x["mode"] == "rate"]
    closed = [x for x in levels if x["mode"] == "closed"]
    best = max((x["rps"] for x in closed), default=0.0)
    at_1k = [x for x in rate_levels if x["target_rps"] == 1000]
    return {
        "export": {
            "lake": the_lake.root,
            "ds": ds,
            "users": len(ids),
            "rows": manifest.get("rows"),
            "lmdb_bytes": os.path.getsize(lmdb_path),
            "bytes_per_user": manifest.get("bytes_per_user"),
        },
        "workers": workers,
        "clients": clients,
        "cpus": os.cpu_count(),
        "warmup_s": warmup_s,
        "unknown_share": unknown_share,
        "levels": levels,
        "memory": memory,
        "summary": {
            "max_rps": best,
            "p99_ms_at_1000_rps": at_1k[0]["p99_ms"] if at_1k else None,
            "target_p99_under_5ms_at_1000_rps": bool(at_1k and at_1k[0]["p99_ms"] < 5.0),
            "target_10k_rps": best >= 10_000,
        },
    }


def _level_line(r: dict[str, Any]) -> str:
    what = f"rate {r['target_rps']:,.0f}/s" if r["mode"] == "rate" else f"{r['concurrency']} conns"
    return (
        f"  {what}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
        f"max {r['max_ms']} ms, errors {r['errors'] + r['non_200']}, CPU server "
        f"{r['server_cpu_cores']} / clients {r['client_cpu_cores']} / machine "
        f"{r['machine_busy_cores']} cores"
    )


def format_report(res: dict[str, Any]) -> str:
    """Markdown tables: one row per level, then memory per worker."""
    e = res["export"]
    lines = [
        f"lookup server: {res['workers']} worker(s), {res['clients']} client process(es), "
        f"{res['cpus']} CPUs; export ds={e['ds']}: {e['users']:,} users, "
        f"{e['bytes_per_user']:,.0f} bytes/page, LMDB {e['lmdb_bytes'] / 2**20:,.1f} MiB",
        "",
        "| level | conns | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | errors "
        "| server CPU (per worker) | client CPU | machine CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["levels"]:
        if r["mode"] == "rate":
            what = (
                f"rate {r['target_rps']:,.0f}/s (service p99 {r['service_p99_ms']} ms, "
                f"send lag p99 {r['send_lag_p99_ms']} ms)"
            )
        else:
            what = f"closed, {r['concurrency']} conns"
        per = "+".join(f"{c}" for c in r["server_cpu_per_worker"])
        lines.append(
            f"| {what} | {r['connections']} | {r['requests']:,} | {r['rps']:,.0f} | {r['p50_ms']} "
            f"| {r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} "
            f"| {r['errors'] + r['non_200'] + r['fallback_mismatch']} "
            f"| {r['server_cpu_cores']} ({per}) | {r['client_cpu_cores']} "
            f"| {r['machine_busy_cores']} |"
        )
    lines += [
        "",
        "| worker pid | RSS MiB | PSS MiB | PSS anon MiB | export RSS MiB | export PSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for m in res["memory"]:
        lines.append(
            f"| {m['pid']} | {m.get('rss_mib')} | {m.get('pss_mib')} | {m.get('pss_anon_mib', '-')} "
            f"| {m['export_rss_mib']} | {m['export_pss_mib']} |"
        )
    s = res["summary"]
    lines += [
        "",
        f"targets: p99 < 5 ms at 1,000 req/s: {s['target_p99_under_5ms_at_1000_rps']} "
        f"(p99 {s['p99_ms_at_1000_rps']} ms); >= 10,000 req/s at saturation: "
        f"{s['target_10k_rps']} (best {s['max_rps']:,.0f} req/s)",
        "CPU columns are cores busy during the measured window (server = sum over workers; "
        "machine = all processes, from /proc/stat).",
    ]
    return "\n".join(lines)
