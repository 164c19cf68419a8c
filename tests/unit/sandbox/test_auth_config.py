"""OAuth 1.0a verification through oauthlib, pixel tokens, nonce memory, config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from oauthlib.oauth1 import Client

from consumer.errors import ConfigError
from consumer.sandbox.auth import Authenticator, AuthFailure, NonceStore
from consumer.sandbox.config import (
    DEMO_ACCESS_TOKEN,
    DEMO_ACCESS_TOKEN_SECRET,
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    DEMO_PIXEL_TOKEN,
    AccountConfig,
    demo_account,
    load_config,
    parse_config,
)
from tests.fakes import FakeClock

URL = "http://127.0.0.1:8080/12/measurement/conversions/oka17"
NOW = 1_700_000_000


def sign(
    url: str = URL,
    *,
    timestamp: int = NOW,
    nonce: str = "nonce-0001",
    consumer_secret: str = DEMO_CONSUMER_SECRET,
    token: str = DEMO_ACCESS_TOKEN,
    token_secret: str = DEMO_ACCESS_TOKEN_SECRET,
    method: str = "HMAC-SHA1",
) -> str:
    client = Client(
        DEMO_CONSUMER_KEY,
        client_secret=consumer_secret,
        resource_owner_key=token,
        resource_owner_secret=token_secret,
        timestamp=str(timestamp),
        nonce=nonce,
        signature_method=method,
    )
    header: str = client.sign(url, http_method="POST")[1]["Authorization"]
    return header


def make(clock: FakeClock | None = None, *accounts: AccountConfig) -> Authenticator:
    return Authenticator(accounts or [demo_account()], skew_s=300, clock=clock or FakeClock(NOW))


def test_valid_signature() -> None:
    result = make().verify_oauth("POST", URL, sign())
    assert result.ok
    assert result.accounts == frozenset({"18ce552mlaq"})


def test_host_and_port_are_normalised_like_clients_do() -> None:
    signed = sign("HTTP://127.0.0.1:80/12/measurement/conversions/oka17")
    assert (
        make().verify_oauth("POST", "http://127.0.0.1/12/measurement/conversions/oka17", signed).ok
    )


@pytest.mark.parametrize(
    ("header", "uri", "method", "failure"),
    [
        (None, URL, "POST", AuthFailure.MISSING),
        ("Bearer abc", URL, "POST", AuthFailure.MISSING),
        ('OAuth oauth_consumer_key="x', URL, "POST", AuthFailure.MALFORMED),
        ('OAuth oauth_consumer_key="x"', URL, "POST", AuthFailure.MALFORMED),
        (sign(consumer_secret="wrong"), URL, "POST", AuthFailure.BAD_SIGNATURE),
        (sign(token_secret="wrong"), URL, "POST", AuthFailure.BAD_SIGNATURE),
        (sign(), URL.replace("8080", "8081"), "POST", AuthFailure.BAD_SIGNATURE),
        (sign(), URL + "?a=1", "POST", AuthFailure.BAD_SIGNATURE),
        (sign(), URL, "PUT", AuthFailure.BAD_SIGNATURE),
        (sign(token="1-other"), URL, "POST", AuthFailure.UNKNOWN_TOKEN),
        (sign(timestamp=NOW - 301), URL, "POST", AuthFailure.STALE_TIMESTAMP),
        (sign(timestamp=NOW + 301), URL, "POST", AuthFailure.STALE_TIMESTAMP),
        (sign(method="HMAC-SHA256"), URL, "POST", AuthFailure.MALFORMED),
        (sign(method="PLAINTEXT"), URL, "POST", AuthFailure.MALFORMED),
    ],
)
def test_failures(header: str | None, uri: str, method: str, failure: AuthFailure) -> None:
    result = make().verify_oauth(method, uri, header)
    assert not result.ok
    assert result.failure is failure


def test_timestamp_within_skew_passes() -> None:
    assert make().verify_oauth("POST", URL, sign(timestamp=NOW - 299)).ok
    assert make().verify_oauth("POST", URL, sign(timestamp=NOW + 299)).ok


def test_replayed_nonce() -> None:
    auth = make()
    header = sign(nonce="same-nonce")
    assert auth.verify_oauth("POST", URL, header).ok
    assert auth.verify_oauth("POST", URL, header).failure is AuthFailure.REPLAYED_NONCE
    assert auth.verify_oauth("POST", URL, sign(nonce="other-nonce")).ok


def test_nonce_store_forgets_after_ttl_and_stays_bounded() -> None:
    clock = FakeClock(NOW)
    store = NonceStore(ttl_s=600, capacity=3, clock=clock)
    assert store.first_use(("c", "t", "1"))
    assert not store.first_use(("c", "t", "1"))
    assert store.first_use(("c", "t2", "1"))  # same nonce, other token
    clock.now += 601
    assert store.first_use(("c", "t", "1"))
    assert len(store) == 1
    for n in range(10):
        store.first_use(("c", "t", f"n{n}"))
    assert len(store) <= 3


def test_pixel_token() -> None:
    auth = make()
    assert auth.verify_pixel_token("18ce552mlaq", DEMO_PIXEL_TOKEN).ok
    assert auth.verify_pixel_token("18ce552mlaq", "nope").failure is AuthFailure.BAD_PIXEL_TOKEN
    assert not auth.verify_pixel_token("other", DEMO_PIXEL_TOKEN).ok
    no_token = demo_account().model_copy(update={"pixel_token": None})
    assert not make(None, no_token).verify_pixel_token("18ce552mlaq", DEMO_PIXEL_TOKEN).ok


def test_shared_credentials_cover_several_accounts() -> None:
    second = demo_account().model_copy(update={"account_id": "acct2", "pixel_id": "pix2"})
    result = make(None, demo_account(), second).verify_oauth("POST", URL, sign())
    assert result.accounts == frozenset({"18ce552mlaq", "acct2"})


# ------------------------------------------------------------------ config

TOML = """
seed = 42
public_base_url = "http://sandbox:8080"

