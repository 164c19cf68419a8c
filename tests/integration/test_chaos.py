"""A small run of the chaos harness (bench/chaos.py) as a test: its verdict must be PASS.

Real broker, real sandbox with faults, three consumer processes, two SIGKILLs and one
broker restart. The harness checks zero loss, dead letters with their reasons, committed
offsets per Kafka's own tool and bounded duplicates; this test asserts each of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.chaos import run_chaos

pytestmark = [pytest.mark.kafka, pytest.mark.sandbox, pytest.mark.slow]


@pytest.mark.timeout(600)
def test_chaos_small_run_loses_nothing(tmp_path: Path) -> None:
    result = run_chaos(events=20_000, kills=2, seed=7, broker_restart=True, workdir=tmp_path)
    assert result.missing == 0, result.report()
    assert result.invalid_missing == 0, result.report()
    assert result.wrong_reason == 0, result.report()
    assert result.unexpected_dlq == 0, result.report()
    assert result.partitions_behind == {}, result.report()
    assert len(result.kills) == 2
    assert result.broker_restarts == 1
    assert result.duplicates <= result.duplicate_bound, result.report()
    assert result.valid + result.invalid == 20_000
    assert result.ok, result.report()
