"""OAuth's fast path against oauthlib alone: same verdict, reason and nonce memory.

``Authenticator.verify_oauth`` decides plainly written, correctly signed, fresh
requests itself (with oauthlib's normalisation and signing functions) and hands every
other request to oauthlib's ResourceEndpoint. Two authenticators, one with the fast path
switched off, get the same sequence of requests and must answer alike, step by step.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oauthlib.oauth1.rfc5849 import signature
from oauthlib.oauth1.rfc5849.utils import escape

from consumer.sandbox import auth
from consumer.sandbox.auth import Authenticator, AuthResult
from consumer.sandbox.config import DEMO_ACCESS_TOKEN, demo_account
from tests.fakes import FakeClock
from tests.unit.sandbox.test_auth_config import NOW, URL, sign


def twins() -> tuple[Authenticator, Authenticator]:
    fast = Authenticator([demo_account()], skew_s=300, clock=FakeClock(NOW))
    slow = Authenticator([demo_account()], skew_s=300, clock=FakeClock(NOW))
    slow._verify_fast = lambda *args: None  # type: ignore[method-assign]
    return fast, slow


def same(fast: Authenticator, slow: Authenticator, method: str, uri: str, header: Any) -> bool:
    a: AuthResult = fast.verify_oauth(method, uri, header)
    b: AuthResult = slow.verify_oauth(method, uri, header)
    assert (a.failure, a.accounts) == (b.failure, b.accounts), header
    assert fast.nonces._seen.keys() == slow.nonces._seen.keys()
    return a.ok


def variants() -> list[tuple[str, str, str]]:
    good = sign()
    spaced = good.replace(", ", " ,  ").replace("OAuth ", "OAuth  ")
    return [
        ("POST", URL, good),
        ("POST", URL, good),  # replay
        ("POST", URL, sign(nonce="n-2")),
        ("POST", URL, sign(nonce="n 3%2F")),
        ("POST", URL, spaced),
        ("POST", URL, good.replace("OAuth ", "oauth ")),
        ("POST", URL, " " + sign(nonce="n-4")),
        ("POST", URL, good + ', realm="x"'),
        ("POST", URL, sign(nonce="n-5") + ', oauth_nonce="n-6"'),
        ("POST", URL, sign(nonce="n-7").replace('oauth_version="1.0"', 'oauth_version="1.1"')),
        ("POST", URL, sign(nonce="n-8").replace('oauth_version="1.0", ', "")),
        ("POST", URL + "?a=1", sign(URL + "?a=1", nonce="n-9")),
        ("POST", URL + "?a=1", sign(nonce="n-10")),
        ("PUT", URL, sign(nonce="n-11")),
        ("post", URL, sign(nonce="n-12")),
        ("POST", URL.replace("8080", "8081"), sign(nonce="n-13")),
        ("POST", "HTTP://127.0.0.1:8080/12/measurement/conversions/oka17", sign(nonce="n-14")),
        ("POST", URL, sign(nonce="n-15", consumer_secret="wrong")),
        ("POST", URL, sign(nonce="n-15", consumer_secret="wrong")),
        ("POST", URL, sign(nonce="n-16", token="1-other")),
        ("POST", URL, sign(nonce="n-17", timestamp=NOW - 301)),
        ("POST", URL, sign(nonce="n-18", timestamp=NOW + 299)),
        ("POST", URL, sign(nonce="n-19", method="HMAC-SHA256")),
        ("POST", URL, sign(nonce="n-20", method="PLAINTEXT")),
        ("POST", URL, sign(nonce="n-21").replace(f'"{NOW}"', f'"+{NOW - 10**9}"')),
        ("POST", URL, sign(nonce="n-22").replace(f'"{NOW}"', f'"0{NOW}"')),
        ("POST", URL, sign(nonce="n-23").replace("oauth_signature=", "oauth_sig=")),
        ("POST", URL, sign(nonce="n-24").replace('oauth_signature="', 'oauth_signature="x')),
        ("POST", URL, sign(nonce="\u00e9t\u00e9")),
        ("POST", URL, sign(nonce="n" * 257)),
        ("POST", URL, 'OAuth oauth_consumer_key="x'),
        ("POST", URL, 'OAuth oauth_consumer_key="x"'),
        ("POST", URL, "OAuth "),
    ]


def test_fast_path_answers_as_oauthlib_does() -> None:
    fast, slow = twins()
    outcomes = [same(fast, slow, method, uri, header) for method, uri, header in variants()]
    assert outcomes[0]
    assert not outcomes[1]
    assert outcomes[2]


@pytest.mark.parametrize("header", [None, "", "Bearer abc"])
def test_missing(header: str | None) -> None:
    fast, slow = twins()
    same(fast, slow, "POST", URL, header)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["n-1", "n-2", "n-3", "n%41", "n~x", "n+y", "n,z"]),
            st.sampled_from([NOW, NOW - 400, NOW + 100]),
            st.sampled_from(["right", "wrong"]),
            st.sampled_from([DEMO_ACCESS_TOKEN, "1-other"]),
            st.sampled_from([URL, URL + "?q=1", URL.replace("127.0.0.1", "LOCALHOST")]),
        ),
        max_size=8,
    )
)
def test_sequences(steps: list[tuple[str, int, str, str, str]]) -> None:
    fast, slow = twins()
    for nonce, timestamp, secret, token, uri in steps:
        kwargs: dict[str, Any] = {"nonce": nonce, "timestamp": timestamp, "token": token}
        if secret == "wrong":
            kwargs["token_secret"] = "wrong"
        same(fast, slow, "POST", uri, sign(uri if "q=" in uri else URL, **kwargs))


def test_clients_requests_take_the_fast_path() -> None:
    fast, _ = twins()
    result = fast._verify_fast("POST", URL, sign(nonce="fresh"))
    assert result is not None
    assert result.ok


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(auth._OAUTH_KEYS)), TEXT, min_size=1),
    st.sampled_from(["POST", "post", "GET"]),
    st.sampled_from([URL, "https://Example.COM:443/a b/%7E?", "http://h:81/p;q"]),
)
def test_base_string_is_oauthlibs(params: dict[str, str], method: str, uri: str) -> None:
    expected = signature.signature_base_string(
        method,  # type: ignore[arg-type]  # stubs: a literal
        signature.base_string_uri(uri),
        signature.normalize_parameters(list(params.items())),  # type: ignore[arg-type]
    )
    escaped = escape(signature.base_string_uri(uri))
    assert auth.signature_base_string(method, escaped, params) == expected
