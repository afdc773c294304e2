"""X.509 in the federation: an organisation's OIN in its certificate, and chains to its anchors.

An organisation may register X.509 trust anchors (`x509` in its entry: one or more PEM
certificates, e.g. the PKIoverheid CA that issues its certificates, or a pinned certificate).
Two things are checked against them: the TLS client certificate of a registry request sent
over mTLS, and the `x5c` chain of a generic provider's signed answer. Either way the leaf must
chain to one of the organisation's own anchors, be valid at the time that matters, have the
right key usage, and name the organisation's OIN (PKIoverheid puts it in the subject's
serialNumber; organizationIdentifier is read too).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Purpose = Literal["tls-client", "signing"]

MAX_ANCHORS: Final = 8
MAX_CHAIN: Final = 5
MAX_CERT_BYTES: Final = 16 * 1024
_OIN: Final = re.compile(r"[0-9]{20}")
# ETSI EN 319 412-1 semantics identifiers: a KvK number ("NTRNL-<8 digits>") maps to the OIN
# "00000003" + KvK + "0000" (the OIN system's rule for organisations in the trade register).
_ORG_ID_OIN: Final = re.compile(r"[A-Z]{3}NL-([0-9]{20})")
_ORG_ID_KVK: Final = re.compile(r"NTRNL-([0-9]{8})")


class CertificateRefused(ValueError):
    """A certificate or chain does not prove the organisation; the message says why."""


def load_anchors(pem: str) -> tuple[x509.Certificate, ...]:
    """The certificates of a PEM bundle; ValueError when it holds none or too many."""
    anchors = tuple(x509.load_pem_x509_certificates(pem.encode()))
    if not 1 <= len(anchors) <= MAX_ANCHORS:
        raise ValueError(f"give 1 to {MAX_ANCHORS} PEM certificates")
    return anchors


def thumbprint(cert: x509.Certificate) -> str:
    """`x5t#S256`: base64url SHA-256 of the DER certificate, as in RFC 7515 §4.1.8."""
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def certificate_oin(cert: x509.Certificate) -> str | None:
    """The OIN a certificate names, or None when it names none or two different ones."""
    found: set[str] = set()
    for attribute in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        if isinstance(attribute.value, str) and _OIN.fullmatch(attribute.value):
            found.add(attribute.value)
    for attribute in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        value = attribute.value if isinstance(attribute.value, str) else ""
        if match := _ORG_ID_OIN.fullmatch(value):
            found.add(match.group(1))
        elif match := _ORG_ID_KVK.fullmatch(value):
            found.add(f"00000003{match.group(1)}0000")
    return found.pop() if len(found) == 1 else None


def parse_x5c(value: object) -> list[x509.Certificate]:
    """A JWS `x5c` header (RFC 7515 §4.1.6: base64 DER, leaf first), bounded."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_CHAIN:
        raise CertificateRefused(f"x5c must be a list of 1 to {MAX_CHAIN} certificates")
    certs = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or len(item) > MAX_CERT_BYTES * 2:
            raise CertificateRefused(f"x5c[{i}] must be a base64 DER certificate")
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode(item, validate=True)))
        except ValueError as exc:
            raise CertificateRefused(f"x5c[{i}] is not a DER certificate: {exc}") from exc
    return certs


def _key_usage_for(purpose: Purpose) -> verification.ExtensionPolicy:
    def key_usage(
        policy: verification.Policy, cert: x509.Certificate, usage: x509.KeyUsage
    ) -> None:
        allowed = (
            usage.digital_signature
            if purpose == "tls-client"
            else usage.digital_signature or usage.content_commitment
        )
        if not allowed:
            raise ValueError(f"its key usage does not allow {purpose}")

    def extended(
        policy: verification.Policy,
        cert: x509.Certificate,
        usage: x509.ExtendedKeyUsage | None,
    ) -> None:
        tls = purpose == "tls-client"
        if tls and usage is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
            raise ValueError("its extended key usage does not include TLS client auth")

    def not_a_ca(
        policy: verification.Policy,
        cert: x509.Certificate,
        constraints: x509.BasicConstraints | None,
    ) -> None:
        if constraints is not None and constraints.ca:
            raise ValueError("a CA certificate cannot be the leaf")

    agnostic = verification.Criticality.AGNOSTIC
    # Not the Web PKI leaf profile: PKIoverheid organisation certificates need no SAN.
    return (
        verification.ExtensionPolicy.permit_all()
        .require_present(x509.KeyUsage, agnostic, key_usage)
        .may_be_present(x509.ExtendedKeyUsage, agnostic, extended)
        .may_be_present(x509.BasicConstraints, agnostic, not_a_ca)
    )


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    oin: str,
    at: dt.datetime,
    purpose: Purpose,
) -> list[x509.Certificate]:
    """Check that `leaf` proves organisation `oin` at time `at`; the verified chain, leaf first.

    The leaf chains (through `intermediates`) to one of `anchors`, every certificate is valid
    at `at`, its key usage fits `purpose`, and it names `oin`. A signing leaf without an OIN is
    accepted only when it is itself a registered anchor (a pinned certificate); a TLS client
    certificate always names the OIN, because it may be what registers the anchors.
    """
    if not anchors:
        raise CertificateRefused(f"OIN {oin} has no registered X.509 trust anchor (x509)")
    named = certificate_oin(leaf)
    pinned = purpose == "signing" and any(leaf == anchor for anchor in anchors)
    if named != oin and not (named is None and pinned):
        raise CertificateRefused(
            f"the certificate is for OIN {named}, not {oin}"
            if named
            else f"the certificate names no OIN (subject serialNumber); expected {oin}"
        )
    builder = (
        verification.PolicyBuilder()
        .store(verification.Store(list(anchors)))
        .time(at)
        .max_chain_depth(MAX_CHAIN)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=_key_usage_for(purpose),
        )
    )
    try:
        verified = builder.build_client_verifier().verify(leaf, list(intermediates))
    except verification.VerificationError as exc:
        raise CertificateRefused(
            f"the certificate does not chain to a registered anchor of OIN {oin} "
            f"valid at {at.isoformat(timespec='seconds')}: {exc}"
        ) from exc
    return list(verified.chain)
