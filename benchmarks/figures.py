"""How every benchmark states a figure: median with min and max, ratios taken run by run."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PYTHON = sys.executable


def spread(values: Sequence[float], fmt: str = "{:.3g}", unit: str = "") -> str:
    """``median (min-max)`` of ``values``, ``n/a`` when there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt.format(med) + unit
    return f"{fmt.format(med)}{unit} ({fmt.format(min(vals))}-{fmt.format(max(vals))})"


def pct(values: Sequence[float]) -> str:
    """Signed relative errors as percentages: ``median (min..max)``."""
    vals = [v * 100 for v in values if v is not None]
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:+.2f}%"
    return f"{med:+.2f}% ({min(vals):+.2f}..{max(vals):+.2f})"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the markdown result."""
    print(msg, file=sys.stderr, flush=True)


def headline(line: str) -> None:
    """Record a one-line headline for the top of RESULTS.md (run_all.py sets the file)."""
    path = os.environ.get("CCB_HEADLINES")
    if path:
        with open(path, "a") as f:
            f.write(line.replace("\n", " ") + "\n")
