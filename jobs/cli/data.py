"""`homepage generate` and `homepage import`: the lake's inputs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobs.cli.common import Subparsers, say


def _cmd_generate(a: argparse.Namespace) -> Any:
    from jobs.inputs.generate import generate_lake

    stats = generate_lake(
        a.lake,
        users=a.users,
        items=a.items,
        days=a.days,
        seed=a.seed,
        start=a.start,
        progress=say,
    )
    say(
        f"generated {stats['events']:,} events in {stats['seconds']:.1f}s ({stats['events_per_s']:,.0f} events/s) into {a.lake}"
    )
    return stats


def _cmd_import(a: argparse.Namespace) -> Any:
    from jobs.inputs.importers import import_dataset

    stats = import_dataset(a.dataset, a.src, a.lake, progress=say)
    say(f"imported {a.dataset}: {json.dumps(stats, default=str)}")
    return stats


def _add_generate(sub: Subparsers) -> None:
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


def _add_import(sub: Subparsers) -> None:
    i = sub.add_parser("import", help="convert a real dataset to the lake contract")
    i.add_argument("dataset", choices=["instacart", "completejourney", "obd"])
    i.add_argument("--src", required=True, help="folder with the dataset's Parquet files")
    i.add_argument("--lake", required=True)
    i.set_defaults(fn=_cmd_import)


PARSERS = {
    "generate": _add_generate,
    "import": _add_import,
}
