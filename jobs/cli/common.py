"""What every command module of the CLI shares: printing a line, the --lake/--config/--set
options."""

from __future__ import annotations

import argparse
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def say(msg: str) -> None:
    """Print one line of a command's output, flushed (it may run for hours)."""
    print(msg, flush=True)


def add_common_options(sp: argparse.ArgumentParser, lake: bool = True) -> None:
    """--lake (unless `lake` is false), --config and --set."""
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
