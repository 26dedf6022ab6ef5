"""Facts about the machine and checkout a run starts on: git commit, user, CPU, platform.

Read once per run start, so each is cheap: the git commit comes from the repository's files
(``git`` runs only when they are unusual) and the platform string without ``platform``'s
``uname -p`` subprocess.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from pathlib import Path
from typing import Any

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def git_commit_from_files(start: Path) -> str | None:
    """HEAD's commit read from the repository's files: "" outside a repository, None if unsure.

    Covers what ``git rev-parse HEAD`` sees in the usual cases (a branch, loose or packed refs, a
    detached HEAD, a worktree's ``.git`` file) without starting a process at every run start.
    Anything else (``$GIT_DIR``, a ref that does not resolve...) returns None for git to answer.
    """
    if any(v in os.environ for v in ("GIT_DIR", "GIT_WORK_TREE", "GIT_CEILING_DIRECTORIES")):
        return None
    for folder in (start, *start.parents):
        dot = folder / ".git"
        if dot.is_dir():
            gitdir = dot
            break
        if dot.is_file():
            text = _read_text(dot) or ""
            if not text.startswith("gitdir:"):
                return None
            gitdir = (folder / text[len("gitdir:"):].strip()).resolve()
            break
    else:
        return ""
    common = gitdir
    pointer = _read_text(gitdir / "commondir")
    if pointer:
        common = (gitdir / pointer).resolve()
    head = _read_text(gitdir / "HEAD")
    if head is None:
        return None
    for _ in range(5):  # a symbolic ref may point at another one
        if _SHA.fullmatch(head):
            return head
        if not head.startswith("ref:"):
            return None
        ref = head[len("ref:"):].strip()
        value = _read_text(gitdir / ref) or _read_text(common / ref)
        if value is None:
            packed = _read_text(common / "packed-refs") or ""
            value = next(
                (line.split(" ", 1)[0] for line in packed.splitlines()
                 if line.endswith(" " + ref) and not line.startswith(("#", "^"))),
                None,
            )
        if value is None:
            return None
        head = value
    return None


def git_commit(cwd: str | None = None) -> str:
    """The commit checked out in ``cwd`` (default: the working directory), or "" if none."""
    try:
        found = git_commit_from_files(Path(cwd or os.getcwd()).resolve())
    except OSError:
        found = None
    if found is not None:
        return found
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return os.environ.get("USER", "")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def platform_name() -> str:
    """Like ``platform.platform()`` ("Linux-6.1.0-x86_64-with-glibc2.36"), without its
    ``uname -p`` subprocess, which it starts on Linux to learn a processor name it then drops."""
    uname = getattr(os, "uname", None)
    if uname is None:  # Windows
        import platform

        return platform.platform()
    u = uname()
    text = f"{u.sysname}-{u.release}-{u.machine}"
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError, AttributeError):
        libc = ""
    name, _, version = libc.partition(" ")
    return f"{text}-with-{name}{version}" if name == "glibc" and version else text


def hardware() -> dict[str, Any]:
    """What this machine is, for a run's metadata (GPUs are added by whoever measured them)."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "platform": platform_name(),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 1e9, 1)
    except Exception:  # psutil missing or unsupported here: the rest still describes the host
        pass
    return info
