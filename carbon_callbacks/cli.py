"""The ``carbon-callbacks`` command line: detect sensors, list and report runs, plot, demo.

Each subcommand's work lives in the module it belongs to; this file only parses arguments,
turns expected failures into one clear line on stderr with a non-zero exit, and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


class CliError(Exception):
    """An expected failure the CLI reports as one line, without a traceback."""


def _cmd_detect(args: argparse.Namespace) -> int:
    from carbon_callbacks.detect import detect_report

    print(detect_report(rapl_root=args.rapl_root))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="carbon-callbacks",
        description="Energy and CO2e of ML training, per epoch.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("detect", help="show what each sensor finds and which method each component uses")
    p.add_argument("--rapl-root", default="/sys/class/powercap", help="powercap root folder")
    p.set_defaults(func=_cmd_detect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"carbon-callbacks: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
