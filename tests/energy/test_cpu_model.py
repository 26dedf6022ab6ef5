"""CPU model: load x TDP with the Teads curve, TDP lookup, unknown CPUs, scope, busy loop > 0 W."""

from __future__ import annotations

import csv
import functools
import subprocess
import sys
import time
from importlib import resources

import pytest

from carbon_callbacks import EnergyMeter
from carbon_callbacks.energy.sensors.cpu_model import (
    DEFAULT_W_PER_CPU,
    CpuInfo,
    CpuModelSensor,
    load_fraction,
    lookup_tdp,
    read_cpu_info,
)
from carbon_callbacks.energy.sensors.process import ProcessTree


def busy(seconds: float) -> int:
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        n += 1
    return n


def test_load_curve_passes_through_teads_points_and_is_never_zero():
    assert load_fraction(0.0) == pytest.approx(0.12)
    assert load_fraction(0.1) == pytest.approx(0.32)
    assert load_fraction(0.5) == pytest.approx(0.75)
    assert load_fraction(1.0) == pytest.approx(1.02)
    assert load_fraction(0.3) == pytest.approx(0.32 + (0.75 - 0.32) * 0.5)
    assert load_fraction(-1) > 0 and load_fraction(2) == pytest.approx(1.02)


@pytest.mark.parametrize(
    ("name", "tdp"),
    [
        ("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", 150.0),
        ("AMD EPYC 7763 64-Core Processor", 280.0),
        ("Intel(R) Core(TM) i7-10510U CPU @ 1.80GHz", 15.0),
    ],
)
def test_tdp_lookup_matches_real_model_names(name, tdp):
    match = lookup_tdp(name)
    assert match is not None and match[1] == tdp


def test_generic_vm_name_is_not_matched():
    assert lookup_tdp("Intel(R) Xeon(R) Processor") is None
    assert lookup_tdp("") is None


def test_unknown_cpu_uses_documented_per_cpu_default_and_says_so():
    s = CpuModelSensor(info=CpuInfo("Mystery CPU 9000", 1, 8))
    assert s.tdp_w == DEFAULT_W_PER_CPU * 8
    assert "not in the TDP table" in s.reason and "per logical CPU" in s.reason


def test_known_cpu_tdp_is_multiplied_by_sockets():
    s = CpuModelSensor(info=CpuInfo("AMD EPYC 7763 64-Core Processor", 2, 256))
    assert s.tdp_w == 560.0
    assert "2 socket" in s.reason


def test_cpu_info_reads_model_and_sockets(tmp_path):
    f = tmp_path / "cpuinfo"
    f.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 0\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\nphysical id\t: 1\n"
    )
    info = read_cpu_info(str(f))
    assert info.model_name.startswith("AMD EPYC 7763") and info.sockets == 2


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="scope"):
        CpuModelSensor(scope="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tdp_w"):
        CpuModelSensor(tdp_w=0)


@pytest.mark.parametrize("scope", ["process", "machine"])
def test_busy_loop_reports_cpu_power_above_zero(scope):
    with EnergyMeter(scope=scope, interval=0.2) as m:
        a = m.mark()
        busy(0.6)
        b = m.mark()
    w = m.window(a, b)
    cpu = w.components["cpu"]
    assert cpu.method == "model"
    assert cpu.joules / w.seconds > 0.0
    assert cpu.low < cpu.joules < cpu.high


def test_process_scope_counts_no_more_than_the_machine():
    tdp = 100.0
    proc = CpuModelSensor(scope="process", tdp_w=tdp)
    mach = CpuModelSensor(scope="machine", tdp_w=tdp)
    t0 = time.monotonic()
    proc.open(t0)
    mach.open(t0)
    busy(0.5)
    t1 = time.monotonic()
    jp, jm = proc.totals(t1).joules, mach.totals(t1).joules
    # The two sensors read /proc/stat a few microseconds apart, hence the small allowance.
    assert 0 < jp <= jm * 1.05
    # the machine is never below the idle floor of the curve
    assert jm >= tdp * 0.12 * (t1 - t0) * 0.999


def test_process_tree_counts_a_child_that_ran_and_was_reaped():
    tree = ProcessTree()
    tree.open()
    before = tree.cpu_seconds()
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt=time.process_time()\n"
                              "while time.process_time()-t<0.4: pass"])
    time.sleep(0.05)
    tree.refresh(force=True)
    assert tree.size >= 2
    child.wait()
    used = tree.cpu_seconds() - before
    assert used >= 0.35


def _burn(seconds: float, local_rank: str) -> subprocess.Popen:
    code = (
        "import time\nt=time.process_time()\n"
        f"while time.process_time()-t<{seconds}: pass"
    )
    env = dict(__import__("os").environ, LOCAL_RANK=local_rank)
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def test_process_tree_leaves_out_another_ddp_rank_started_as_its_child(monkeypatch):
    # Lightning's DDP launcher starts rank 1 as a child of rank 0 with LOCAL_RANK=1; rank 1
    # measures itself, so rank 0 must not count it (nor its reaped time) a second time.
    monkeypatch.setenv("LOCAL_RANK", "0")
    tree = ProcessTree()
    tree.open()
    before = tree.cpu_seconds()
    own_worker = _burn(0.4, local_rank="0")  # a data-loader worker inherits our rank
    other_rank = _burn(0.8, local_rank="1")
    time.sleep(0.1)
    tree.refresh(force=True)
    assert own_worker.pid in tree._procs
    assert other_rank.pid not in tree._procs
    # Polled as the meter's sampler thread does; poll() also reaps each child into our times.
    while own_worker.poll() is None or other_rank.poll() is None:
        tree.cpu_seconds()
        time.sleep(0.05)
    used = tree.cpu_seconds() - before
    # Our worker's 0.4 s is in; the other rank's 0.8 s (reaped into our children times) is out.
    assert 0.35 <= used < 0.4 + 0.3


