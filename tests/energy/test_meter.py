"""EnergyMeter: start/stop, marks and windows, restart, with/decorator, threads, degradation."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from carbon_callbacks import EnergyMeter
from carbon_callbacks.energy.sensors.base import FallbackChain, Sensor, SensorError
from carbon_callbacks.records import Energy


class ClockSensor(Sensor):
    """A constant-power source: joules = watts x seconds since open, as a counter."""

    method = "counter"

    def __init__(self, component: str = "cpu", watts: float = 10.0, rel: float = 0.05,
                 poll_interval: float | None = None) -> None:
        self.component = component
        self.watts = watts
        self.rel = rel
        self.poll_interval = poll_interval
        self.t0 = 0.0
        self.samples = 0
        self.opened = 0
        self.closed = 0
        self.is_open = False

    def open(self, now: float) -> None:
        self.t0 = now
        self.opened += 1
        self.is_open = True

    def sample(self, now: float) -> None:
        self.samples += 1

    def totals(self, now: float) -> Energy:
        j = self.watts * (now - self.t0)
        return Energy(j, j * (1 - self.rel), j * (1 + self.rel), self.method, "fake counter")

    def close(self) -> None:
        self.closed += 1
        self.is_open = False


class FailingSensor(ClockSensor):
    """Works for ``good`` reads, then raises SensorError like a vanished file."""

    def __init__(self, good: int, message: str, **kw) -> None:
        super().__init__(**kw)
        self.good = good
        self.message = message  # warnings are once per cause per process: keep causes distinct
        self.reads = 0

    def totals(self, now: float) -> Energy:
        self.reads += 1
        if self.reads > self.good:
            raise SensorError(self.message)
        return super().totals(now)


class ModelSensor(ClockSensor):
    method = "model"

    def totals(self, now: float) -> Energy:
        j = self.watts * (now - self.t0)
        return Energy(j, j * 0.5, j * 1.5, "model", "fake model")


def meter_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("carbon-callbacks-meter")]


def test_window_between_marks_is_power_times_seconds():
    m = EnergyMeter(sensors=[ClockSensor(watts=20.0)]).start()
    a = m.mark()
    time.sleep(0.05)
    b = m.mark()
    w = m.window(a, b)
    m.stop()
    assert w.seconds == pytest.approx(b.monotonic - a.monotonic)
    assert w.component_joules("cpu") == pytest.approx(20.0 * w.seconds, rel=1e-9)
    assert w.power_w == pytest.approx(20.0, rel=1e-9)
    assert w.methods == {"cpu": "counter"}


def test_window_range_comes_from_each_sensor():
    m = EnergyMeter(sensors=[ClockSensor("cpu", 10.0, rel=0.05), ModelSensor("ram", 2.0)])
    m.start()
    a = m.mark()
    time.sleep(0.02)
    b = m.mark()
    w = m.window(a, b)
    m.stop()
    cpu, ram = w.components["cpu"], w.components["ram"]
    assert cpu.low == pytest.approx(cpu.joules * 0.95)
    assert cpu.high == pytest.approx(cpu.joules * 1.05)
    assert ram.low == pytest.approx(ram.joules * 0.5)
    assert ram.high == pytest.approx(ram.joules * 1.5)
    assert w.low == pytest.approx(cpu.low + ram.low)


def test_stop_returns_whole_span_and_joins_named_daemon_thread():
    s = ClockSensor(watts=5.0, poll_interval=0.01)
    m = EnergyMeter(sensors=[s]).start()
    threads = meter_threads()
    assert len(threads) == 1 and threads[0].daemon
    time.sleep(0.1)
    w = m.stop()
    assert not m.running
    assert meter_threads() == []
    assert s.samples >= 3  # the thread polled the source
    assert s.closed == 1
    assert w is not None and w.component_joules("cpu") == pytest.approx(5.0 * w.seconds)
    assert m.stop() is None  # a second stop is harmless


def test_meter_restarts_after_stop_from_zero(monkeypatch):
    now = [0.0]  # the meter's clock, moved by hand (its thread reads it too)
    monkeypatch.setattr("carbon_callbacks.energy.meter.monotonic", lambda: now[0])
    s = ClockSensor(watts=1.0)
    m = EnergyMeter(sensors=[s])
    m.start()
    now[0] = 1.0
    first = m.mark()
    m.stop()
    now[0] = 100.0
    m.start()
    a = m.mark()
    now[0] = 101.0
    b = m.mark()
    now[0] = 102.0
    w2 = m.stop()
    assert s.opened == 2
    assert a.joules["cpu"] == 0.0  # counted from the new start, not the first
    assert m.window(a, b).component_joules("cpu") == pytest.approx(1.0)
    assert w2 is not None and w2.seconds == pytest.approx(2.0)
    with pytest.raises(ValueError, match="different runs"):
        m.window(first, b)


def test_context_manager_stops_thread_even_on_exception():
    m = EnergyMeter(sensors=[ClockSensor(poll_interval=0.01)])
    with pytest.raises(ZeroDivisionError):
        with m:
            assert m.running
            1 / 0  # noqa: B018
    assert not m.running
    assert meter_threads() == []
    assert m.last_window is not None


def test_decorator_measures_each_call():
    m = EnergyMeter(sensors=[ClockSensor(watts=3.0)])

    @m
    def work(x: int) -> int:
        time.sleep(0.02)
        return x * 2

    assert work(21) == 42
    assert not m.running
    assert m.last_window is not None and m.last_window.seconds >= 0.015
    assert m.last_window.component_joules("cpu") == pytest.approx(3.0 * m.last_window.seconds)


def test_mark_is_thread_safe_and_monotone():
    m = EnergyMeter(sensors=[ClockSensor(poll_interval=0.001)]).start()
    readings = []
    lock = threading.Lock()

    def worker():
        for _ in range(200):
            r = m.mark()
            with lock:
                readings.append(r)

    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    m.stop()
    seqs = [r.seq for r in readings]
    assert len(set(seqs)) == 800
    by_seq = sorted(readings, key=lambda r: r.seq)
    js = [r.joules["cpu"] for r in by_seq]
    assert js == sorted(js)


def test_mark_before_start_says_how_to_fix():
    with pytest.raises(RuntimeError, match="start"):
        EnergyMeter(sensors=[ClockSensor()]).mark()


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"interval": 0}, "interval"),
        ({"interval": "1"}, "interval"),
        ({"scope": "node"}, "scope"),
        ({"gpu_ids": [-1]}, "gpu_ids"),
        ({"gpu_ids": "0"}, "gpu_ids"),
        ({"sensors": []}, "sensors"),
        ({"sensors": ["cpu"]}, "sensors"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        EnergyMeter(**kwargs)


def test_window_rejects_reversed_readings():
    m = EnergyMeter(sensors=[ClockSensor()]).start()
    a = m.mark()
    time.sleep(0.01)
    b = m.mark()
    m.stop()
    with pytest.raises(ValueError, match="earlier"):
        m.window(b, a)


def test_midrun_failure_degrades_once_and_is_noted_in_that_window(caplog):
    # start() and a read it, then it fails at b
    primary = FailingSensor(good=2, watts=10.0, message="energy_uj vanished")
    fallback = ModelSensor("cpu", watts=10.0)

    m = EnergyMeter(sensors=[FallbackChain([primary, fallback])])
    with caplog.at_level(logging.WARNING):
        m.start()
        a = m.mark()
        b = m.mark()  # the counter vanishes here: no exception
        c = m.mark()
        d = m.mark()
        m.stop()
    w_ab, w_cd = m.window(a, b), m.window(c, d)
    assert a.methods["cpu"] == "counter" and b.methods["cpu"] == "model"
    assert "energy_uj vanished" in w_ab.components["cpu"].reason
    assert w_ab.components["cpu"].method == "model"
    assert "vanished" not in w_cd.components["cpu"].reason
    warnings = [r for r in caplog.records if "vanished" in r.getMessage()]
    assert len(warnings) == 1
    # joules keep growing across the switch: nothing counted so far is lost
    assert b.joules["cpu"] >= a.joules["cpu"] and d.joules["cpu"] >= c.joules["cpu"]


def test_sensor_failing_with_no_fallback_becomes_unavailable_without_raising():
    m = EnergyMeter(sensors=[FailingSensor(good=1, message="counter file gone")]).start()
    r = m.mark()  # second read fails
    w = m.stop()
    assert r.methods["cpu"] == "unavailable"
    assert w is not None and "counter file gone" in w.components["cpu"].reason


def test_default_meter_measures_cpu_and_ram_here():
    m = EnergyMeter(interval=0.05)
    assert m.methods == {}
    with m:
        assert set(m.methods) >= {"cpu", "ram"}
        assert all(line for line in m.describe())
        time.sleep(0.1)
    assert m.last_window is not None
    assert m.last_window.components["ram"].joules > 0


def test_several_sensors_for_one_component_add_up_with_the_worst_method():
    m = EnergyMeter(sensors=[ClockSensor("gpu", 100.0), ModelSensor("gpu", 50.0)]).start()
    a = m.mark()
    time.sleep(0.02)
    b = m.mark()
    m.stop()
    w = m.window(a, b)
    gpu = w.components["gpu"]
    assert gpu.joules == pytest.approx(150.0 * w.seconds, rel=1e-6)
    assert gpu.method == "model"
    assert gpu.low == pytest.approx(100.0 * w.seconds * 0.95 + 50.0 * w.seconds * 0.5, rel=1e-6)


# ---- regressions: exceptions, stop/start race, window ranges, late polling ----------------


class RaisingSensor(ClockSensor):
    """Fails in the ways a broken driver does: at totals, sample, last_good and close."""

    def __init__(self, *, at_totals: BaseException | None = None, after: int = 0,
                 at_sample: BaseException | None = None, at_close: BaseException | None = None,
                 at_last_good: BaseException | None = None, **kw) -> None:
        super().__init__(**kw)
        self.at_totals, self.after, self.reads = at_totals, after, 0
        self.at_sample, self.at_close, self.at_last_good = at_sample, at_close, at_last_good

    def totals(self, now: float) -> Energy:
        self.reads += 1
        if self.at_totals is not None and self.reads > self.after:
            raise self.at_totals
        return super().totals(now)

    def sample(self, now: float) -> None:
        super().sample(now)
        if self.at_sample is not None:
            raise self.at_sample

    def last_good(self) -> Energy | None:
        if self.at_last_good is not None:
            raise self.at_last_good
        return None

    def close(self) -> None:
        super().close()
        if self.at_close is not None:
            raise self.at_close


def test_second_sensor_failing_at_once_does_not_make_start_raise():
    first = RaisingSensor(at_totals=SensorError("first gone, regression"))
    second = RaisingSensor(at_totals=RuntimeError("bug in the second, regression"))
    m = EnergyMeter(sensors=[FallbackChain([first, second])])
    m.start()  # both fail at the baseline read
    assert m.running
    r = m.mark()
    w = m.stop()
    assert r.methods["cpu"] == "unavailable"
    assert w is not None and "bug in the second" in w.components["cpu"].reason


def test_failed_sensor_whose_close_and_last_good_raise_still_degrades():
    broken = RaisingSensor(at_totals=SensorError("late fail, regression close"), after=1,
                           at_close=OSError("close fails"),
                           at_last_good=OSError("last_good fails"))
    fallback = ModelSensor("cpu", watts=10.0)
    m = EnergyMeter(sensors=[FallbackChain([broken, fallback])]).start()
    a = m.mark()  # fails here; close and last_good raise too
    m.stop()
    assert a.methods["cpu"] == "model"
    assert broken.closed >= 1


def test_sampler_thread_survives_an_error_outside_the_sensors(caplog):
    class BrokenChain(FallbackChain):
        def sample(self, now: float) -> None:
            raise RuntimeError("chain bug, regression")

    broken = BrokenChain([ClockSensor("gpu", poll_interval=0.01)])
    polled = ClockSensor("cpu", poll_interval=0.01)
    m = EnergyMeter(sensors=[broken, polled])
    with caplog.at_level(logging.WARNING):
        m.start()
        time.sleep(0.3)
        alive = [t.is_alive() for t in meter_threads()]
        m.stop()
    assert alive == [True]
    assert polled.samples >= 5  # the other chain keeps being sampled
    assert len([r for r in caplog.records if "chain bug" in str(r.exc_info)]) == 1


def test_start_during_stop_waits_and_does_not_have_its_sensors_closed():
    s = ClockSensor(poll_interval=0.01)
    m = EnergyMeter(sensors=[s]).start()
    thread = m._thread
    in_join = threading.Event()
    original_join = thread.join

    def slow_join(timeout: float | None = None) -> None:
        in_join.set()  # stop() has let go of the lock and is joining the thread
        time.sleep(0.2)
        original_join(timeout)

    thread.join = slow_join
    stopper = threading.Thread(target=m.stop)
    stopper.start()
    assert in_join.wait(5)
    m.start()  # in the gap between the join and the closing of the sensors
    stopper.join()
    assert m.running
    assert s.is_open  # the old stop() closed its sensors before the new start() opened them
    assert (s.opened, s.closed) == (2, 1)
    m.stop()
    assert s.closed == 2


def test_window_with_an_evicted_start_mark_uses_the_relative_range(monkeypatch):
    import carbon_callbacks.energy.marks as marks_module

    monkeypatch.setattr(marks_module, "MAX_MARKS", 5)
    m = EnergyMeter(sensors=[ClockSensor(watts=10.0, rel=0.05)]).start()
    time.sleep(0.2)
    a = m.mark()
    for _ in range(10):  # a's detail is evicted
        m.mark()
    time.sleep(0.02)
    b = m.mark()
    m.stop()
    c = m.window(a, b).components["cpu"]
    # Not the range since start() (high near 2 J) nor a collapsed low (low == j).
    assert c.low < c.joules < c.high <= c.joules * 1.5


def test_window_refuses_readings_of_another_meter():
    other = EnergyMeter(sensors=[ClockSensor(watts=1000.0, rel=0.5)]).start()
    m = EnergyMeter(sensors=[ClockSensor(watts=10.0, rel=0.05)]).start()
    other.mark()
    other.mark()  # other holds details under the seq numbers m's readings carry
    a = m.mark()
    time.sleep(0.02)
    b = m.mark()
    own = other.mark()
    m.stop()
    with pytest.raises(ValueError, match="a is not a reading of this meter"):
        other.window(a, b)
    with pytest.raises(ValueError, match="b is not a reading of this meter"):
        other.window(own, b)
    other.stop()
    assert m.window(a, b).component_joules("cpu") > 0


def test_window_refuses_a_hand_built_reading():
    from carbon_callbacks.records import Reading

    m = EnergyMeter(sensors=[ClockSensor()]).start()
    b = m.mark()
    m.stop()
    with pytest.raises(ValueError, match="built by hand"):
        m.window(Reading(b.monotonic - 1, b.wall - 1, {"cpu": 0.0}), b)


class AgeSensor(ClockSensor):
    """Polls slowly until a boundary read, then fast (as polled power after a mark)."""

    def totals(self, now: float) -> Energy:
        if now > self.t0:
            self.poll_interval = 0.01
        return super().totals(now)


def test_a_mark_wakes_the_thread_so_a_shorter_period_applies_at_once():
    s = AgeSensor(poll_interval=2.0)
    m = EnergyMeter(sensors=[s], interval=5.0).start()
    time.sleep(0.05)
    m.mark()  # the sensor now asks for 10 ms; the thread was asleep for up to 2 s
    time.sleep(0.3)
    m.stop()
    assert s.samples >= 5


def test_a_sensor_that_starts_polling_mid_run_is_sampled():
    s = ClockSensor(poll_interval=None)  # a counter: nothing to poll at start()
    m = EnergyMeter(sensors=[s], interval=0.05).start()
    s.poll_interval = 0.01  # its counter failed over to polled power
    time.sleep(0.3)
    m.stop()
    assert s.samples >= 5


# ---- fork ---------------------------------------------------------------------------------


def _in_forked_child(work) -> dict:
    """Run ``work()`` in a forked child; its dict result (or the error) comes back as JSON."""
    import json
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        os.close(read)
        try:
            out = work()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_meter_inherited_through_fork_reopens_for_the_child_and_says_so():
    import os

    from carbon_callbacks.energy.sensors.cpu_model import CpuModelSensor

    clock = ClockSensor("gpu", watts=10.0, poll_interval=0.01)
    model = CpuModelSensor(scope="process", interval=0.05)
    m = EnergyMeter(sensors=[clock, model]).start()
    before = m.mark()
    parent = os.getpid()

    def child() -> dict:
        messages: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore
        logging.getLogger("carbon_callbacks.energy.meter").addHandler(handler)
        running_at_fork = m.running
        a = m.mark()  # reopens the sensors here
        time.sleep(0.05)
        b = m.mark()
        try:
            m.window(before, b)
            refused = ""
        except ValueError as exc:
            refused = str(exc)
        w = m.window(a, b)
        threads = [t.name for t in meter_threads()]
        m.stop()
        return {
            "running_at_fork": running_at_fork, "opened": clock.opened,
            "tree_pid": model._share.tree.pid, "pid": os.getpid(),
            "joules": w.component_joules("gpu"), "seconds": w.seconds,
            "refused": refused, "messages": messages, "threads": threads,
            "a_from_zero": a.joules["gpu"],
        }

    out = _in_forked_child(child)
    after = m.mark()
    m.stop()
    assert "error" not in out, out
    assert out["running_at_fork"] is False  # the parent's run is not the child's
    assert out["opened"] == 2  # the child opened the sensors again for itself
    assert out["tree_pid"] == out["pid"] != parent  # process scope now follows the child
    assert out["a_from_zero"] < 1.0  # counted from the child's reopening, not the parent's start
    assert out["joules"] == pytest.approx(10.0 * out["seconds"], rel=1e-6)
    assert "not a reading of this meter" in out["refused"]
    assert len(out["threads"]) == 1  # the child's own sampler thread
    assert any(f"started in process {parent}" in msg and "inherited through fork" in msg
               for msg in out["messages"])
    # The parent goes on measuring as before.
    assert m.window(before, after).component_joules("gpu") > 0


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_stop_in_a_forked_child_returns_none_and_leaves_the_parent_running():
    m = EnergyMeter(sensors=[ClockSensor(poll_interval=0.01)]).start()

    def child() -> dict:
        return {"window": m.stop() is not None, "running": m.running}

    out = _in_forked_child(child)
    assert out == {"window": False, "running": False}
    assert m.running and len(meter_threads()) == 1
    assert m.stop() is not None


def test_a_window_is_only_as_good_as_the_worst_reading_inside_it():
    class OnceEstimated(ClockSensor):
        """A counter whose second read was estimated (a refused reading, say)."""

        reads = 0

        def totals(self, now: float) -> Energy:
            self.reads += 1
            t = super().totals(now)
            return Energy(t.joules, t.low, t.high, "model" if self.reads == 3 else "counter")

    m = EnergyMeter(sensors=[OnceEstimated()]).start()  # read 1 at start()
    a, b, c, d = m.mark(), m.mark(), m.mark(), m.mark()  # reads 2 to 5: b was estimated
    m.stop()
    assert b.methods["cpu"] == "model" and c.methods["cpu"] == "counter"
    assert m.window(a, c).methods == {"cpu": "model"}  # b lies inside
    assert m.window(b, c).methods == {"cpu": "counter"}  # b is its start, read before it
    assert m.window(c, d).methods == {"cpu": "counter"}
