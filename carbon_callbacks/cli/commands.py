"""The ``carbon-callbacks`` subcommands: each takes the parsed arguments and returns an exit code.

Each subcommand's work lives in the module it belongs to; a command here only opens what it
needs, calls it, and prints.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from carbon_callbacks.ledger import Ledger, RunInfo


class CliError(Exception):
    """An expected failure the CLI reports as one line, without a traceback."""


def _ledger(args: argparse.Namespace, *, reading: bool = False) -> Ledger:
    """The command's ledger; ``main`` closes it when the command ends, however it ends.

    With ``reading``, a SQLite file named by ``--ledger`` or ``$CARBON_CALLBACKS_LEDGER``
    that does not exist is an error (a mistyped path), not an empty ledger.
    """
    from carbon_callbacks.ledger import ENV_LEDGER, Ledger
    from carbon_callbacks.ledger.location import default_data_dir, sqlite_path

    try:
        ledger = Ledger.open(args.ledger)
    except ValueError as exc:
        raise CliError(f"--ledger: {exc}") from exc
    named = "--ledger" if args.ledger is not None else None
    if named is None and os.environ.get(ENV_LEDGER, "").strip():
        named = f"${ENV_LEDGER}"
    path = sqlite_path(ledger.location)
    if reading and named and path is not None and not path.exists():
        raise CliError(
            f"no ledger file at {path} (from {named}); check the path, or leave it out for "
            f"the default ledger in {default_data_dir()}"
        )
    return args.resources.enter_context(ledger)


def _runs_or_fail(ledger: Ledger, **filters: Any) -> list[RunInfo]:
    runs = ledger.runs(**filters)
    if not runs:
        if any(v is not None for v in filters.values()):
            raise CliError(f"no runs in {ledger.label} match the filters")
        raise CliError(
            f"the ledger {ledger.label} holds no runs yet; train with a CarbonCallback, "
            "run `carbon-callbacks demo`, or `carbon-callbacks import emissions.csv`"
        )
    return runs


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


def cmd_detect(args: argparse.Namespace) -> int:
    from carbon_callbacks.energy.detect import detect_report

    print(detect_report(rapl_root=args.rapl_root))
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import runs_rows

    ledger = _ledger(args, reading=True)
    runs = _runs_or_fail(
        ledger, project=args.project, team=args.team, user=args.user, since=args.since
    )
    if args.limit is not None:
        runs = runs[-args.limit :]
    if args.format == "json":
        import json

        print(json.dumps([r.to_dict() for r in runs], indent=2, default=str))
        return 0
    # Readable units in the table; CSV keeps numbers in base units, as `report` does.
    _print(*runs_rows(runs, readable=args.format == "table"), args.format)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import GROUP_KEYS, report_rows, summarize

    by = [k.strip() for k in args.by.split(",") if k.strip()]
    bad = [k for k in by if k not in GROUP_KEYS]
    if bad:
        raise CliError(f"--by: cannot group by {bad[0]!r}; choose from {', '.join(GROUP_KEYS)}")
    ledger = _ledger(args, reading=True)
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


SHOW_SAMPLE = 1000
"""Records ``show`` holds at once: enough to choose the metric and the table's column widths."""


