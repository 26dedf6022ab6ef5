"""The other tools, each installed in a virtualenv of its own so that their pins never meet ours.

``python benchmarks/peers.py install`` (run by ``make bench``) creates
``benchmarks/.peers/<name>`` for every peer below and installs it there with pip, under the
repository's constraints file (torch stays the CPU build on disk, though no peer asks for
torch). A peer whose install fails is recorded with pip's last lines and left out of every
figure, with that reason printed in RESULTS.md. A finished install is kept (a stamp file holds
what was asked for), so later runs start at once.

Lightning and torch are not installed into the peers' venvs: a ``frameworks.pth`` appends the
folders that hold them in our own environment to the end of the venv's path, so the Lightning
fit runs the same framework build under every tool, and each peer's own dependencies (listed
earlier on the path) still win over ours.

Usage: ``python benchmarks/peers.py [install|list]``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import venv
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from figures import HERE, REPO, log  # noqa: E402

PEERS_DIR = os.path.join(HERE, ".peers")
CONSTRAINTS = os.path.join(REPO, "constraints-dev.txt")


@dataclass(frozen=True)
class Peer:
    """One tool we compare with: what pip installs and what it is called here."""

    key: str
    label: str
    requirement: str
    dist: str
    extra: tuple[str, ...] = ()
    """Further requirements the peer needs to run at all, with why (in ``why_extra``)."""
    why_extra: str = ""


PEERS: tuple[Peer, ...] = (
    Peer("codecarbon", "CodeCarbon", "codecarbon", "codecarbon"),
    Peer("carbontracker", "carbontracker", "carbontracker", "carbontracker"),
    # "zeus" is the current name on PyPI; "zeus-ml" stopped at 0.11 (2025).
    Peer("zeus", "Zeus", "zeus", "zeus"),
    Peer("perun", "perun", "perun", "perun"),
    # eco2AI 0.3.12 writes the string "N/A" into a float column, which pandas 3 refuses
    # (TypeError at the first stop()); pandas 2 only warns.
    Peer("eco2ai", "eco2AI", "eco2ai", "eco2ai", extra=("pandas<3",),
         why_extra="pandas<3: eco2AI 0.3.12's stop() raises TypeError under pandas 3"),
)


def by_key(key: str) -> Peer:
    for p in PEERS:
        if p.key == key:
            return p
    raise KeyError(key)


def venv_dir(key: str) -> str:
    return os.path.join(PEERS_DIR, key)


def python_of(key: str) -> str:
    return os.path.join(venv_dir(key), "bin", "python")


def _stamp_path(key: str) -> str:
    return os.path.join(venv_dir(key), "ccb-peer.json")


def framework_dirs() -> list[str]:
    """The site folders holding torch and Lightning in our environment (for frameworks.pth)."""
    dirs: list[str] = []
    for mod in ("torch", "lightning"):
        spec = importlib.util.find_spec(mod)
        if spec is None or not spec.submodule_search_locations:
            continue
        parent = os.path.dirname(list(spec.submodule_search_locations)[0])
        if parent not in dirs:
            dirs.append(parent)
    return dirs


def status(key: str) -> dict:
    """``{"ok": True, "version": ...}`` when installed, else ``{"ok": False, "why": ...}``."""
    try:
        with open(_stamp_path(key)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"ok": False, "why": "not installed (run `python benchmarks/peers.py install`)"}


def install(peer: Peer) -> dict:
    """Create the peer's venv and pip-install it; returns and stores the outcome."""
    wanted = [peer.requirement, *peer.extra]
    have = status(peer.key)
    if have.get("ok") and have.get("asked") == wanted and os.path.exists(python_of(peer.key)):
        return have
    path = venv_dir(peer.key)
    os.makedirs(PEERS_DIR, exist_ok=True)
    log(f"peers: installing {' '.join(wanted)} into {os.path.relpath(path, REPO)}")
    venv.EnvBuilder(clear=True, with_pip=True).create(path)
    py = python_of(peer.key)
    proc = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-c", CONSTRAINTS, *wanted], capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr or proc.stdout).splitlines()
                if ln.strip() and "is ignored" not in ln][-4:]
        result = {"ok": False, "asked": wanted, "why": "pip install failed: " + " / ".join(tail)}
    else:
        site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()"
                               "['purelib'])"], capture_output=True, text=True).stdout.strip()
        with open(os.path.join(site, "ccb_frameworks.pth"), "w") as f:
            f.write("\n".join(framework_dirs()) + "\n")
        ver = subprocess.run([py, "-c", "from importlib.metadata import version; "
                              f"print(version({peer.dist!r}))"], capture_output=True, text=True)
        result = {"ok": ver.returncode == 0, "asked": wanted, "version": ver.stdout.strip(),
                  "why": ver.stderr.strip()[-300:] if ver.returncode else ""}
    with open(_stamp_path(peer.key), "w") as f:
        json.dump(result, f)
    return result


@dataclass(frozen=True)
class Runner:
    """A tool as the benchmarks run it: its adapter key, its interpreter and its version."""

    key: str
    label: str
    python: str
    version: str


def runners() -> tuple[list[Runner], list[str]]:
    """Ours and every installed peer, then one line per peer that could not be installed."""
    from importlib import metadata

    try:
        ours = metadata.version("carbon-callbacks")
    except metadata.PackageNotFoundError:
        ours = "?"
    found = [Runner("ours", "ours", sys.executable, ours)]
    missing = []
    for peer in PEERS:
        st = status(peer.key)
        if st.get("ok"):
            found.append(Runner(peer.key, peer.label, python_of(peer.key), st["version"]))
        else:
            missing.append(f"{peer.label}: {st.get('why')}")
    return found, missing


def versions_line(found: list[Runner], missing: list[str]) -> str:
    """One sentence naming every tool's version and every peer left out."""
    text = "Versions: " + ", ".join(f"{r.label} {r.version}" for r in found) + "."
    if missing:
        text += " Left out: " + "; ".join(missing) + "."
    return text


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "install"
    if what not in ("install", "list"):
        raise SystemExit("usage: python benchmarks/peers.py [install|list]")
    for peer in PEERS:
        res = install(peer) if what == "install" else status(peer.key)
        state = f"{res.get('version')}" if res.get("ok") else f"FAILED: {res.get('why')}"
        log(f"peers: {peer.label}: {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
