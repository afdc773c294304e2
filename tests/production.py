"""A complete, valid production configuration, for tests that take one setting away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.pki import DevPki


def production_config(pki: DevPki, tmp_path: Path) -> dict[str, Any]:
    seal = pki.identity(pki.seal_names()[-1])
    pseudonym_key = tmp_path / "pseudonym.key"
    pseudonym_key.write_bytes(b"k" * 32)
    return {
        "mode": "production",
        "public_url": "https://gateway.example",
        "state_dir": str(tmp_path / "state"),
        "signing": {"key": str(seal.key), "chain": str(seal.chain)},
        "audit": {
            "pseudonym_key_file": str(pseudonym_key),
            "archive_public_key_file": str(tmp_path / "archivist.pub"),
        },
        "documents": {"tsa_url": "https://tsa.invalid/", "trust_roots": [str(pki.root_cert)]},
        # Unreachable: the relay retries in the background and never blocks a request.
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "security_protocol": "SSL"},
        "oidc": {
            "issuer": "https://digid.example",
            "client_key": str(pki.identity("gateway-client").key),
        },
        "organisations": {"duo": {"url": "https://duo.example", "trust_cert": str(seal.chain)}},
    }
