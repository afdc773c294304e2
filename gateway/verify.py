"""Verifying a signed bundle: the gateway's seal, and each organisation's own signature.

A recipient need not trust the gateway for the data: every source's original response is in the
bundle byte for byte, and re-verifying it with that organisation's connector must give exactly
the data the bundle shows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import jws
from gateway.canonical import CanonicalizationError, canonicalize
from gateway.connector import Connector
from gateway.errors import SchemaViolation, SourceInvalid, VerificationError
from gateway.schema import validate_bundel

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Trust:
    """Whom a verifier trusts: seal keys by `kid`, and connectors to re-check sources."""

    seal_keys: Mapping[str, ec.EllipticCurvePublicKey]
    connectors: Mapping[str, Connector] = field(default_factory=dict)

    @classmethod
    def from_jwks(
        cls, jwks_document: Mapping[str, Any], connectors: Mapping[str, Connector] | None = None
    ) -> Trust:
        keys: dict[str, ec.EllipticCurvePublicKey] = {}
        for entry in jwks_document.get("keys", []):
            if entry.get("kty") != "EC" or entry.get("crv") != "P-256" or "kid" not in entry:
                continue
            numbers = ec.EllipticCurvePublicNumbers(
                int.from_bytes(jws.b64url_decode(entry["x"]), "big"),
                int.from_bytes(jws.b64url_decode(entry["y"]), "big"),
                ec.SECP256R1(),
            )
            keys[entry["kid"]] = numbers.public_key()
        return cls(keys, connectors or {})


@dataclass(frozen=True, slots=True)
class SourceVerdict:
    code: str
    status: str
    provenance: str  # "verified", "absent" (no data fetched) or "not checked" (no trust)


@dataclass(frozen=True, slots=True)
class BundleVerdict:
    document: dict[str, Any]
    kid: str
    sources: tuple[SourceVerdict, ...]


def verify_download(data: bytes, trust: Trust) -> BundleVerdict:
    """Verify the JSON download `{"bundel": …, "jws": …}`."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise VerificationError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        outer = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise VerificationError("not a JSON document") from exc
    if not isinstance(outer, dict) or not isinstance(outer.get("bundel"), dict):
        raise VerificationError('expected a JSON object with "bundel" and "jws"')
    token = outer.get("jws")
    if not isinstance(token, str):
        raise VerificationError('the "jws" member must be a compact JWS string')
    document = outer["bundel"]
    try:
        payload = canonicalize(document)
    except CanonicalizationError as exc:
        raise VerificationError(f"bundle cannot be canonicalised: {exc}") from exc
    kid = _verify_seal(token, trust, detached_payload=payload)
    return _verify_document(document, kid, trust)


def verify_compact(token: str | bytes, trust: Trust) -> BundleVerdict:
    """Verify the plain compact JWS whose payload is the canonical bundle."""
    kid = _verify_seal(token, trust)
    parsed, _, _ = jws.parse(token)
    try:
        document = orjson.loads(parsed.payload)
    except orjson.JSONDecodeError as exc:
        raise VerificationError("JWS payload is not JSON") from exc
    if not isinstance(document, dict):
        raise VerificationError("JWS payload must be a JSON object")
    try:
        canonical = canonicalize(document) == parsed.payload
    except CanonicalizationError as exc:
        raise VerificationError(f"payload cannot be canonicalised: {exc}") from exc
    if not canonical:
        raise VerificationError("JWS payload is not in RFC 8785 canonical form")
    return _verify_document(document, kid, trust)


def _verify_seal(token: str | bytes, trust: Trust, detached_payload: bytes | None = None) -> str:
    parsed, _, _ = jws.parse(token, detached_payload=detached_payload)
    kid = parsed.header.get("kid")
    if not isinstance(kid, str) or kid not in trust.seal_keys:
        raise VerificationError(f"signed by unknown key {kid!r}; not one of the trusted seal keys")
    jws.verify_es256(token, trust.seal_keys[kid], detached_payload=detached_payload)
    return kid


def verify_bundel_document(document: dict[str, Any], kid: str, trust: Trust) -> BundleVerdict:
    """Schema and every source's provenance, for a bundle whose seal was checked elsewhere."""
    return _verify_document(document, kid, trust)


def _verify_document(document: dict[str, Any], kid: str, trust: Trust) -> BundleVerdict:
    try:
        validate_bundel(document)
    except SchemaViolation as exc:
        raise VerificationError(str(exc)) from exc
    return BundleVerdict(
        document, kid, tuple(_verify_source(bron, trust) for bron in document["bronnen"])
    )


def _verify_source(bron: dict[str, Any], trust: Trust) -> SourceVerdict:
    code = bron["organisatie"]["code"]
    herkomst = bron["herkomst"]
    if herkomst is None:
        return SourceVerdict(code, bron["status"], "absent")
    try:
        raw = base64.b64decode(herkomst["inhoud"], validate=True)
    except binascii.Error as exc:
        raise VerificationError(f"{code}: provenance is not valid base64") from exc
    if hashlib.sha256(raw).hexdigest() != herkomst["sha256"]:
        raise VerificationError(f"{code}: provenance does not match its SHA-256")
    connector = trust.connectors.get(code)
    if connector is None:
        return SourceVerdict(code, bron["status"], "not checked")
    try:
        gegevens = connector.verify(raw)
    except SourceInvalid as exc:
        raise VerificationError(f"{code}: the organisation's signature fails: {exc}") from exc
    if orjson.loads(orjson.dumps(gegevens)) != bron["gegevens"]:
        raise VerificationError(f"{code}: the data in the bundle differ from the signed source")
    return SourceVerdict(code, bron["status"], "verified")
