"""bench.common.thread_cpu_s: which thread's CPU lands in which group (bench/, Linux)."""

from __future__ import annotations

import os
import threading
import time

from bench.common import THREAD_GROUPS, thread_cpu_s


def _burn(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_busy_helper_thread_counts_as_other_and_the_main_thread_as_loop() -> None:
    before = thread_cpu_s(os.getpid())
    assert set(before) == set(THREAD_GROUPS)
    burned, release = threading.Event(), threading.Event()

    def helper() -> None:
        _burn(0.3)
        burned.set()
        release.wait(30)  # stays alive until its CPU has been read

    thread = threading.Thread(target=helper)
    thread.start()
    _burn(0.15)  # the main thread: the loop group
    assert burned.wait(30)
    during = thread_cpu_s(os.getpid())
    release.set()
    thread.join(30)
    after = thread_cpu_s(os.getpid())
    assert during["other"] - before["other"] >= 0.2
    assert during["loop"] - before["loop"] >= 0.1
    assert during["librdkafka"] == before["librdkafka"]
    assert after["other"] <= during["other"] - 0.2  # the helper has ended: gone from the sum
