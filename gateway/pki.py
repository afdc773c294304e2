"""A development PKI, made on first use, so the demo and tests need no secrets in the repo.

One root CA issues every identity the sandbox world needs: the gateway's seal (signs bundles),
the gateway's TLS client certificate (Digikoppeling two-sided TLS to UWV), UWV's TLS server
certificate, and each organisation's signing certificate. Production loads its keys from files
(see `gateway.config`); nothing here is used outside sandbox mode.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
Usage = Literal["sign", "tls-server", "tls-client", "timestamping"]

SEAL_PREFIX = "gateway-seal-"
_VALIDITY = dt.timedelta(days=825)
# A time-stamping authority's certificate outlives the signatures it dates (PAdES B-LT).
_TSA_VALIDITY = dt.timedelta(days=3000)


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    key: Path
    cert: Path
    chain: Path


# The identities the sandbox world needs, with the key type each protocol uses.
STANDARD_IDENTITIES: tuple[tuple[str, KeyType, Usage], ...] = (
    ("gateway-client", "ec", "tls-client"),
    ("uwv-server", "ec", "tls-server"),
    # The gateway's registry mTLS listener ([federation] mtls_port), sandbox mode only.
    ("gateway-server", "ec", "tls-server"),
    ("duo-sign", "rsa", "sign"),
    ("uwv-sign", "rsa", "sign"),
    ("cak-sign", "ec", "sign"),
    ("gemeente-sign", "ec", "sign"),
    # The development RFC 3161 time-stamping authority (gateway/tsa), never used in production.
    ("tsa", "ec", "timestamping"),
)
STANDARD_SECRETS = ("cak-client-secret",)


class DevPki:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def root_cert(self) -> Path:
        return self.directory / "root-ca.cert.pem"

    def identity(self, name: str) -> Identity:
        d = self.directory
        return Identity(
            name, d / f"{name}.key.pem", d / f"{name}.cert.pem", d / f"{name}.chain.pem"
        )

    def secret(self, name: str) -> Path:
        return self.directory / f"{name}.secret"

    def seal_names(self) -> list[str]:
        """All seal identities, oldest first; the last one signs new bundles."""
        names = [
            p.name.removesuffix(".cert.pem")
            for p in self.directory.glob(f"{SEAL_PREFIX}*.cert.pem")
        ]
        return sorted(names, key=lambda n: int(n.removeprefix(SEAL_PREFIX)))

    def ensure(self) -> None:
        """Create whatever is missing; safe to call from several processes at once."""
        with self._locked():
            if not self.root_cert.exists():
                self._make_root()
            for name, key_type, usage in STANDARD_IDENTITIES:
                if not self.identity(name).cert.exists():
                    self._issue(name, key_type, usage)
            for name in STANDARD_SECRETS:
                if not self.secret(name).exists():
                    _write_private(self.secret(name), secrets.token_urlsafe(32).encode())
            if not self.seal_names():
                self._issue(f"{SEAL_PREFIX}1", "ec", "sign")

    def rotate_seal(self) -> Identity:
        """Issue a new seal key that signs from now on; older ones stay for verification."""
        self.ensure()
        with self._locked():
            number = int(self.seal_names()[-1].removeprefix(SEAL_PREFIX)) + 1
            return self._issue(f"{SEAL_PREFIX}{number}", "ec", "sign")

    @property
    def root_crl(self) -> Path:
        return self.directory / "root-ca.crl"

    def crl(self, *, now: dt.datetime | None = None) -> bytes:
        """The root CA's current CRL (DER; nothing revoked), reissued daily, valid 30 days.

        It is the revocation information a PAdES B-LT signature embeds for the seal and TSA
        certificates, so documents validate offline after those certificates expire.
        """
        self.ensure()
        now = now or dt.datetime.now(dt.UTC)
        with self._locked():
            if self.root_crl.exists():
                current = x509.load_der_x509_crl(self.root_crl.read_bytes())
                if current.last_update_utc > now - dt.timedelta(days=1):
                    return self.root_crl.read_bytes()
            root_key = serialization.load_pem_private_key(
                (self.directory / "root-ca.key.pem").read_bytes(), password=None
            )
            assert isinstance(root_key, ec.EllipticCurvePrivateKey)
            root = x509.load_pem_x509_certificate(self.root_cert.read_bytes())
            number = int(now.timestamp())
            crl = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(root.subject)
                .last_update(now - dt.timedelta(minutes=5))
                .next_update(now + dt.timedelta(days=30))
                .add_extension(x509.CRLNumber(number), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                    critical=False,
                )
                .sign(root_key, hashes.SHA256())
            )
            der = crl.public_bytes(serialization.Encoding.DER)
            self.root_crl.write_bytes(der)
            return der

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.directory / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _make_root(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Blauwe Knop sandbox"),
                x509.NameAttribute(NameOID.COMMON_NAME, "Blauwe Knop development root CA"),
            ]
        )
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.directory / "root-ca.key.pem", _pem_key(key))
        self.root_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def _issue(self, name: str, key_type: KeyType, usage: Usage) -> Identity:
        root_key = serialization.load_pem_private_key(
            (self.directory / "root-ca.key.pem").read_bytes(), password=None
        )
        assert isinstance(root_key, ec.EllipticCurvePrivateKey)
        root = x509.load_pem_x509_certificate(self.root_cert.read_bytes())
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if key_type == "ec"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Blauwe Knop sandbox"),
                        x509.NameAttribute(NameOID.COMMON_NAME, name),
                    ]
                )
            )
            .issuer_name(root.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + (_TSA_VALIDITY if usage == "timestamping" else _VALIDITY))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), False
            )
        )
        builder = builder.add_extension(_key_usage(usage, key_type), critical=True)
        if usage == "tls-client":
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        if usage == "timestamping":
            # RFC 3161 §2.3: the TSA certificate has exactly this purpose, marked critical.
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True
            )
        if usage == "tls-server":
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            ).add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(root_key, hashes.SHA256())
        identity = self.identity(name)
        _write_private(identity.key, _pem_key(key))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        identity.cert.write_bytes(pem)
        identity.chain.write_bytes(pem + self.root_cert.read_bytes())
        return identity


def _key_usage(usage: Usage, key_type: KeyType) -> x509.KeyUsage:
    signing = usage in ("sign", "timestamping")
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=signing,
        key_encipherment=(not signing and key_type == "rsa"),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
