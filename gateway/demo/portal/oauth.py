"""What a portal's back-end does against the gateway: PAR, token with DPoP, bundle download.

This is the reference client for docs/portals.md; the demo portal, the `blauweknop demo`
journey and the tests use it. Each step is also available in parts (`client_assertion`,
`dpop_proof`, `pkce_pair`) so the negative tests can send exactly what they mean to.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.demo.portal.keys import ClientKey, public_jwk
from gateway.errors import OAuthError

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str


def pkce_pair() -> Pkce:
    verifier = secrets.token_urlsafe(48)
    return Pkce(verifier, _b64(hashlib.sha256(verifier.encode("ascii")).digest()))


def client_assertion(
    key: ClientKey,
    client_id: str,
    audience: str,
    *,
    lifetime: float = 60,
    now: float | None = None,
    jti: str | None = None,
    **overrides: Any,
) -> str:
    """An RFC 7523 client assertion: iss = sub = client_id, aud = the gateway's issuer."""
    issued = time.time() if now is None else now
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": int(issued),
        "exp": int(issued + lifetime),
        "jti": jti or str(uuid.uuid4()),
        **overrides,
    }
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})


def dpop_proof(
    key: ec.EllipticCurvePrivateKey,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    iat: float | None = None,
    jti: str | None = None,
    include_ath: bool = True,
) -> str:
    """An RFC 9449 proof: typ dpop+jwt, the public key as jwk, htm, htu, iat, jti, and ath."""
    claims: dict[str, Any] = {
        "htm": method,
        "htu": url,
        "iat": int(time.time() if iat is None else iat),
        "jti": jti or str(uuid.uuid4()),
    }
    if access_token is not None and include_ath:
        claims["ath"] = _b64(hashlib.sha256(access_token.encode("ascii")).digest())
    return jwt.encode(
        claims,
        key,
        algorithm="ES256",
        headers={"typ": "dpop+jwt", "jwk": public_jwk(key.public_key())},
    )


@dataclass(frozen=True, slots=True)
class Metadata:
    issuer: str
    par: str
    authorize: str
    token: str
    bundle: str

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Metadata:
        return cls(
            document["issuer"],
            document["pushed_authorization_request_endpoint"],
            document["authorization_endpoint"],
            document["token_endpoint"],
            document["bundle_endpoint"],
        )


@dataclass(frozen=True, slots=True)
class Started:
    """A pushed request: where to send the browser, and what to keep for the callback."""

    authorize_url: str
    state: str
    pkce: Pkce


@dataclass(frozen=True, slots=True)
class Token:
    """A DPoP-bound access token, and when it expires by this client's clock.

    `expires_at` is counted from when the token request was sent, before the gateway started
    the token's life, so a client that honours it does not send a token the gateway has already
    let expire.
    """

    access_token: str
    expires_in: int
    expires_at: float

    def expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass(frozen=True, slots=True)
class Download:
    media_type: str
    body: bytes


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any]:
    body = await response.read()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise OAuthError("server_error", f"the gateway answered {response.status}, not JSON")
    if response.status >= 400:
        raise OAuthError(
            str(data.get("error", "server_error")),
            str(data.get("error_description", "")),
            response.status,
        )
    return data


@dataclass(frozen=True, slots=True)
class PortalClient:
    """A registered portal, talking to the gateway at `gateway_url`."""

    gateway_url: str
    client_id: str
    key: ClientKey
    redirect_uri: str

    async def metadata(self, session: aiohttp.ClientSession) -> Metadata:
        url = f"{self.gateway_url}/.well-known/oauth-authorization-server"
        async with session.get(url) as response:
            return Metadata.from_document(await _json(response))

    async def push(
        self,
        session: aiohttp.ClientSession,
        *,
        purpose_id: str,
        scopes: Sequence[str],
        lang: str = "nl",
    ) -> Started:
        meta = await self.metadata(session)
        pkce = pkce_pair()
        state = secrets.token_urlsafe(24)
        form = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": " ".join(scopes),
            "purpose_id": purpose_id,
            "state": state,
            "code_challenge": pkce.challenge,
            "code_challenge_method": "S256",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(self.key, self.client_id, meta.issuer),
        }
        async with session.post(meta.par, data=form) as response:
            pushed = await _json(response)
        query = quote(pushed["request_uri"], safe="")
        url = f"{meta.authorize}?client_id={self.client_id}&request_uri={query}"
        if lang == "en":
            url += "&lang=en"
        return Started(url, state, pkce)

    async def redeem(
        self,
        session: aiohttp.ClientSession,
        *,
        code: str,
        verifier: str,
        dpop_key: ec.EllipticCurvePrivateKey,
    ) -> Token:
        """Exchange the code for a DPoP-bound access token (bound to `dpop_key`)."""
        meta = await self.metadata(session)
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": verifier,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(self.key, self.client_id, meta.issuer),
        }
        headers = {"DPoP": dpop_proof(dpop_key, "POST", meta.token)}
        sent = time.time()
        async with session.post(meta.token, data=form, headers=headers) as response:
            token = await _json(response)
        if token.get("token_type") != "DPoP":
            raise OAuthError("server_error", "expected a DPoP-bound access token")
        expires_in = int(token["expires_in"])
        return Token(str(token["access_token"]), expires_in, sent + expires_in)

    async def download(
        self,
        session: aiohttp.ClientSession,
        *,
        access_token: str,
        dpop_key: ec.EllipticCurvePrivateKey,
        media_type: str = "application/json",
    ) -> Download:
        meta = await self.metadata(session)
        headers = {
            "Authorization": f"DPoP {access_token}",
            "DPoP": dpop_proof(dpop_key, "GET", meta.bundle, access_token=access_token),
            "Accept": media_type,
        }
        async with session.get(meta.bundle, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                try:
                    error = orjson.loads(body)
                except orjson.JSONDecodeError:
                    error = {}
                raise OAuthError(
                    str(error.get("error", "server_error")),
                    str(error.get("error_description", body[:200].decode(errors="replace"))),
                    response.status,
                )
            return Download(response.content_type, body)
