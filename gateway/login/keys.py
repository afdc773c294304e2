"""The gateway's own keys as relying party: one signs client assertions, others decrypt ID tokens.

Production reads them from PEM files (`[oidc] client_key`, `encryption_keys`); sandbox mode makes
development keys on first use next to the development PKI. Their public halves are published at
`/login/jwks.json`, which is what the identity provider registers for the gateway.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey, RSAKey

from gateway.config import OidcSettings
from gateway.errors import ConfigError

#: Key management algorithms for JWE ID tokens, by key type; content encryption is A256GCM.
ENCRYPTION_ALGS = {"RSA": "RSA-OAEP-256", "EC": "ECDH-ES"}
CONTENT_ENCRYPTION = "A256GCM"

DEV_CLIENT_KEY = "oidc-client.key.pem"
DEV_ENCRYPTION_KEYS = ("oidc-enc-rsa.key.pem", "oidc-enc-ec.key.pem")

AsymmetricKey = RSAKey | ECKey


@dataclass(frozen=True, slots=True)
class RelyingPartyKeys:
    client_key: AsymmetricKey
    client_alg: str
    encryption_keys: tuple[AsymmetricKey, ...]

    def public_jwks(self) -> dict[str, Any]:
        keys = [self.client_key.as_dict(private=False, use="sig", alg=self.client_alg)]
        keys += [
            key.as_dict(private=False, use="enc", alg=ENCRYPTION_ALGS[key.key_type])
            for key in self.encryption_keys
        ]
        return {"keys": keys}

    def decryption_candidates(self, alg: str, kid: str | None) -> list[AsymmetricKey]:
        """The private keys that may decrypt a JWE with this `alg` (and `kid`, if given)."""
        kty = "RSA" if alg.startswith("RSA-OAEP") else "EC" if alg.startswith("ECDH-ES") else None
        return [
            key
            for key in self.encryption_keys
            if key.key_type == kty and (kid is None or key.kid == kid)
        ]


def load_rp_keys(oidc: OidcSettings, dev_dir: Path, *, sandbox: bool) -> RelyingPartyKeys:
    """The configured keys; in sandbox mode, development keys for whatever is not configured."""
    if oidc.client_key is None and not sandbox:
        raise ConfigError("[oidc] client_key is required outside sandbox mode")
    client_path = oidc.client_key or ensure_dev_key(dev_dir / DEV_CLIENT_KEY, "ec")
    enc_paths = oidc.encryption_keys or (
        tuple(
            ensure_dev_key(dev_dir / name, "rsa" if "rsa" in name else "ec")
            for name in DEV_ENCRYPTION_KEYS
        )
        if sandbox
        else ()
    )
    client_key = _load(client_path, "sig")
    alg = oidc.client_auth_alg
    if (client_key.key_type, alg[:2]) not in (("EC", "ES"), ("RSA", "RS"), ("RSA", "PS")):
        raise ConfigError(
            f"[oidc] client_auth_alg {alg!r} does not fit the {client_key.key_type} client_key"
        )
    return RelyingPartyKeys(client_key, alg, tuple(_load(p, "enc") for p in enc_paths))


def _load(path: Path, use: str) -> AsymmetricKey:
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the private key {path}: {exc}") from exc
    key: AsymmetricKey
    if isinstance(private, rsa.RSAPrivateKey):
        key = RSAKey.import_key(private, {"use": use})
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        key = ECKey.import_key(private, {"use": use})
    else:
        raise ConfigError(f"{path}: use an RSA or EC (P-256) private key")
    key.ensure_kid()
    return key


def ensure_dev_key(path: Path, kind: str) -> Path:
    """Make a development private key once; several processes may race, one key wins."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if kind == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".key-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        # Atomic create-if-absent: when another process made the key first, that key stays.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
    return path
