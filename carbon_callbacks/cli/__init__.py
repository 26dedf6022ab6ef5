"""The ``carbon-callbacks`` command line: detect sensors, list and report runs, plot, demo.

This module parses arguments and turns expected failures into one clear line on stderr with a
non-zero exit; the subcommands are in ``commands.py``, the demo in ``demo.py``.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import os
import sys
import time
from collections.abc import Sequence

from carbon_callbacks.cli import commands
from carbon_callbacks.cli.commands import CliError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of runs, got {value}")
    return value


def _date(text: str) -> float:
    """``YYYY-MM-DD`` or ``YYYY-MM`` (UTC) as wall seconds."""
    for fmt in ("%Y-%m-%d", "%Y-%m"):
        try:
            # timegm reads the fields as UTC (mktime would read them as local time).
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD or YYYY-MM")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="carbon-callbacks",
        description="Energy and CO2e of ML training, per epoch.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ledger_opt = argparse.ArgumentParser(add_help=False)
    ledger_opt.add_argument(
        "--ledger",
        default=None,
        help="ledger file or database URL (default: $CARBON_CALLBACKS_LEDGER, else the "
        "per-user data file)",
    )
    fmt_opt = argparse.ArgumentParser(add_help=False)
    fmt_opt.add_argument("--format", choices=("table", "csv", "json"), default="table")
    filt_opt = argparse.ArgumentParser(add_help=False)
    filt_opt.add_argument("--project")
    filt_opt.add_argument("--team")
    filt_opt.add_argument("--user")
    filt_opt.add_argument("--since", type=_date, help="runs started on or after YYYY-MM[-DD]")

    p = sub.add_parser(
        "detect", help="show what each sensor finds and which method each component uses"
    )
    p.add_argument("--rapl-root", default="/sys/class/powercap", help="powercap root folder")
    p.set_defaults(func=commands.cmd_detect)

    p = sub.add_parser("runs", parents=[ledger_opt, fmt_opt, filt_opt], help="list runs")
    p.add_argument("--limit", type=_positive_int, default=None, help="only the last N runs")
    p.set_defaults(func=commands.cmd_runs)

    p = sub.add_parser(
        "report",
        parents=[ledger_opt, fmt_opt, filt_opt],
        help="totals by project/team/user/month/framework",
    )
    p.add_argument(
        "--by", default="project", help="comma-separated: project,team,user,month,framework,host"
    )
    p.add_argument("--until", type=_date, help="runs started before YYYY-MM[-DD]")
    p.set_defaults(func=commands.cmd_report)

    p = sub.add_parser("show", parents=[ledger_opt, fmt_opt], help="one run, epoch by epoch")
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("--monitor", help="metric to show (default: the run's monitored metric)")
    p.set_defaults(func=commands.cmd_show)

    p = sub.add_parser(
        "plot", parents=[ledger_opt], help="PNG: metric vs cumulative CO2e, energy per epoch"
    )
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("-o", "--output", help="PNG path (default carbon-RUN.png)")
    p.add_argument("--monitor", help="metric to plot (default: the run's monitored metric)")
    p.set_defaults(func=commands.cmd_plot)

    p = sub.add_parser(
        "compare-regions",
        parents=[ledger_opt, fmt_opt],
        help="the same energy in other countries and cloud regions, best first",
    )
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("--top", type=int, default=20, help="how many zones to list (0: all)")
    p.add_argument("--kind", choices=("all", "country", "cloud"), default="all")
    p.set_defaults(func=commands.cmd_compare_regions)

    p = sub.add_parser(
        "import",
        parents=[ledger_opt],
        help="import CodeCarbon emissions.csv files or carbon-callbacks JSONL exports",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=commands.cmd_import)

    p = sub.add_parser("export", parents=[ledger_opt], help="write runs as JSONL or CSV")
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--run", action="append", help="only this run (repeatable)")
    p.set_defaults(func=commands.cmd_export)

    p = sub.add_parser(
        "spool", parents=[ledger_opt], help="records kept while the ledger was unavailable"
    )
    p.add_argument("action", choices=("flush", "status"))
    p.add_argument(
        "spool_file",
        nargs="?",
        metavar="SPOOL",
        help="a spool file to write to --ledger (default: the ledger's own spools)",
    )
    p.set_defaults(func=commands.cmd_spool)

    p = sub.add_parser(
        "serve",
        parents=[ledger_opt],
        help="a read-only view of the ledger in the browser (overview, runs, one run, compare)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free one)")
    p.add_argument(
        "--optuna-storage",
        default=None,
        help="an Optuna study storage URL (sqlite:///study.db), to compare a study's trials",
    )
    p.add_argument("--open", action="store_true", help="open the overview in the web browser")
    p.add_argument(
        "--compare", nargs="+", default=[], metavar="RUN", help="open these runs' comparison"
    )
    p.set_defaults(func=commands.cmd_serve)

    p = sub.add_parser(
        "demo",
        help="train a small MLP on digits twice (to max_epochs, then carbon-aware) and compare",
    )
    p.add_argument("--epochs", type=int, default=30, help="max_epochs of the full run")
    p.add_argument("--samples", type=int, default=0, help="use only N digits (0: all 1,797)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--intensity", default=None, help="gCO2e/kWh or a zone (default: your configured one)"
    )
    p.add_argument("--output-dir", default=".", help="where the PNG goes")
    p.add_argument("--ledger", default=None, help="ledger file or URL (default as for `runs`)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress line")
    p.set_defaults(func=commands.cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    from carbon_callbacks.ledger import LedgerError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with contextlib.ExitStack() as args.resources:
            return int(args.func(args) or 0)
    except (CliError, LedgerError) as exc:
        print(f"carbon-callbacks: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `carbon-callbacks runs | head`: the reader left; not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 0
    except KeyboardInterrupt:
        return 130
