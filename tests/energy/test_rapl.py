"""RAPL through powercap, on fake trees: sockets, DRAM, psys, mirrors, wraps, permissions."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
import time

import pytest

from carbon_callbacks import EnergyMeter
from carbon_callbacks.energy.sensors.base import FallbackChain
from carbon_callbacks.energy.sensors.cpu_model import CpuModelSensor
from carbon_callbacks.energy.sensors.rapl import RaplSensor, discover
from carbon_callbacks.testing import FakePowercap


def rapl_meter(root, **kw) -> EnergyMeter:
    """A meter on a fake tree: RAPL for cpu and ram, falling back to the models."""
    scope = kw.pop("scope", "machine")
    sensors = [
        FallbackChain([RaplSensor("cpu", root=root, scope=scope, vendor="intel", **kw),
                       CpuModelSensor(scope=scope)]),
        FallbackChain([RaplSensor("ram", root=root, scope=scope, vendor="intel", **kw)]),
    ]
    return EnergyMeter(sensors=sensors)


def two_socket_tree(root) -> tuple[FakePowercap, dict]:
    t = FakePowercap(root)
    z = {
        "pkg0": t.add_zone("intel-rapl:0", "package-0", energy_uj=5_000_000),
        "core0": t.add_zone("intel-rapl:0:0", "core"),
        "dram0": t.add_zone("intel-rapl:0:1", "dram", max_range_uj=65_532_610_987),
        "pkg1": t.add_zone("intel-rapl:1", "package-1", energy_uj=77_000_000),
        "dram1": t.add_zone("intel-rapl:1:0", "dram", max_range_uj=65_532_610_987),
        "psys": t.add_zone("intel-rapl:2", "psys"),
    }
    return t, z


def test_sockets_summed_dram_apart_psys_and_core_not_counted(tmp_path):
    t, z = two_socket_tree(tmp_path)
    m = rapl_meter(tmp_path).start()
    a = m.mark()
    t.advance(z["pkg0"], 40.0)
    t.advance(z["core0"], 30.0)  # inside package-0: must not add
    t.advance(z["pkg1"], 25.5)
    t.advance(z["dram0"], 6.25)
    t.advance(z["dram1"], 3.75)
    t.advance(z["psys"], 500.0)  # the whole platform: must not add
    b = m.mark()
    m.stop()
    w = m.window(a, b)
    assert w.component_joules("cpu") == pytest.approx(65.5, rel=1e-3)
    assert w.component_joules("ram") == pytest.approx(10.0, rel=1e-3)
    assert w.methods == {"cpu": "counter", "ram": "counter"}
    assert set(w.components["cpu"].devices) == {"package-0", "package-1"}
    d = discover(tmp_path)
    assert any("psys" in s for s in d.skipped) and any("core" in s for s in d.skipped)


def test_counter_range_is_documented_accuracy(tmp_path):
    t, z = two_socket_tree(tmp_path)
    m = rapl_meter(tmp_path).start()
    a = m.mark()
    t.advance(z["pkg0"], 100.0)
    w = m.window(a, m.mark())
    m.stop()
    cpu = w.components["cpu"]
    assert cpu.low == pytest.approx(95.0, abs=1e-3) and cpu.high == pytest.approx(105.0, abs=1e-3)


def test_amd_counters_get_the_wider_band(tmp_path):
    t = FakePowercap(tmp_path)
    pkg = t.add_zone("amd-rapl:0", "package-0")
    s = FallbackChain([RaplSensor("cpu", root=tmp_path, scope="machine", vendor="amd")])
    m = EnergyMeter(sensors=[s]).start()
    a = m.mark()
    t.advance(pkg, 100.0)
    w = m.window(a, m.mark())
    m.stop()
    assert w.components["cpu"].low == pytest.approx(85.0, abs=1e-3)


def test_counter_wrapping_once_between_reads(tmp_path):
    t = FakePowercap(tmp_path)
    rng = 262_143_328_850
    pkg = t.add_zone("intel-rapl:0", "package-0", max_range_uj=rng, energy_uj=rng - 3_000_000)
    m = rapl_meter(tmp_path).start()
    a = m.mark()
    t.advance(pkg, 10.0)  # 3 J to the top, then 7 J past zero
    b = m.mark()
    m.stop()
    assert pkg.wraps == 1
    assert m.window(a, b).component_joules("cpu") == pytest.approx(10.0, rel=1e-3)


def test_counter_wrapping_many_times_between_marks_is_caught_by_the_thread_reads(tmp_path):
    t = FakePowercap(tmp_path)
    pkg = t.add_zone("intel-rapl:0", "package-0", max_range_uj=20_000_000, max_power_w=100)
    sensor = RaplSensor("cpu", root=tmp_path, scope="machine", vendor="intel")
    sensor.open(0.0)
    assert sensor.poll_interval == pytest.approx(0.1)  # half the 0.2 s wrap time at 100 W
    start = sensor.totals(0.0).joules
    truth = 0.0
    for i in range(1, 41):  # 40 steps of 9 J: 18 wraps of a 20 J counter
        t.advance(pkg, 9.0)
        truth += 9.0
        sensor.sample(i * 0.09)  # what the meter's thread does between two marks
    end = sensor.totals(3.7)
    assert pkg.wraps == 18
    assert end.joules - start == pytest.approx(truth, rel=1e-3)
    assert end.high == pytest.approx(end.joules * 1.05, rel=1e-3)  # no wrap needed guessing
    assert end.method == "counter"


def test_reads_a_starved_thread_made_too_far_apart_estimate_wraps_and_widen_the_range(tmp_path):
    t = FakePowercap(tmp_path)
    pkg = t.add_zone("intel-rapl:0", "package-0", max_range_uj=20_000_000, max_power_w=100)
    sensor = RaplSensor("cpu", root=tmp_path, scope="machine", vendor="intel")
    notes: list[str] = []
    sensor.report = lambda message, cause="": notes.append(message)  # type: ignore[method-assign]
    sensor.open(0.0)
    t.advance(pkg, 5.0)
    sensor.sample(0.1)  # 50 W, read in time
    t.advance(pkg, 50.0)  # then 1 s at 50 W unread: two whole wraps and 10 J
    end = sensor.totals(1.1)
    assert end.joules == pytest.approx(55.0, rel=1e-3)  # the wraps counted from 50 W
    assert end.low <= 55.0 <= end.high
    assert end.high >= 5.0 + 10.0 + 4 * 20.0  # 100 W could have wrapped it four times
    assert any("2 unseen wrap(s)" in n for n in notes)


def test_a_counter_reset_to_zero_by_a_driver_reload_is_not_counted_as_a_wrap(tmp_path):
    t = FakePowercap(tmp_path)
    rng = 262_143_328_850
    pkg = t.add_zone("intel-rapl:0", "package-0", max_range_uj=rng, energy_uj=rng // 2,
                     max_power_w=200)
    m = rapl_meter(tmp_path).start()
    a = m.mark()
    t.advance(pkg, 8.0)
    b = m.mark()
    pkg.energy_uj = 0  # the driver reloads: the counter starts again from 0
    t.advance(pkg, 0.0)
    c = m.mark()
    t.advance(pkg, 12.0)
    d = m.mark()
    m.stop()
    w_bc, w_cd = m.window(b, c), m.window(c, d)
    assert m.window(a, b).component_joules("cpu") == pytest.approx(8.0, rel=1e-3)
    assert w_bc.component_joules("cpu") < 200.0 * w_bc.seconds + 1.0  # not +262 kJ
    assert w_bc.methods["cpu"] == "model"
    assert "a reset, not a wrap" in w_bc.components["cpu"].reason
    # Counting resumes from the new base.
    assert w_cd.component_joules("cpu") == pytest.approx(12.0, rel=1e-2)
    assert "restarted from a new base" in w_cd.components["cpu"].reason


def test_garbage_counter_readings_in_a_row_fall_back_to_the_model(tmp_path):
    t = FakePowercap(tmp_path)
    pkg = t.add_zone("intel-rapl:0", "package-0", energy_uj=10_000_000_000, max_power_w=100)
    m = rapl_meter(tmp_path).start()
    a = m.mark()
    readings = []
    for value in (5, 9_000_000_000, 3):  # no wrap or power explains any of these
        pkg.energy_uj = value
        t.advance(pkg, 0.0)
        readings.append(m.mark())
    m.stop()
    assert readings[-1].methods["cpu"] == "model"
    w = m.window(a, readings[-1])
    assert "refused as impossible" in w.components["cpu"].reason
    assert w.component_joules("cpu") < 100.0 * w.seconds * 2 + 1.0


def test_meter_thread_catches_wraps_of_a_live_counter(tmp_path):
    t = FakePowercap(tmp_path)
    pkg = t.add_zone("intel-rapl:0", "package-0", max_range_uj=30_000_000, max_power_w=200)
    dram = t.add_zone("intel-rapl:0:0", "dram", max_range_uj=5_000_000, max_power_w=40)
    m = rapl_meter(tmp_path).start()
    a = m.mark()
    # 100 W and 20 W: a wrap every 0.3 s and 0.25 s; reads are due every 75 ms and 62 ms.
    with t.drive({pkg: 100.0, dram: 20.0}) as driver:
        time.sleep(1.5)
    b = m.mark()
    m.stop()
    assert pkg.wraps >= 2 and dram.wraps >= 2
    w = m.window(a, b)
    for comp, zone in (("cpu", "intel-rapl:0"), ("ram", "intel-rapl:0:0")):
        c, truth = w.components[comp], driver.written[zone]
        # A busy machine may starve the thread past a wrap: then the wraps are estimated
        # from the neighbouring power and the range widened to every count possible, so
        # the truth stays inside it and the window says so. Otherwise the count is exact.
        assert c.low <= truth * 1.001 and truth * 0.999 <= c.high
        if "unseen wrap" not in c.reason:
            assert c.joules == pytest.approx(truth, rel=1e-3)


def test_mirrored_amd_dies_and_mmio_zone_counted_once(tmp_path):
    t = FakePowercap(tmp_path)
    pkg = t.add_zone("amd-rapl:0", "package-0", energy_uj=1_000_000)
    t.mirror("amd-rapl:1", pkg)  # a second die showing the same socket counter
    t.mirror("intel-rapl-mmio:0", pkg)
    s = RaplSensor("cpu", root=tmp_path, scope="machine", vendor="amd")
    m = EnergyMeter(sensors=[s]).start()
    a = m.mark()
    t.advance(pkg, 50.0)
    w = m.window(a, m.mark())
    m.stop()
    assert w.component_joules("cpu") == pytest.approx(50.0, rel=1e-3)
    assert "counted once" in " ".join(discover(tmp_path).skipped)


def test_mirrored_die_under_another_name_is_caught_by_its_value(tmp_path):
    t = FakePowercap(tmp_path)
    pkg = t.add_zone("intel-rapl:0", "package-0-die-0", energy_uj=7_654_321)
    twin = t.mirror("intel-rapl:1", pkg)
    (twin.path / "name").write_text("package-0-die-1\n")
    s = RaplSensor("cpu", root=tmp_path, scope="machine", vendor="amd")
    m = EnergyMeter(sensors=[s]).start()
    a = m.mark()
    t.advance(pkg, 20.0)
    w = m.window(a, m.mark())
    m.stop()
    assert w.component_joules("cpu") == pytest.approx(20.0, rel=1e-3)
    assert "mirrors" in w.components["cpu"].reason


def test_missing_root_falls_back_to_model_without_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        m = rapl_meter(tmp_path / "nothing").start()
        r = m.mark()
        m.stop()
    assert r.methods["cpu"] == "model"
    assert not [x for x in caplog.records if x.levelno >= logging.WARNING]
    assert "no powercap folder" in " ".join(m.describe())


def test_counter_vanishing_midrun_degrades_to_model_noted_once(tmp_path, caplog):
    t, z = two_socket_tree(tmp_path)
    m = rapl_meter(tmp_path).start()
    a = m.mark()
    t.advance(z["pkg0"], 30.0)
    b = m.mark()
    t.remove_counter(z["pkg1"])
    with caplog.at_level(logging.WARNING):
        c = m.mark()
        d = m.mark()
    m.stop()
    assert m.window(a, b).component_joules("cpu") == pytest.approx(30.0, rel=1e-3)
    w_bc, w_cd = m.window(b, c), m.window(c, d)
    assert w_bc.components["cpu"].method == "model"
    assert "counter source failed" in w_bc.components["cpu"].reason
    assert "failed" not in w_cd.components["cpu"].reason
    assert c.joules["cpu"] >= b.joules["cpu"]
    assert len([x for x in caplog.records if "energy_uj" in x.getMessage()]) == 1


def test_process_scope_attributes_a_share_and_says_so(tmp_path):
    t, z = two_socket_tree(tmp_path)
    m = rapl_meter(tmp_path, scope="process").start()
    a = m.mark()
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        pass
    t.advance(z["pkg0"], 100.0)
    b = m.mark()
    m.stop()
    cpu = m.window(a, b).components["cpu"]
    assert 0.0 < cpu.joules <= 100.0 * 1.001
    assert "share of busy CPU time" in cpu.reason


UNREADABLE_CHECK = """
import json, logging, sys
records = []
class H(logging.Handler):
    def emit(self, r): records.append(r.getMessage())