[faults]
error_503_retry_after = 0.05
reject_conversion_ids = ["order-13"]

[[accounts]]
account_id = "acct1"
pixel_id = "pix1"
event_ids = ["ev1", "ev2"]
consumer_key = "ck"
consumer_secret = "cs"
access_token = "at"
access_token_secret = "ats"
pixel_token = "pt"
status_override = 403

[accounts.rate_limit]
requests_per_window = 10
events_per_window = 5000
window_s = 60
"""


def test_toml_and_json_files(tmp_path: Path) -> None:
    toml_path = tmp_path / "sandbox.toml"
    toml_path.write_text(TOML)
    config = load_config(toml_path)
    assert config.seed == 42
    assert config.accounts[0].event_ids == ["ev1", "ev2"]
    assert config.accounts[0].rate_limit.events_per_window == 5000
    assert config.accounts[0].status_override == 403
    assert config.faults.reject_conversion_ids == ["order-13"]
    json_path = tmp_path / "sandbox.json"
    json_path.write_text(json.dumps(config.model_dump()))
    assert load_config(json_path) == config


def test_empty_config_is_the_demo_account() -> None:
    config = parse_config({})
    assert config.accounts == [demo_account()]
    assert config.accounts[0].rate_limit.requests_per_window == 100_000
    assert config.accounts[0].rate_limit.window_s == 900


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"faults": {"error_500": 2}}, "faults.error_500"),
        ({"faults": {"error_500": 0.7, "hang": 0.7}}, "faults"),
        ({"unknown": 1}, "unknown"),
        ({"accounts": [{"account_id": "a"}]}, "accounts.0.pixel_id"),
        ({"public_base_url": "sandbox:8080"}, "sandbox"),
    ],
)
def test_invalid_configs(data: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.setting == where


def test_duplicate_pixels_rejected() -> None:
    account = demo_account().model_dump()
    with pytest.raises(ConfigError, match="listed twice"):
        parse_config({"accounts": [account, {**account, "account_id": "other"}]})


@pytest.mark.parametrize("name", ["x.yaml", "missing.json"])
def test_unreadable_files(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith("yaml"):
        path.write_text("a: 1")
    with pytest.raises(ConfigError):
        load_config(path)
