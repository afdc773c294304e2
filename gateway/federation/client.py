"""Making and sending registry requests: for `blauweknop org`, organisations' tools and tests."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.federation.registry import ADMIN_ISSUER, Actie, key_id, public_jwk, sign_request

PATH_REQUESTS = "/v1/federatie/verzoeken"


def jwks_for(*keys: ec.EllipticCurvePrivateKey) -> dict[str, Any]:
    return {"keys": [public_jwk(k.public_key(), key_id(k.public_key())) for k in keys]}


def organisation_request(
    key: ec.EllipticCurvePrivateKey,
    actie: Actie,
    entry: dict[str, Any],
    *,
    versie: int | None = None,
) -> str:
    """A request signed by the organisation itself (`aanmelden` or `wijzigen`)."""
    return sign_request(
        key=key,
        kid=key_id(key.public_key()),
        actie=actie,
        oin=entry["oin"],
        iss=entry["oin"],
        inschrijving=entry,
        versie=versie,
    )


def approval_request(admin_key: ec.EllipticCurvePrivateKey, oin: str, versie: int) -> str:
    """A federation administrator's approval of the entry's version `versie`."""
    return admin_request(admin_key, "goedkeuren", oin, versie=versie)


def admin_request(
    admin_key: ec.EllipticCurvePrivateKey,
    actie: Actie,
    oin: str,
    *,
    versie: int | None = None,
    reden: str | None = None,
) -> str:
    """An administrator's `goedkeuren`, `schorsen`, `herstellen` or `intrekken`."""
    return sign_request(
        key=admin_key,
        kid=key_id(admin_key.public_key()),
        actie=actie,
        oin=oin,
        iss=ADMIN_ISSUER,
        versie=versie,
        reden=reden,
    )


def withdrawal_request(
    key: ec.EllipticCurvePrivateKey,
    oin: str,
    *,
    versie: int | None = None,
    reden: str | None = None,
) -> str:
    """The organisation withdraws itself, signed with a key of its registered JWKS."""
    return sign_request(
        key=key,
        kid=key_id(key.public_key()),
        actie="intrekken",
        oin=oin,
        iss=oin,
        versie=versie,
        reden=reden,
    )


def mtls_context(cert: Path, key: Path, ca: Path | None) -> ssl.SSLContext:
    """A TLS client context presenting the organisation's certificate (chain) and key."""
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    return context


async def send_mtls(
    session: aiohttp.ClientSession,
    gateway_url: str,
    request: dict[str, Any],
    context: ssl.SSLContext,
) -> tuple[int, dict[str, Any]]:
    """A registry request as plain JSON over mTLS (`[federation] mtls_port` listener)."""
    async with session.post(
        gateway_url.rstrip("/") + PATH_REQUESTS,
        data=orjson.dumps(request),
        headers={"Content-Type": "application/json"},
        ssl=context,
    ) as response:
        body = await response.read()
        return response.status, orjson.loads(body) if body else {}


async def send(
    session: aiohttp.ClientSession, gateway_url: str, token: str
) -> tuple[int, dict[str, Any]]:
    async with session.post(
        gateway_url.rstrip("/") + PATH_REQUESTS,
        data=token.encode(),
        headers={"Content-Type": "application/jwt"},
    ) as response:
        body = await response.read()
        return response.status, orjson.loads(body) if body else {}
