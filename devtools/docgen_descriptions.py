"""One line per setting for docs/configuration.md, where the model has no ``description``.

The generator fails on a setting missing here (and without ``Field(description=...)``) and
on an entry here for a setting that no longer exists, so this list stays complete and
true. Moving a text into the model as ``Field(description=...)`` wins over this list; do
that and delete the entry. ``section.*`` covers every key of a section (``{key}`` is the
key's name).
"""

from __future__ import annotations

from typing import Final

SECTION_NOTES: Final[dict[str, str]] = {
    "kafka": "The consumer group, its topics and the dead-letter topic; Kafka security "
    "settings reach both the consumer and the dead-letter producer.",
    "api": "X Ads API endpoint: `POST {base_url}/{version}/measurement/conversions/{pixel_id}`.",
    "accounts[]": "One `[[accounts]]` entry per ad account: its pixel, credentials and rate "
    "budget. `account_id` must be unique.",
    "transform": "How a producer's event becomes one conversion (see docs/transform.md).",
    "transform.mapping": "Where each canonical field is found in the producer's JSON: a path, "
    "a list of paths tried in order (the first present, non-null wins) or `=literal`. For "
    '`preset = "custom"` this is the whole mapping; for other presets a key set here '
    "replaces the preset's own source.",
    "transform.mapping.item": "Paths relative to one element of the `items` list.",
    "routing.default": "The route for events whose routing key matches no `routes` entry "
    "(none by default; when set, its keys without a default are required).",
    "routing.routes.<name>": "A route selected when the event's routing key equals `<name>` "
    "(`[routing.routes.<name>]` tables; none by default).",
    "delivery": "Concurrency, back-pressure, retries, commits and shutdown.",
    "observability": "The HTTP listener (`/metrics`, `/healthz`, `/readyz`) and logs.",
}

_ROUTE = {
    "account_id": "Ad account the conversion is sent for (must be in `[[accounts]]`).",
    "pixel_id": "Pixel (base tag) id; must be the account's `pixel_id`.",
    "event_id": "Event tag id of the purchase event.",
    "event_ids": "Event tag per event type for this route (overrides `routing.event_ids`).",
}

