"""The OAuth fast path accepts exactly what oauthlib accepts, for any credentials and URL.

Requests are signed by oauthlib's own client (its signature computation, not ours) for
generated consumer keys, tokens, secrets, URLs, nonces and timestamps, then sent as they
are or tampered with (signature, secret, URL, method, nonce replay, parameter spelling).
An authenticator with the fast path and one that asks oauthlib's ResourceEndpoint for
everything must give the same verdict, the same reason and the same nonce memory; the
requests written the way clients write them must be decided by the fast path itself.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from oauthlib.oauth1 import Client
from oauthlib.oauth1.rfc5849 import signature
from oauthlib.oauth1.rfc5849.utils import escape

from consumer.sandbox import auth
from consumer.sandbox.auth import Authenticator, AuthFailure
from consumer.sandbox.config import AccountConfig
from tests.fakes import FakeClock

NOW = 1_700_000_000
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
# Mostly plain values (the fast path's), sometimes ones that need escaping (oauthlib's).
PLAIN = st.text(UNRESERVED, min_size=1, max_size=40)
ODD = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=20
)
VALUE = st.one_of(PLAIN, PLAIN, PLAIN, ODD)
SECRET = st.one_of(PLAIN, ODD)
HOST = st.text("abcdefghijklmnopqrstuvwxyz0123456789.-", min_size=1, max_size=15)
SEGMENT = st.one_of(
    st.text(UNRESERVED, max_size=10), st.sampled_from(["a b", "%7E", "%41", "~x", ";p", "é"])
)
TAMPER = st.sampled_from(
    [
        "none",
        "none",
        "none",
        "signature",
        "signature_case",
        "secret",
        "url",
        "method",
        "replay",
        "spaces",
        "no_version",
        "double_space",
        "reordered",
    ]
)


@st.composite
def urls(draw: st.DrawFn) -> str:
    scheme = draw(st.sampled_from(["http", "https", "HTTP"]))
    port = draw(st.sampled_from(["", ":8080", ":80", ":443", ":1"]))
    path = "/".join(draw(st.lists(SEGMENT, min_size=1, max_size=4)))
    return f"{scheme}://{draw(HOST)}{port}/{path}"


def _account(consumer_key: str, consumer_secret: str, token: str, token_secret: str) -> Any:
    return AccountConfig(
        account_id="acct",
        pixel_id="pix",
        event_ids=["ev"],
        consumer_key=consumer_key,
        consumer_secret=consumer_secret,
        access_token=token,
        access_token_secret=token_secret,
    )


def _without_version(method: str, url: str, client: Client) -> str:
    params = [
        ("oauth_nonce", str(client.nonce)),
        ("oauth_timestamp", str(client.timestamp)),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_consumer_key", str(client.client_key)),
        ("oauth_token", str(client.resource_owner_key)),
    ]
    base = signature.signature_base_string(
        method.upper(),  # type: ignore[arg-type]  # stubs: a literal
        signature.base_string_uri(url),
        signature.normalize_parameters(params),  # type: ignore[arg-type]  # stubs
    )
    signed = signature.sign_hmac_sha1_with_client(base, client)
    items = [*params, ("oauth_signature", signed)]
    return "OAuth " + ", ".join(f'{key}="{escape(value)}"' for key, value in items)


def _tamper(header: str, how: str) -> str:
    if how == "signature":
        start = header.index('oauth_signature="') + len('oauth_signature="')
        flipped = "A" if header[start] != "A" else "B"
        return header[:start] + flipped + header[start + 1 :]
    if how == "signature_case":  # %2B written %2b: the same signature to oauthlib
        return header.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    if how == "spaces":
        return header.replace(", ", ",")
    if how == "reordered":  # not oauthlib's order: the general split, not the one match
        return "OAuth " + ", ".join(reversed(header.removeprefix("OAuth ").split(", ")))
    if how == "double_space":
        return header.replace("OAuth ", "OAuth  ")
    return header


@settings(max_examples=400, deadline=None)
@given(
    consumer_key=VALUE,
    consumer_secret=SECRET,
    token=VALUE,
    token_secret=SECRET,
    url=urls(),
    nonce=VALUE,
    offset=st.sampled_from([0, -299, 299, -301, 301, 5]),
    method=st.sampled_from(["POST", "PUT", "post"]),
    how=TAMPER,
)
def test_fast_path_agrees_with_oauthlib(
    consumer_key: str,
    consumer_secret: str,
    token: str,
    token_secret: str,
    url: str,
    nonce: str,
    offset: int,
    method: str,
    how: str,
) -> None:
    account = _account(consumer_key, consumer_secret, token, token_secret)
    fast = Authenticator([account], skew_s=300, clock=FakeClock(NOW))
    slow = Authenticator([account], skew_s=300, clock=FakeClock(NOW))
    slow._verify_fast = lambda *args: None  # type: ignore[method-assign]
    client = Client(
        consumer_key,
        client_secret=consumer_secret if how != "secret" else consumer_secret + "x",
        resource_owner_key=token,
        resource_owner_secret=token_secret,
        timestamp=str(NOW + offset),
        nonce=nonce,
    )
    signed_method = "PUT" if how == "method" and method != "PUT" else method
    signed_url = url + "x" if how == "url" else url
    headers = client.sign(signed_url, http_method=signed_method.upper())[1]  # type: ignore[arg-type]
    header: str = headers["Authorization"]
    if how == "no_version":  # oauthlib's client always writes one: its signature functions
        header = _without_version(signed_method, signed_url, client)
    header = _tamper(header, how)
    decided = fast._verify_fast(method, url, header) if how != "replay" else None
    if decided is not None:  # a probe: undo the nonce it spent, then ask for real
        fast.nonces._seen.clear()
    answers = []
    for _ in range(2 if how == "replay" else 1):
        a = fast.verify_oauth(method, url, header)
        b = slow.verify_oauth(method, url, header)
        assert (a.failure, a.accounts) == (b.failure, b.accounts), header
        assert fast.nonces._seen.keys() == slow.nonces._seen.keys()
        answers.append(a)
    if how == "replay":
        assert answers[1].failure in {AuthFailure.REPLAYED_NONCE, answers[0].failure}
    plain = all(set(value) <= set(UNRESERVED) for value in (consumer_key, token, nonce))
    fresh = abs(offset) <= 300
    if how in {"none", "no_version", "reordered"} and plain and fresh and "?" not in url:
        assert decided is not None  # the clients' requests take the fast path
        assert decided.ok
    if decided is not None:
        assert decided.ok, "the fast path only accepts"
    if how == "none":  # the one match and the general split read a header alike
        reordered = _tamper(header, "reordered")
        assert auth._CLIENT_HEADER_RE.fullmatch(reordered) is None
        assert auth._plain_params(header) == auth._plain_params(reordered)


@settings(max_examples=300, deadline=None)
@given(
    consumer_key=PLAIN,
    token=PLAIN,
    nonce=PLAIN,
    timestamp=st.integers(NOW - 10, NOW + 10).map(str),
    version=st.sampled_from([None, "1.0"]),
)
def test_plain_base_string_is_the_general_one(
    consumer_key: str, token: str, nonce: str, timestamp: str, version: str | None
) -> None:
    params = {
        "oauth_consumer_key": consumer_key,
        "oauth_token": token,
        "oauth_nonce": nonce,
        "oauth_timestamp": timestamp,
        "oauth_signature_method": "HMAC-SHA1",
    }
    if version is not None:
        params["oauth_version"] = version
    escaped_uri = "http%3A%2F%2Fh%3A81%2Fp"
    general = auth.signature_base_string("POST", escaped_uri, params)
    plain = auth._plain_base_string(
        f"POST&{escaped_uri}&",
        client_key=consumer_key,
        nonce=nonce,
        timestamp=timestamp,
        token=token,
        version=version,
    )
    assert plain == general
