"""Audit evidence: events recorded durably before a response, relayed to Kafka.

See docs/audit.md for the event types, the Merkle log and the auditor's commands.
"""

from gateway.audit.events import EVENT_TYPE_PREFIX, AuditTrail, PseudonymKey

EVENTS_TOPIC = "blauweknop.audit.v1"
CHECKPOINTS_TOPIC = "blauweknop.audit.checkpoints.v1"

__all__ = ["CHECKPOINTS_TOPIC", "EVENTS_TOPIC", "EVENT_TYPE_PREFIX", "AuditTrail", "PseudonymKey"]
