"""Prometheus metrics of the service, on a private registry (tests create as many as they like).

Attribute names follow the exposed names without the ``xconv_`` prefix. Use them directly:
``metrics.events_sent_total.labels(account=acct).inc(n)``. Label values never carry PII:
accounts are X ad-account ids, reasons are stable reason codes, statuses are HTTP codes.

Each metric is declared with its labels' values (``LabelValues``: a closed set, a pattern,
or what an unbounded label holds); ``Metrics().specs`` is the catalogue that
``python -m devtools.docgen`` renders to docs/metrics.md and that the tests check emitted
samples against. Code that sets a bounded label should use the constants below.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from consumer.transform.types import DropReason, ReasonCode, SkipReason

PREFIX: Final = "xconv"

#: 10 ms to 30 s: the API usually answers in tens of ms; the request timeout is 30 s.
REQUEST_DURATION_BUCKETS: Final = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
)
#: X accepts 1 to 500 conversions per request.
BATCH_SIZE_BUCKETS: Final = (1, 5, 10, 25, 50, 100, 200, 300, 400, 500)
#: 1 KiB to the 4 MB request cap.
REQUEST_BYTES_BUCKETS: Final = (
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    2097152,
    4194304,
)
#: Event loop lag: anything above 100 ms hurts latency, above 1 s something blocks the loop.
LOOP_LAG_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

TRANSPORT_ERROR: Final = "transport_error"

# --- the values each bounded label can take (docs/metrics.md is generated from these) ---------

#: Dead-letter reasons the delivery stage adds to the transform's ``ReasonCode`` values.
UNKNOWN_ACCOUNT: Final = "unknown_account"  # routed to an account missing from [[accounts]]
API_REJECTED: Final = "api_rejected"  # X's 400 named the event (or bisection isolated it)
ACCOUNT_BLOCKED: Final = "account_blocked"  # 401/403/404 with on_account_blocked=dead_letter
TOO_LARGE: Final = "too_large"  # X answered 413 for the event alone, or the record was too big
UNDELIVERABLE: Final = "undeliverable"  # a sick account's event, stuck_policy=dead_letter
PARKED_TOO_LONG: Final = "parked_too_long"  # parked past delivery.parked_max_age_s
DELIVERY_REASONS: Final = (
    UNKNOWN_ACCOUNT,
    API_REJECTED,
    ACCOUNT_BLOCKED,
    TOO_LARGE,
    UNDELIVERABLE,
    PARKED_TOO_LONG,
)
#: ``dropped_identifiers_total{kind}``: the identifiers the transform drops when invalid.
IDENTIFIER_KINDS: Final = ("email", "phone", "ip", "user_agent")
#: ``retries_total{cause}``: ``http_<status>`` for 5xx answers, e.g. ``http_503``.
RETRY_CAUSES: Final = ("transport", "rate_limited", "other")
RETRY_CAUSE_PATTERN: Final = r"http_5[0-9][0-9]"
#: ``server_hints_capped_total{hint}``: the response header whose value was capped.
HINT_RETRY_AFTER: Final = "retry_after"  # the retry-after header
HINT_RATE_LIMIT_RESET: Final = "rate_limit_reset"  # x-rate-limit-reset with remaining 0
SERVER_HINTS: Final = (HINT_RETRY_AFTER, HINT_RATE_LIMIT_RESET)
PROBE_OUTCOMES: Final = ("accepted", "blocked", "failed")
DEAD_LETTER_ERRORS: Final = ("retriable", "too_large", "permanent")
KAFKA_CLIENTS: Final = ("consumer", "dead_letter")
COMMIT_OUTCOMES: Final = ("ok", "failed")


@dataclass(frozen=True, slots=True)
class LabelValues:
    """What one label of one metric can hold: a closed set, a pattern, or a description.

    ``values`` (plus ``pattern``, a full-match regex, when some values follow a rule) is
    the closed set of a bounded label; an unbounded label has neither and only says what
    it holds. Tests check emitted samples against it; docs/metrics.md is rendered from it.
    """

    meaning: str
    values: tuple[str, ...] = ()
    pattern: str | None = None

    @property
    def bounded(self) -> bool:
        return bool(self.values) or self.pattern is not None

    def allows(self, value: str) -> bool:
        """Whether ``value`` is a declared value (always true for an unbounded label)."""
        if not self.bounded or value in self.values:
            return True
        return self.pattern is not None and re.fullmatch(self.pattern, value) is not None


ACCOUNT: Final = LabelValues("an X ad-account id (from `[[accounts]]`)")
TOPIC: Final = LabelValues("a Kafka topic name (one of `kafka.topics`)")
PARTITION: Final = LabelValues("a Kafka partition number")
DEAD_LETTER_REASON: Final = LabelValues(
    "a stable reason code: the transform's `ReasonCode` values and the delivery reasons",
    values=(*(code.value for code in ReasonCode), *DELIVERY_REASONS),
)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One exported metric as declared: the source of docs/metrics.md."""

    attribute: str
    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: Mapping[str, LabelValues]
    buckets: tuple[float, ...] = ()


