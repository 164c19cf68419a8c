"""Prometheus metrics of the service, on a private registry (tests create as many as they like).

Attribute names follow the exposed names without the ``xconv_`` prefix. Use them directly:
``metrics.events_sent_total.labels(account=acct).inc(n)``. Label values never carry PII:
accounts are X ad-account ids, reasons are stable reason codes, statuses are HTTP codes.
"""

from __future__ import annotations

import contextlib
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

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


def status_label(status: int | None) -> str:
    """Label value for ``requests_total{status}``: the HTTP code, or ``transport_error``."""
    return TRANSPORT_ERROR if status is None else str(status)


class Metrics:
    """Every metric xconv exports, registered on one ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(f"{PREFIX}_{name}", doc, labels, registry=r)

        def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
            return Gauge(f"{PREFIX}_{name}", doc, labels, registry=r)

        # --- consume and transform -------------------------------------------------------
        self.events_consumed_total = counter(
            "events_consumed_total", "Kafka messages read, per source topic.", ("topic",)
        )
        self.events_transformed_total = counter(
            "events_transformed_total", "Messages turned into a conversion."
        )
        self.events_rejected_total = counter(
            "events_rejected_total",
            "Messages the transform rejected, per reason code (they are dead-lettered).",
            ("reason",),
        )
        self.dropped_identifiers_total = counter(
            "dropped_identifiers_total",
            "Identifiers left out of a conversion because they were invalid, per kind.",
            ("kind",),
        )
        self.fields_dropped_total = counter(
            "fields_dropped_total",
            "Optional fields left out of a sent conversion, per canonical field name "
            "(e.g. item.group_id) and drop reason (e.g. not_integer, pii).",
            ("field", "reason"),
        )
        self.events_skipped_total = counter(
            "events_skipped_total",
            "Messages committed without a conversion or a dead letter (Debezium deletes, "
            "tombstones, truncates, updates), per skip reason.",
            ("reason",),
        )

        # --- delivery -------------------------------------------------------------------
        self.events_sent_total = counter(
            "events_sent_total", "Conversions put in a request to X, per account.", ("account",)
        )
        self.events_accepted_total = counter(
            "events_accepted_total",
            "Conversions in requests X answered 200 to, per account.",
            ("account",),
        )
        self.events_dead_lettered_total = counter(
            "events_dead_lettered_total",
            "Messages written to the dead-letter topic, per reason code.",
            ("reason",),
        )
        self.requests_total = counter(
            "requests_total",
            "HTTP requests to the conversions endpoint, per account and status "
            "(HTTP code or transport_error).",
            ("account", "status"),
        )
        self.request_duration_seconds = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from sending a request to reading the whole answer, per account.",
            ("account",),
            buckets=REQUEST_DURATION_BUCKETS,
            registry=r,
        )
        self.request_body_bytes = Histogram(
            f"{PREFIX}_request_body_bytes",
            "Size of request bodies sent to X.",
            buckets=REQUEST_BYTES_BUCKETS,
            registry=r,
        )
        self.batch_size_events = Histogram(
            f"{PREFIX}_batch_size_events",
            "Conversions per request sent to X.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )
        self.retries_total = counter(
            "retries_total",
            "Requests retried, per account and cause (e.g. transport, server, rate_limited).",
            ("account", "cause"),
        )
        self.rate_limited_total = counter(
            "rate_limited_total", "HTTP 429 answers, per account.", ("account",)
        )
        self.rate_budget_remaining = gauge(
            "rate_budget_remaining",
            "Requests left in the current rate window, per account (from pacing and headers).",
            ("account",),
        )
        self.requests_in_flight = gauge(
            "requests_in_flight", "Requests sent and not yet answered, per account.", ("account",)
        )
        self.account_blocked = gauge(
            "account_blocked",
            "1 while sending for the account is stopped on 401/403/404, else 0.",
            ("account",),
        )

        self.server_hints_capped_total = counter(
            "server_hints_capped_total",
            "Server hints (retry-after, x-rate-limit-reset) longer than the account's window, "
            "capped at the window, per account and hint.",
            ("account", "hint"),
        )
        self.events_unprocessed_total = counter(
            "events_unprocessed_total",
            "Conversions in 200 answers whose conversions_processed was below the number "
            "sent (the shortfall), per account.",
            ("account",),
        )
        self.account_probes_total = counter(
            "account_probes_total",
            "Requests that probed a blocked account, per account and outcome "
            "(accepted, blocked, failed).",
            ("account", "outcome"),
        )
        self.dead_letter_errors_total = counter(
            "dead_letter_errors_total",
            "Dead-letter writes the broker refused, per error class "
            "(retriable, too_large, permanent).",
            ("error",),
        )
        self.kafka_errors_total = counter(
            "kafka_errors_total",
            "Errors librdkafka reported through error_cb, per client and error name.",
            ("client", "error"),
        )
        self.commits_total = counter(
            "commits_total", "Offset commits, per outcome (ok, failed, timeout).", ("outcome",)
        )
        self.task_failures_total = counter(
            "task_failures_total",
            "Engine tasks that ended with an unexpected exception, per task kind "
            "(each one stops the engine).",
            ("task",),
        )
        self.drain_timeouts_total = counter(
            "drain_timeouts_total", "Shutdowns whose drain ran out of drain_timeout_s."
        )

        # --- flow control and offsets --------------------------------------------------
        self.events_in_flight = gauge(
            "events_in_flight",
            "Events held in memory: per partition, the offsets from the commit watermark "
            "to the last one fetched.",
        )
        self.partitions_paused = gauge(
            "partitions_paused", "Assigned partitions paused by back-pressure."
        )
        self.committed_offset = gauge(
            "committed_offset",
            "Last offset committed, per partition (the next offset to read).",
            ("topic", "partition"),
        )
        self.consumer_lag = gauge(
            "consumer_lag",
            "High watermark minus committed offset, per partition (messages).",
            ("topic", "partition"),
        )

        # --- process ----------------------------------------------------------------------
        self.event_loop_lag_seconds = gauge(
            "event_loop_lag_seconds", "How late the last event-loop heartbeat woke up."
        )
        self.build_info = gauge("build_info", "Always 1; the version is a label.", ("version",))

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
