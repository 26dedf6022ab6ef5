"""The process tree a meter attributes energy to, and the machine's CPU time it shares.

Under ``scope="process"`` a machine-wide quantity (CPU package energy, the CPU model's power) is
split by the tree's share of the machine's busy CPU time, so a run on a shared machine or one
rank of a DDP job counts only what its own processes (the trainer and its data-loader workers)
used.
"""

from __future__ import annotations

import os
import time

import psutil

REFRESH_EVERY = 5.0
"""Seconds between scans for new child processes."""

READ_REUSE_S = 0.005
"""A tree's CPU time read this recently is reused: sensors sharing the tree (RAPL cpu and ram,
the CPU and RAM models) read it at one boundary, and each read calls cpu_times on every process
in the tree. Clock ticks are 10 ms, so nothing is lost."""

RANK_VARIABLE = "LOCAL_RANK"
"""Set by torchrun and Lightning's DDP launcher on every rank (rank 0 included)."""


def _rank_of(p: psutil.Process) -> str | None:
    """The ``LOCAL_RANK`` a process was started with, or None if unset or unreadable."""
    try:
        return p.environ().get(RANK_VARIABLE)
    except (psutil.Error, OSError):
        return None


def machine_busy_seconds() -> float:
    """CPU-seconds all logical CPUs have spent busy since boot (idle, iowait, steal excluded)."""
    t = psutil.cpu_times()
    # guest time is already inside user on Linux, so it is not added again.
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))


def logical_cpus() -> int:
    """Logical CPUs of this machine (at least 1)."""
    return psutil.cpu_count(logical=True) or os.cpu_count() or 1


class ProcessTree:
    """The CPU time and resident memory of a process and all its descendants since ``open()``.

    Children that exist at ``open()`` count from then; children started later count from their
    start. A child reaped by a parent in the tree moves into that parent's ``children_*`` times,
    so its time is neither lost nor counted twice.

    A descendant started with another ``LOCAL_RANK`` than this process is another DDP rank
    (Lightning's launcher starts ranks 1..n-1 as children of rank 0): it measures itself, so it
    and its own children are left out, and its time is taken back if it is reaped into ours
    (as last seen by ``cpu_seconds()``, which the meter's thread calls every interval, so at
    most one interval of its time can remain).

    Args:
        pid: the root process; default this process, as of each ``open()``.
    """

    def __init__(self, pid: int | None = None) -> None:
        self._own = pid is None
        self.pid = os.getpid() if pid is None else pid
        self._root = psutil.Process(self.pid)
        self._procs: dict[int, psutil.Process] = {}
        self._base: dict[int, float] = {}
        self._carried = 0.0
        self._last = 0.0
        self._opening = False
        self._refreshed = -1e18
        self._read_at = -1e18
        self._open_key: float | None = None
        self.generation = 0
        """Counts ``open()`` calls, so a sharer can tell that its baseline is gone."""
        self._rank = os.environ.get(RANK_VARIABLE) if pid is None else _rank_of(self._root)
        # Other ranks' processes among our descendants: pid -> (process, CPU-seconds last seen,
        # whether its parent is ours, so that its time lands in our children times when reaped).
        self._foreign: dict[int, tuple[psutil.Process, float, bool]] = {}

    @staticmethod
    def _contribution(p: psutil.Process) -> float:
        t = p.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def open(self) -> None:
        """Take the baseline of every process now in the tree."""
        if self._own:
            # A meter is often built before the DDP launch: the launcher sets LOCAL_RANK in
            # rank 0 only then, and a forked process has another pid. Read both now.
            self._rank = os.environ.get(RANK_VARIABLE)
            if self.pid != os.getpid():
                self.pid = os.getpid()
                self._root = psutil.Process(self.pid)
        self.generation += 1
        self._read_at = -1e18
        self._procs = {self.pid: self._root}
        self._base = {self.pid: self._contribution(self._root)}
        self._carried = 0.0
        self._last = 0.0
        self._foreign = {}
        # Every child alive now is found by this scan and counts from now on; any child found
        # by a later scan therefore started after open() and counts from its start. (Comparing
        # create_time with the clock misjudged children started within one clock tick of open.)
        self._opening = True
        try:
            self.refresh(force=True)
        finally:
            self._opening = False

    def open_at(self, now: float) -> None:
        """Open, unless already opened for this same ``now``.

        The sensors sharing one tree are opened by ``EnergyMeter.start()`` with one ``now``:
        the tree is scanned once for them all. A sensor opened later (a fallback mid-run)
        opens it again; the others see ``generation`` change and take a new baseline.
        """
        if self._open_key == now and self.generation:
            return
        self.open()
        self._open_key = now

    def refresh(self, force: bool = False) -> None:
        """Find children started since the last look (the meter's thread calls this).

        Looks at most every ``REFRESH_EVERY`` seconds unless forced: the scan reads every
        process on the machine, and a late look loses nothing, since a child found late
        counts from its start and one that ended unseen is in its parent's children times.
        """
        now = time.monotonic()
        if not force and now - self._refreshed < REFRESH_EVERY:
            return
        self._refreshed = now
        try:
            kids = self._root.children(recursive=True)
        except psutil.Error:
            return
        for k in kids:
            if k.pid in self._procs or k.pid in self._foreign:
                continue
            if self._is_other_rank(k):
                try:
                    self._foreign[k.pid] = (k, self._contribution(k), k.ppid() in self._procs)
                except psutil.Error:
                    pass
                continue
            try:
                base = self._contribution(k) if self._opening else 0.0
            except psutil.Error:
                continue
            self._procs[k.pid] = k
            self._base[k.pid] = base

    def _is_other_rank(self, p: psutil.Process) -> bool:
        """True for a process of another DDP rank: a rank variable unlike ours, or its child."""
        try:
            if p.ppid() in self._foreign:
                return True
        except psutil.Error:
            return False
        rank = _rank_of(p)
        return rank is not None and self._rank is not None and rank != self._rank

    def _take_back_reaped_ranks(self) -> None:
        """Subtract the time of other ranks that ended, since our ``children_*`` times got it."""
        for pid, (p, seen, reaped_by_us) in list(self._foreign.items()):
            try:
                self._foreign[pid] = (p, self._contribution(p), reaped_by_us)
            except psutil.Error:
                if reaped_by_us:
                    self._carried -= seen
                del self._foreign[pid]

    def cpu_seconds(self) -> float:
        """CPU-seconds the tree used since ``open()`` (never decreases)."""
        t = time.monotonic()
        if t - self._read_at < READ_REUSE_S:
            return self._last
        self._read_at = t
        self._take_back_reaped_ranks()
        total = self._carried
        for pid, p in list(self._procs.items()):
            try:
                total += self._contribution(p) - self._base[pid]
            except psutil.Error:
                # Gone: its parent in the tree reaped it and now holds its full time,
                # including what it used before open(), which is taken back here.
                if pid == self.pid:
                    continue
                base = self._base.pop(pid)
                self._carried -= base
                total -= base
                del self._procs[pid]
        self._last = max(self._last, total)
        return self._last

    def rss_bytes(self) -> int:
        """Resident memory of the tree now (shared pages counted in each process)."""
        total = 0
        for p in list(self._procs.values()):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total

    @property
    def size(self) -> int:
        """Processes tracked now."""
        return len(self._procs)