def status_label(status: int | None) -> str:
    """Label value for ``requests_total{status}``: the HTTP code, or ``transport_error``."""
    return TRANSPORT_ERROR if status is None else str(status)


class Metrics:
    """Every metric xconv exports, registered on one ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        #: Every metric by exposed name, with its labels' declared values (docs, tests).
        self.specs: dict[str, MetricSpec] = {}

        def spec(
            name: str,
            kind: Literal["counter", "gauge", "histogram"],
            doc: str,
            labels: Mapping[str, LabelValues],
            buckets: tuple[float, ...] = (),
        ) -> str:
            full = f"{PREFIX}_{name}"
            self.specs[full] = MetricSpec(name, full, kind, doc, dict(labels), buckets)
            return full

        def counter(
            name: str, doc: str, labels: Mapping[str, LabelValues] | None = None
        ) -> Counter:
            labels = labels or {}
            return Counter(spec(name, "counter", doc, labels), doc, tuple(labels), registry=r)

        def gauge(name: str, doc: str, labels: Mapping[str, LabelValues] | None = None) -> Gauge:
            labels = labels or {}
            return Gauge(spec(name, "gauge", doc, labels), doc, tuple(labels), registry=r)

        def histogram(
            name: str,
            doc: str,
            buckets: tuple[float, ...],
            labels: Mapping[str, LabelValues] | None = None,
        ) -> Histogram:
            labels = labels or {}
            full = spec(name, "histogram", doc, labels, buckets)
            return Histogram(full, doc, tuple(labels), buckets=buckets, registry=r)

        # --- consume and transform -------------------------------------------------------
        self.events_consumed_total = counter(
            "events_consumed_total",
            "Kafka messages taken for delivery, per topic (the parking topic too); a message "
            "read again after a pause, a seek or a hold counts once.",
            {"topic": TOPIC},
        )
        self.events_transformed_total = counter(
            "events_transformed_total", "Messages turned into a conversion."
        )
        self.events_rejected_total = counter(
            "events_rejected_total",
            "Messages the transform rejected, per reason code (they are dead-lettered).",
            {
                "reason": LabelValues(
                    "a reason code: the transform's `ReasonCode` values, and "
                    f"`{UNKNOWN_ACCOUNT}` for a route to an account not configured",
                    values=(*(code.value for code in ReasonCode), UNKNOWN_ACCOUNT),
                )
            },
        )
        self.dropped_identifiers_total = counter(
            "dropped_identifiers_total",
            "Identifiers left out of a conversion because they were invalid, per kind.",
            {"kind": LabelValues("an identifier kind", values=IDENTIFIER_KINDS)},
        )
        self.fields_dropped_total = counter(
            "fields_dropped_total",
            "Optional fields left out of a sent conversion, per canonical field name "
            "(e.g. item.group_id) and drop reason (e.g. not_integer, pii).",
            {
                "field": LabelValues("a canonical mapping field name, e.g. `item.group_id`"),
                "reason": LabelValues(
                    "why the field was left out", values=tuple(r.value for r in DropReason)
                ),
            },
        )
        self.events_skipped_total = counter(
            "events_skipped_total",
            "Messages committed without a conversion or a dead letter (Debezium deletes, "
            "tombstones, truncates, updates), per skip reason.",
            {
                "reason": LabelValues(
                    "the kind of change event", values=tuple(r.value for r in SkipReason)
                )
            },
        )

        # --- delivery -------------------------------------------------------------------
        self.events_sent_total = counter(
            "events_sent_total",
            "Conversions put in a request to X, per account.",
            {"account": ACCOUNT},
        )
        self.events_accepted_total = counter(
            "events_accepted_total",
            "Conversions in requests X answered 200 to, per account.",
            {"account": ACCOUNT},
        )
        self.events_dead_lettered_total = counter(
            "events_dead_lettered_total",
            "Messages written to the dead-letter topic, per reason code.",
            {"reason": DEAD_LETTER_REASON},
        )
        self.events_parked_total = counter(
            "events_parked_total",
            "Events written to the parking topic (a sick account's, delivered later), per account.",
            {"account": ACCOUNT},
        )
        self.parking_oldest_age_seconds = gauge(
            "parking_oldest_age_seconds",
            "Age since its first failure of the oldest parked event held back at the head "
            "of a parking partition this member owns; 0 when none is held back.",
        )
        self.account_buffered_events = gauge(
            "account_buffered_events",
            "Events of an account in memory (batching or in flight); its quota is an equal "
            "share of max_buffered_events among the accounts holding events.",
            {"account": ACCOUNT},
        )
        self.requests_total = counter(
            "requests_total",
            "HTTP requests to the conversions endpoint, per account and status "
            "(HTTP code or transport_error).",
            {
                "account": ACCOUNT,
                "status": LabelValues(
                    "the HTTP status code, or `transport_error` when no answer was read",
                    values=(TRANSPORT_ERROR,),
                    pattern=r"[1-5][0-9][0-9]",
                ),
            },
        )
        self.request_duration_seconds = histogram(
            "request_duration_seconds",
            "Time from sending a request to reading the whole answer, per account.",
            REQUEST_DURATION_BUCKETS,
            {"account": ACCOUNT},
        )
        self.request_body_bytes = histogram(
            "request_body_bytes", "Size of request bodies sent to X.", REQUEST_BYTES_BUCKETS
        )
        self.batch_size_events = histogram(
            "batch_size_events", "Conversions per request sent to X.", BATCH_SIZE_BUCKETS
        )
        self.retries_total = counter(
            "retries_total",
            "Requests retried, per account and cause "
            "(transport, rate_limited, http_<5xx status>, other).",
            {
                "account": ACCOUNT,
                "cause": LabelValues(
                    "why the request is retried: `http_<status>` for a 5xx answer",
                    values=RETRY_CAUSES,
                    pattern=RETRY_CAUSE_PATTERN,
                ),
            },
        )
        self.rate_limited_total = counter(
            "rate_limited_total", "HTTP 429 answers, per account.", {"account": ACCOUNT}
        )
        self.rate_budget_remaining = gauge(
            "rate_budget_remaining",
            "Requests left in the current rate window, per account (from pacing and headers).",
            {"account": ACCOUNT},
        )
        self.rate_budget_share = gauge(
            "rate_budget_share",
            "This replica's estimated share of the account's rate budget, from the drops of "
            "x-rate-limit-remaining beyond its own sends (1 when no other client uses the "
            "account; about 1/N for N equally busy replicas).",
            {"account": ACCOUNT},
        )
        self.requests_in_flight = gauge(
            "requests_in_flight",
            "Requests sent and not yet answered, per account.",
            {"account": ACCOUNT},
        )
        self.account_blocked = gauge(
            "account_blocked",
            "1 while sending for the account is stopped on 401/403/404, else 0.",
            {"account": ACCOUNT},
        )

        self.server_hints_capped_total = counter(
            "server_hints_capped_total",
            "Server hints (retry-after, x-rate-limit-reset) longer than the account's window, "
            "capped at the window, per account and hint.",
            {"account": ACCOUNT, "hint": LabelValues("the response header", values=SERVER_HINTS)},
        )
        self.events_unprocessed_total = counter(
            "events_unprocessed_total",
            "Conversions in 200 answers whose conversions_processed was below the number "
            "sent (the shortfall), per account.",
            {"account": ACCOUNT},
        )
        self.account_probes_total = counter(
            "account_probes_total",
            "Requests that probed a blocked account, per account and outcome "
            "(accepted, blocked, failed).",
            {
                "account": ACCOUNT,
                "outcome": LabelValues("what the probe found", values=PROBE_OUTCOMES),
            },
        )
        self.dead_letter_errors_total = counter(
            "dead_letter_errors_total",
            "Dead-letter writes the broker refused, per error class "
            "(retriable, too_large, permanent).",
            {"error": LabelValues("the error class", values=DEAD_LETTER_ERRORS)},
        )
        self.kafka_errors_total = counter(
            "kafka_errors_total",
            "Errors librdkafka reported through error_cb, per client and error name.",
            {
                "client": LabelValues("the librdkafka client", values=KAFKA_CLIENTS),
                "error": LabelValues(
                    "a librdkafka error name (`KafkaError.name()`, e.g. `_TRANSPORT`)"
                ),
            },
        )
        self.commits_total = counter(
            "commits_total",
            "Offset commits, per outcome (ok, failed, timeout).",
            {"outcome": LabelValues("how the commit ended", values=COMMIT_OUTCOMES)},
        )
        self.task_failures_total = counter(
            "task_failures_total",
            "Engine tasks that ended with an unexpected exception, per task kind "
            "(each one stops the engine).",
            {"task": LabelValues("the engine task's kind (a name in the engine's code)")},
        )
        self.drain_timeouts_total = counter(
            "drain_timeouts_total", "Shutdowns whose drain ran out of drain_timeout_s."
        )

        # --- flow control and offsets --------------------------------------------------
        self.events_in_flight = gauge(
            "events_in_flight",
            "Events held in memory: consumed and not yet accepted or dead-lettered "
            "(the back-pressure count).",
        )
        self.partitions_paused = gauge(
            "partitions_paused", "Assigned partitions paused by back-pressure."
        )
        self.committed_offset = gauge(
            "committed_offset",
            "Last offset committed, per partition (the next offset to read).",
            {"topic": TOPIC, "partition": PARTITION},
        )
        self.consumer_lag = gauge(
            "consumer_lag",
            "High watermark minus committed offset, per partition (messages).",
            {"topic": TOPIC, "partition": PARTITION},
        )

        # --- process ----------------------------------------------------------------------
        self.event_loop_lag_seconds = gauge(
            "event_loop_lag_seconds", "How late the last event-loop heartbeat woke up."
        )
        self.build_info = gauge(
            "build_info",
            "Always 1; the version is a label.",
            {"version": LabelValues("the running xconv version (the package's `__version__`)")},
        )

    # --- helpers -----------------------------------------------------------------------------

    def set_version(self, version: str) -> None:
        """Publish ``xconv_build_info{version}`` once at start-up."""
        self.build_info.labels(version=version).set(1)

    def remove_partition(self, topic: str, partition: int) -> None:
        """Drop the per-partition series after a revoke, so old owners stop reporting lag."""
        labels = (topic, str(partition))
        for gauge_ in (self.committed_offset, self.consumer_lag):
            with contextlib.suppress(KeyError):  # never set for this partition
                gauge_.remove(*labels)

    def render(self) -> bytes:
        """Prometheus text exposition (format 0.0.4) of every metric."""
        return generate_latest(self.registry)

    #: ``Content-Type`` header value that goes with :meth:`render`.
    content_type: Final[str] = CONTENT_TYPE_LATEST
