"""``anomalyclip-med``: one sub-command per job; each lives in its own module with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from anomalyclip_med import __version__
from anomalyclip_med.errors import AnomalyCLIPMedError

# module names under anomalyclip_med.cli, each defining add_parser(subparsers) and run(args) -> int
COMMANDS = ("predict", "score", "train", "evaluate", "export-bundle", "convert-prompts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomalyclip-med", description="AnomalyCLIP zero-shot anomaly detection for medical scans and images."
    )
    parser.add_argument("--version", action="version", version=f"anomalyclip_med {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"anomalyclip_med.cli.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    warnings.simplefilter("default")  # show our RANDOM/UNTRAINED warnings on the console
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
