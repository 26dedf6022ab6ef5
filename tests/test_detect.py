"""`detect`: what each sensor finds, which method each component uses, and the fallback."""

from __future__ import annotations

import os
import subprocess
import sys

from carbon_callbacks.detect import detect_report
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