logging.getLogger("carbon_callbacks").addHandler(H())
from carbon_callbacks import EnergyMeter
m = EnergyMeter(rapl_root=sys.argv[1], scope="machine").start()
r = m.mark()
r2 = m.mark()
m.stop()
print(json.dumps({"methods": dict(r.methods), "warnings": records,
                  "cpu_j": r2.joules["cpu"]}))
"""


def _drop_file_read_override() -> None:
    """In the child: give up root's right to read any file (CAP_DAC_OVERRIDE/READ_SEARCH)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_counter_warns_once_with_the_fix_and_falls_back(tmp_path):
    t = FakePowercap(tmp_path)
    for zone in (t.add_zone("intel-rapl:0", "package-0"), t.add_zone("intel-rapl:0:0", "dram")):
        f = zone.path / "energy_uj"
        if os.geteuid() == 0:
            # Root reads anything; owned by someone else and read by a root that has given up
            # that privilege, the file fails with a real EACCES, as for a user on Linux >= 5.10.
            os.chown(f, 65534, 65534)
        os.chmod(f, 0o400 if os.geteuid() == 0 else 0o000)
    pre = _drop_file_read_override if os.geteuid() == 0 else None
    out = subprocess.run([sys.executable, "-c", UNREADABLE_CHECK, str(tmp_path)],
                         capture_output=True, text=True, timeout=120, preexec_fn=pre)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["methods"]["cpu"] == "model" and res["methods"]["ram"] == "model"
    assert res["cpu_j"] >= 0
    perm = [w for w in res["warnings"] if "Permission denied" in w]
    assert len(perm) == 1, res["warnings"]
    fix = perm[0]
    assert "chmod a+r" in fix and "udev" in fix and "usermod -aG power" in fix
    assert "/sys%p/energy_uj" in fix


