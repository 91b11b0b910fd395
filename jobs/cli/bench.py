"""`homepage bench ...`: benchmarks on generated lakes."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from jobs.cli.common import Subparsers, say


def _lake_dir(a: argparse.Namespace, users: int, items: int) -> str:
    """The generated lake of one size under --root (shared by the pipeline, stage and refresh
    benchmarks, so one generation serves them all)."""
    return os.path.join(a.root, f"u{users}-i{items}-d{a.days}-s{a.seed}")


def _lake_size(a: argparse.Namespace, users: int, items: int) -> dict[str, Any]:
    """The size, seed and directory of the generated lake a benchmark runs on."""
    return {
        "users": users,
        "items": items,
        "days": a.days,
        "seed": a.seed,
        "root": _lake_dir(a, users, items),
    }


def _bench_pipeline(a: argparse.Namespace) -> list[dict[str, Any]]:
    from jobs.bench.pipeline import bench_pipeline, format_table

    results = []
    for users in a.users:
        items = a.items or 100_000
        res = bench_pipeline(
            **_lake_size(a, users, items),
            overrides=a.set,
            config=a.config,
            setup_only=a.setup_only,
            say=say,
        )
        say(json.dumps(res, indent=2))
        if a.setup_only:
            continue
        results.append(res)
        with open(os.path.join(a.root, f"pipeline-u{users}-i{items}.json"), "w") as f:
            json.dump(res, f, indent=2)
    if results:
        say("")
        say(format_table(results))
    return results


def _bench_refresh(a: argparse.Namespace) -> Any:
    from jobs.bench.refresh import bench_refresh

    results = []
    for users in a.users:
        items = a.items or 100_000
        res = bench_refresh(
            source_root=_lake_dir(a, users, items),
            users=users,
            new_users=a.new_users,
            events=a.events,
            seed=a.seed,
            overrides=a.set,
            config=a.config,
            modes=tuple(a.refresh_modes),
            say=say,
        )
        results.append(res)
        say(json.dumps(res, indent=2))
        with open(os.path.join(a.root, f"refresh-u{users}-i{items}.json"), "w") as f:
            json.dump(res, f, indent=2)
    say("")
    say(
        "| export users | run | new events | users with events | refresh s | arrival → served s "
        "| peak GiB | delta users | delta MB |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for mode in ("cold", "resident", "connect", "worker", "airflow"):
            r = res.get(mode)
            if r:
                say(
                    f"| {res['users']:,} | {mode} | {r['new_events']:,} | {r['new_event_users']:,} "
                    f"| {r['refresh_s']} | {r['arrival_to_served_s']} | {r['refresh_peak_gb']} "
                    f"| {r['delta_users']:,} | {r['delta_mb']} |"
                )
    return results


def _cmd_bench(a: argparse.Namespace) -> Any:
    if a.what == "serve":
        return _bench_serve(a)
    if a.what == "pipeline":
        return _bench_pipeline(a)
    if a.what == "refresh":
        return _bench_refresh(a)
    if a.what not in ("features", "rank"):
        raise ValueError(
            f"unknown benchmark {a.what!r}; available: pipeline, features, rank, serve"
        )
    return _bench_stages(a)


def _bench_serve(a: argparse.Namespace) -> Any:
    from jobs.bench.serve import bench_serve, format_report

    res = bench_serve(
        lake=a.lake,
        root=a.root,
        users=a.users[0],
        slots=a.slots,
        items=a.slot_items,
        catalog=a.items,
        seed=a.seed,
        workers=a.workers,
        rates=a.rate,
        concurrency=a.concurrency,
        seconds=a.seconds,
        requests=a.requests,
        clients=a.clients,
        warmup_s=a.warmup,
        say=say,
    )
    say(json.dumps(res, indent=2))
    say("")
    say(format_report(res))
    return res


def _bench_stages(a: argparse.Namespace) -> list[dict[str, Any]]:
    """`bench features` or `bench rank`: each lake size, then a table."""
    from jobs.bench.stages import bench_features, bench_rank

    extra = {"item_mode": a.item_mode} if a.what == "rank" else {}
    bench = bench_rank if a.what == "rank" else bench_features
    results = []
    for users in a.users:
        items = a.items or max(1000, users // 10)
        res = bench(
            **_lake_size(a, users, items),
            overrides=a.set,
            say=say,
            **extra,
        )
        results.append(res)
        say(json.dumps(res, indent=2))
    if a.what == "rank":
        _say_rank_table(results)
    else:
        _say_features_table(results)
    return results


def _say_rank_table(results: list[dict[str, Any]]) -> None:
    say("")
    say(
        "| users | warm users | item mode | threads | load s | warm pages s | warm users/s "
        "| rank s (all users) | peak RSS GiB |"
    )
    say("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        say(
            f"| {r['users']:,} | {r['warm_users']:,} | {r['item_mode']} | {r['threads']} "
            f"| {r['load_s']} | {r['pages_s']} | {r['users_per_s']:,} | {r['rank_s']} "
            f"| {r['peak_rss_gb']} |"
        )


def _say_features_table(results: list[dict[str, Any]]) -> None:
    from jobs.bench.stages import scaling_exponent

    say("")
    say(
        "| users | events | ingest s | features s | features events/s | Spark JVM RSS GiB | Python peak RSS GiB |"
    )
    say("|---|---|---|---|---|---|---|")
    for r in results:
        say(
            f"| {r['users']:,} | {r['events']:,} | {r['ingest_s']} | {r['build_features_s']} | {r['features_events_per_s']:,} | {r['build_features_jvm_rss_gb']} | {r['peak_rss_gb']} |"
        )
    if len(results) > 1:
        say(
            f"scaling exponent of the feature stage (time ~ events^b): b = {scaling_exponent(results[0], results[-1], 'build_features_s')}"
        )


def _add_bench(sub: Subparsers) -> None:
    bn = sub.add_parser("bench", help="benchmarks on generated lakes (not part of make test)")
    bn.add_argument("what", choices=["pipeline", "refresh", "features", "rank", "serve"])
    bn.add_argument(
        "--users",
        type=int,
        nargs="+",
        default=[100_000, 1_000_000],
        help="lake sizes (serve: pages in the synthetic export, the first value; default 100,000)",
    )
    bn.add_argument(
        "--items",
        type=int,
        help="pipeline: default 100,000; features, rank: default users / 10 (at least 1,000); "
        "serve: catalogue size",
    )
    bn.add_argument("--days", type=int, default=30)
    bn.add_argument("--seed", type=int, default=11)
    bn.add_argument("--root", default="var/bench", help="where generated lakes are kept")
    bn.add_argument("--config", help="YAML config file")
    bn.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    bn.add_argument(
        "--item-mode",
        choices=["fixed", "rerank"],
        help="rank: fixed = the policy layer without the engagement model's predictions",
    )
    bn.add_argument(
        "--setup-only",
        action="store_true",
        help="pipeline: make the steady state (ingested history, features as of the label "
        "window's start) and stop",
    )
    br = bn.add_argument_group("refresh (one intra-day window on the pipeline bench's export)")
    br.add_argument("--new-users", type=int, default=50_000, help="refresh: users with events")
    br.add_argument("--events", type=int, default=100_000, help="refresh: new events")
    br.add_argument(
        "--refresh-modes",
        nargs="+",
        choices=["cold", "resident", "connect", "worker", "airflow"],
        default=["cold", "resident", "connect", "worker", "airflow"],
        help="refresh: one process per window (cold), a resident worker, the DAG's tasks on a "
        "Spark Connect server (connect), the DAG's tasks on a refresh worker (worker), a DAG "
        "run under the Airflow scheduler on a refresh worker (airflow); default all five",
    )
    bs = bn.add_argument_group("serve (a loopback load test of the lookup server)")
    bs.add_argument(
        "--lake",
        help="serve: an existing lake with a published export (default: a synthetic export "
        "under --root)",
    )
    bs.add_argument("--workers", type=int, default=2, help="serve: server worker processes")
    bs.add_argument("--slots", type=int, default=10, help="serve: carousels per synthetic page")
    bs.add_argument("--slot-items", type=int, default=10, help="serve: items per carousel")
    bs.add_argument(
        "--rate",
        type=float,
        nargs="*",
        default=[1000.0],
        help="serve: open-loop levels in requests/s (latency from the scheduled send time)",
    )
    bs.add_argument(
        "--concurrency",
        type=int,
        nargs="*",
        default=[1, 8, 32, 64],
        help="serve: closed-loop levels (connections, one request in flight each)",
    )
    bs.add_argument("--seconds", type=float, default=10.0, help="serve: measured seconds per level")
    bs.add_argument("--requests", type=int, default=200_000, help="serve: max requests per level")
    bs.add_argument("--warmup", type=float, default=1.0, help="serve: unrecorded warm-up per level")
    bs.add_argument(
        "--clients", type=int, help="serve: client processes (default: CPU count, <= 4)"
    )
    bn.set_defaults(fn=_cmd_bench)


PARSERS = {
    "bench": _add_bench,
}
