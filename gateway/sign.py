"""Signing bundles: the gateway's seal keys, their JWKS, and the signed JSON download.

The bundle is validated against schema v1, canonicalised (RFC 8785) and signed as a compact
JWS with ES256, a `kid` (RFC 7638 thumbprint) and the certificate chain in `x5c`. Rotation: the
newest key signs; retired keys stay in the JWKS so that older bundles keep verifying.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from gateway import jws
from gateway.canonical import canonicalize
from gateway.errors import ConfigError
from gateway.hsm import Pkcs11Config, load_pkcs11_key
from gateway.models import Bundel
from gateway.pki import DevPki
from gateway.schema import validate_bundel

PAYLOAD_TYPE = "application/vnd.blauweknop.bundel.v1+json"


@dataclass(frozen=True, slots=True)
class SealKey:
    kid: str
    chain: tuple[x509.Certificate, ...]
    private_key: ec.EllipticCurvePrivateKey | None

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        key = self.chain[0].public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key

    def jwk(self) -> dict[str, Any]:
        return {
            **_public_jwk(self.public_key),
            "kid": self.kid,
            "use": "sig",
            "alg": "ES256",
            "x5c": [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in self.chain],
        }


@dataclass(frozen=True, slots=True)
class KeyRing:
    """The active seal key plus the retired ones that still verify."""

    active: SealKey
    retired: tuple[SealKey, ...] = ()

    @property
    def all(self) -> Mapping[str, SealKey]:
        return {k.kid: k for k in (self.active, *self.retired)}

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.jwk() for k in (self.active, *self.retired)]}

    @classmethod
    def from_files(
        cls, active_key: Path, active_chain: Path, retired: Sequence[Path] = ()
    ) -> KeyRing:
        private = load_pem_private_key(active_key.read_bytes(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey) or not isinstance(
            private.curve, ec.SECP256R1
        ):
            raise ConfigError(f"{active_key}: the seal key must be an EC P-256 key (ES256)")
        active = _seal_key(active_chain, private)
        if active.public_key.public_numbers() != private.public_key().public_numbers():
            raise ConfigError(f"{active_key} does not belong to the certificate in {active_chain}")
        return cls(active, tuple(_seal_key(path, None) for path in retired))

    @classmethod
    def from_pkcs11(
        cls, config: Pkcs11Config, active_chain: Path, retired: Sequence[Path] = ()
    ) -> KeyRing:
        """The active seal key on an HSM (PKCS#11): it signs there and never leaves it."""
        probe = _seal_key(active_chain, None)
        key = load_pkcs11_key(config, probe.public_key)
        return cls(SealKey(probe.kid, probe.chain, key), tuple(_seal_key(p, None) for p in retired))

    @classmethod
    def from_dev_pki(cls, pki: DevPki) -> KeyRing:
        pki.ensure()
        names = pki.seal_names()
        newest = pki.identity(names[-1])
        return cls.from_files(
            newest.key, newest.chain, [pki.identity(n).chain for n in reversed(names[:-1])]
        )


@dataclass(frozen=True, slots=True)
class SignedBundel:
    bundel: Bundel
    document: dict[str, Any]
    canonical: bytes
    detached_jws: str

    @property
    def compact_jws(self) -> str:
        protected, _, signature = self.detached_jws.split(".")
        return f"{protected}.{jws.b64url(self.canonical)}.{signature}"

    def download_json(self) -> bytes:
        """The JSON download: `{"bundel": …, "jws": <detached JWS over the canonical bundel>}`."""
        return orjson.dumps({"bundel": self.document, "jws": self.detached_jws})


def sign_bundel(bundel: Bundel, keys: KeyRing) -> SignedBundel:
    """Validate against schema v1, canonicalise and seal; raises SchemaViolation if invalid."""
    document = orjson.loads(orjson.dumps(bundel))
    validate_bundel(document)
    canonical = canonicalize(document)
    key = keys.active
    assert key.private_key is not None
    header = {"kid": key.kid, "x5c": key.jwk()["x5c"], "typ": "JOSE", "cty": PAYLOAD_TYPE}
    return SignedBundel(
        bundel,
        document,
        canonical,
        jws.sign_es256(canonical, key.private_key, header, detached=True),
    )


def jwk_thumbprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order."""
    digest = hashlib.sha256(orjson.dumps(_public_jwk(public_key), option=orjson.OPT_SORT_KEYS))
    return jws.b64url(digest.digest())


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": jws.b64url(numbers.x.to_bytes(32, "big")),
        "y": jws.b64url(numbers.y.to_bytes(32, "big")),
    }


def _seal_key(chain_path: Path, private: ec.EllipticCurvePrivateKey | None) -> SealKey:
    chain = tuple(x509.load_pem_x509_certificates(chain_path.read_bytes()))
    if not chain:
        raise ConfigError(f"{chain_path} holds no certificate")
    public = chain[0].public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ConfigError(f"{chain_path}: the seal certificate must carry an EC P-256 key")
    return SealKey(jwk_thumbprint(public), chain, private)
