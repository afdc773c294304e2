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
        # The audit relay (gateway/audit/relay.py): outbox to Kafka. A registry of their own:
        # with `[audit] writer = "process"` the writer process keeps them (gateway/audit/writer.py).
        self.audit_registry = CollectorRegistry()
        self.audit_backlog = Gauge(
            "blauweknop_audit_outbox_backlog",
            "Audit events in the outbox not yet acknowledged by Kafka.",
            registry=self.audit_registry,
        )
        self.audit_published = Counter(
            "blauweknop_audit_events_published",
            "Audit events acknowledged by Kafka (acks=all) and marked sent.",
            registry=self.audit_registry,
        )
        self.audit_publish_failures = Counter(
            "blauweknop_audit_publish_failures",
            "Batches of audit events that Kafka did not acknowledge in time; they are resent.",
            registry=self.audit_registry,
        )
        self.audit_publish_seconds = Histogram(
            "blauweknop_audit_publish_seconds",
            "Time from sending a batch of audit events until Kafka acknowledged all of them.",
            buckets=_LATENCY_BUCKETS,
            registry=self.audit_registry,
        )
        self.audit_relay_connected = Gauge(
            "blauweknop_audit_relay_connected",
            "1 while the audit relay has a working connection to Kafka.",
            registry=self.audit_registry,
        )
        self.audit_relay_leader = Gauge(
            "blauweknop_audit_relay_leader",
            "1 while this replica's relay is the one that publishes the outbox (one across "
            "replicas); 0 while it stands by.",
            registry=self.audit_registry,
        )


class CheckpointerMetrics:
    """The checkpointer's own metrics (`blauweknop audit checkpointer`, its own /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.last_timestamp = Gauge(
            "blauweknop_audit_checkpoint_last_timestamp_seconds",
            "RFC 3161 time (Unix) of the newest signed checkpoint, published by this "
            "checkpointer or found on the topic when it became active.",
            registry=self.registry,
        )
        self.tree_size = Gauge(
            "blauweknop_audit_checkpoint_tree_size",
            "Tree size (events covered) of the newest signed checkpoint.",
            registry=self.registry,
        )
        self.pending = Gauge(
            "blauweknop_audit_checkpoint_pending_events",
            "Events read from the topic but not yet covered by a checkpoint.",
            registry=self.registry,
        )
        self.published = Counter(
            "blauweknop_audit_checkpoints_published",
            "Checkpoints signed, time-stamped and acknowledged by Kafka.",
            registry=self.registry,
        )
        self.failures = Counter(
            "blauweknop_audit_checkpoint_failures",
            "Failures by stage: `timestamp` (the TSA; retried), `publish` and `read` (Kafka; "
            "the checkpointer exits and is restarted).",
            ["stage"],
            registry=self.registry,
        )
        for stage in ("timestamp", "publish", "read"):
            self.failures.labels(stage)  # exported as 0 from the start, so rate() works
        self.active = Gauge(
            "blauweknop_audit_checkpointer_active",
            "1 while this checkpointer holds the events partition (the one that signs).",
            registry=self.registry,
        )
        self.tsa_not_after = Gauge(
            "blauweknop_audit_tsa_certificate_not_after_seconds",
            "When the certificate of the TSA that signed the newest checkpoint's time-stamp "
            "expires (Unix time); without a valid TSA no checkpoint is published.",
            registry=self.registry,
        )
