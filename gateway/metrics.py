"""Prometheus metrics; each app gets its own registry so several can run in one process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.source_latency = Histogram(
            "blauweknop_source_request_seconds",
            "Time one organisation took to answer, per organisation.",
            ["org"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.source_outcomes = Counter(
            "blauweknop_source_requests",
            "Organisation calls by outcome (the source status in the bundle).",
            ["org", "status"],
            registry=self.registry,
        )
        self.circuit_open = Gauge(
            "blauweknop_circuit_open",
            "1 while the circuit breaker for an organisation is open.",
            ["org"],
            registry=self.registry,
        )
        self.bundles = Counter(
            "blauweknop_bundles",
            "Bundles requested, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.certificate_not_after = Gauge(
            "blauweknop_signing_certificate_not_after_seconds",
            "When a seal certificate expires (Unix time), per key id and role (active, retired); "
            "alerts fire weeks ahead so rotation is calm.",
            ["kid", "role"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "blauweknop_ready",
            "1 while this replica is ready for traffic (what /readyz last answered).",
            registry=self.registry,
        )
        self.bundle_latency = Histogram(
            "blauweknop_bundle_seconds",
            "Time to build and sign one bundle.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # The audit relay (gateway/audit/relay.py): outbox to Kafka.
        self.audit_backlog = Gauge(
            "blauweknop_audit_outbox_backlog",
            "Audit events in the outbox not yet acknowledged by Kafka.",
            registry=self.registry,
        )
        self.audit_published = Counter(
            "blauweknop_audit_events_published",
            "Audit events acknowledged by Kafka (acks=all) and marked sent.",
            registry=self.registry,
        )
        self.audit_publish_failures = Counter(
            "blauweknop_audit_publish_failures",
            "Batches of audit events that Kafka did not acknowledge in time; they are resent.",
            registry=self.registry,
        )
        self.audit_publish_seconds = Histogram(
            "blauweknop_audit_publish_seconds",
            "Time from sending a batch of audit events until Kafka acknowledged all of them.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.audit_relay_connected = Gauge(
            "blauweknop_audit_relay_connected",
            "1 while the audit relay has a working connection to Kafka.",
            registry=self.registry,
        )
        self.audit_relay_leader = Gauge(
            "blauweknop_audit_relay_leader",
            "1 while this replica's relay is the one that publishes the outbox (one across "
            "replicas); 0 while it stands by.",
            registry=self.registry,
        )
