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
    helper = threading.Thread(target=_burn, args=(0.3,))
    helper.start()
    _burn(0.15)  # the main thread: the loop group
    seen_other = 0.0  # the most read while the helper lived (an ended thread is missing)
    while helper.is_alive():
        during = thread_cpu_s(os.getpid())
        seen_other = max(seen_other, during["other"] - before["other"])
        assert during["librdkafka"] == before["librdkafka"]
        helper.join(0.02)
    after = thread_cpu_s(os.getpid())
    assert seen_other >= 0.1
    assert after["loop"] - before["loop"] >= 0.1
    assert after["other"] <= before["other"] + 0.05  # the helper has ended: gone from the sum
