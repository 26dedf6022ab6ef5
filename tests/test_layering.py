"""The import contracts in pyproject.toml hold for the package, and each one catches a violation.

Each test copies the package as it installs (``integrations/`` inside ``carbon_callbacks``) to a
temp folder, plants one bad import, and runs ``lint-imports`` there with the repository's own
contracts, so a contract that cannot fail would fail these tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LAYERS = "Rooms import only the rooms below them (ARCHITECTURE.md)"
CORE = "The core imports no adapter and no ML framework"
CYCLES = "No import cycles between the modules of a room"

pytest.importorskip("importlinter", reason="import-linter comes with the [dev] extra")


def installed_layout(dest: Path) -> Path:
    """Copy the package to ``dest`` in its installed shape; return the package folder."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    package = dest / "carbon_callbacks"
    shutil.copytree(REPO / "carbon_callbacks", package, ignore=skip)
    shutil.copytree(REPO / "integrations", package / "integrations", ignore=skip)
    return package


def lint_imports(root: Path) -> tuple[int, str]:
    """Run lint-imports on the package under ``root`` with the repository's contracts."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports_command; "
            "sys.exit(lint_imports_command())",
            "--no-cache",
            str(REPO / "pyproject.toml"),
        ],
        cwd=root,  # lint-imports puts its working folder first on sys.path
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode, done.stdout + done.stderr


def plant(package: Path, module: str, line: str) -> None:
    path = package / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")


def test_the_package_keeps_every_contract(tmp_path):
    installed_layout(tmp_path)
    code, out = lint_imports(tmp_path)
    assert code == 0, out
    for contract in (LAYERS, CORE, CYCLES):
        assert f"{contract} KEPT" in out, out


@pytest.mark.parametrize(
    ("module", "line", "broken", "culprit"),
    [
        (
            "records.py",
            "from carbon_callbacks.tracking import EpochTracker",
            {LAYERS},
            "carbon_callbacks.records -> carbon_callbacks.tracking",
        ),
        (
            "policies/_budget.py",
            "from carbon_callbacks.ledger import Ledger",
            {LAYERS},
            "carbon_callbacks.policies._budget -> carbon_callbacks.ledger",
        ),
        (
            "energy/meter.py",
            "from carbon_callbacks.integrations import lightning",
            {LAYERS, CORE},
            "carbon_callbacks.energy.meter -> carbon_callbacks.integrations.lightning",
        ),
        (
            "tracking/distributed.py",
            "import torch.distributed",
            {CORE},
            "carbon_callbacks.tracking.distributed -> torch",
        ),
        (
            "reports/format.py",
            "from carbon_callbacks.energy import meter",
            set(),  # downwards: allowed
            "",
        ),
        (
            "energy/defaults.py",
            "from carbon_callbacks.energy import meter",
            {CYCLES},
            "No cycles are allowed in carbon_callbacks.energy.",
        ),
    ],
    ids=["records-imports-tracking", "policies-import-ledger", "energy-imports-adapter",
         "tracking-imports-torch", "reports-import-energy", "cycle-in-energy"],
)
def test_a_planted_import_breaks_exactly_its_contracts(tmp_path, module, line, broken, culprit):
    package = installed_layout(tmp_path)
    plant(package, module, line)
    code, out = lint_imports(tmp_path)
    assert code == (1 if broken else 0), out
    for contract in (LAYERS, CORE, CYCLES):
        verdict = "BROKEN" if contract in broken else "KEPT"
        assert f"{contract} {verdict}" in out, out
    assert culprit in out, out


def test_a_room_left_out_of_the_order_breaks_the_layers(tmp_path):
    package = installed_layout(tmp_path)
    (package / "uploads.py").write_text('"""A new room nobody placed."""\n', encoding="utf-8")
    code, out = lint_imports(tmp_path)
    assert code == 1, out
    assert f"{LAYERS} BROKEN" in out, out
    assert "carbon_callbacks.uploads" in out, out
