"""What a run records about where it ran: the git commit and the platform, without subprocesses."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import pytest

from carbon_callbacks.ledger import Ledger, host


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd, capture_output=True, text=True, check=True,
    )
    return out.stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "src" / "deep").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for i in range(2):
        (root / "f.txt").write_text(str(i))
        git(root, "add", "f.txt")
        git(root, "commit", "-q", "-m", f"c{i}")
    return root


def test_commit_is_read_from_the_files_as_git_sees_it(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert host.git_commit_from_files(repo) == head
    assert host.git_commit_from_files(repo / "src" / "deep") == head
    git(repo, "pack-refs", "--all")  # the branch now lives in packed-refs only
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert host.git_commit_from_files(repo) == head
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert host.git_commit_from_files(repo) == git(repo, "rev-parse", "HEAD") != head


def test_a_worktree_reads_its_own_head(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "worktree", "add", "-q", "-b", "old", str(tmp_path / "wt"), first)
    assert (tmp_path / "wt" / ".git").is_file()
    assert host.git_commit_from_files(tmp_path / "wt") == first
    assert host.git_commit(str(tmp_path / "wt")) == first


def test_outside_a_repository_there_is_no_commit(tmp_path: Path) -> None:
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path,
                          capture_output=True).returncode != 0
    assert host.git_commit(str(tmp_path)) == ""


def test_an_unborn_branch_is_left_to_git(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert host.git_commit_from_files(tmp_path) is None  # HEAD names no commit yet
    assert host.git_commit(str(tmp_path)) == ""


def test_platform_string_matches_the_standard_library() -> None:
    assert host.platform_name() == platform.platform()


def test_start_run_starts_no_process(repo: Path, tmp_path: Path, monkeypatch) -> None:
    head = git(repo, "rev-parse", "HEAD")
    monkeypatch.chdir(repo / "src")

    def refuse(*args, **kwargs):
        raise AssertionError(f"a process was started at run start: {args!r}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    ledger = Ledger.open(tmp_path / "l.sqlite")
    run_id = ledger.start_run({"framework": "lightning"})
    run = ledger.run(run_id)
    assert run.git_commit == head
    assert run.hardware["platform"] == platform.platform()
    ledger.close()
