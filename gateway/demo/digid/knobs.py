"""Test-only knobs that make the stand-in DigiD misbehave, set over HTTP like the sandboxes' faults.

`PUT /_sandbox/idtoken` with a JSON object sets knobs, `DELETE` resets them, `GET` shows them.
Each knob breaks one thing the relying party must check; the negative tests use them over real
HTTP so the gateway's own code path is what refuses the token.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# RSA-OAEP (SHA-1) is offered only so tests can check that the gateway refuses it.
ENCRYPTION_CHOICES = ("auto", "none", "RSA-OAEP-256", "ECDH-ES", "RSA-OAEP")


@dataclass(slots=True)
class IdTokenKnobs:
    alg_none: bool = False  # "alg": "none", no signature
    hs256_public_key: bool = False  # HS256 with the provider's public key (PEM) as HMAC secret
    bad_signature: bool = False  # a signature that does not verify
    unknown_kid: bool = False  # signed by a key the provider does not publish
    expired: bool = False  # exp an hour ago
    not_yet_valid: bool = False  # iat and nbf an hour from now
    wrong_iss: bool = False
    wrong_aud: bool = False
    extra_aud_without_azp: bool = False  # aud [client, other], no azp
    wrong_nonce: bool = False
    represents: bool = False  # acting on behalf of someone else
    omit_nonce: bool = False
    sub: str = ""  # override the subject, e.g. a number that fails the 11-proef
    sub_id_type: str = ""  # override the identifier type
    acr: str = ""  # override the acr whatever the tester picked
    encryption: str = "auto"  # auto: as registered for the client; none, RSA-OAEP-256, ECDH-ES
    wrong_encryption_key: bool = False  # encrypt to a key that is not the client's
    wrong_response_iss: bool = False  # RFC 9207: another issuer in the authorization response

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown ID-token knob {name!r}; known: {sorted(known)}")
            current = getattr(self, name)
            if not isinstance(value, type(current)):
                raise ValueError(f"{name} must be a {type(current).__name__}")
            if name == "encryption" and value not in ENCRYPTION_CHOICES:
                raise ValueError(f"encryption must be one of {ENCRYPTION_CHOICES}")
        for name, value in values.items():
            setattr(self, name, value)

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, f.default)
