"""The per-URL OAuth 1.0a template signs exactly as oauthlib's ``Client.sign`` does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.delivery.auth import OAuth1Auth

text = st.text(alphabet=st.characters(codec="utf-8"), min_size=1)
path = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%20", min_size=1, max_size=20)


@settings(max_examples=300)
@given(
    key=text,
    secret=text,
    token=text,
    token_secret=text,
    host=st.sampled_from(["127.0.0.1:8080", "ads-api.example", "EXAMPLE.com:443", "h:80"]),
    scheme=st.sampled_from(["http", "https"]),
    pixel=path,
    nonce=st.integers(0, 2**80).map(str),
    timestamp=st.integers(0, 2**40).map(str),
    method=st.sampled_from(["POST", "post", "GET"]),
)
def test_template_header_is_byte_identical_to_oauthlibs(
    key: str,
    secret: str,
    token: str,
    token_secret: str,
    host: str,
    scheme: str,
    pixel: str,
    nonce: str,
    timestamp: str,
    method: str,
) -> None:
    auth = OAuth1Auth(key, secret, token, token_secret)
    url = f"{scheme}://{host}/12/measurement/conversions/{pixel}"
    fast = auth.sign(method, url, nonce, timestamp)
    assert fast == auth.sign_reference(method, url, nonce, timestamp)
    assert auth.sign(method, url, nonce, timestamp) == fast  # cached template, same answer


def test_a_query_string_or_an_odd_nonce_takes_oauthlib_itself() -> None:
    auth = OAuth1Auth("ck", "cs", "at", "ats")
    url = "https://h/12/measurement/conversions/p?b=1&a=2"
    assert auth.sign("POST", url, "123", "456") == auth.sign_reference("POST", url, "123", "456")
    plain = "https://h/12/measurement/conversions/p"
    assert auth.sign("POST", plain, "n-1", "456") == auth.sign_reference(
        "POST", plain, "n-1", "456"
    )


def test_every_header_has_a_fresh_nonce_and_no_secret() -> None:
    secrets = ("consumer-secret-value", "token-secret-value")
    auth = OAuth1Auth("ck", secrets[0], "at", secrets[1])
    url = "https://h/12/measurement/conversions/p"
    headers = {auth.headers("POST", url)["Authorization"] for _ in range(50)}
    assert len(headers) == 50
    assert not any(secret in header for secret in secrets for header in headers)
