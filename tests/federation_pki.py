"""Certificates for the federation's X.509 tests: a PKIoverheid-style hierarchy made per test.

A root ("Staat der Nederlanden"-like), organisation CAs under it, and leaves that carry the
OIN in the subject serialNumber, as PKIoverheid organisation certificates do. Expired,
foreign and self-signed ones are made the same way, so each test states what differs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Use = Literal["ca", "tls-client", "sign", "key-agreement"]


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, directory: Path, name: str, *chain: Issued) -> tuple[Path, Path]:
        """Certificate file (leaf then `chain`) and key file, for an ssl context."""
        cert_file, key_file = directory / f"{name}.cert.pem", directory / f"{name}.key.pem"
        cert_file.write_text("".join(c.pem for c in (self, *chain)))
        key_file.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


def _name(common_name: str, oin: str | None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Blauwe Knop test"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ]
    if oin is not None:
        attributes.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, oin))
    return x509.Name(attributes)


def issue(
    common_name: str,
    issuer: Issued | None,
    *,
    use: Use,
    oin: str | None = None,
    valid_from: dt.datetime | None = None,
    valid_until: dt.datetime | None = None,
) -> Issued:
    """A certificate issued by `issuer` (None: self-signed)."""
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(common_name, oin)
    signer = issuer.key if issuer else key
    ca = use == "ca"
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from or now - dt.timedelta(minutes=5))
        .not_valid_after(valid_until or now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=use in ("tls-client", "sign"),
                content_commitment=use == "sign",
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=use == "key-agreement",
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if use == "tls-client":
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def root(common_name: str = "Staat der Nederlanden test root") -> Issued:
    return issue(common_name, None, use="ca", valid_until=None)
