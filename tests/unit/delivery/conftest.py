"""A fake monotonic clock for the pure delivery modules."""

from __future__ import annotations

import pytest

from tests.fakes import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
