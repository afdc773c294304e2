"""RFC 3161 time-stamping: a client that checks every answer, and a development TSA.

`client` asks a time-stamping authority for a token over some bytes and verifies the answer
(status, message imprint, nonce, CMS signature, certificate chain to the configured TSA CA,
critical extendedKeyUsage timeStamping). `server` is a generic RFC 3161 responder for the demo
stack and the tests only: its key lives in the development PKI. Production points
`[audit] tsa_url` at a real, qualified TSA.
"""

from gateway.tsa.client import (
    TIMESTAMP_QUERY,
    TIMESTAMP_REPLY,
    Timestamp,
    TimestampError,
    TsaTrust,
    TsaUnavailable,
    request_timestamp,
    verify_timestamp,
)

__all__ = [
    "TIMESTAMP_QUERY",
    "TIMESTAMP_REPLY",
    "Timestamp",
    "TimestampError",
    "TsaTrust",
    "TsaUnavailable",
    "request_timestamp",
    "verify_timestamp",
]
