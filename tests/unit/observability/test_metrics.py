"""Metrics: names, types and labels as documented; private registries; partition clean-up."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from consumer.observability.metrics import Metrics, status_label


def families(metrics: Metrics) -> dict[str, tuple[str, list[tuple[str, dict[str, str], float]]]]:
    parsed = text_string_to_metric_families(metrics.render().decode())
    # The text format shows prometheus_client's `*_created` samples as separate gauges.
    return {
        f.name: (f.type, [(s.name, dict(s.labels), s.value) for s in f.samples])
        for f in parsed
        if not f.name.endswith("_created")
    }


EXPECTED = {
    "xconv_events_consumed": ("counter", {"topic"}),
    "xconv_events_transformed": ("counter", set()),
    "xconv_events_rejected": ("counter", {"reason"}),
    "xconv_events_sent": ("counter", {"account"}),
    "xconv_events_accepted": ("counter", {"account"}),
    "xconv_events_dead_lettered": ("counter", {"reason"}),
    "xconv_requests": ("counter", {"account", "status"}),
    "xconv_request_duration_seconds": ("histogram", {"account"}),
    "xconv_request_body_bytes": ("histogram", set()),
    "xconv_retries": ("counter", {"account", "cause"}),
    "xconv_rate_limited": ("counter", {"account"}),
    "xconv_rate_budget_remaining": ("gauge", {"account"}),
    "xconv_rate_budget_share": ("gauge", {"account"}),
    "xconv_requests_in_flight": ("gauge", {"account"}),
    "xconv_events_in_flight": ("gauge", set()),
    "xconv_partitions_paused": ("gauge", set()),
    "xconv_committed_offset": ("gauge", {"topic", "partition"}),
    "xconv_consumer_lag": ("gauge", {"topic", "partition"}),
    "xconv_account_blocked": ("gauge", {"account"}),
    "xconv_batch_size_events": ("histogram", set()),
    "xconv_dropped_identifiers": ("counter", {"kind"}),
    "xconv_fields_dropped": ("counter", {"field", "reason"}),
    "xconv_events_skipped": ("counter", {"reason"}),
    "xconv_event_loop_lag_seconds": ("gauge", set()),
    "xconv_build_info": ("gauge", {"version"}),
    "xconv_server_hints_capped": ("counter", {"account", "hint"}),
    "xconv_events_unprocessed": ("counter", {"account"}),
    "xconv_account_probes": ("counter", {"account", "outcome"}),
    "xconv_dead_letter_errors": ("counter", {"error"}),
    "xconv_kafka_errors": ("counter", {"client", "error"}),
    "xconv_commits": ("counter", {"outcome"}),
    "xconv_task_failures": ("counter", {"task"}),
    "xconv_drain_timeouts": ("counter", set()),
    "xconv_events_parked": ("counter", {"account"}),
    "xconv_parking_oldest_age_seconds": ("gauge", set()),
    "xconv_account_buffered_events": ("gauge", {"account"}),
}


def exercise(m: Metrics) -> None:
    m.events_consumed_total.labels(topic="purchases").inc(3)
    m.events_transformed_total.inc(2)
    m.events_rejected_total.labels(reason="invalid_json").inc()
    m.events_sent_total.labels(account="18ce552mlaq").inc(2)
    m.events_accepted_total.labels(account="18ce552mlaq").inc(2)
    m.events_dead_lettered_total.labels(reason="invalid_json").inc()
    m.requests_total.labels(account="18ce552mlaq", status=status_label(200)).inc()
    m.requests_total.labels(account="18ce552mlaq", status=status_label(None)).inc()
    m.request_duration_seconds.labels(account="18ce552mlaq").observe(0.042)
    m.request_body_bytes.observe(2048)
    m.retries_total.labels(account="18ce552mlaq", cause="transport").inc()
    m.rate_limited_total.labels(account="18ce552mlaq").inc()
    m.rate_budget_remaining.labels(account="18ce552mlaq").set(99_998)
    m.rate_budget_share.labels(account="18ce552mlaq").set(0.5)
    m.requests_in_flight.labels(account="18ce552mlaq").set(1)
    m.events_in_flight.set(2)
    m.partitions_paused.set(0)
    m.committed_offset.labels(topic="purchases", partition="0").set(3)
    m.consumer_lag.labels(topic="purchases", partition="0").set(0)
    m.account_blocked.labels(account="18ce552mlaq").set(0)
    m.batch_size_events.observe(2)
    m.dropped_identifiers_total.labels(kind="phone").inc()
    m.fields_dropped_total.labels(field="item.group_id", reason="not_integer").inc()
    m.events_skipped_total.labels(reason="delete").inc()
    m.event_loop_lag_seconds.set(0.001)
    m.set_version("0.1.0")
    m.server_hints_capped_total.labels(account="18ce552mlaq", hint="retry_after").inc()
    m.events_unprocessed_total.labels(account="18ce552mlaq").inc(2)
    m.account_probes_total.labels(account="18ce552mlaq", outcome="blocked").inc()
    m.dead_letter_errors_total.labels(error="too_large").inc()
    m.kafka_errors_total.labels(client="consumer", error="_TRANSPORT").inc()
    m.commits_total.labels(outcome="ok").inc()
    m.task_failures_total.labels(task="deliver").inc()
    m.drain_timeouts_total.inc()
    m.events_parked_total.labels(account="18ce552mlaq").inc(3)
    m.parking_oldest_age_seconds.set(12.5)
    m.account_buffered_events.labels(account="18ce552mlaq").set(40)


def test_every_documented_metric_is_exposed_with_its_type_and_labels() -> None:
    m = Metrics()
    exercise(m)
    fams = families(m)
    assert set(fams) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        got_kind, samples = fams[name]
        assert got_kind == kind, name
        label_names = set().union(*(set(s[1]) for s in samples)) - {"le"}
        assert label_names == labels, name


def test_counter_names_end_in_total_and_values_add_up() -> None:
    m = Metrics()
    exercise(m)
    text = m.render().decode()
    assert 'xconv_events_consumed_total{topic="purchases"} 3.0' in text
    assert 'xconv_requests_total{account="18ce552mlaq",status="transport_error"} 1.0' in text
    assert 'xconv_requests_total{account="18ce552mlaq",status="200"} 1.0' in text
    assert 'xconv_build_info{version="0.1.0"} 1.0' in text
    _, samples = families(m)["xconv_request_duration_seconds"]
    buckets = {s[1]["le"]: s[2] for s in samples if s[0].endswith("_bucket")}
    assert buckets["0.01"] == 0
    assert buckets["0.05"] == 1
    assert buckets["30.0"] == 1
    assert "+Inf" in buckets


def test_registries_are_independent() -> None:
    a, b = Metrics(), Metrics(CollectorRegistry())
    a.events_transformed_total.inc(5)
    assert "xconv_events_transformed_total 5.0" in a.render().decode()
    assert "xconv_events_transformed_total 0.0" in b.render().decode()


def test_remove_partition_drops_only_that_partitions_series() -> None:
    m = Metrics()
    for p in (0, 1):
        m.committed_offset.labels(topic="purchases", partition=str(p)).set(10 + p)
        m.consumer_lag.labels(topic="purchases", partition=str(p)).set(p)
    m.remove_partition("purchases", 0)
    m.remove_partition("purchases", 7)  # never seen: no error
    text = m.render().decode()
    assert 'partition="0"' not in text
    assert 'xconv_committed_offset{partition="1",topic="purchases"} 11.0' in text
    assert 'xconv_consumer_lag{partition="1",topic="purchases"} 1.0' in text


def test_status_label() -> None:
    assert status_label(429) == "429"
    assert status_label(None) == "transport_error"
    assert Metrics.content_type.startswith("text/plain")
