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


class MalformedRequest(BlauweKnopError):
    """A request body could not be parsed at all (a broken form or multipart body): a 400."""


class SchemaViolation(BlauweKnopError):
    """A document does not match the common schema."""


class VerificationError(BlauweKnopError):
    """A signature, certificate or digest did not verify."""


class OAuthError(BlauweKnopError):
    """An OAuth 2.0 protocol error (RFC 6749 §5.2, RFC 9126, RFC 9449): `error` is the code.

    The description tells the portal's developer what to fix; it never carries personal data.
    """

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class LoginError(BlauweKnopError):
    """A citizen's DigiD login was refused or could not be completed; no session is made.

    `error` is an OAuth/OIDC-style code (`invalid_id_token`, `invalid_state`, …), `reason` names
    the check that failed (it goes into the audit event), `description` says what happened and
    what to do, in English, without personal data. `status` is the HTTP status to answer with.
    """

    def __init__(self, error: str, reason: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error} ({reason}): {description}")
        self.error = error
        self.reason = reason
        self.description = description
        self.status = status


class DocumentUnavailable(BlauweKnopError):
    """A certified document (XML, PDF) could not be made now: TSA, HSM or worker trouble."""


class AuditStreamError(BlauweKnopError):
    """The audit stream (Kafka) could not be reached, created or read in time."""
