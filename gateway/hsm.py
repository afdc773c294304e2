"""The seal key in an HSM over PKCS#11 (python-pkcs11): it signs, it never leaves the token.

`Pkcs11EcKey` is a `cryptography` EllipticCurvePrivateKey whose `sign` is C_Sign on the token
(CKM_ECDSA over a SHA-256 digest computed here). Because it has the same interface as a key
loaded from a file, the JWS (`gateway.jws`), the XAdES seal (signxml) and the PAdES seal
(pyHanko, `gateway.documents.pdf`) all use it unchanged. Tested against SoftHSM2.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from gateway.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Pkcs11Config:
    """Where the seal key lives: the PKCS#11 module, token label, key label and PIN file."""

    module: Path
    token_label: str
    key_label: str
    pin_file: Path


class Pkcs11EcKey(ec.EllipticCurvePrivateKey):
    """An EC P-256 private key on a PKCS#11 token; only `sign` and `public_key` work."""

    def __init__(self, session: Any, key: Any, public_key: ec.EllipticCurvePublicKey) -> None:
        self._session = session
        self._key = key
        self._public = public_key
        self._lock = threading.Lock()  # one PKCS#11 session: one operation at a time

    def sign(
        self,
        data: bytes | bytearray | memoryview,
        signature_algorithm: ec.EllipticCurveSignatureAlgorithm,
    ) -> bytes:
        data = bytes(data)
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, Prehashed):
            digest = data
        else:
            if not isinstance(algorithm, hashes.SHA256):
                raise ValueError("the HSM seal key signs with ECDSA over SHA-256 only")
            h = hashes.Hash(hashes.SHA256())
            h.update(data)
            digest = h.finalize()
        with self._lock:
            raw = self._key.sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm: ec.ECDH, peer_public_key: ec.EllipticCurvePublicKey) -> bytes:
        _refuse()

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        _refuse()

    def private_bytes(self, encoding: Any, format: Any, encryption_algorithm: Any) -> bytes:
        _refuse()

    def __copy__(self) -> Pkcs11EcKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Pkcs11EcKey:
        return self


def _refuse() -> NoReturn:
    raise TypeError("the seal key lives in the HSM: it signs, nothing else leaves the token")


def load_pkcs11_key(config: Pkcs11Config, public_key: ec.EllipticCurvePublicKey) -> Pkcs11EcKey:
    """Open a session on the token and find the private key by label.

    `public_key` comes from the seal certificate; the token must hold the matching key.
    """
    try:
        pin = config.pin_file.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the HSM PIN file {config.pin_file}: {exc}") from exc
    try:
        lib = pkcs11.lib(str(config.module))
        token = lib.get_token(token_label=config.token_label)
        try:
            session = token.open(user_pin=pin)
        except pkcs11.UserAlreadyLoggedIn:
            # PKCS#11 login is per process: another session of ours has logged in already.
            session = token.open()
        key = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=config.key_label
        )
    except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"cannot use seal key {config.key_label!r} on PKCS#11 token "
            f"{config.token_label!r} via {config.module}: {type(exc).__name__} {exc}"
        ) from exc
    signer = Pkcs11EcKey(session, key, public_key)
    # Prove at start-up that the token's key belongs to the certificate.
    probe = b"blauweknop seal key check"
    try:
        public_key.verify(
            signer.sign(probe, ec.ECDSA(hashes.SHA256())), probe, ec.ECDSA(hashes.SHA256())
        )
    except Exception as exc:
        raise ConfigError(
            f"the key {config.key_label!r} on token {config.token_label!r} does not belong to "
            "the configured seal certificate"
        ) from exc
    return signer


__all__ = ["Attribute", "Pkcs11Config", "Pkcs11EcKey", "load_pkcs11_key"]