class CpuShare:
    """This process tree's share of the machine's busy CPU time, interval by interval.

    Used to attribute a machine-wide energy counter under ``scope="process"``.

    Several ``CpuShare`` objects can follow one tree (one per sensor): each keeps its own
    baseline, the tree's scan and reads are shared.

    Args:
        tree: the process tree; default this process and its descendants.
    """

    def __init__(self, tree: ProcessTree | None = None) -> None:
        self.tree = tree or ProcessTree()
        self._busy = 0.0
        self._proc = 0.0
        self._gen = -1
        self._last_share = 1.0

    def open(self, now: float | None = None) -> None:
        """Take the baseline now.

        Args:
            now: the meter's ``now`` at ``start()``; sharers given one ``now`` open the tree
                once. None opens it anyway.
        """
        if now is None:
            self.tree.open()
        else:
            self.tree.open_at(now)
        self._rebase()
        self._last_share = 1.0

    def _rebase(self) -> None:
        self._busy = machine_busy_seconds()
        self._proc = self.tree.cpu_seconds()
        self._gen = self.tree.generation

    def advance(self, refresh: bool = False) -> float:
        """The share (0..1) since the previous call; ``refresh`` also looks for new children."""
        if refresh:
            self.tree.refresh()
        if self.tree.generation != self._gen:
            # Another sharer reopened the tree (a fallback opened mid-run): our baseline is
            # gone, so this interval keeps the last share.
            self._rebase()
            return self._last_share
        busy, proc = machine_busy_seconds(), self.tree.cpu_seconds()
        d_busy, d_proc = busy - self._busy, proc - self._proc
        if d_busy > 0:
            # Clock-tick rounding can show the tree busier than the machine: cap at the whole.
            share = min(1.0, max(0.0, d_proc / d_busy))
        else:
            # Nothing ticked yet (a read right after another): keep the last share.
            share = self._last_share
        self._busy, self._proc, self._last_share = busy, proc, share
        return share
