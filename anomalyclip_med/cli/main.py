"""``anomalyclip-med``: one sub-command per job; each lives in its own module with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from anomalyclip_med import __version__
from anomalyclip_med.errors import AnomalyCLIPMedError
from anomalyclip_med.utils.console import quiet_third_party

# module names under anomalyclip_med.cli, each defining add_parser(subparsers) and run(args) -> int
COMMANDS = ("predict", "score", "calibrate", "train", "evaluate", "export-bundle", "convert-prompts", "fetch-weights")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomalyclip-med", description="AnomalyCLIP zero-shot anomaly detection for medical scans and images."
    )
    parser.add_argument("--version", action="version", version=f"anomalyclip_med {__version__}")
    verbose_help = "log debug messages and show every third-party warning (default: only those about your data)"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"anomalyclip_med.cli.{name.replace('-', '_')}").add_parser(sub)
    for command in sub.choices.values():  # also after the command, where users type it; SUPPRESS keeps a -v given first
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    quiet_third_party(args.verbose)
    try:
        return int(args.func(args) or 0)
    except AnomalyCLIPMedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