DESCRIPTIONS: Final[dict[str, str]] = {
    # --- kafka --------------------------------------------------------------------------
    "kafka.bootstrap_servers": "Brokers to bootstrap from, `host:port[,host:port...]`.",
    "kafka.topics": "Topics to consume purchase events from.",
    "kafka.group_id": "Consumer group id (offsets are committed for this group).",
    "kafka.dead_letter_topic": "Topic that receives rejected events with reason headers; "
    "must not be one of `topics`.",
    "kafka.parking_topic": "Topic where a sick account's events wait (stuck policy `park`); "
    "the service consumes it too, in the same group. Must differ from `topics` and the "
    "dead-letter topic.",
    "kafka.client_id": "librdkafka `client.id` of the consumer and the producer.",
    "kafka.security_protocol": "librdkafka `security.protocol`.",
    "kafka.sasl_mechanism": "librdkafka `sasl.mechanism`; required with a `SASL_*` protocol.",
    "kafka.sasl_username": "SASL user name; required with a `SASL_*` protocol.",
    "kafka.sasl_password": "SASL password; required with a `SASL_*` protocol.",
    "kafka.ssl_ca_location": "CA bundle to verify the brokers' certificates.",
    "kafka.ssl_certificate_location": "Client certificate for TLS client authentication.",
    "kafka.ssl_key_location": "Client private key for TLS client authentication.",
    "kafka.ssl_key_password": "Password of the client private key.",
    "kafka.fetch_batch_size": "Messages fetched per consume call.",
    "kafka.session_timeout_ms": "librdkafka `session.timeout.ms` of the consumer group.",
    "kafka.max_poll_interval_ms": "librdkafka `max.poll.interval.ms`.",
    "kafka.call_timeout_s": "Bound on every librdkafka call that can block (commit request, "
    "pause, metadata, close); a fetch gets its poll time plus `delivery.revoke_timeout_s` "
    "on top. Shutdown completes within `delivery.drain_timeout_s` + 4 x this + 5 s.",
    "kafka.unknown_topic_grace_s": "How long a dead-letter topic that does not exist is "
    "retried before the engine stops with exit code 4.",
    "api.base_url": "Scheme and host of the X Ads API (or of `xconv sandbox`).",
    "api.version": "API version in the path.",
    "api.connect_timeout_s": "Timeout to open a connection, seconds.",
    "api.request_timeout_s": "Timeout for a whole request and its answer, seconds.",
    # --- accounts -----------------------------------------------------------------------
    "accounts[].account_id": "X ad-account id (the `account` label of metrics).",
    "accounts[].pixel_id": "Pixel (base tag) id the account's conversions are posted to.",
    "accounts[].auth": "`oauth1` (HMAC-SHA1 user context) or `pixel_token` (`X-Pixel-Token`).",
    "accounts[].consumer_key": "OAuth 1.0a consumer key (API key); needed with `oauth1`.",
    "accounts[].consumer_secret": "OAuth 1.0a consumer secret; needed with `oauth1`.",
    "accounts[].access_token": "OAuth 1.0a access token; needed with `oauth1`.",
    "accounts[].access_token_secret": "OAuth 1.0a access token secret; needed with `oauth1`.",
    "accounts[].pixel_token": "Pixel token sent as `X-Pixel-Token`; needed with `pixel_token`.",
    "accounts[].requests_per_window": "Requests X allows the account per window (pacing).",
    "accounts[].events_per_window": "Conversions allowed per window; 0 means no events budget.",
    "accounts[].window_s": "Length of the rate-limit window, seconds (X's is 15 minutes).",
    "accounts[].max_in_flight": "Requests in flight at once for this account.",
    # --- transform ----------------------------------------------------------------------
    "transform.preset": "Input format: a known producer shape, `custom` (the mapping only) "
    "or `auto` (detect canonical, segment, ga4 or shopify per event).",
    "transform.mapping.*": "Source of the canonical field `{key}`.",
    "transform.mapping.item.*": "Source of the item field `{key}`, relative to one item.",
    "transform.default_phone_region": "Region (ISO 3166 alpha-2) for phone numbers written "
    "without a country code.",
    "transform.default_currency": "Currency (ISO 4217) when the event names none.",
    "transform.max_age_s": "Events older than this are rejected (`time_too_old`), seconds.",
    "transform.max_future_s": "Events further in the future are rejected (`time_in_future`), "
    "seconds.",
    "transform.conversion_id_template": "Template of the conversion id (X de-duplicates by "
    "it): `{order_id}`, `{event_type}`, `{routing_key}` are replaced; must contain "
    "`{order_id}` or `{routing_key}`.",
    "transform.use_event_conversion_id": "An explicit conversion id in the event wins over "
    "the template.",
    "transform.description": "Default `description` of a conversion when the event has none.",
    "transform.value_format": "`number`: the value as a JSON number; `string`: decimal text.",
    "transform.send_ipv6": "Send IPv6 addresses (IPv4-mapped ones always go as dotted "
    "decimal); other IPv6 is dropped when false.",
    "transform.allow_ip_and_user_agent_only": "Accept `ip_address` + `user_agent` as the only "
    "identifiers; false requires a twclid, email or phone.",
    # --- routing ------------------------------------------------------------------------
    **{f"routing.default.{k}": v for k, v in _ROUTE.items()},
    **{f"routing.routes.<name>.{k}": v for k, v in _ROUTE.items()},
    "routing.key_field": "Path of the routing key in the producer's JSON (default: the "
    "preset's routing key).",
    "routing.event_ids": "Event tag per event type for every route; `purchase` defaults to "
    "the route's `event_id`.",
    # --- batching -----------------------------------------------------------------------
    "batching.max_events": "Conversions per request (X accepts up to 500).",
    "batching.linger_ms": "How long a partial batch waits for more events, milliseconds.",
    "batching.max_request_bytes": "Cap on a request body's size, bytes.",
    # --- delivery -----------------------------------------------------------------------
    "delivery.max_in_flight": "Requests in flight at once, all accounts together.",
    "delivery.adaptive_concurrency": "AIMD adaptation of the in-flight limit on top of the "
    "rate budget (off: random 5xx would shrink it).",
    "delivery.max_buffered_events": "Events held in memory (consumed, not yet done; about "
    "5 KB each at peak); reaching it pauses every assigned partition.",
    "delivery.pause_grace_s": "A full buffer first only stops fetching (nothing prefetched is "
    "dropped); it pauses every assigned partition once it has been full this long, so that "
    "polling and rebalances go on during an outage. Rebalance callbacks wait at most this "
    "long meanwhile.",
    "delivery.resume_ratio": "Paused partitions resume when held events fall to this share "
    "of `max_buffered_events`.",
    "delivery.drain_timeout_s": "On SIGTERM, how long to wait for in-flight sends before "
    "exiting 3, seconds.",
    "delivery.revoke_timeout_s": "On a rebalance, how long to wait for the revoked "
    "partitions' in-flight sends before committing, seconds.",
    "delivery.commit_interval_s": "How often the contiguous watermark is committed, seconds.",
    "delivery.retry_base_s": "First retry delay (exponential backoff, full jitter), seconds.",
    "delivery.retry_cap_s": "Largest retry delay, seconds.",
    "delivery.probe_initial_s": "First wait before a blocked account (401/403/404) is "
    "probed by one request; each refused probe doubles it, jittered x[0.5, 1.5).",
    "delivery.probe_max_s": "Longest wait between two probes of a blocked account.",
    "delivery.on_account_blocked": "On 401/403/404: `hold` the account's events (offsets "
    "held, probed until accepted) or `dead_letter` them (`account_blocked`).",
    "delivery.stuck_policy": "A sick account (failing `park_after_s`, crowding the buffer, "
    "or blocked) next to a healthy one: `hold` its events in place (offsets held), `park` "
    "them on `kafka.parking_topic` and deliver them from there once it answers again, or "
    "`dead_letter` them (`undeliverable`). With no healthy account there is nothing to "
    "isolate: events are held whatever the policy.",
    "delivery.park_after_s": "How long a batch may fail with retryable errors (5xx, "
    "timeouts; not 429) before the stuck policy applies to its account, seconds.",
    "delivery.parked_max_age_s": "A parked event whose first failure is older than this is "
    "dead-lettered (`parked_too_long`) instead of being parked again; 0: never.",
    # --- observability ------------------------------------------------------------------
    "observability.http_host": "Address the metrics and health listener binds to.",
    "observability.http_port": "Port of `/metrics`, `/healthz` and `/readyz` (0: any free port).",
    "observability.log_format": "`json`, `console`, or `auto` (console on a terminal, else json).",
    "observability.ready_broker_contact_s": "`/readyz` fails with `broker_unreachable` after "
    "this long without a successful broker call (liveness stays up: a restart does not fix "
    "a broker).",
    "observability.liveness_stale_s": "`/healthz` fails when a loop has not beaten for this "
    "long, seconds.",
    "transform.strict": "`false` (default): an invalid optional field is left out of the "
    "conversion and counted in `xconv_fields_dropped_total`; `true`: it rejects the whole "
    "event (v1 behaviour). See the field policy in docs/transform.md.",
    "transform.pii_scan": "Hash order/conversion/item ids that are an e-mail address or a "
    "phone number (same SHA-256 rule as identifiers) and drop free-text fields that contain "
    "one (counted with reason `pii`).",
    "transform.debezium.updates": "Turn Debezium updates (`op = u`) into conversions; off by "
    "default, updates are skipped and counted.",
    "transform.debezium.decimal_scales": "Scale of each base64 `Decimal` column, for change "
    "events that carry no schema.",
}