def _open_cpu(root, monkeypatch, between=None) -> RaplSensor:
    """Open a machine-scope cpu sensor; ``between`` runs in the pause between the two reads."""
    from carbon_callbacks.energy.sensors import rapl

    if between is not None:
        monkeypatch.setattr(rapl, "_pause", lambda seconds: between(), raising=False)
    s = RaplSensor("cpu", root=root, scope="machine", vendor="amd")
    s.open(0.0)
    return s


def test_mirrored_die_read_across_a_counter_update_is_still_counted_once(tmp_path, monkeypatch):
    # The two dies show one counter, but the first read of die 1 came just after an update of
    # 0.3 J that the read of die 0 missed: the values differ, the counter is the same.
    t = FakePowercap(tmp_path)
    die0 = t.add_zone("intel-rapl:0", "package-0-die-0", energy_uj=7_654_321)
    die1 = t.add_zone("intel-rapl:1", "package-0-die-1", energy_uj=7_654_321 + 300_000)

    def twenty_ms_later():  # both reads now after the same updates: 1.3 J in all
        t.advance(die0, 1.3)
        t.advance(die1, 1.0)

    s = _open_cpu(tmp_path, monkeypatch, twenty_ms_later)
    assert [z.name for z in s._zones] == ["package-0-die-0"]
    assert "package-0-die-1 (intel-rapl:1) mirrors" in s.reason


def test_distinct_dies_of_one_package_near_in_value_are_both_counted(tmp_path, monkeypatch):
    t = FakePowercap(tmp_path)
    die0 = t.add_zone("intel-rapl:0", "package-0-die-0", energy_uj=7_654_321)
    die1 = t.add_zone("intel-rapl:1", "package-0-die-1", energy_uj=7_654_321 + 300_000)

    def twenty_ms_later():  # one die busy, the other idle: not one counter
        t.advance(die0, 2.0)
        t.advance(die1, 0.1)

    s = _open_cpu(tmp_path, monkeypatch, twenty_ms_later)
    assert len(s._zones) == 2 and s.mirrors == []


def test_equal_counters_of_two_packages_are_not_taken_for_mirrors(tmp_path, monkeypatch):
    t = FakePowercap(tmp_path)
    t.add_zone("intel-rapl:0", "package-0", energy_uj=1_000_000)
    t.add_zone("intel-rapl:1", "package-1", energy_uj=1_000_000)
    s = _open_cpu(tmp_path, monkeypatch)
    assert [z.name for z in s._zones] == ["package-0", "package-1"]
