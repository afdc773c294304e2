"""Development keys for the federation: the sandbox administrator key (never in production)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from gateway.federation.registry import key_id


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: registry requests are signed with an EC P-256 key (ES256)")
    return key


def make_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 key written 0600 at `path`, or the one already there."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        # Write aside, then link into place: two processes starting at once agree on one key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return load_private_key(path)


def development_admin_key(state_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, str]:
    """Sandbox mode's federation administrator key, made on first use under the state dir."""
    key = make_private_key(state_dir / "federation" / "admin.key.pem")
    return key, key_id(key.public_key())