def cmd_show(args: argparse.Namespace) -> int:
    import itertools

    from carbon_callbacks.reports import (
        choose_monitor,
        epoch_cells,
        epochs_headers,
        run_summary_text,
        stream_render,
    )

    ledger = _ledger(args, reading=True)
    run = ledger.run(args.run)
    preferred = args.monitor or run.metadata.get("monitor")
    # The records are read as they are printed, so a run of any length takes the same memory.
    records = ledger.iter_epochs(run.run_id)
    head = list(itertools.islice(records, SHOW_SAMPLE))
    names: dict[str, None] = {}
    stages = set()
    for rec in head:
        names.update(dict.fromkeys(rec.metrics))
        stages.add(rec.stage)
    settled = preferred in names if preferred else "val_acc" in names
    if len(head) == SHOW_SAMPLE and not (settled and "train" in stages):
        # Which metric to show (see choose_monitor), or whether the run has training records,
        # may depend on records past the first ones: one more pass, keeping only the names.
        for rec in ledger.iter_epochs(run.run_id):
            names.update(dict.fromkeys(rec.metrics))
            stages.add(rec.stage)
    monitor = choose_monitor(list(names), preferred)
    if args.format == "table":
        print(run_summary_text(run))
        print()
        if not head:
            print("(no epoch records)")
            return 0
    rows = epoch_cells(itertools.chain(head, records), monitor, train_only="train" in stages)
    out = sys.stdout
    for text in stream_render(epochs_headers(monitor), rows, args.format, sample=SHOW_SAMPLE):
        out.write(text)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import ending_text
    from carbon_callbacks.reports.plot import plot_run

    out = Path(args.output or f"carbon-{args.run}.png")
    _check_writable(out)
    ledger = _ledger(args, reading=True)
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
            title=f"run {run.run_id} ({run.project or 'no project'}): "
            + textwrap.shorten(ending_text(run), 90, placeholder="..."),
        )
    except ImportError as exc:
        raise CliError(
            f"plotting needs matplotlib ({exc}); pip install 'carbon-callbacks[plot]'"
        ) from exc
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from exc
    print(path)
    return 0


def cmd_compare_regions(args: argparse.Namespace) -> int:
    from carbon_callbacks.reports import compare_regions, format_grams, regions_rows

    ledger = _ledger(args, reading=True)
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


def cmd_import(args: argparse.Namespace) -> int:
    from carbon_callbacks.ledger import import_files

    ledger = _ledger(args)
    counts = import_files(ledger, args.files)
    for path, n in counts.items():
        print(f"{path}: {n} new run{'s' if n != 1 else ''}")
    print(f"ledger: {ledger.label}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from carbon_callbacks.ledger import export_csv, export_jsonl, select_runs

    ledger = _ledger(args, reading=True)
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


def cmd_spool(args: argparse.Namespace) -> int:
    from carbon_callbacks.ledger import Ledger

    if args.spool_file is not None and not Path(args.spool_file).is_file():
        raise CliError(f"no spool file at {args.spool_file}")
    try:
        ledger = Ledger.open(args.ledger, spool=args.spool_file)
    except ValueError as exc:
        raise CliError(f"--ledger: {exc}") from exc
    ledger = args.resources.enter_context(ledger)
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


def cmd_demo(args: argparse.Namespace) -> int:
    from carbon_callbacks.cli.demo import run_demo

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


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from carbon_callbacks.serve.app import create_app
        from carbon_callbacks.serve.server import bind, is_loopback, make_server, url_of
    except ImportError as exc:
        raise CliError(
            f"serve needs its web packages ({exc}); pip install 'carbon-callbacks[serve]'"
        ) from exc
    from urllib.parse import urlencode

    from carbon_callbacks.ledger import Ledger

    try:
        ledger = args.resources.enter_context(Ledger.open(args.ledger, read_only=True))
    except ValueError as exc:
        raise CliError(f"--ledger: {exc}") from exc
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    if not is_loopback(args.host):
        print(
            f"carbon-callbacks serve: listening on {args.host}: anyone who can reach it reads "
            "the ledger (there is no login); the default 127.0.0.1 keeps it to this machine",
            file=sys.stderr,
        )
        hosts = ["*"] if args.host in ("0.0.0.0", "::") else [*hosts, args.host]
    try:
        app = create_app(ledger, optuna_storage=args.optuna_storage, allowed_hosts=hosts)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise CliError(
            f"--port: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "choose another port, or 0 for any free one"
        ) from exc
    url = url_of(sock)
    page = "/compare?" + urlencode([("run", r) for r in args.compare]) if args.compare else "/"
    print(f"carbon-callbacks serve: {ledger.label} (read-only) at {url}/", flush=True)
    if args.compare or args.open:
        import webbrowser

        print(f"opening {url}{page}", flush=True)
        webbrowser.open(url + page)
    print("Ctrl-C stops the server", flush=True)
    make_server(app, sock).run(sockets=[sock])
    return 0
