"""A stand-in for CAK's back-end: an OAuth 2.0 token endpoint and the signed overview API.

`POST /oauth2/token` issues opaque bearer tokens for client_credentials (client_secret_basic);
`POST /api/v1/overzicht` takes {"bsn": ...} and answers with CAK's native overview as an ES256
compact JWS. Tokens live in the app (`TOKENS`), so tests can revoke or expire them.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from connectors._sandbox import FAULTS, install_faults, rogue_identity
from connectors._sandbox.runner import SandboxSpec
from connectors.cak.connector import MEDIA_TYPE, OVERZICHT_PATH
from connectors.cak.history import wlz_history
from connectors.cak.mapping import BERICHTSOORT, VERSIE
from gateway.connector import certificate_key_id
from gateway.jws import sign_es256
from gateway.pki import DevPki

CLIENT_ID = "blauweknop-gateway"
OAUTH2_ENDPOINT = "/oauth2/token"
TOKEN_LIFETIME_S = 300
SCOPE = "overzicht:lezen"
LONG_HISTORY_BSN = "999990068"

# Opaque access token -> time.monotonic() at which it expires.
TOKENS = web.AppKey("cak_tokens", dict[str, float])

_REALM = 'Bearer realm="CAK"'
_BSN = re.compile(r"[0-9]{9}")
_TESTDATA = Path(__file__).with_name("testdata.json")
_AMSTERDAM = ZoneInfo("Europe/Amsterdam")
_LEEG: dict[str, Any] = {"dossiers": [], "betalingsregelingen": []}


@dataclass(frozen=True, slots=True)
class _Signer:
    key: ec.EllipticCurvePrivateKey
    header: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _State:
    client_secret: bytes
    signer: _Signer
    records: dict[str, dict[str, Any]]


_STATE = web.AppKey("cak_state", _State)


def create_app(pki: DevPki) -> web.Application:
    identity = pki.identity("cak-sign")
    key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    records: dict[str, dict[str, Any]] = orjson.loads(_TESTDATA.read_bytes())
    records[LONG_HISTORY_BSN] = wlz_history()
    app = web.Application()
    app[_STATE] = _State(
        client_secret=pki.secret("cak-client-secret").read_bytes().strip(),
        signer=_signer(key, x509.load_pem_x509_certificates(identity.chain.read_bytes())),
        records=records,
    )
    app[TOKENS] = {}
    install_faults(app)
    app.router.add_post(OAUTH2_ENDPOINT, _token)
    app.router.add_post(OVERZICHT_PATH, _overzicht)
    return app


# Plain HTTP: the answers carry their own signature.
SANDBOX = SandboxSpec(org="cak", create_app=create_app)


def _signer(key: ec.EllipticCurvePrivateKey, chain: list[x509.Certificate]) -> _Signer:
    x5c = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain]
    return _Signer(key, {"kid": certificate_key_id(chain[0]), "typ": "JOSE", "x5c": x5c})


@cache
def _rogue_signer() -> _Signer:
    key, cert = rogue_identity("ec")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _signer(key, [cert])


async def _token(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    client = _basic_credentials(request.headers.get("Authorization", ""))
    if client is None or not _same_client(client, state.client_secret):
        return _oauth_error(401, "invalid_client", {"WWW-Authenticate": 'Basic realm="CAK"'})
    grant_type = (await request.post()).get("grant_type")
    if grant_type is None:
        return _oauth_error(400, "invalid_request")
    if grant_type != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type")
    tokens = request.app[TOKENS]
    now = time.monotonic()
    for expired in [t for t, expiry in tokens.items() if expiry <= now]:
        del tokens[expired]
    token = secrets.token_urlsafe(32)
    tokens[token] = now + TOKEN_LIFETIME_S
    body = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_S,
        "scope": SCOPE,
    }
    return web.json_response(
        body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"}, dumps=_dumps
    )


async def _overzicht(request: web.Request) -> web.Response:
    refusal = _check_bearer(request)
    if refusal is not None:
        return refusal
    transactie_id = request.headers.get("X-Transactie-Id")
    if not transactie_id:
        return _fout(400, "TRANSACTIE_ID_ONTBREEKT", "De header X-Transactie-Id ontbreekt.")
    try:
        bsn = orjson.loads(await request.read()).get("bsn")
    except (orjson.JSONDecodeError, AttributeError):
        bsn = None
    if not isinstance(bsn, str):
        return _fout(400, "ONGELDIG_VERZOEK", 'Verwacht een JSON-object {"bsn": "..."}.')
    if not _elfproef(bsn):
        return _fout(400, "ONGELDIG_BSN", "Het BSN voldoet niet aan de elfproef.")
    state = request.app[_STATE]
    overzicht = {
        "berichtsoort": BERICHTSOORT,
        "versie": VERSIE,
        "transactieId": transactie_id,
        "aanmaakmoment": datetime.now(_AMSTERDAM).isoformat(timespec="seconds"),
        "bsn": bsn,
        **state.records.get(bsn, _LEEG),
    }
    # Every answer names its transaction, so it is signed per request; ES256 is cheap.
    signer = _rogue_signer() if request.app[FAULTS].wrong_signature else state.signer
    token = sign_es256(orjson.dumps(overzicht), signer.key, signer.header, detached=False)
    return web.Response(body=token.encode("ascii"), content_type=MEDIA_TYPE)


def _check_bearer(request: web.Request) -> web.Response | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        # RFC 6750 §3.1: no error code when the request carried no credentials at all.
        return _fout(401, "NIET_GEAUTORISEERD", "Geen access token.", _REALM)
    expiry = request.app[TOKENS].get(token)
    if expiry is None or expiry <= time.monotonic():
        request.app[TOKENS].pop(token, None)
        challenge = f'{_REALM}, error="invalid_token", error_description="unknown or expired"'
        return _fout(401, "NIET_GEAUTORISEERD", "Access token onbekend of verlopen.", challenge)
    return None


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id).encode(), unquote_plus(secret).encode()


def _same_client(client: tuple[bytes, bytes], secret: bytes) -> bool:
    # Compare both parts in constant time, and always both, so timing reveals neither.
    same_id = hmac.compare_digest(client[0], CLIENT_ID.encode())
    same_secret = hmac.compare_digest(client[1], secret)
    return same_id and same_secret


def _elfproef(bsn: str) -> bool:
    if not _BSN.fullmatch(bsn):
        return False
    total = sum(int(d) * w for d, w in zip(bsn, (9, 8, 7, 6, 5, 4, 3, 2, -1), strict=True))
    return total % 11 == 0


def _oauth_error(status: int, error: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        {"error": error},
        status=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
        dumps=_dumps,
    )


def _fout(status: int, code: str, melding: str, challenge: str | None = None) -> web.Response:
    headers = {"WWW-Authenticate": challenge} if challenge else None
    return web.json_response(
        {"code": code, "melding": melding}, status=status, headers=headers, dumps=_dumps
    )


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
