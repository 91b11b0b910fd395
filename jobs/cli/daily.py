"""The daily run's commands: pipeline, step, publish, models, serve, airflow-test, backfill."""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from jobs.cli.common import Subparsers, add_common_options, say
from jobs.core.errors import OrchestrationError


def _cmd_pipeline(a: argparse.Namespace) -> Any:
    from jobs.daily.pipeline import run_pipeline

    t0 = time.perf_counter()
    res = run_pipeline(a.lake, a.ds, a.set, config_path=a.config, progress=say)
    exp = res["export"]
    say(
        f"published ds={res['ds']}: {exp['users']:,} users, {exp['rows']:,} rows in {time.perf_counter() - t0:.1f}s"
    )
    return res


def _cmd_step(a: argparse.Namespace) -> Any:
    from jobs.core.lake import Lake
    from jobs.daily.pipeline import default_ds, run_step

    ds = a.ds or default_ds(Lake(a.lake))
    res = run_step(a.step, a.lake, ds, a.set, a.config)
    say(json.dumps(res, default=str, indent=2))
    return res


def _cmd_publish(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake, parse_ds
    from jobs.daily.export import publish

    parse_ds(a.ds)
    res = publish(Lake(a.lake), a.ds, load_config(a.config, a.set))
    say(f"exports/CURRENT -> {res['current']}")
    return res


def _cmd_models(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from jobs.daily import registry

    lake, cfg = Lake(a.lake), load_config(a.config, a.set)
    if a.action == "rollback":
        old, new = registry.rollback(lake, cfg, reason=a.reason or "manual rollback")
        say(f"champion: version {old} -> version {new} (logged in {registry.log_path(lake)})")
        return {"from": old, "to": new}
    rows = registry.history(lake, cfg)
    if not rows:
        say(f"no registered versions of {cfg.gate.model_name}")
    for r in rows:
        aliases = ",".join(r["aliases"]) or "-"
        say(f"version {r['version']:>4}  ds={r['ds']}  aliases={aliases}  created={r['created']}")
    if a.action == "log":
        for rec in registry.read_log(lake):
            say(json.dumps(rec, default=str))
    return rows


def _cmd_serve(a: argparse.Namespace) -> Any:
    from jobs.core.config import load_config
    from jobs.core.lake import Lake
    from serving_export.http.server import serve

    cfg = load_config(a.config, a.set)
    lake = Lake(a.lake)
    host = a.host or cfg.serve.host
    port = a.port if a.port is not None else cfg.serve.port
    for line in example_urls(lake, host, port):
        say(line)
    serve(
        lake,
        host,
        port,
        workers=a.workers or cfg.serve.workers,
        reload_interval_s=cfg.serve.reload_interval_s,
        max_connections=cfg.serve.max_connections,
    )


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
    say(f"homepage_daily finished: {state}")
    if state != "success":
        raise OrchestrationError(f"DAG run ended in state {state}")
    return state


def _cmd_backfill(a: argparse.Namespace) -> Any:
    from jobs.runner.backfill import run_backfill

    runs = run_backfill(
        a.lake,
        getattr(a, "from"),
        a.to,
        overrides=a.set,
        config=a.config,
        executor=a.executor,
        reprocess=a.reprocess,
        timeout_s=a.timeout,
        progress=say,
    )
    for r in runs:
        tasks = [f"{t}={s}" for t, s in r["tasks"].items() if s != "success"]
        detail = f" ({', '.join(tasks)})" if tasks and r["state"] != "success" else ""
        say(
            f"ds={r['ds']}  logical_date={r['logical_date']}  {r['run_id'] or '-'}: "
            f"{r['state']}{detail}"
        )
    bad = [r["ds"] for r in runs if r["state"] != "success" and "skipped" not in r["state"]]
    if bad:
        raise OrchestrationError(
            f"{len(bad)} of {len(runs)} backfill runs did not succeed: {', '.join(bad)}"
        )
    return runs


def _add_pipeline(sub: Subparsers) -> None:
    pl = sub.add_parser("pipeline", help="run every daily step in one process")
    add_common_options(pl)
    pl.add_argument("--ds", help="as-of date YYYY-MM-DD (default: day after the latest events)")
    pl.set_defaults(fn=_cmd_pipeline)


def _add_step(sub: Subparsers) -> None:
    from jobs.daily.pipeline import STEP_NAMES

    st = sub.add_parser("step", help="run one pipeline step (as a DAG task does)")
    add_common_options(st)
    st.add_argument("step", choices=list(STEP_NAMES))
    st.add_argument("--ds")
    st.set_defaults(fn=_cmd_step)


def _add_publish(sub: Subparsers) -> None:
    pb = sub.add_parser(
        "publish", help="point exports/CURRENT at an existing export (e.g. roll back)"
    )
    add_common_options(pb)
    pb.add_argument("--ds", required=True)
    pb.set_defaults(fn=_cmd_publish)


def _add_models(sub: Subparsers) -> None:
    md = sub.add_parser(
        "models", help="registered model versions; roll the champion back to the previous one"
    )
    add_common_options(md)
    md.add_argument(
        "action",
        choices=["list", "log", "rollback"],
        help="list: versions and aliases; log: also the promotion log; rollback: re-point "
        "champion to the previous champion",
    )
    md.add_argument("--reason", help="why (kept in the promotion log)")
    md.set_defaults(fn=_cmd_models)


def _add_serve(sub: Subparsers) -> None:
    sv = sub.add_parser("serve", help="serve the published export over HTTP")
    add_common_options(sv)
    sv.add_argument("--host")
    sv.add_argument("--port", type=int)
    sv.add_argument("--workers", type=int)
    sv.set_defaults(fn=_cmd_serve)


def _add_airflow_test(sub: Subparsers) -> None:
    af = sub.add_parser(
        "airflow-test", help="run the homepage_daily DAG through Airflow (dag.test, SQLite)"
    )
    add_common_options(af)
    af.add_argument("--ds")
    af.set_defaults(fn=_cmd_airflow)


def _add_backfill(sub: Subparsers) -> None:
    bf = sub.add_parser(
        "backfill",
        help="backfill homepage_daily through Airflow for a range of ds (airflow backfill create)",
        description="Create an Airflow backfill of homepage_daily (one run per ds, one at a "
        "time, the lake and overrides in the run conf) on the embedded SQLite metadata DB "
        "($AIRFLOW_HOME, default var/airflow) and run it to the end. The run for ds D has "
        "logical date D - 1 day (its data interval [D-1, D)) and publishes exports/ds=D.",
    )
    add_common_options(bf)
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


PARSERS = {
    "pipeline": _add_pipeline,
    "step": _add_step,
    "publish": _add_publish,
    "models": _add_models,
    "serve": _add_serve,
    "airflow-test": _add_airflow_test,
    "backfill": _add_backfill,
}
