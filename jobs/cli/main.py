"""The `homepage` command line. Every subcommand has --help and exits non-zero with one line on bad input."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from jobs.cli import bench, daily, data, experiments, refresh

# the order `homepage --help` lists the commands in: (command area, its commands)
COMMANDS = (
    (data, ("generate", "import")),
    (daily, ("pipeline", "step")),
    (refresh, ("refresh", "spark-connect", "refresh-server", "simulate-refresh")),
    (daily, ("publish",)),
    (experiments, ("simulate",)),
    (daily, ("models",)),
    (experiments, ("evaluate", "ope", "experiment")),
    (daily, ("serve",)),
    (bench, ("bench",)),
    (daily, ("airflow-test", "backfill")),
)


def build_parser() -> argparse.ArgumentParser:
    """`homepage` and every subcommand, each area's parsers from its module."""
    p = argparse.ArgumentParser(prog="homepage", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for area, names in COMMANDS:
        for name in names:
            area.PARSERS[name](sub)
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
