"""Run every benchmark and write benchmarks/RESULTS.md with the machine they ran on.

Each ``benchmarks/bench_*.py`` is a script that prints one markdown section on stdout (progress
on stderr); this runs them one after another in fresh interpreters, so none inherits another's
imports or threads, and collects the sections. ``make bench`` calls it.

Usage: ``python benchmarks/run_all.py [NAME ...]``. With no NAME it runs them all and writes
RESULTS.md; a NAME like ``startup`` runs only ``bench_startup.py`` and prints its section
instead, so a partial run never replaces the full results.
"""

from __future__ import annotations

import datetime
import glob
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
from figures import HERE, PYTHON, REPO, log  # noqa: E402

# Cheap and quiet ones first, the accuracy run (many concurrent processes) last of ours.
ORDER = ("core", "intensity", "startup", "overhead", "fallback", "accuracy", "forecast",
         "stopping", "pruning", "serve", "ledger")
TIMEOUT_S = 1800  # a shared machine can double a section's time


def discover(names: list[str]) -> list[str]:
    found = {os.path.basename(p)[len("bench_"):-3]: p
             for p in glob.glob(os.path.join(HERE, "bench_*.py"))}
    wanted = names or sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else 99, n))
    missing = [n for n in wanted if n not in found]
    if missing:
        raise SystemExit(f"no benchmark named {', '.join(missing)}; have {', '.join(found)}")
    return [found[n] for n in wanted]


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> list[str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")),
                       cpu)
    except OSError:
        pass
    mem_gb = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(ln for ln in f if ln.startswith("MemTotal")).split()[1])
            mem_gb = f"{kb / 1024 / 1024:.1f}"
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "carbon_callbacks",
                                "integrations", "benchmarks"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    rapl = os.path.isdir("/sys/class/powercap") and any(
        n.startswith(("intel-rapl", "amd-rapl")) for n in os.listdir("/sys/class/powercap"))
    gpu = any(os.path.exists(p) for p in ("/dev/nvidia0", "/proc/driver/nvidia/version"))
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical CPUs; memory {mem_gb} GB",
        f"- Energy counters: RAPL powercap {'present' if rapl else 'absent'}; "
        f"NVIDIA GPU {'present' if gpu else 'absent'} (the accuracy benchmark fakes both)",
        f"- OS: {platform.platform()}; Python {platform.python_version()}",
        "- Packages: " + ", ".join(f"{d} {version(d)}" for d in (
            "carbon-callbacks", "torch", "lightning", "psutil")),
        "- Peers, each in its own virtualenv under benchmarks/.peers (`peers.py`): "
        + peers.versions_line(*peers.runners()).removeprefix("Versions: "),
        f"- Commit: {commit}",
    ]


def compile_package() -> str:
    """Byte-compile our package, as pip does when it installs a wheel.

    ``make bench`` uses the editable install, whose sources Python would otherwise compile
    afresh in every new interpreter when bytecode writing is off (PYTHONDONTWRITEBYTECODE=1
    here): about 25 ms that no installed copy pays, inside every fresh-process figure.
    The frameworks and the peers were compiled by pip when they were installed.
    """
    proc = subprocess.run([PYTHON, "-m", "compileall", "-q", "carbon_callbacks", "integrations"],
                          cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        return (f"- Bytecode: compileall failed ({proc.stderr.strip()[-200:]}); our sources "
                "were compiled in every run")
    return ("- Bytecode: our package was byte-compiled before the runs (`compileall`), as pip "
            "does for an installed wheel; the frameworks and the peers were compiled by pip")


def main(argv: list[str]) -> int:
    scripts = discover(argv)
    bytecode = compile_package()
    began = time.monotonic()
    load0 = os.getloadavg()
    sections, timings = [], []
    headlines = tempfile.NamedTemporaryFile(prefix="ccb_headlines_", suffix=".txt", delete=False)
    headlines.close()
    env = dict(os.environ, CCB_HEADLINES=headlines.name)
    for script in scripts:
        name = os.path.basename(script)
        log(f"== {name}")
        t = time.monotonic()
        try:
            proc = subprocess.run([PYTHON, script], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=None, text=True, timeout=TIMEOUT_S, env=env)
            body, rc = proc.stdout.strip(), proc.returncode
        except subprocess.TimeoutExpired as exc:
            body = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else ""
            rc = f"timed out after {TIMEOUT_S} s"
        took = time.monotonic() - t
        timings.append(f"{name} {took:.0f} s")
        if not body.startswith("#"):
            body = f"## {name}\n\n```\n{body}\n```"
        if rc != 0:
            body += f"\n\n**{name} did not finish cleanly: exit {rc}.**"
        sections.append(body)
        log(f"   {name}: {took:.0f} s")
    total = time.monotonic() - began
    load1 = os.getloadavg()
    with open(headlines.name) as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    os.unlink(headlines.name)
    head = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python benchmarks/run_all.py`); every figure is the median "
        "of several runs with (min-max), and every ratio is taken between runs of the same "
        "round. Rerun it to check them on your machine.",
        "",
        f"Run {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{total:.0f} s in all ({'; '.join(timings)}).",
        "",
        *machine(),
        bytecode,
        f"- Load average (1 min) at start {load0[0]:.2f}, at end {load1[0]:.2f}: the machine "
        "was shared with other work, which widens the ranges.",
        "",
    ]
    if lines:
        head += ["## Headlines", "", *[f"- {ln}" for ln in lines], ""]
    text = "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"
    if argv:
        print(text)
        return 0
    with open(os.path.join(HERE, "RESULTS.md"), "w") as f:
        f.write(text)
    log(f"wrote benchmarks/RESULTS.md ({total:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
