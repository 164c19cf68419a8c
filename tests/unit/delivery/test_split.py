from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from consumer.delivery.split import bisection_bound, error_index, plan_isolation


def err(parameter: str, message: str = "bad") -> dict[str, Any]:
    return {"code": "INVALID_PARAMETER", "message": message, "parameter": parameter}


def test_pointers_name_bad_and_rest_is_resent_together() -> None:
    errors = [err("conversions[1].identifiers[0].hashed_email"), err("conversions[3]")]
    plan = plan_isolation(5, errors)
    assert set(plan.bad) == {1, 3}
    assert plan.bad[1] == [errors[0]]
    assert plan.resend == (0, 2, 4)
    assert plan.retry_groups == ((0, 2, 4),)
    assert not plan.bisecting


def test_several_errors_for_one_index_are_grouped() -> None:
    errors = [err("conversions[0].a"), err("conversions[0].b")]
    plan = plan_isolation(1, errors)
    assert plan.bad == {0: errors}
    assert plan.retry_groups == ()


def test_no_pointer_bisects() -> None:
    plan = plan_isolation(5, [err("", "At least one user identifier must be provided")])
    assert plan.bad == {}
    assert plan.halves == ((0, 1), (2, 3, 4))
    assert plan.retry_groups == plan.halves


def test_out_of_range_index_is_treated_as_no_pointer() -> None:
    plan = plan_isolation(2, [err("conversions[7].x")])
    assert plan.bisecting


def test_single_rejected_event_is_bad() -> None:
    errors = [err("conversion_time")]
    plan = plan_isolation(1, errors)
    assert plan.bad == {0: errors}
    assert plan.retry_groups == ()


def test_error_index_parsing() -> None:
    assert error_index(err("conversions[12].identifiers[0]")) == 12
    assert error_index(err("identifiers[1]")) is None
    assert error_index({"code": "X"}) is None


def _simulate(n: int, bad: set[int]) -> tuple[set[int], int]:
    """Drive plan_isolation like the engine would against an all-or-nothing server
    that names no index; returns (found bad, extra requests)."""
    found: set[int] = set()
    requests = 0

    def send(members: Sequence[int]) -> None:
        nonlocal requests
        requests += 1
        if not bad.intersection(members):
            return
        handle(members, [err("")])

    def handle(members: Sequence[int], errors: Sequence[Mapping[str, Any]]) -> None:
        plan = plan_isolation(len(members), errors)
        found.update(members[i] for i in plan.bad)
        for group in plan.retry_groups:
            send([members[i] for i in group])

    handle(list(range(n)), [err("")])
    return found, requests


@given(
    st.integers(min_value=1, max_value=500).flatmap(
        lambda n: st.tuples(st.just(n), st.sets(st.integers(0, n - 1), min_size=1, max_size=8))
    )
)
def test_bisection_finds_exactly_the_bad_events_within_the_bound(
    case: tuple[int, set[int]],
) -> None:
    n, bad = case
    found, requests = _simulate(n, bad)
    assert found == bad
    assert requests <= bisection_bound(n, len(bad))


def test_bound_values() -> None:
    assert bisection_bound(500, 1) == 2 * math.ceil(math.log2(500)) == 18
    assert bisection_bound(1, 1) == 0
    assert bisection_bound(8, 2) == 12
