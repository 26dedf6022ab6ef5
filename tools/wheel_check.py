"""Check the wheel, not the source tree: it must hold every file and run from a clean venv.

``make wheel-check`` runs this (``make test`` calls it last). Steps, each failing loudly:

1. Build the wheel (``python -m build --wheel``, isolated, as a user's pip would).
2. Every file under ``carbon_callbacks/`` and ``integrations/`` (bytecode aside) is in it, at
   the path it installs to: a module or data file left out of packaging fails here by name.
3. Install it with ``--no-deps`` into a fresh venv in a temp folder. The venv borrows the dev
   venv's third-party packages (psutil, lightning, torch...) through a ``.pth`` file, which
   ``site`` appends after the venv's own site-packages, so the wheel's ``carbon_callbacks``
   is the one imported and nothing is downloaded or reinstalled.
4. From that temp folder (no repository on ``sys.path``), run ``carbon-callbacks detect``,
   resolve an embedded intensity (both data folders read), and import the Lightning adapter
   (which pulls in tracking, ledger, policies and the adapters' shared modules), checking that
   every ``carbon_callbacks`` module came from the venv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "carbon_callbacks"
ADAPTERS = "integrations"  # installs as carbon_callbacks/integrations

SMOKE = """
import sys
from pathlib import Path
import carbon_callbacks.integrations.lightning as adapter
from carbon_callbacks.intensity import resolve
print(adapter.CarbonCallback.__name__, resolve("FR"))
prefix = Path(sys.prefix).resolve()
outside = sorted(
    name for name, module in sys.modules.items()
    if name.split(".")[0] == "carbon_callbacks"
    and getattr(module, "__file__", None)
    and prefix not in Path(module.__file__).resolve().parents
)
if outside:
    sys.exit(f"imported from outside the clean venv ({prefix}): {outside}")
"""


def run(args: list[str], *, cwd: Path = REPO, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(
            f"wheel-check: {' '.join(map(str, args))} failed ({done.returncode}):\n"
            f"{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def source_files() -> set[str]:
    """Every file that must ship, as its path inside the wheel."""
    wanted: set[str] = set()
    for folder, installed in ((PACKAGE, PACKAGE), (ADAPTERS, f"{PACKAGE}/{ADAPTERS}")):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                wanted.add(f"{installed}/{path.relative_to(REPO / folder).as_posix()}")
    return wanted


def dev_site_packages() -> list[str]:
    """The dev interpreter's package folders (its own and any it reaches through .pth files)."""
    return [p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))]


def main() -> None:
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="carbon-wheel-check-"))
    try:
        # setuptools copies sources into build/lib and packs what it finds there, so a file
        # deleted from the tree would otherwise still ship from an earlier build.
        shutil.rmtree(REPO / "build" / "lib", ignore_errors=True)
        run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp / "dist"), str(REPO)])
        (wheel,) = (tmp / "dist").glob("*.whl")

        shipped = set(zipfile.ZipFile(wheel).namelist())
        missing = sorted(source_files() - shipped)
        if missing:
            sys.exit(f"wheel-check: {wheel.name} lacks {len(missing)} files: {missing}")

        venv = tmp / "venv"
        run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
        python = str(venv / "bin" / "python")
        purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        Path(purelib.strip(), "_dev_packages.pth").write_text("\n".join(dev_site_packages()) + "\n")
        run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
             "--no-index", str(wheel)])

        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        detect = run([str(venv / "bin" / "carbon-callbacks"), "detect"], cwd=elsewhere, env=env)
        if "Components" not in detect:
            sys.exit(f"wheel-check: unexpected `carbon-callbacks detect` output:\n{detect}")
        run([python, "-c", SMOKE], cwd=elsewhere, env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for scratch in (REPO / "build" / "lib", *(REPO / "build").glob("bdist.*")):
            shutil.rmtree(scratch, ignore_errors=True)  # setuptools' scratch folders
    print(f"wheel-check: {wheel.name}: {len(shipped)} files, installs and runs "
          f"from a clean venv ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
