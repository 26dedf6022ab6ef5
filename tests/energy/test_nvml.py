"""NVML on a fake pynvml: energy counter, polled power by trapezoid, GPU selection, MIG, errors."""

from __future__ import annotations

import math
import time

import pytest

from carbon_callbacks import EnergyMeter
from carbon_callbacks.energy.sensors.nvml import NvmlSensor, lookup_gpu_tdp, parse_visible
from carbon_callbacks.testing import FakeGPU, FakeNVML, FakeNVMLError


class Clock:
    """A hand-driven clock shared by the fake NVML and the sensor's ``now``."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def two_gpus(**kw) -> list[FakeGPU]:
    return [
        FakeGPU(name="NVIDIA A100-SXM4-80GB", uuid="GPU-aaaa", power_w=lambda t: 200.0, **kw),
        FakeGPU(name="NVIDIA A100-SXM4-80GB", uuid="GPU-bbbb", power_w=lambda t: 300.0, **kw),
    ]


def gpu_meter(nv, **kw) -> EnergyMeter:
    kw.setdefault("scope", "machine")
    return EnergyMeter(nvml=nv, rapl_root="/nonexistent", **kw)


def test_energy_counter_gives_the_true_energy():
    clock = Clock()
    nv = FakeNVML([FakeGPU(power_w=lambda t: 250.0 + 50.0 * math.sin(t))], clock=clock)
    s = NvmlSensor(nvml=nv, scope="machine", env={})
    s.open(0.0)
    assert s.method == "counter" and s.poll_interval is None  # nothing for the thread to do
    clock.t = 7.5
    t = s.totals(7.5)
    s.close()
    assert t.joules == pytest.approx(nv.energy_j(0, 0.0, 7.5), rel=1e-3)
    assert t.low == pytest.approx(t.joules * 0.95, rel=1e-6)
    assert t.high == pytest.approx(t.joules * 1.05, rel=1e-6)


def test_unsupported_counter_polls_power_at_10hz_and_integrates_within_2_percent():
    clock = Clock()
    trace = lambda t: 150.0 + 100.0 * math.sin(2 * math.pi * t / 3.0) + (80.0 if t > 2 else 0)  # noqa: E731
    nv = FakeNVML([FakeGPU(power_w=trace, energy_counter=False)], clock=clock)
    s = NvmlSensor(nvml=nv, scope="machine", env={}, max_poll_hz=10)
    s.open(0.0)
    assert s.method == "polled" and s.poll_interval == pytest.approx(0.1)
    for i in range(1, 60):  # the meter's thread at 10 Hz
        clock.t = i * 0.1
        s.sample(clock.t)
    clock.t = 6.0
    t = s.totals(6.0)
    truth = nv.energy_j(0, 0.0, 6.0)
    assert t.method == "polled"
    assert t.joules == pytest.approx(truth, rel=0.02)
    assert t.low <= truth <= t.high
    assert "polled" in t.reason and "no energy counter" in t.reason


def test_polled_power_through_the_meter_thread_within_2_percent():
    trace = lambda t: 120.0 + 60.0 * math.sin(2 * math.pi * t / 4.0)  # noqa: E731
    nv = FakeNVML([FakeGPU(power_w=trace, energy_counter=False)])
    m = gpu_meter(nv, interval=1.0)
    m.start()
    t0 = nv.clock()
    a = m.mark()
    time.sleep(3.0)
    b = m.mark()
    t1 = nv.clock()
    m.stop()
    w = m.window(a, b)
    gpu = w.components["gpu"]
    truth = nv.energy_j(0, t0, t1)
    assert gpu.method == "polled"
    assert nv.gpus[0].calls["power"] >= 25  # sampled at about 10 Hz by the thread
    assert gpu.joules == pytest.approx(truth, rel=0.02)


def square(t: float) -> float:
    """60 W / 240 W, 173 ms period: steps that a 10 Hz sampler cannot follow."""
    return 240.0 if t % 0.173 < 0.0865 else 60.0


def polled_windows(s: NvmlSensor, nv: FakeNVML, clock: Clock, windows: int,
                   seconds: float) -> list[float]:
    """Drive the sensor as the meter does (thread samples at its poll_interval, a boundary
    read every ``seconds``); returns each window's relative error against the truth."""
    s.open(0.0)
    errors, before = [], s.totals(0.0).joules
    for k in range(1, windows + 1):
        end = k * seconds
        while clock.t + s.poll_interval < end:
            clock.t += s.poll_interval
            s.sample(clock.t)
        clock.t = end
        after = s.totals(end).joules
        truth = nv.energy_j(0, end - seconds, end)
        errors.append((after - before - truth) / truth)
        before = after
    return errors


