"""DeadlineWorker: driver calls made on one thread, each waited for with a bound."""

from __future__ import annotations

import os
import threading
import time

import pytest

from carbon_callbacks.energy.sensors.deadline import (
    MAX_WAIT_S,
    CallTimedOut,
    DeadlineWorker,
)


def worker(name: str) -> DeadlineWorker:
    return DeadlineWorker.acquire(("test", name, time.monotonic()), f"test-deadline-{name}")


def test_a_call_in_time_returns_its_result_or_raises_its_error():
    w = worker("ok")
    assert w.call(lambda x: x * 2, 21) == 42
    with pytest.raises(ZeroDivisionError):
        w.call(lambda: 1 / 0)
    w.release()
    w.thread.join(5)
    assert not w.thread.is_alive()


def test_a_hanging_call_times_out_and_later_calls_fail_at_once():
    release = threading.Event()
    w = worker("hang")
    t = time.perf_counter()
    with pytest.raises(CallTimedOut, match="no answer within 50 ms"):
        w.call(release.wait, 30.0, deadline=0.05)
    first = time.perf_counter() - t
    t = time.perf_counter()
    with pytest.raises(CallTimedOut, match="has not returned"):
        w.call(lambda: "never run")
    second = time.perf_counter() - t
    assert 0.05 <= first < 0.05 + MAX_WAIT_S + 0.5
    assert second < 0.05  # no wait at all, no second thread
    assert w.hanging_s > 0
    release.set()
    deadline = time.monotonic() + 5
    while w.hanging_s and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.call(lambda: "back") == "back"
    w.release()


def test_a_call_the_worker_has_not_begun_is_not_taken_for_a_hang():
    # The worker's thread starts late, as on a machine too busy to run it at once: the
    # deadline counts from when the call begins, within MAX_WAIT_S in all.
    w = DeadlineWorker(("test", "late start", time.monotonic()), "test-deadline-late")
    w._users = 1
    timer = threading.Timer(MAX_WAIT_S / 2, w.thread.start)
    timer.start()
    t = time.perf_counter()
    assert w.call(lambda: "answered", deadline=0.05) == "answered"
    assert time.perf_counter() - t >= MAX_WAIT_S / 2 * 0.9
    w.release()
    w.thread.join(5)


def test_release_runs_the_last_call_after_a_hanging_one_and_then_the_thread_ends():
    release = threading.Event()
    done: list[str] = []
    w = worker("release")
    with pytest.raises(CallTimedOut):
        w.call(release.wait, 30.0, deadline=0.05)
    t = time.perf_counter()
    w.release(lambda: done.append("shutdown"), wait=0.0)
    assert time.perf_counter() - t < 0.05  # release never waits on the hang
    assert done == [] and w.thread.is_alive()
    release.set()
    w.thread.join(5)
    assert done == ["shutdown"] and not w.thread.is_alive()


def test_users_share_one_worker_until_the_last_releases_it():
    key = ("test", "shared", time.monotonic())
    a = DeadlineWorker.acquire(key, "test-deadline-shared")
    b = DeadlineWorker.acquire(key, "test-deadline-shared")
    assert a is b
    a.release()
    assert b.call(lambda: 1) == 1  # still running for b
    b.release()
    b.thread.join(5)
    assert not b.thread.is_alive()
    c = DeadlineWorker.acquire(key, "test-deadline-shared")
    assert c is not a
    c.release()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_worker():
    key = ("test", "fork", time.monotonic())
    parent = DeadlineWorker.acquire(key, "test-deadline-fork")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            child = DeadlineWorker.acquire(key, "test-deadline-fork")
            ok = child is not parent and child.call(lambda: 7) == 7
        except BaseException:  # noqa: BLE001 - reported as a failure
            ok = False
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    parent.release()
    assert answer == b"1"
