"""RFC 3161 client: build a request with a nonce, send it over HTTP, verify the answer.

Parsing and signature checking are done by `rfc3161-client` (Trail of Bits, also used by
sigstore-python), which decodes strictly (DER, Rust) and checks the CMS signature and the
certificate chain at the token's time. We add what a hostile TSA or network could abuse: a
size and time limit on the answer, the nonce, the imprint, the TSA certificate pin and a
sanity bound on the clock of a fresh token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import rfc3161_client
from cryptography import x509
from rfc3161_client import (
    HashAlgorithm,
    TimestampRequestBuilder,
    TimeStampResponse,
    VerifierBuilder,
    decode_timestamp_response,
)

from gateway.errors import BlauweKnopError, ConfigError, VerificationError

TIMESTAMP_QUERY = "application/timestamp-query"
TIMESTAMP_REPLY = "application/timestamp-reply"
# A time-stamp response with its certificate is 1-5 KB; anything much larger is not one.
MAX_RESPONSE_BYTES = 64 * 1024
# A fresh token whose time is further from our clock than this is refused.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)


class TimestampError(VerificationError):
    """A time-stamp response is malformed, refused, or does not verify."""


class TsaUnavailable(BlauweKnopError):
    """The time-stamping authority could not be reached or did not answer in time."""


@dataclass(frozen=True, slots=True)
class TsaTrust:
    """What a token must chain to: the TSA's CA certificates, optionally the TSA certificate."""

    roots: tuple[x509.Certificate, ...]
    tsa_certificate: x509.Certificate | None = None
    intermediates: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_files(cls, ca_file: Path, tsa_cert_file: Path | None = None) -> TsaTrust:
        try:
            roots = x509.load_pem_x509_certificates(ca_file.read_bytes())
            tsa = (
                x509.load_pem_x509_certificate(tsa_cert_file.read_bytes())
                if tsa_cert_file is not None
                else None
            )
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the time-stamping authority's certificates ({ca_file}"
                f"{', ' + str(tsa_cert_file) if tsa_cert_file else ''}): {exc}"
            ) from exc
        return cls(tuple(roots), tsa)


@dataclass(frozen=True, slots=True)
class Timestamp:
    """A verified RFC 3161 time-stamp: the whole TimeStampResp (DER) and what it says."""

    response: bytes
    time: dt.datetime
    serial_number: int
    tsa_subject: str
    # When the certificate that signed this token expires (None if the token does not carry it).
    tsa_not_after: dt.datetime | None = None

    @property
    def token(self) -> bytes:
        """The TimeStampToken (a CMS ContentInfo) inside the response."""
        return bytes(decode_timestamp_response(self.response).time_stamp_token())


def _decode(response: bytes) -> TimeStampResponse:
    if len(response) > MAX_RESPONSE_BYTES:
        raise TimestampError(
            f"the time-stamp response has {len(response)} bytes; at most "
            f"{MAX_RESPONSE_BYTES} are accepted"
        )
    try:
        return decode_timestamp_response(response)
    except (ValueError, TypeError) as exc:
        raise TimestampError(f"the time-stamp response is not valid DER: {exc}") from exc


def verify_timestamp(
    response: bytes,
    message: bytes,
    trust: TsaTrust,
    *,
    nonce: int | None = None,
) -> Timestamp:
    """Check a TimeStampResp over `message`; raise TimestampError with the reason otherwise."""
    decoded = _decode(response)
    if decoded.status not in (0, 1):
        reason = "; ".join(decoded.status_string) or "no reason given"
        raise TimestampError(f"the TSA refused the request (status {decoded.status}): {reason}")
    builder = VerifierBuilder(
        roots=list(trust.roots),
        intermediates=list(trust.intermediates),
        tsa_certificate=trust.tsa_certificate,
    )
    if nonce is not None:
        builder = builder.nonce(nonce)
    try:
        builder.build().verify_message(decoded, message)
        info = decoded.tst_info
        when = info.gen_time
        serial = info.serial_number
    except (rfc3161_client.VerificationError, ValueError) as exc:
        raise TimestampError(f"the time-stamp token does not verify: {exc}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    signer = _signer_certificate(decoded)
    if signer is None:
        return Timestamp(response, when, serial, "")
    return Timestamp(
        response, when, serial, signer.subject.rfc4514_string(), signer.not_valid_after_utc
    )


def _signer_certificate(decoded: TimeStampResponse) -> x509.Certificate | None:
    for der in decoded.signed_data.certificates:
        cert = x509.load_der_x509_certificate(der)
        for info in decoded.signed_data.signer_infos:
            if cert.serial_number == info.serial_number:
                return cert
    return None


def timestamp_request(message: bytes) -> tuple[bytes, int]:
    """A DER TimeStampReq over SHA-256(message) with a fresh nonce and certReq set."""
    request = (
        TimestampRequestBuilder()
        .data(message)
        .hash_algorithm(HashAlgorithm.SHA256)
        .nonce(nonce=True)
        .cert_request(cert_request=True)
        .build()
    )
    nonce = request.nonce
    assert nonce is not None
    return bytes(request.as_bytes()), nonce


async def request_timestamp(
    session: aiohttp.ClientSession,
    url: str,
    message: bytes,
    trust: TsaTrust,
    *,
    timeout_seconds: float = 10.0,
    now: dt.datetime | None = None,
) -> Timestamp:
    """Ask the TSA at `url` for a verified time-stamp over `message`."""
    body, nonce = timestamp_request(message)
    try:
        async with asyncio.timeout(timeout_seconds):
            async with session.post(
                url, data=body, headers={"Content-Type": TIMESTAMP_QUERY}
            ) as answer:
                if answer.status != 200:
                    raise TsaUnavailable(
                        f"the time-stamping authority at {url} answered HTTP {answer.status}"
                    )
                content_type = answer.headers.get("Content-Type", "")
                if content_type.split(";")[0].strip().lower() != TIMESTAMP_REPLY:
                    raise TimestampError(
                        f"the time-stamping authority at {url} answered {content_type!r}, "
                        f"not {TIMESTAMP_REPLY}"
                    )
                response = await _read_limited(answer)
    except TimeoutError as exc:
        raise TsaUnavailable(
            f"the time-stamping authority at {url} did not answer within {timeout_seconds} s"
        ) from exc
    except aiohttp.ClientError as exc:
        raise TsaUnavailable(f"cannot reach the time-stamping authority at {url}: {exc}") from exc
    stamp = verify_timestamp(response, message, trust, nonce=nonce)
    reference = now or dt.datetime.now(dt.UTC)
    if abs(stamp.time - reference) > MAX_CLOCK_SKEW:
        raise TimestampError(
            f"the time-stamping authority at {url} says it is {stamp.time.isoformat()}, "
            f"but our clock says {reference.isoformat()}: check both clocks"
        )
    return stamp


async def _read_limited(answer: aiohttp.ClientResponse) -> bytes:
    if (answer.content_length or 0) > MAX_RESPONSE_BYTES:
        raise TimestampError(
            f"the time-stamp response announces {answer.content_length} bytes; "
            f"at most {MAX_RESPONSE_BYTES} are accepted"
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in answer.content.iter_chunked(16 * 1024):
        total += len(chunk)
        if total > MAX_RESPONSE_BYTES:
            raise TimestampError(
                f"the time-stamp response is larger than {MAX_RESPONSE_BYTES} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)
