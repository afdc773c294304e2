"""What the authorization server keeps between requests, always through the store.

Every value is a frozen dataclass stored as JSON under a short-lived key. Codes and tokens are
stored under their SHA-256 only, so the store never holds a usable credential.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import orjson

from gateway.errors import OAuthError

# Lifetimes of request_uris, codes and access tokens: [authz] settings (60 s, 60 s, 5 min).
TRANSACTION_TTL = 15 * 60  # login and consent must finish within this time
USED_CODE_TTL = 15 * 60  # a redeemed code is remembered this long, to catch replays

T = TypeVar("T")


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def dump(value: Any) -> bytes:
    return orjson.dumps(asdict(value))


def load(kind: type[T], raw: bytes) -> T:
    data = orjson.loads(raw)
    for key, value in data.items():
        if isinstance(value, list):
            data[key] = tuple(value)
    return kind(**data)


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """A pushed authorization request, checked and stored under its request_uri."""

    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    purpose_id: str
    state: str
    code_challenge: str
    dpop_jkt: str | None


@dataclass(frozen=True, slots=True)
class Transaction:
    """An authorization in progress: the request, while the citizen logs in and decides."""

    request: AuthorizationRequest
    csrf_secret: str
    # SHA-256 of the login session this browser had when the authorization began, if any: that
    # login is not reused, so on a shared computer nobody consents with someone else's DigiD.
    prior_session: str | None = None

    @classmethod
    def from_json(cls, raw: bytes) -> Transaction:
        data = orjson.loads(raw)
        request = data["request"]
        request["scopes"] = tuple(request["scopes"])
        return cls(AuthorizationRequest(**request), data["csrf_secret"], data.get("prior_session"))


@dataclass(frozen=True, slots=True)
class Grant:
    """What the citizen consented to, bound to the BSN from the verified login."""

    grant_id: str
    client_id: str
    redirect_uri: str
    purpose_id: str
    scopes: tuple[str, ...]
    organisations: tuple[str, ...]
    bsn: str
    acr: str
    code_challenge: str
    dpop_jkt: str | None


@dataclass(frozen=True, slots=True)
class AccessToken:
    """An issued DPoP-bound access token; stored under the token's SHA-256."""

    grant: Grant
    jkt: str
    expires_at: float

    @classmethod
    def from_json(cls, raw: bytes) -> AccessToken:
        data = orjson.loads(raw)
        grant = data["grant"]
        for key in ("scopes", "organisations"):
            grant[key] = tuple(grant[key])
        return cls(Grant(**grant), data["jkt"], float(data["expires_at"]))


def require_param(form: dict[str, str], name: str, *, max_len: int = 512) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"the {name} parameter is required")
    if len(value) > max_len:
        raise OAuthError("invalid_request", f"the {name} parameter is longer than {max_len}")
    return value