def test_polling_is_fastest_right_after_a_boundary_and_slows_with_the_window_age():
    clock = Clock()
    nv = FakeNVML([FakeGPU(power_w=square, energy_counter=False)], clock=clock)
    s = NvmlSensor(nvml=nv, scope="machine", env={})
    s.open(0.0)
    assert s.poll_interval == pytest.approx(0.01)  # 100 Hz at the start of a window
    clock.t = 5.0
    s.sample(5.0)
    assert s.poll_interval == pytest.approx(0.05)  # 100 samples over the window's 5 s so far
    clock.t = 30.0
    s.sample(30.0)
    assert s.poll_interval == pytest.approx(0.1)  # an old window: back to poll_hz
    s.totals(30.0)
    assert s.poll_interval == pytest.approx(0.01)  # a boundary starts a new window


def test_one_second_windows_of_a_fast_square_wave_within_5_percent():
    clock = Clock()
    nv = FakeNVML([FakeGPU(power_w=square, energy_counter=False)], clock=clock)
    errors = polled_windows(NvmlSensor(nvml=nv, scope="machine", env={}), nv, clock, 30, 1.0)
    assert max(abs(e) for e in errors) <= 0.05


def test_a_fixed_10hz_rate_misses_the_same_square_wave_by_more_than_5_percent():
    # The case the adaptive rate is for: the same windows sampled at 10 Hz throughout.
    clock = Clock()
    nv = FakeNVML([FakeGPU(power_w=square, energy_counter=False)], clock=clock)
    s = NvmlSensor(nvml=nv, scope="machine", env={}, max_poll_hz=10)
    errors = polled_windows(s, nv, clock, 30, 1.0)
    assert max(abs(e) for e in errors) > 0.05


def test_the_range_of_a_polled_window_holds_the_truth():
    clock = Clock()
    nv = FakeNVML([FakeGPU(power_w=square, energy_counter=False)], clock=clock)
    s = NvmlSensor(nvml=nv, scope="machine", env={})
    s.open(0.0)
    while clock.t < 2.0:
        clock.t += s.poll_interval
        s.sample(clock.t)
    t = s.totals(clock.t)
    assert t.low <= nv.energy_j(0, 0.0, clock.t) <= t.high


def test_one_gpu_of_two_selected_by_gpu_ids():
    clock = Clock()
    nv = FakeNVML(two_gpus(), clock=clock)
    s = NvmlSensor(nvml=nv, gpu_ids=(1,), env={})
    s.open(0.0)
    clock.t = 2.0
    t = s.totals(2.0)
    assert t.joules == pytest.approx(600.0, rel=1e-3)  # only the 300 W one
    assert t.devices == ("NVIDIA A100-SXM4-80GB [1]",)


def test_cuda_visible_devices_maps_ordinals_to_physical_gpus():
    clock = Clock()
    nv = FakeNVML(two_gpus(), clock=clock)
    s = NvmlSensor(nvml=nv, env={"CUDA_VISIBLE_DEVICES": "1"})
    s.open(0.0)
    clock.t = 1.0
    assert s.totals(1.0).joules == pytest.approx(300.0, rel=1e-3)
    s.close()
    s = NvmlSensor(nvml=nv, env={"CUDA_VISIBLE_DEVICES": "GPU-aaaa"})
    s.open(1.0)
    clock.t = 2.0
    assert s.totals(2.0).joules == pytest.approx(200.0, rel=1e-3)