def test_process_tree_built_before_the_ddp_launch_reads_its_rank_at_open(monkeypatch):
    # A meter is built before trainer.fit(); Lightning's launcher sets LOCAL_RANK=0 in rank 0
    # only at fit(), then starts rank 1 as its child. The rank must be read at open().
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    tree = ProcessTree()
    monkeypatch.setenv("LOCAL_RANK", "0")
    other_rank = _burn(0.3, local_rank="1")
    try:
        time.sleep(0.1)
        tree.open()
        assert other_rank.pid not in tree._procs
        assert other_rank.pid in tree._foreign
    finally:
        other_rank.wait()


class _StillTree:
    """A process tree whose CPU time is set by the test (the share's only input from it)."""

    generation = 1
    seconds = 0.0

    def open_at(self, now: float) -> None:
        pass

    def refresh(self, force: bool = False) -> None:
        pass

    def cpu_seconds(self) -> float:
        return self.seconds


def test_cpu_model_keeps_the_last_share_when_no_tick_passed(monkeypatch):
    # Same rule as RAPL's CpuShare: a read with no machine tick since the last keeps the last
    # share, rather than 0 when this tree had no tick either.
    from carbon_callbacks.energy.sensors import cpu_model, process

    busy = {"s": 100.0}
    for mod in (cpu_model, process):
        monkeypatch.setattr(mod, "machine_busy_seconds", lambda: busy["s"])
    tree = _StillTree()
    sensor = CpuModelSensor(scope="process", tdp_w=100.0, info=CpuInfo("fake", 1, 1),
                            share=process.CpuShare(tree))
    sensor.open(0.0)
    busy["s"], tree.seconds = 101.0, 0.5  # one busy second, half of it ours
    j1 = sensor.totals(1.0).joules
    assert j1 == pytest.approx(100.0 * load_fraction(1.0) * 0.5)
    j2 = sensor.totals(2.0).joules  # no tick at all in this second
    assert j2 - j1 == pytest.approx(100.0 * load_fraction(0.0) * 0.5)


def test_a_child_found_after_open_counts_in_full_whatever_its_create_time(monkeypatch):
    # create_time has clock-tick granularity, so a child started just after open() can look
    # older than open(); it must still count from its start, not from when it was found.
    import psutil

    tree = ProcessTree()
    tree.open()
    before = tree.cpu_seconds()
    monkeypatch.setattr(psutil.Process, "create_time", lambda self: 0.0)
    child = _burn(0.4, local_rank="0")
    time.sleep(0.25)  # found well into its run
    tree.refresh(force=True)
    assert child.pid in tree._procs
    while child.poll() is None:
        tree.cpu_seconds()
        time.sleep(0.05)
    assert tree.cpu_seconds() - before >= 0.38


@functools.lru_cache(maxsize=1)
def tdp_table() -> dict[str, float]:
    """The bundled table parsed whole with the csv module, as the package first did."""
    path = resources.files("carbon_callbacks.energy.sensors").joinpath("data/cpu_tdp.csv")
    with path.open(encoding="utf-8", newline="") as f:
        return {" ".join(row["name"].lower().split()): float(row["tdp_w"])
                for row in csv.DictReader(f)}


def _lookup_by_table(model_name: str) -> tuple[str, float] | None:
    """The lookup as first written, over the fully parsed table: the reference."""
    from carbon_callbacks.energy.sensors.cpu_model import _tokens

    toks, table, best = _tokens(model_name), tdp_table(), None
    for i in range(len(toks)):
        for j in range(len(toks), i, -1):
            cand = " ".join(toks[i:j])
            if (best is None or len(cand) > len(best[0])) and cand in table:
                if any(c.isdigit() for c in cand):
                    best = (cand, table[cand])
                break
    return best


def test_lookup_without_parsing_the_table_agrees_with_the_parsed_table_on_every_row():
    from carbon_callbacks.energy.sensors.cpu_model import _tdp_of

    table = tdp_table()
    assert len(table) > 4000
    for name, tdp in table.items():
        assert _tdp_of(name) == tdp, name  # quoted rows (names with commas) included
    names = [f"Intel(R) {n.title()} CPU @ 2.40GHz" for n in list(table)[::7]]
    names += [
        "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz",
        "AMD EPYC 7763 64-Core Processor",
        "AMD Ryzen 7 5800X 8-Core Processor",
        "Intel(R) Xeon(R) Processor",
        "Intel Core i5+8400 (9M Cache, up to 4.00 GHz) includes Intel Optane Memory",
    ]
    for name in names:
        assert lookup_tdp(name) == _lookup_by_table(name), name
    assert _tdp_of("no such cpu 123") is None
