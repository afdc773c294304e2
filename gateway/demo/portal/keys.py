"""The demo portal's client key: made on first use in the state directory, never in the repo.

The private key stays with the portal (`client-key.pem`, mode 0600); the gateway reads only the
public JWKS (`client.jwks.json`), which `policies/portals/demo-mijngemeente.toml` names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.authz.proofs import jwk_thumbprint
from gateway.jws import b64url


@dataclass(frozen=True, slots=True)
class ClientKey:
    private_key: ec.EllipticCurvePrivateKey
    kid: str

    @property
    def public_jwk(self) -> dict[str, str]:
        return public_jwk(self.private_key.public_key())


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def new_client_key() -> ClientKey:
    key = ec.generate_private_key(ec.SECP256R1())
    return ClientKey(key, jwk_thumbprint(public_jwk(key.public_key())))


def jwks_document(*keys: ClientKey) -> dict[str, list[dict[str, str]]]:
    return {"keys": [{**k.public_jwk, "kid": k.kid, "alg": "ES256", "use": "sig"} for k in keys]}


def ensure_client_key(state_dir: Path) -> ClientKey:
    """The demo portal's key pair in `state_dir/demo-portal/`, made if missing."""
    folder = state_dir / "demo-portal"
    key_file = folder / "client-key.pem"
    if not key_file.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        made = new_client_key()
        pem = made.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = folder / f".client-key.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, key_file)
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    key = ClientKey(private, jwk_thumbprint(public_jwk(private.public_key())))
    jwks_file = folder / "client.jwks.json"
    document = orjson.dumps(jwks_document(key), option=orjson.OPT_INDENT_2)
    if not jwks_file.exists() or jwks_file.read_bytes() != document:
        jwks_file.write_bytes(document)
    return key
