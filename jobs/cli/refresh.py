"""The intra-day refresh's commands: refresh, spark-connect, refresh-server, simulate-refresh."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from typing import Any

from jobs.cli.common import Subparsers, add_common_options, say


def _cmd_refresh(a: argparse.Namespace) -> Any:
    import datetime as dt

    from jobs.core.config import load_config
    from jobs.refresh import run as refresh
    from jobs.refresh import windows

    cfg = load_config(a.config, a.set)
    if a.follow or a.watermarks_from:
        return _refresh_worker(a, cfg.refresh.every_minutes)
    wm = windows.parse_watermark(a.watermark) if a.watermark else dt.datetime.now(dt.UTC)
    wm = windows.floor_watermark(wm, cfg.refresh.every_minutes)
    t0 = time.perf_counter()
    if a.step:
        res = refresh.run_step(a.step, a.lake, wm, a.set, a.config)
        say(json.dumps(res, default=str, indent=2))
        return res
    from jobs.refresh.worker import preload

    preload()  # GX imports on a thread while the Spark steps run
    res = refresh.run(a.lake, wm, a.set, a.config, progress=say)
    pg, pub = res["pages"], res["publish"]
    say(
        f"refresh {wm:%Y-%m-%dT%H:%MZ} over ds={pg['base']}: "
        f"{res['ingest']['counts']['accepted']:,} new events, {pg['rebuilt_users']:,} pages "
        f"rebuilt, {pg['trimmed_pages']:,} trimmed, delta of {pg['delta_users']:,} users "
        f"({pg['delta_bytes'] / 1e6:.1f} MB), published={pub['published']} in "
        f"{time.perf_counter() - t0:.1f}s"
    )
    return res


def _refresh_worker(a: argparse.Namespace, every_minutes: int) -> Any:
    """`homepage refresh --follow` / `--watermarks-from`: one resident process, many windows."""
    import signal
    import threading

    from jobs.refresh import worker as rw

    if a.step or a.watermark:
        raise SystemExit(
            "--follow / --watermarks-from run every step of each window: drop "
            "--step and --watermark"
        )
    rw.preload()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the window in hand, then exit

    def emit(outcome: dict[str, Any]) -> None:
        print(json.dumps(outcome, default=str), flush=True)

    if a.watermarks_from:
        stream = sys.stdin if a.watermarks_from == "-" else open(a.watermarks_from)  # noqa: SIM115
        source = rw.stream_watermarks(stream)
    else:
        source = rw.clock_watermarks(every_minutes, delay_s=a.delay_s, stop=stop)
    failed = rw.work(
        a.lake,
        source,
        overrides=a.set,
        config_path=a.config,
        emit=emit,
        retry_failed=a.follow,
        every_minutes=every_minutes,
    )
    if a.watermarks_from and failed:
        raise SystemExit(1)
    return None


def _cmd_spark_connect(a: argparse.Namespace) -> Any:
    """Replace this process with a Spark Connect server (the project's Spark settings)."""
    import shlex

    from jobs.core.config import load_config
    from jobs.core.spark import connect_server_command, spark_environment

    cfg = load_config(a.config, a.set)
    cmd = connect_server_command(cfg.spark, a.host, a.port)
    if a.print_command:
        say(shlex.join(cmd))
        return None
    spark_environment()
    say(f"Spark Connect server on sc://{a.host}:{a.port} (master {cfg.spark.master})")
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return None  # not reached


def _cmd_refresh_server(a: argparse.Namespace) -> Any:
    """Serve refresh steps to the DAG's tasks from this warm process until stopped."""
    import signal

    from jobs.refresh import server as refresh_server
    from jobs.refresh.worker import preload

    preload()  # Spark's Python side now, Great Expectations on a thread
    server = refresh_server.make_server(a.host, a.port)
    host, port = server.server_address[:2]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    say(
        f"refresh worker on http://{host}:{port}: the refresh's tasks reach it with "
        f"refresh.worker_url=http://{host}:{port}"
    )
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return None


def _cmd_simulate_refresh(a: argparse.Namespace) -> Any:
    from jobs.core import io
    from jobs.core.lake import Lake, join
    from jobs.experiments.refresh_ab import format_report, refresh_ab

    res = refresh_ab(
        a.lake,
        every_hours=a.every_hours,
        seed=a.seed,
        visits_per_user=a.visits_per_user,
        resamples=a.resamples,
        overrides=a.set,
        config=a.config,
        say=say,
    )
    lake = Lake(a.lake)
    path = join(lake.reports(res["ds"]), "refresh_ab.json")
    io.write_json(path, res)
    say(format_report(res))
    say(f"report: {path}")
    return res


def _add_refresh(sub: Subparsers) -> None:
    rf = sub.add_parser(
        "refresh",
        help="intra-day refresh: new events and stock changes into a delta over the published "
        "export (what the homepage_refresh DAG runs)",
    )
    add_common_options(rf)
    rf.add_argument(
        "--watermark",
        help="UTC time the refresh covers events up to, e.g. 2026-01-15T10:15Z (default: now), "
        "rounded down to the refresh.every_minutes grid",
    )
    rf.add_argument(
        "--step", choices=["ingest", "priors", "pages", "publish"], help="one step only"
    )
    rf.add_argument(
        "--follow",
        action="store_true",
        help="stay resident: run each window of the refresh.every_minutes grid as the clock "
        "passes it (one warm process and Spark JVM for the day); one JSON line per window",
    )
    rf.add_argument(
        "--watermarks-from",
        metavar="FILE",
        help="stay resident and run the window of each watermark read from FILE ('-' = stdin), "
        "one ISO time per line; one JSON line per window on stdout; exit 1 if any failed",
    )
    rf.add_argument(
        "--delay-s",
        type=float,
        default=30.0,
        help="--follow: seconds to wait after a watermark before its window runs (default 30)",
    )
    rf.set_defaults(fn=_cmd_refresh)


def _add_spark_connect(sub: Subparsers) -> None:
    sc = sub.add_parser(
        "spark-connect",
        help="run a Spark Connect server with the config's Spark settings, in the foreground: "
        "the refresh's tasks reach it with refresh.spark_remote=sc://HOST:PORT",
    )
    add_common_options(sc, lake=False)
    sc.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sc.add_argument("--port", type=int, default=15002, help="port (default 15002)")
    sc.add_argument(
        "--print-command", action="store_true", help="print the spark-submit command and exit"
    )
    sc.set_defaults(fn=_cmd_spark_connect)


def _add_refresh_server(sub: Subparsers) -> None:
    rs = sub.add_parser(
        "refresh-server",
        help="run a resident refresh worker in the foreground: the homepage_refresh DAG's "
        "tasks hand it their steps with refresh.worker_url=http://HOST:PORT (no imports or "
        "Spark start per task)",
    )
    rs.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (it runs steps on any lake)"
    )
    rs.add_argument("--port", type=int, default=15003, help="port (default 15003)")
    rs.set_defaults(fn=_cmd_refresh_server)


def _add_simulate_refresh(sub: Subparsers) -> None:
    sr = sub.add_parser(
        "simulate-refresh",
        help="simulated A/B test on a generated lake: daily-only pages vs pages refreshed "
        "during the day (serves the day after the published export's events)",
    )
    add_common_options(sr)
    sr.add_argument("--every-hours", type=int, default=3, help="refresh period (divides 24)")
    sr.add_argument("--seed", type=int, default=1)
    sr.add_argument(
        "--visits-per-user",
        type=float,
        help="Poisson mean of homepage visits per user (default: the generator's rates)",
    )
    sr.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    sr.set_defaults(fn=_cmd_simulate_refresh)


PARSERS = {
    "refresh": _add_refresh,
    "spark-connect": _add_spark_connect,
    "refresh-server": _add_refresh_server,
    "simulate-refresh": _add_simulate_refresh,
}
