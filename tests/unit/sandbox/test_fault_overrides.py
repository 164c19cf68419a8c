"""The sandbox's engine-v2 faults: header overrides, HTML error pages, partial 200s."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from consumer.sandbox.config import FaultConfig
from consumer.sandbox.faults import html_error_page, processed_count


def test_defaults_change_nothing() -> None:
    faults = FaultConfig()
    assert faults.header_overrides == {}
    assert faults.error_page_html is False
    assert faults.processed_shortfall == 0


def test_odd_header_values_are_accepted_as_given() -> None:
    odd = {"x-rate-limit-remaining": "inf", "x-rate-limit-reset": "garbage", "Retry-After": "-1"}
    assert FaultConfig(header_overrides=odd).header_overrides == odd


@pytest.mark.parametrize("name", ["", "bad name", "x:y", "x\r\ny", "é"])
def test_header_names_must_be_tokens(name: str) -> None:
    with pytest.raises(ValidationError, match="header name"):
        FaultConfig(header_overrides={name: "1"})


@pytest.mark.parametrize("value", ["1\r\nx-injected: 1", "a\nb", "nul\0"])
def test_header_values_must_be_one_line(value: str) -> None:
    with pytest.raises(ValidationError, match="one line"):
        FaultConfig(header_overrides={"x-rate-limit-remaining": value})


def test_shortfall_cannot_be_negative() -> None:
    with pytest.raises(ValidationError):
        FaultConfig(processed_shortfall=-1)


@given(st.integers(min_value=0, max_value=1000), st.integers(min_value=0, max_value=2000))
def test_processed_count_is_a_shortfall_never_below_zero(sent: int, shortfall: int) -> None:
    processed = processed_count(sent, shortfall)
    assert 0 <= processed <= sent
    assert processed == sent - shortfall or (processed == 0 and shortfall >= sent)


def test_html_error_page_is_html_not_json() -> None:
    page = html_error_page(404, "Not Found")
    assert page.startswith("<!DOCTYPE html>")
    assert "<title>404 Not Found</title>" in page
    assert "{" not in page
