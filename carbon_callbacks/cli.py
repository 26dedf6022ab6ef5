"""The ``carbon-callbacks`` command line: detect sensors, list and report runs, plot, demo.

Each subcommand's work lives in the module it belongs to; this file only parses arguments,
turns expected failures into one clear line on stderr with a non-zero exit, and prints.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO


class CliError(Exception):
    """An expected failure the CLI reports as one line, without a traceback."""


# --------------------------------------------------------------------------- shared helpers


def _ledger(args: argparse.Namespace) -> Any:
    """The command's ledger; ``main`` closes it when the command ends, however it ends."""
    from carbon_callbacks.ledger import Ledger

    try:
        ledger = Ledger.open(args.ledger)
    except ValueError as exc:
        raise CliError(f"--ledger: {exc}") from exc
    return args.resources.enter_context(ledger)


def _runs_or_fail(ledger: Any, **filters: Any) -> list[Any]:
    runs = ledger.runs(**filters)
    if not runs:
        if any(v is not None for v in filters.values()):
            raise CliError(f"no runs in {ledger.label} match the filters")
        raise CliError(
            f"the ledger {ledger.label} holds no runs yet; train with a CarbonCallback, "
            "run `carbon-callbacks demo`, or `carbon-callbacks import emissions.csv`"
        )
    return runs


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
            # timegm reads the fields as UTC; mktime minus time.timezone was an hour off
            # whenever the local zone was on summer time.
            return float(calendar.timegm(time.strptime(text, fmt)))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a date; use YYYY-MM-DD or YYYY-MM")


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or a file opened for writing with a one-line error when it cannot be."""
    if path is None or path == "-":
        yield sys.stdout
        return
    try:
        fh = open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from exc
    with fh:
        yield fh


def _check_writable(path: Path) -> None:
    parent = path.resolve().parent
    if not parent.is_dir():
        raise CliError(f"cannot write {path}: folder {parent} does not exist")
    if path.is_dir():
        raise CliError(f"cannot write {path}: it is a folder")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise CliError(f"cannot write {path}: permission denied")


def _print(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> None:
    from carbon_callbacks.reports import render

    text = render(headers, rows, fmt)
    print(text, end="" if text.endswith("\n") else "\n")


# --------------------------------------------------------------------------- commands


def _cmd_detect(args: argparse.Namespace) -> int:
    from carbon_callbacks.energy.detect import detect_report

    print(detect_report(rapl_root=args.rapl_root))
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import runs_rows

    ledger = _ledger(args)
    runs = _runs_or_fail(
        ledger, project=args.project, team=args.team, user=args.user, since=args.since
    )
    if args.limit is not None:
        runs = runs[-args.limit :]
    if args.format == "json":
        import json

        print(json.dumps([r.to_dict() for r in runs], indent=2, default=str))
        return 0
    _print(*runs_rows(runs), args.format)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import GROUP_KEYS, report_rows, summarize

    by = [k.strip() for k in args.by.split(",") if k.strip()]
    bad = [k for k in by if k not in GROUP_KEYS]
    if bad:
        raise CliError(f"--by: cannot group by {bad[0]!r}; choose from {', '.join(GROUP_KEYS)}")
    ledger = _ledger(args)
    runs = _runs_or_fail(
        ledger,
        project=args.project,
        team=args.team,
        user=args.user,
        since=args.since,
        until=args.until,
    )
    rows = summarize(runs, by)
    headers, cells = report_rows(rows, by, total=args.format == "table")
    if args.format == "table":
        from carbon_callbacks.reports import format_energy, format_grams

        # Readable units in the table; CSV/JSON keep base units for spreadsheets.
        idx = {h: i for i, h in enumerate(headers)}
        for row in cells:
            row[idx["energy_kwh"]] = format_energy(row[idx["energy_kwh"]])
            row[idx["co2_g"]] = format_grams(row[idx["co2_g"]])
        headers = [
            {
                "energy_kwh": "energy",
                "co2_g": "CO2e",
                "car_km": "≈ car km",
                "phone_charges": "≈ phone charges",
            }.get(h, h)
            for h in headers
        ]
        print(f"ledger: {ledger.label} ({len(runs)} runs)")
    _print(headers, cells, args.format)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import epochs_rows, run_summary_text

    ledger = _ledger(args)
    run = ledger.run(args.run)
    records = ledger.epochs(run.run_id)
    monitor = args.monitor or run.metadata.get("monitor")
    if args.format == "table":
        print(run_summary_text(run))
        print()
        if not records:
            print("(no epoch records)")
            return 0
    _print(*epochs_rows(records, monitor), args.format)
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports.plot import plot_run

    out = Path(args.output or f"carbon-{args.run}.png")
    _check_writable(out)
    ledger = _ledger(args)
    run = ledger.run(args.run)
    records = ledger.epochs(run.run_id)
    if not records:
        raise CliError(f"run {run.run_id} has no epoch records to plot")
    try:
        path = plot_run(
            records,
            out,
            monitor=args.monitor or run.metadata.get("monitor"),
            stopped_early=run.stopped_early,
            stop_reason=run.stop_reason,
            title=f"run {run.run_id} ({run.project or 'no project'})",
        )
    except ImportError as exc:
        raise CliError(
            f"plotting needs matplotlib ({exc}); pip install 'carbon-callbacks[plot]'"
        ) from exc
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(path)
    return 0


def _cmd_compare_regions(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import compare_regions, format_grams, regions_rows

    ledger = _ledger(args)
    run = ledger.run(args.run)
    records = ledger.epochs(run.run_id)
    if not records:
        raise CliError(f"run {run.run_id} has no epoch records to compare")
    footprints = compare_regions(records)
    if args.kind != "all":
        kinds = {"country": {"country"}, "cloud": {"gcp", "aws", "azure"}}[args.kind]
        footprints = [f for f in footprints if f.kind in kinds]
    headers, cells = regions_rows(footprints)
    if args.top:
        cells = cells[: args.top]
    if args.format == "table":
        # Readable units in the table; CSV/JSON keep grams for spreadsheets.
        for row in cells:
            for i in (headers.index("co2_g"), headers.index("low"), headers.index("high")):
                row[i] = format_grams(row[i])
        headers = ["CO2e" if h == "co2_g" else "≈ car km" if h == "car_km" else h for h in headers]
        kwh = sum(r.energy_kwh * (r.pue or 1.0) for r in records)
        where = f" in {run.location}" if run.location else ""
        how = f" ({run.intensity_source})" if run.intensity_source else ""
        print(
            f"run {run.run_id}: {kwh * 1000:.4g} Wh (with PUE) emitted "
            f"{format_grams(run.co2_g)} CO2e{where}{how}"
        )
        print("the same energy elsewhere, lowest first:")
    _print(headers, cells, args.format)
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from carbon_callbacks.ledger import import_files

    ledger = _ledger(args)
    counts = import_files(ledger, args.files)
    for path, n in counts.items():
        print(f"{path}: {n} new run{'s' if n != 1 else ''}")
    print(f"ledger: {ledger.label}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from carbon_callbacks.ledger import export_csv, export_jsonl, select_runs

    ledger = _ledger(args)
    # One runs() query: every --run id is resolved against it before anything is written.
    runs = select_runs(ledger, args.run or None, runs=_runs_or_fail(ledger))
    if args.output and args.output != "-":
        _check_writable(Path(args.output))
    writer = export_csv if args.format == "csv" else export_jsonl
    with _output(args.output) as fh:
        n = writer(ledger, fh, runs=runs)
    if args.output and args.output != "-":
        what = "epoch rows" if args.format == "csv" else "runs"
        print(f"{args.output}: {n} {what}", file=sys.stderr)
    return 0


def _cmd_spool(args: argparse.Namespace) -> int:
    ledger = _ledger(args)
    pending = ledger.spooled()
    if args.action == "status":
        print(f"{pending} spooled write{'s' if pending != 1 else ''} in {ledger.spool_path}")
        return 0
    if not pending:
        print(f"nothing to flush ({ledger.spool_path} is empty)")
        return 0
    n = ledger.flush_spool()
    print(f"wrote {n} spooled record{'s' if n != 1 else ''} to {ledger.label}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from carbon_callbacks.demo import run_demo

    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot write {out_dir}: {exc.strerror or exc}") from exc
    _check_writable(out_dir / "carbon-demo.png")
    try:
        run_demo(
            epochs=args.epochs,
            output_dir=out_dir,
            ledger=args.ledger,
            intensity=args.intensity,
            samples=args.samples,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except ImportError as exc:
        raise CliError(
            f"the demo needs Lightning and scikit-learn ({exc}); "
            "pip install 'carbon-callbacks[lightning]' scikit-learn"
        ) from exc
    return 0


# --------------------------------------------------------------------------- parser


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
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("runs", parents=[ledger_opt, fmt_opt, filt_opt], help="list runs")
    p.add_argument("--limit", type=_positive_int, default=None, help="only the last N runs")
    p.set_defaults(func=_cmd_runs)

    p = sub.add_parser(
        "report",
        parents=[ledger_opt, fmt_opt, filt_opt],
        help="totals by project/team/user/month/framework",
    )
    p.add_argument(
        "--by", default="project", help="comma-separated: project,team,user,month,framework,host"
    )
    p.add_argument("--until", type=_date, help="runs started before YYYY-MM[-DD]")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("show", parents=[ledger_opt, fmt_opt], help="one run, epoch by epoch")
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("--monitor", help="metric to show (default: the run's monitored metric)")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser(
        "plot", parents=[ledger_opt], help="PNG: metric vs cumulative CO2e, energy per epoch"
    )
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("-o", "--output", help="PNG path (default carbon-RUN.png)")
    p.add_argument("--monitor", help="metric to plot (default: the run's monitored metric)")
    p.set_defaults(func=_cmd_plot)

    p = sub.add_parser(
        "compare-regions",
        parents=[ledger_opt, fmt_opt],
        help="the same energy in other countries and cloud regions, best first",
    )
    p.add_argument("run", help="run id (a unique prefix is enough)")
    p.add_argument("--top", type=int, default=20, help="how many zones to list (0: all)")
    p.add_argument("--kind", choices=("all", "country", "cloud"), default="all")
    p.set_defaults(func=_cmd_compare_regions)

    p = sub.add_parser(
        "import",
        parents=[ledger_opt],
        help="import CodeCarbon emissions.csv files or carbon-callbacks JSONL exports",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("export", parents=[ledger_opt], help="write runs as JSONL or CSV")
    p.add_argument("-o", "--output", help="file to write (default stdout)")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--run", action="append", help="only this run (repeatable)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "spool", parents=[ledger_opt], help="records kept while the ledger was unavailable"
    )
    p.add_argument("action", choices=("flush", "status"))
    p.set_defaults(func=_cmd_spool)

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
    p.set_defaults(func=_cmd_demo)
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
