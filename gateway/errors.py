"""The gateway's error hierarchy: each message says what went wrong and what to do about it."""

from __future__ import annotations

from typing import ClassVar

from gateway.models import BronStatus


class BlauweKnopError(Exception):
    """Base class for every error the gateway raises on purpose."""


class ConfigError(BlauweKnopError):
    """The configuration is missing, malformed or unsafe for the chosen mode."""


class SourceError(BlauweKnopError):
    """An organisation could not deliver usable data; `status` is what the bundle records."""

    status: ClassVar[BronStatus]


class SourceUnreachable(SourceError):
    status = "onbereikbaar"


class SourceTimeout(SourceError):
    status = "time-out"


class SourceInvalid(SourceError):
    """The response was malformed, too large, unsigned, or signed by the wrong key."""

    status = "ongeldig"


class SchemaViolation(BlauweKnopError):
    """A document does not match the common schema."""


class VerificationError(BlauweKnopError):
    """A signature, certificate or digest did not verify."""


class AuditStreamError(BlauweKnopError):
    """The audit stream (Kafka) could not be reached, created or read in time."""
