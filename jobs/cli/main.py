"""The `homepage` command line. Every subcommand has --help and exits non-zero with one line on bad input."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any


def _print(msg: str) -> None:
    print(msg, flush=True)


def _cmd_generate(a: argparse.Namespace) -> Any:
    from jobs.inputs.generate import generate_lake

    stats = generate_lake(
        a.lake,
        users=a.users,
        items=a.items,
        days=a.days,
        seed=a.seed,
        start=a.start,
        progress=_print,
    )
    _print(
        f"generated {stats['events']:,} events in {stats['seconds']:.1f}s ({stats['events_per_s']:,.0f} events/s) into {a.lake}"
    )
    return stats


def _cmd_import(a: argparse.Namespace) -> Any:
    from jobs.inputs.importers import import_dataset

    stats = import_dataset(a.dataset, a.src, a.lake, progress=_print)
    _print(f"imported {a.dataset}: {json.dumps(stats, default=str)}")
    return stats


def _cmd_pipeline(a: argparse.Namespace) -> Any:
    from jobs.daily.pipeline import run_pipeline

    t0 = time.perf_counter()
    res = run_pipeline(a.lake, a.ds, a.set, config_path=a.config, progress=_print)
    exp = res["export"]
    _print(
        f"published ds={res['ds']}: {exp['users']:,} users, {exp['rows']:,} rows in {time.perf_counter() - t0:.1f}s"
    )
    return res


def _cmd_step(a: argparse.Namespace) -> Any:
    from jobs.core.lake import Lake
    from jobs.daily.pipeline import default_ds, run_step

    ds = a.ds or default_ds(Lake(a.lake))
    res = run_step(a.step, a.lake, ds, a.set, a.config)
    _print(json.dumps(res, default=str, indent=2))
    return res


def _cmd_refresh(a: argparse.Namespace) -> Any:
    import datetime as dt

    from jobs.core.config import load_config
    from jobs.refresh import run as refresh

    cfg = load_config(a.config, a.set)
    if a.follow or a.watermarks_from:
        return _refresh_worker(a, cfg.refresh.every_minutes)
    wm = refresh.parse_watermark(a.watermark) if a.watermark else dt.datetime.now(dt.UTC)
    wm = refresh.floor_watermark(wm, cfg.refresh.every_minutes)
    t0 = time.perf_counter()
    if a.step:
        res = refresh.run_step(a.step, a.lake, wm, a.set, a.config)
        _print(json.dumps(res, default=str, indent=2))
        return res
    from jobs.refresh.worker import preload

    preload()  # GX imports on a thread while the Spark steps run
    res = refresh.run(a.lake, wm, a.set, a.config, progress=_print)
    pg, pub = res["pages"], res["publish"]
    _print(
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
        say=_print,
    )
    lake = Lake(a.lake)
    path = join(lake.reports(res["ds"]), "refresh_ab.json")
    io.write_json(path, res)
    _print(format_report(res))
    _print(f"report: {path}")
    return res


def _cmd_simulate(a: argparse.Namespace) -> Any:
    from jobs.experiments.simulate import simulate_day

    stats = simulate_day(
        a.lake, a.ds, export_ds=a.export_ds, seed=a.seed, visits_per_user=a.visits_per_user
    )
    _print(
        f"simulated ds={stats['ds']} on the export of {stats['export_ds']}: "
        f"{stats['visits']:,} visits by {stats['users']:,} users, "
        f"{stats['impressions']:,} impressions, {stats['clicks']:,} clicks "
        f"(CTR {stats['ctr']:.2%}), {stats['add_to_carts']:,} add-to-carts "
        f"({stats['add_to_carts_per_visitor']:.3f} per visitor), {stats['purchases']:,} "
        f"purchases in {stats['seconds']:.1f}s -> {stats['path']}"
    )
    return stats


def _cmd_publish(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake, parse_ds
    from jobs.daily.export import publish

    parse_ds(a.ds)
    res = publish(Lake(a.lake), a.ds, load_config(a.config, a.set))
    _print(f"exports/CURRENT -> {res['current']}")
    return res


def _cmd_serve(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from serving_export.http.server import serve

    cfg = load_config(a.config, a.set)
    lake = Lake(a.lake)
    host = a.host or cfg.serve.host
    port = a.port if a.port is not None else cfg.serve.port
    for line in example_urls(lake, host, port):
        _print(line)
    serve(
        lake,
        host,
        port,
        workers=a.workers or cfg.serve.workers,
        reload_interval_s=cfg.serve.reload_interval_s,
        max_connections=cfg.serve.max_connections,
    )


def _cmd_spark_connect(a: argparse.Namespace) -> Any:
    """Replace this process with a Spark Connect server (the project's Spark settings)."""
    import shlex

    from jobs.core.config import load_config
    from jobs.core.spark import connect_server_command, spark_environment

    cfg = load_config(a.config, a.set)
    cmd = connect_server_command(cfg.spark, a.host, a.port)
    if a.print_command:
        _print(shlex.join(cmd))
        return None
    spark_environment()
    _print(f"Spark Connect server on sc://{a.host}:{a.port} (master {cfg.spark.master})")
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
    _print(
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


def _bench_pipeline(a: argparse.Namespace) -> list[dict[str, Any]]:
    from jobs.bench.pipeline import bench_pipeline, format_table

    results = []
    for users in a.users:
        items = a.items or 100_000
        res = bench_pipeline(
            users=users,
            items=items,
            days=a.days,
            seed=a.seed,
            root=os.path.join(a.root, f"u{users}-i{items}-d{a.days}-s{a.seed}"),
            overrides=a.set,
            config=a.config,
            setup_only=a.setup_only,
            say=_print,
        )
        _print(json.dumps(res, indent=2))
        if a.setup_only:
            continue
        results.append(res)
        with open(os.path.join(a.root, f"pipeline-u{users}-i{items}.json"), "w") as f:
            json.dump(res, f, indent=2)
    if results:
        _print("")
        _print(format_table(results))
    return results


def _bench_refresh(a: argparse.Namespace) -> Any:
    from jobs.bench.refresh import bench_refresh

    results = []
    for users in a.users:
        items = a.items or 100_000
        res = bench_refresh(
            source_root=os.path.join(a.root, f"u{users}-i{items}-d{a.days}-s{a.seed}"),
            users=users,
            new_users=a.new_users,
            events=a.events,
            seed=a.seed,
            overrides=a.set,
            config=a.config,
            modes=tuple(a.refresh_modes),
            say=_print,
        )
        results.append(res)
        _print(json.dumps(res, indent=2))
        with open(os.path.join(a.root, f"refresh-u{users}-i{items}.json"), "w") as f:
            json.dump(res, f, indent=2)
    _print("")
    _print(
        "| export users | run | new events | users with events | refresh s | arrival → served s "
        "| peak GiB | delta users | delta MB |"
    )
    _print("|---|---|---|---|---|---|---|---|---|")
    for res in results:
        for mode in ("cold", "resident", "connect", "worker", "airflow"):
            r = res.get(mode)
            if r:
                _print(
                    f"| {res['users']:,} | {mode} | {r['new_events']:,} | {r['new_event_users']:,} "
                    f"| {r['refresh_s']} | {r['arrival_to_served_s']} | {r['refresh_peak_gb']} "
                    f"| {r['delta_users']:,} | {r['delta_mb']} |"
                )
    return results


def _cmd_bench(a: argparse.Namespace) -> Any:
    from jobs.bench.stages import bench_features, bench_rank, scaling_exponent

    if a.what == "serve":
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
            say=_print,
        )
        _print(json.dumps(res, indent=2))
        _print("")
        _print(format_report(res))
        return res
    if a.what == "pipeline":
        return _bench_pipeline(a)
    if a.what == "refresh":
        return _bench_refresh(a)
    if a.what not in ("features", "rank"):
        raise ValueError(
            f"unknown benchmark {a.what!r}; available: pipeline, features, rank, serve"
        )
    extra = {"item_mode": a.item_mode} if a.what == "rank" else {}
    bench = bench_rank if a.what == "rank" else bench_features
    results = []
    for users in a.users:
        items = a.items or max(1000, users // 10)
        res = bench(
            users=users,
            items=items,
            days=a.days,
            seed=a.seed,
            root=os.path.join(a.root, f"u{users}-i{items}-d{a.days}-s{a.seed}"),
            overrides=a.set,
            say=_print,
            **extra,
        )
        results.append(res)
        _print(json.dumps(res, indent=2))
    if a.what == "rank":
        _print("")
        _print(
            "| users | warm users | item mode | threads | load s | warm pages s | warm users/s "
            "| rank s (all users) | peak RSS GiB |"
        )
        _print("|---|---|---|---|---|---|---|---|---|")
        for r in results:
            _print(
                f"| {r['users']:,} | {r['warm_users']:,} | {r['item_mode']} | {r['threads']} "
                f"| {r['load_s']} | {r['pages_s']} | {r['users_per_s']:,} | {r['rank_s']} "
                f"| {r['peak_rss_gb']} |"
            )
        return results
    _print("")
    _print(
        "| users | events | ingest s | features s | features events/s | Spark JVM RSS GiB | Python peak RSS GiB |"
    )
    _print("|---|---|---|---|---|---|---|")
    for r in results:
        _print(
            f"| {r['users']:,} | {r['events']:,} | {r['ingest_s']} | {r['build_features_s']} | {r['features_events_per_s']:,} | {r['build_features_jvm_rss_gb']} | {r['peak_rss_gb']} |"
        )
    if len(results) > 1:
        _print(
            f"scaling exponent of the feature stage (time ~ events^b): b = {scaling_exponent(results[0], results[-1], 'build_features_s')}"
        )
    return results


def example_urls(lake: Any, host: str, port: int) -> list[str]:
    """A few URLs worth opening, using a real user of the published export if there is one."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from serving_export.publish import current_ds

    base = f"http://{host}:{port}"
    ds = current_ds(lake)
    lines = [f"serving {lake.root} on {base} (export ds={ds or 'none yet'})"]
    if ds:
        users = pq.read_table(
            os.path.join(lake.export(ds), "pages.parquet"), columns=["user_id"]
        ).column(0)
        personal = pc.filter(users, pc.invert(pc.starts_with(users, "__default__")))
        known = personal[0].as_py() if len(personal) else None
        if known:
            lines.append(f"  curl {base}/v1/users/{known}/homepage")
    lines += [
        f"  curl {base}/v1/users/nobody/homepage   (unknown user: default page, fallback true)",
        f"  curl {base}/healthz   {base}/readyz   {base}/metrics",
    ]
    return lines


def _cmd_airflow(a: argparse.Namespace) -> Any:
    from jobs.runner.airflow_runs import run_dag_test

    state = run_dag_test(a.lake, ds=a.ds, overrides=a.set)
    _print(f"homepage_daily finished: {state}")
    if state != "success":
        raise RuntimeError(f"DAG run ended in state {state}")
    return state


def _cmd_backfill(a: argparse.Namespace) -> Any:
    from jobs.runner.airflow_runs import run_backfill

    runs = run_backfill(
        a.lake,
        getattr(a, "from"),
        a.to,
        overrides=a.set,
        config=a.config,
        executor=a.executor,
        reprocess=a.reprocess,
        timeout_s=a.timeout,
        progress=_print,
    )
    for r in runs:
        tasks = [f"{t}={s}" for t, s in r["tasks"].items() if s != "success"]
        detail = f" ({', '.join(tasks)})" if tasks and r["state"] != "success" else ""
        _print(
            f"ds={r['ds']}  logical_date={r['logical_date']}  {r['run_id'] or '-'}: "
            f"{r['state']}{detail}"
        )
    bad = [r["ds"] for r in runs if r["state"] != "success" and "skipped" not in r["state"]]
    if bad:
        raise RuntimeError(
            f"{len(bad)} of {len(runs)} backfill runs did not succeed: {', '.join(bad)}"
        )
    return runs


def _cmd_models(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.daily import promotion_log, registry

    lake, cfg = Lake(a.lake), load_config(a.config, a.set)
    if a.action == "rollback":
        old, new = registry.rollback(lake, cfg, reason=a.reason or "manual rollback")
        _print(
            f"champion: version {old} -> version {new} (logged in {promotion_log.log_path(lake)})"
        )
        return {"from": old, "to": new}
    rows = registry.history(lake, cfg)
    if not rows:
        _print(f"no registered versions of {cfg.gate.model_name}")
    for r in rows:
        aliases = ",".join(r["aliases"]) or "-"
        _print(
            f"version {r['version']:>4}  ds={r['ds']}  aliases={aliases}  created={r['created']}"
        )
    if a.action == "log":
        for rec in promotion_log.read_log(lake):
            _print(json.dumps(rec, default=str))
    return rows


def _cmd_ope(a: argparse.Namespace) -> Any:
    from jobs.experiments import ope

    res = ope.run(
        a.lake,
        a.split_ds,
        pages_path=a.pages,
        test_days=a.test_days,
        resamples=a.resamples,
        seed=a.seed,
    )
    _print(ope.format_report(res))
    return res


def _cmd_evaluate(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.experiments import evaluate

    res = evaluate.run(Lake(a.lake), a.split_ds, load_config(a.config, a.set), a.test_days)
    _print(evaluate.format_table(res))
    _print(f"report: {res['report']} (MLflow run {res['run_id']})")
    return res


def _cmd_experiment(a: argparse.Namespace) -> Any:
    from jobs.core.lake import Lake
    from jobs.experiments import experiment

    res = experiment.run(
        Lake(a.lake),
        a.split_ds,
        a.set,
        name=a.name,
        config_path=a.config,
        test_days=a.test_days,
        rerun=a.rerun,
        seeds=a.seeds or (),
        splits=a.splits or (),
        say=_print,
    )
    _print(experiment.format_comparison(res))
    for kind in ("seeds", "splits", "grid"):
        if kind in res:
            from jobs.experiments.replicates import format_replicates

            summary = res[kind]
            _print("")
            _print(format_replicates(summary))
            _print(f"across {kind}: {summary['files']['md']} (MLflow run {summary['run_id']})")
    ids = res["mlflow"]
    _print(
        f"report: {res['report_dir']} (MLflow experiment {ids['mlflow_experiment']}: run "
        f"{ids['parent_run_id']}, champion {ids['champion_run_id']}, experiment "
        f"{ids['experiment_run_id']})"
    )
    return res


def build_parser() -> argparse.ArgumentParser:
    from jobs.daily.pipeline import STEP_NAMES

    p = argparse.ArgumentParser(prog="homepage", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser, lake: bool = True) -> None:
        if lake:
            sp.add_argument("--lake", required=True, help="lake directory or URI")
        sp.add_argument("--config", help="YAML config file (default conf/default.yaml)")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="config override, e.g. mf.factors=64 (repeatable)",
        )

    g = sub.add_parser("generate", help="write a synthetic lake")
    g.add_argument("--lake", required=True)
    g.add_argument("--users", type=int, default=2000)
    g.add_argument("--items", type=int, default=1000)
    g.add_argument("--days", type=int, default=14)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--start", default="2026-01-01", help="first day (YYYY-MM-DD)")
    g.add_argument(
        "--overwrite", action="store_true", help="replace the input tables of an existing lake"
    )
    g.set_defaults(fn=_cmd_generate)

    i = sub.add_parser("import", help="convert a real dataset to the lake contract")
    i.add_argument("dataset", choices=["instacart", "completejourney", "obd"])
    i.add_argument("--src", required=True, help="folder with the dataset's Parquet files")
    i.add_argument("--lake", required=True)
    i.set_defaults(fn=_cmd_import)

    pl = sub.add_parser("pipeline", help="run every daily step in one process")
    common(pl)
    pl.add_argument("--ds", help="as-of date YYYY-MM-DD (default: day after the latest events)")
    pl.set_defaults(fn=_cmd_pipeline)

    st = sub.add_parser("step", help="run one pipeline step (as a DAG task does)")
    common(st)
    st.add_argument("step", choices=list(STEP_NAMES))
    st.add_argument("--ds")
    st.set_defaults(fn=_cmd_step)

    rf = sub.add_parser(
        "refresh",
        help="intra-day refresh: new events and stock changes into a delta over the published "
        "export (what the homepage_refresh DAG runs)",
    )
    common(rf)
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

    sc = sub.add_parser(
        "spark-connect",
        help="run a Spark Connect server with the config's Spark settings, in the foreground: "
        "the refresh's tasks reach it with refresh.spark_remote=sc://HOST:PORT",
    )
    common(sc, lake=False)
    sc.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sc.add_argument("--port", type=int, default=15002, help="port (default 15002)")
    sc.add_argument(
        "--print-command", action="store_true", help="print the spark-submit command and exit"
    )
    sc.set_defaults(fn=_cmd_spark_connect)

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

    sr = sub.add_parser(
        "simulate-refresh",
        help="simulated A/B test on a generated lake: daily-only pages vs pages refreshed "
        "during the day (serves the day after the published export's events)",
    )
    common(sr)
    sr.add_argument("--every-hours", type=int, default=3, help="refresh period (divides 24)")
    sr.add_argument("--seed", type=int, default=1)
    sr.add_argument(
        "--visits-per-user",
        type=float,
        help="Poisson mean of homepage visits per user (default: the generator's rates)",
    )
    sr.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    sr.set_defaults(fn=_cmd_simulate_refresh)

    pb = sub.add_parser(
        "publish", help="point exports/CURRENT at an existing export (e.g. roll back)"
    )
    common(pb)
    pb.add_argument("--ds", required=True)
    pb.set_defaults(fn=_cmd_publish)

    sm = sub.add_parser(
        "simulate",
        help="serve the published pages to the generator's simulated users for one day "
        "(writes events/ds=DATE of a generated lake, with the pages' propensities)",
    )
    sm.add_argument("--lake", required=True, help="a lake written by `homepage generate`")
    sm.add_argument(
        "--ds", required=True, help="day to simulate (YYYY-MM-DD); its events must not exist"
    )
    sm.add_argument(
        "--export-ds", help="export to serve (default: the published one, exports/CURRENT)"
    )
    sm.add_argument("--seed", type=int, default=7)
    sm.add_argument(
        "--visits-per-user",
        type=float,
        help="Poisson mean of each user's homepage visits (default: the generator's rates)",
    )
    sm.set_defaults(fn=_cmd_simulate)
    md = sub.add_parser(
        "models", help="registered model versions; roll the champion back to the previous one"
    )
    common(md)
    md.add_argument(
        "action",
        choices=["list", "log", "rollback"],
        help="list: versions and aliases; log: also the promotion log; rollback: re-point "
        "champion to the previous champion",
    )
    md.add_argument("--reason", help="why (kept in the promotion log)")
    md.set_defaults(fn=_cmd_models)

    ev = sub.add_parser(
        "evaluate",
        help="train before a split, score the pages and baselines after it (and the engagement "
        "heads, off-policy estimates, a simulated A/B test where the lake allows)",
    )
    common(ev)
    ev.add_argument("--split-ds", required=True, help="first day of the test window (YYYY-MM-DD)")
    ev.add_argument("--test-days", type=int, help="test window length (default: eval.test_days)")
    ev.set_defaults(fn=_cmd_evaluate)

    op = sub.add_parser(
        "ope",
        help="off-policy estimates (IPS, SNIPS, DM, DR) of a page table on logged propensities",
    )
    op.add_argument("--lake", required=True)
    op.add_argument("--split-ds", required=True, help="first day of the logged window")
    op.add_argument("--test-days", type=int, help="window length (default: to the end)")
    op.add_argument("--pages", help="pages.parquet (default: warehouse/pages/ds=<split-ds>)")
    op.add_argument("--resamples", type=int, default=1000)
    op.add_argument("--seed", type=int, default=0)
    op.set_defaults(fn=_cmd_ope)

    xp = sub.add_parser(
        "experiment",
        help="config overrides (--set) against the champion config on one time split: both "
        "evaluated, compared with paired intervals, logged to one MLflow experiment",
        description="The champion is the config file alone (--config, else conf/default.yaml); "
        "the experiment is the same config plus the --set overrides. Both are trained before "
        "--split-ds and scored on the test window after it; an up-to-date evaluation of either "
        "side is reused. Prints the comparison; writes warehouse/reports/ds=<split>/experiments/"
        "<name>/ and one MLflow parent run with a child run per side.",
    )
    common(xp)
    xp.add_argument("--split-ds", required=True, help="first day of the test window (YYYY-MM-DD)")
    xp.add_argument(
        "--name", help="experiment name (default exp-<config hash>); names its lake and report"
    )
    xp.add_argument("--test-days", type=int, help="test window length (default eval.test_days)")
    xp.add_argument(
        "--rerun",
        action="store_true",
        help="evaluate both sides again even when an up-to-date evaluation exists",
    )
    xp.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="also train both sides again with each of these training seeds (mf.seed and "
        "engagement.seed) and summarise the differences across seeds: is the change larger "
        "than what a retrain alone moves?",
    )
    xp.add_argument(
        "--splits",
        nargs="+",
        metavar="DATE",
        help="also run the same experiment on each of these split dates (each with its own test "
        "window) and summarise the differences across splits; with --seeds, every split with "
        "every seed (each split's figures averaged over its seeds first)",
    )
    xp.set_defaults(fn=_cmd_experiment)

    sv = sub.add_parser("serve", help="serve the published export over HTTP")
    common(sv)
    sv.add_argument("--host")
    sv.add_argument("--port", type=int)
    sv.add_argument("--workers", type=int)
    sv.set_defaults(fn=_cmd_serve)

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

    af = sub.add_parser(
        "airflow-test", help="run the homepage_daily DAG through Airflow (dag.test, SQLite)"
    )
    common(af)
    af.add_argument("--ds")
    af.set_defaults(fn=_cmd_airflow)

    bf = sub.add_parser(
        "backfill",
        help="backfill homepage_daily through Airflow for a range of ds (airflow backfill create)",
        description="Create an Airflow backfill of homepage_daily (one run per ds, one at a "
        "time, the lake and overrides in the run conf) on the embedded SQLite metadata DB "
        "($AIRFLOW_HOME, default var/airflow) and run it to the end. The run for ds D has "
        "logical date D - 1 day (its data interval [D-1, D)) and publishes exports/ds=D.",
    )
    common(bf)
    bf.add_argument("--from", required=True, metavar="YYYY-MM-DD", help="first ds (inclusive)")
    bf.add_argument("--to", required=True, metavar="YYYY-MM-DD", help="last ds (inclusive)")
    bf.add_argument(
        "--executor",
        choices=["scheduler", "inline"],
        default="scheduler",
        help="scheduler: `airflow scheduler` (LocalExecutor) + the execution API server, "
        "started for the backfill and stopped after it (default); inline: the backfill's runs "
        "one after the other in this process, as dag.test() runs a DAG (faster: no process "
        "and Spark start per task)",
    )
    bf.add_argument(
        "--reprocess",
        choices=["none", "completed", "failed"],
        default="none",
        help="when a run for a date exists: none = skip it (Airflow's default), completed = run "
        "every date again, failed = run only failed dates again",
    )
    bf.add_argument(
        "--timeout", type=float, help="scheduler: give up after this many seconds (default: none)"
    )
    bf.set_defaults(fn=_cmd_backfill)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("py4j", "urllib3", "great_expectations", "mlflow", "alembic", "numexpr"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        args.fn(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line for the user; --verbose for the traceback
        if args.verbose:
            raise
        msg = str(exc).strip().splitlines()
        print(
            f"homepage {args.command}: error: {type(exc).__name__}: {msg[0] if msg else ''}",
            file=sys.stderr,
        )
        for extra in msg[1:12]:
            print(f"  {extra}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
