"""`detect`: what each sensor finds, which method each component uses, and the fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from carbon_callbacks.energy.detect import detect_report
from carbon_callbacks.testing import FakeGPU, FakeNVML, FakePowercap

NO_DRIVER = 12  # NVML_ERROR_LIBRARY_NOT_FOUND


def test_no_rapl_no_gpu_says_so_and_names_the_fallback(tmp_path):
    text = detect_report(rapl_root=tmp_path / "absent", nvml=FakeNVML([], init_error=NO_DRIVER))
    assert "RAPL: none - no powercap folder" in text
    assert "GPU: none - no NVIDIA GPU" in text
    assert "cpu: model" in text and "ram: model" in text
    assert "Fallback: cpu falls back to the load x TDP model" in text


def test_readable_rapl_and_a_gpu_are_reported_as_counters(tmp_path):
    t = FakePowercap(tmp_path)
    t.add_zone("intel-rapl:0", "package-0")
    t.add_zone("intel-rapl:0:0", "dram")
    t.add_zone("intel-rapl:1", "psys")
    nv = FakeNVML([FakeGPU(name="NVIDIA H100 80GB HBM3")])
    text = detect_report(rapl_root=tmp_path, nvml=nv)
    assert "RAPL: package-0 (intel-rapl:0) - readable" in text
    assert "left out psys" in text
    assert "cpu: counter" in text and "ram: counter" in text and "gpu: counter" in text
    assert "Fallback" not in text
    assert nv.init_calls == 1 and nv.shutdown_calls == 1


def test_on_this_machine_detect_matches_what_exists():
    """The real machine: no RAPL and no GPU here in CI, and the report must say so."""
    out = subprocess.run([sys.executable, "-m", "carbon_callbacks", "detect"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    if not os.path.isdir("/sys/class/powercap"):
        assert "RAPL: none - no powercap folder at /sys/class/powercap" in text
        assert "cpu falls back to the load x TDP model" in text
    else:
        assert "RAPL:" in text
    assert "Components (scope=process):" in text
    assert ("GPU: none" in text) or ("gpu: counter" in text or "gpu: polled" in text)


def _rapl_tree(root) -> FakePowercap:
    t = FakePowercap(root)
    t.add_zone("intel-rapl:0", "package-0")
    t.add_zone("intel-rapl:0:0", "dram")
    return t


def test_process_scope_sensors_share_one_process_tree(tmp_path):
    from carbon_callbacks.energy.defaults import build_sensors

    _rapl_tree(tmp_path)
    cpu, _gpu, ram = build_sensors(scope="process", rapl_root=tmp_path, nvml=FakeNVML([]))
    rapl_cpu, cpu_model = cpu._sensors[:2]
    rapl_ram, ram_model = ram._sensors[:2]
    trees = {id(rapl_cpu._share.tree), id(cpu_model._share.tree), id(rapl_ram._share.tree),
             id(ram_model._tree)}
    assert len(trees) == 1
    # each sensor keeps its own baseline over it
    assert len({id(rapl_cpu._share), id(cpu_model._share), id(rapl_ram._share)}) == 3


def test_a_boundary_reads_each_process_once_not_once_per_sensor(tmp_path, monkeypatch):
    from carbon_callbacks.energy.meter import EnergyMeter
    from carbon_callbacks.energy.sensors.process import ProcessTree

    _rapl_tree(tmp_path)
    reads = []
    original = ProcessTree._contribution

    def counted(p):
        reads.append(p.pid)
        return original(p)

    monkeypatch.setattr(ProcessTree, "_contribution", staticmethod(counted))
    m = EnergyMeter(scope="process", rapl_root=tmp_path, nvml=FakeNVML([]), interval=60)
    m.start()
    assert m.methods == {"cpu": "counter", "ram": "counter"}  # both RAPL sensors attribute
    with m._lock:  # keeps the sampler thread out: only the boundary's reads are counted
        time.sleep(0.01)  # past the start() reads
        reads.clear()
        m.mark()
    m.stop()
    assert reads and len(reads) == len(set(reads))  # cpu_times once per process per boundary
