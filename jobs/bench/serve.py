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

import collections
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from jobs.bench.load_client import client_level, client_started, init_client
from jobs.bench.server_process import HOST, ServerProcess, machine_busy_s, memory_of
from jobs.bench.synthetic_export import export_user_ids, synthetic_export
from jobs.core.lake import Lake, local_path

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
    async_res = pool.map_async(client_level, specs, chunksize=1)
    mstart = start + warmup_s
    time.sleep(max(0.0, mstart - time.monotonic()))
    cpu0, busy0, t0 = server.cpu_s(), machine_busy_s(), time.monotonic()
    parts = async_res.get(seconds + warmup_s + 120)
    cpu1, busy1, t1 = server.cpu_s(), machine_busy_s(), time.monotonic()
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
        the_lake = _synthetic_lake(root, users, slots, items, seed=seed, catalog=catalog, say=say)
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
    try:
        levels = _run_levels(
            server,
            ids,
            clients=clients,
            rates=rates,
            concurrency=concurrency,
            seconds=seconds,
            requests=requests,
            warmup_s=warmup_s,
            unknown_share=unknown_share,
            seed=seed,
            say=say,
        )
        memory = [{"pid": p, **memory_of(p, lmdb_path)} for p in server.pids]
    finally:
        server.stop()
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
        "summary": _summary(levels),
    }


def _synthetic_lake(
    root: str,
    users: int,
    slots: int,
    items: int,
    *,
    seed: int,
    catalog: int | None,
    say: Callable[[str], None],
) -> Lake:
    """The synthetic export's lake under `root` for these sizes (written on first use)."""
    lake_root = os.path.join(root, f"serve-u{users}-p{slots}x{items}-s{seed}")
    return synthetic_export(
        lake_root, users=users, slots=slots, items=items, seed=seed, catalog=catalog, say=say
    )


def _run_levels(
    server: ServerProcess,
    ids: list[str],
    *,
    clients: int,
    rates: Sequence[float],
    concurrency: Sequence[int],
    seconds: float,
    requests: int,
    warmup_s: float,
    unknown_share: float,
    seed: int,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Every rate level, then every closed-loop level, from one pool of client processes."""
    ctx = multiprocessing.get_context("spawn")
    ids_blob = b"\n".join(u.encode() for u in ids)
    levels: list[dict[str, Any]] = []
    say(f"server on port {server.port}, worker pids {server.pids}; {clients} client processes")
    with ctx.Pool(clients, initializer=init_client, initargs=(ids_blob,)) as pool:
        pool.map(client_started, range(clients), chunksize=1)  # all clients started and imported
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
    return levels


def _summary(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """The two targets: p99 < 5 ms at 1,000 req/s, and >= 10,000 req/s at saturation."""
    rate_levels = [x for x in levels if x["mode"] == "rate"]
    closed = [x for x in levels if x["mode"] == "closed"]
    best = max((x["rps"] for x in closed), default=0.0)
    at_1k = [x for x in rate_levels if x["target_rps"] == 1000]
    return {
        "max_rps": best,
        "p99_ms_at_1000_rps": at_1k[0]["p99_ms"] if at_1k else None,
        "target_p99_under_5ms_at_1000_rps": bool(at_1k and at_1k[0]["p99_ms"] < 5.0),
        "target_10k_rps": best >= 10_000,
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