def test_ddp_rank_measures_only_its_own_gpu():
    clock = Clock()
    nv = FakeNVML(two_gpus(), clock=clock)
    s = NvmlSensor(nvml=nv, env={"LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "0,1"})
    s.open(0.0)
    clock.t = 1.0
    assert s.totals(1.0).joules == pytest.approx(300.0, rel=1e-3)
    assert "LOCAL_RANK=1" in s.reason


def test_machine_scope_takes_every_gpu():
    clock = Clock()
    nv = FakeNVML(two_gpus(), clock=clock)
    s = NvmlSensor(nvml=nv, scope="machine", env={"CUDA_VISIBLE_DEVICES": "0"})
    s.open(0.0)
    clock.t = 1.0
    assert s.totals(1.0).joules == pytest.approx(500.0, rel=1e-3)


def test_mig_instance_is_charged_its_share_of_the_parent_gpu():
    clock = Clock()
    gpu = FakeGPU(uuid="GPU-mig", power_w=lambda t: 400.0,
                  mig_instances=("MIG-one", "MIG-two", "MIG-three", "MIG-four"))
    nv = FakeNVML([gpu], clock=clock)
    s = NvmlSensor(nvml=nv, env={"CUDA_VISIBLE_DEVICES": "MIG-two"})
    s.open(0.0)
    clock.t = 1.0
    t = s.totals(1.0)
    assert t.joules == pytest.approx(100.0, rel=1e-3)
    assert "MIG: 1 of 4 instances" in t.reason


def test_no_counter_and_no_power_falls_back_to_the_labelled_model():
    clock = Clock()
    nv = FakeNVML([FakeGPU(energy_counter=False, power_supported=False)], clock=clock)
    s = NvmlSensor(nvml=nv, env={})
    s.open(0.0)
    for i in range(1, 11):
        clock.t = i * 0.1
        s.sample(clock.t)
    t = s.totals(1.0)
    assert t.method == "model"
    # power limit 700 W x (0.2 + 0.8 x 50% utilisation) for 1 s
    assert t.joules == pytest.approx(700 * 0.6, rel=1e-6)
    assert t.low == pytest.approx(t.joules * 0.5) and "not supported" in t.reason


def test_nvml_initialised_once_and_shut_down_at_stop():
    nv = FakeNVML(two_gpus())
    m = gpu_meter(nv)
    m.start()
    m.mark()
    m.mark()
    assert nv.init_calls == 1 and nv.shutdown_calls == 0
    m.stop()
    assert nv.shutdown_calls == 1 and nv.initialised == 0
    m.start()
    m.stop()
    assert nv.init_calls == 2 and nv.shutdown_calls == 2


def test_no_driver_means_no_gpu_component_and_says_why():
    nv = FakeNVML([], init_error=12)
    m = gpu_meter(nv).start()
    r = m.mark()
    m.stop()
    assert "gpu" not in r.joules
    assert any("gpu: not measured" in line and "NVML could not start" in line
               for line in m.describe())


def test_gpu_lost_midrun_degrades_to_polling_and_never_raises(monkeypatch):
    clock = Clock()
    # One clock for the meter and the GPU.
    monkeypatch.setattr("carbon_callbacks.energy.meter.monotonic", clock)
    gpus = two_gpus()
    nv = FakeNVML(gpus, clock=clock)
    m = EnergyMeter(sensors=[NvmlSensor(nvml=nv, scope="machine", env={})])
    m.start()
    a = m.mark()
    clock.t = 1.0
    b = m.mark()
    gpus[0].energy_counter = False  # the counter stops answering...
    gpus[0].calls.clear()
    clock.t = 2.0
    c = m.mark()  # ...and this read degrades, without raising
    clock.t = 3.0
    d = m.mark()
    m.stop()
    assert m.window(a, b).component_joules("gpu") == pytest.approx(500.0, rel=1e-3)
    w_bc = m.window(b, c)
    assert w_bc.components["gpu"].method == "polled"
    assert "counter failed" in w_bc.components["gpu"].reason
    assert "counter failed" not in m.window(c, d).components["gpu"].reason
    assert m.window(c, d).component_joules("gpu") == pytest.approx(500.0, rel=1e-3)
    # the unread second before the failure is filled at the polled power, inside the range
    assert w_bc.component_joules("gpu") == pytest.approx(500.0, rel=1e-3)
    assert w_bc.components["gpu"].high - w_bc.components["gpu"].low >= 2 * 200.0


def test_parse_visible_follows_cuda_rules():
    assert parse_visible(None) is None
    assert parse_visible("") == []
    assert parse_visible("0, 2,x,3") == ["0", "2"]
    assert parse_visible("GPU-ab,MIG-cd") == ["GPU-ab", "MIG-cd"]


def test_gpu_table_lookup_and_fixed_rows():
    assert lookup_gpu_tdp("NVIDIA A100 80GB PCIe") == ("A100 PCIe 80GB", 300.0)
    assert lookup_gpu_tdp("NVIDIA GeForce GTX 750")[1] == 55.0
    assert lookup_gpu_tdp("Tesla T4")[1] == 70.0
    assert lookup_gpu_tdp("NVIDIA A10G")[1] == 150.0


def test_bad_poll_rate_is_refused():
    with pytest.raises(ValueError, match="poll_hz"):
        NvmlSensor(nvml=FakeNVML([]), poll_hz=2)
    with pytest.raises(ValueError, match="max_poll_hz"):
        NvmlSensor(nvml=FakeNVML([]), poll_hz=20, max_poll_hz=10)


def test_fake_error_carries_not_supported_code():
    assert FakeNVMLError(3).value == FakeNVML.NVML_ERROR_NOT_SUPPORTED


def test_gpu_lost_entirely_keeps_what_was_counted_and_never_raises():
    clock = Clock()
    nv = FakeNVML([FakeGPU(power_w=lambda t: 100.0, fail_after=1.5)], clock=clock)
    s = NvmlSensor(nvml=nv, scope="machine", env={})
    s.open(0.0)
    clock.t = 1.0
    assert s.totals(1.0).joules == pytest.approx(100.0, rel=1e-3)
    clock.t = 2.0
    t = s.totals(2.0)  # counter, power and utilisation all fail now
    assert t.method == "unavailable"
    assert t.joules >= 100.0 * 0.999
    assert "GPU is lost" in t.reason
    s.close()


def test_sxm_table_name_matches_nvml_name():
    assert lookup_gpu_tdp("NVIDIA A100-SXM4-80GB") == ("A100 SXM4 80 GB", 400.0)


def test_the_fake_works_as_an_imported_pynvml_module(monkeypatch):
    import sys

    clock = Clock()
    fake = FakeNVML([FakeGPU(name="NVIDIA A100-SXM4-40GB", power_w=lambda t: 250.0,
                             energy_j=lambda t: 250.0 * t, power_limit_w=400.0)], clock=clock)
    module = fake.as_module()
    monkeypatch.setitem(sys.modules, "pynvml", module)
    import pynvml

    assert pynvml is module
    pynvml.nvmlInitWithFlags(0)
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    assert pynvml.nvmlDeviceGetName(h) == "NVIDIA A100-SXM4-40GB"
    assert pynvml.nvmlDeviceGetPowerManagementLimit(h) == 400_000
    assert pynvml.nvmlDeviceGetMemoryInfo(h).total == 80 << 30
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetFanSpeed(h)  # not modelled: NOT_SUPPORTED, as on a board without it
    pynvml.nvmlShutdown()
    s = NvmlSensor(scope="machine", env={})  # imports pynvml itself
    s.open(0.0)
    clock.t = 2.0
    t = s.totals(2.0)
    s.close()
    assert t.method == "counter" and "400 W" in t.reason
    assert t.joules == pytest.approx(500.0, rel=1e-3)
