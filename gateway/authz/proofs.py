"""Proofs a portal presents: its client assertion (RFC 7523) and DPoP proofs (RFC 9449).

Both are JWTs checked with pyjwt and `cryptography`; the single-use `jti` of each goes through
the store (`put_new`), so a replay is caught by whichever replica sees it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
import orjson

from gateway.authz.registry import CLIENT_KEY_ALGORITHMS, Portal, Registry
from gateway.errors import OAuthError
from gateway.jws import b64url
from gateway.store import Store

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DPOP_ALGORITHMS = ("ES256", "EdDSA")
MAX_ASSERTION_LIFETIME = 300.0  # a client assertion may be valid for at most 5 minutes
DPOP_IAT_WINDOW = 60.0  # a DPoP proof is accepted up to 60 s after (and 5 s before) its iat
CLOCK_SKEW = 5.0
MAX_JWT_BYTES = 8 * 1024


@dataclass(frozen=True, slots=True)
class DpopProof:
    jkt: str  # RFC 7638 thumbprint of the proof's public key
    jti: str


def _header(token: str, error: str) -> dict[str, Any]:
    if len(token) > MAX_JWT_BYTES:
        raise OAuthError(error, "the JWT is too large")
    if not token.isascii():  # from a header, bytes that are not UTF-8 arrive as surrogates
        raise OAuthError(error, "a JWT is ASCII (base64url parts separated by dots)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise OAuthError(error, f"not a well-formed JWT: {exc}") from exc
    return header


async def authenticate_client(
    form: Mapping[str, str], registry: Registry, store: Store, audiences: Sequence[str]
) -> Portal:
    """The registered portal that signed `client_assertion`, or OAuthError(invalid_client).

    The assertion must be signed by one of the portal's registered keys, have iss = sub =
    client_id, name this gateway (issuer or the endpoint URL) as aud, expire within five
    minutes and carry a jti never seen before.
    """
    if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE or "client_assertion" not in form:
        raise OAuthError(
            "invalid_client",
            "authenticate with private_key_jwt: client_assertion_type "
            f"{CLIENT_ASSERTION_TYPE} and a client_assertion signed by a registered key",
            401,
        )
    token = form["client_assertion"]
    header = _header(token, "invalid_client")
    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as exc:
        raise OAuthError("invalid_client", f"unreadable client assertion: {exc}", 401) from exc
    client_id = unverified.get("iss")
    portal = registry.portals.get(client_id) if isinstance(client_id, str) else None
    if portal is None:
        raise OAuthError("invalid_client", "unknown client: no portal is registered as iss", 401)
    if form.get("client_id", client_id) != client_id:
        raise OAuthError("invalid_client", "client_id differs from the assertion's iss", 401)
    if header.get("alg") not in CLIENT_KEY_ALGORITHMS:
        raise OAuthError("invalid_client", "client assertions must use ES256 or EdDSA", 401)
    kid = header.get("kid")
    candidates = [k for k in portal.keys if kid is None or k.kid is None or k.kid == kid]
    claims: dict[str, Any] | None = None
    for candidate in candidates:
        try:
            claims = jwt.decode(
                token,
                candidate.key,
                algorithms=list(CLIENT_KEY_ALGORITHMS),
                audience=list(audiences),
                issuer=client_id,
                leeway=CLOCK_SKEW,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError as exc:
            raise OAuthError("invalid_client", "the client assertion has expired", 401) from exc
        except jwt.InvalidAudienceError as exc:
            raise OAuthError(
                "invalid_client",
                f"the client assertion's aud must be the issuer {audiences[0]}",
                401,
            ) from exc
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_client", f"client assertion rejected: {exc}", 401) from exc
    if claims is None:
        raise OAuthError(
            "invalid_client", "the client assertion is not signed by a registered key", 401
        )
    if claims["sub"] != client_id:
        raise OAuthError("invalid_client", "the client assertion's sub must equal iss", 401)
    now = time.time()
    exp = float(claims["exp"])
    if exp - float(claims.get("iat", now)) > MAX_ASSERTION_LIFETIME or exp - now > (
        MAX_ASSERTION_LIFETIME + CLOCK_SKEW
    ):
        raise OAuthError("invalid_client", "client assertions may live at most 5 minutes", 401)
    jti = claims["jti"]
    if not isinstance(jti, str) or not 8 <= len(jti) <= 256:
        raise OAuthError("invalid_client", "jti must be a unique string of 8-256 characters", 401)
    ttl = max(exp - now, 0.0) + CLOCK_SKEW
    if not await store.put_new("client-assertion-jti", f"{client_id}\n{jti}", b"1", ttl):
        raise OAuthError("invalid_client", "the client assertion's jti was used before", 401)
    return portal


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, no whitespace."""
    kty = jwk.get("kty")
    if kty == "EC":
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    elif kty == "OKP":
        members = {k: jwk[k] for k in ("crv", "kty", "x")}
    else:
        raise OAuthError("invalid_dpop_proof", "the DPoP key must be an EC or OKP key")
    digest = hashlib.sha256(orjson.dumps(members, option=orjson.OPT_SORT_KEYS)).digest()
    return b64url(digest)


def access_token_hash(token: str) -> str:
    """The `ath` claim: base64url of the SHA-256 of the (ASCII) access token."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def normalise_htu(url: str) -> str:
    """Scheme and host lower-case, no query or fragment (RFC 9449 §4.3)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "https://[host/": an unclosed IPv6 literal
        raise OAuthError("invalid_dpop_proof", "the DPoP proof's htu is not a URL") from exc
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", "", ""))


async def verify_dpop(
    proof: str | None,
    store: Store,
    *,
    method: str,
    url: str,
    access_token: str | None = None,
) -> DpopProof:
    """Check one DPoP proof for this request; `access_token` given means `ath` is required."""
    if not proof:
        raise OAuthError("invalid_dpop_proof", "a DPoP proof is required in the DPoP header")
    header = _header(proof, "invalid_dpop_proof")
    if header.get("typ") != "dpop+jwt":
        raise OAuthError("invalid_dpop_proof", "the DPoP proof's typ must be dpop+jwt")
    if header.get("alg") not in DPOP_ALGORITHMS:
        raise OAuthError("invalid_dpop_proof", "DPoP proofs must use ES256 or EdDSA")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict) or any(k in jwk for k in ("d", "p", "q", "k")):
        raise OAuthError("invalid_dpop_proof", "the DPoP header needs jwk, a public key")
    try:
        key = jwt.PyJWK(jwk, algorithm=header["alg"])
        claims: dict[str, Any] = jwt.decode(
            proof,
            key,
            algorithms=list(DPOP_ALGORITHMS),
            options={"require": ["jti", "htm", "htu", "iat"], "verify_iat": False},
        )
    except (jwt.PyJWTError, KeyError, ValueError) as exc:
        raise OAuthError("invalid_dpop_proof", f"DPoP proof rejected: {exc}") from exc
    if claims["htm"] != method:
        raise OAuthError(
            "invalid_dpop_proof", f"the DPoP proof is for {claims['htm']}, not {method}"
        )
    if not isinstance(claims["htu"], str) or normalise_htu(claims["htu"]) != normalise_htu(url):
        raise OAuthError("invalid_dpop_proof", f"the DPoP proof's htu must be {normalise_htu(url)}")
    now = time.time()
    iat = claims["iat"]
    if not isinstance(iat, int | float) or not (now - DPOP_IAT_WINDOW <= iat <= now + CLOCK_SKEW):
        raise OAuthError(
            "invalid_dpop_proof", "the DPoP proof's iat is not recent: make a fresh proof"
        )
    if access_token is not None:
        if "ath" not in claims:
            raise OAuthError("invalid_dpop_proof", "the DPoP proof needs ath for the access token")
        # A token that is not ASCII was never issued, so no proof's ath can be for it.
        if not access_token.isascii() or claims["ath"] != access_token_hash(access_token):
            raise OAuthError("invalid_dpop_proof", "the DPoP proof's ath is for another token")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 8 <= len(jti) <= 256:
        raise OAuthError("invalid_dpop_proof", "jti must be a unique string of 8-256 characters")
    jkt = jwk_thumbprint(jwk)
    if not await store.put_new("dpop-jti", f"{jkt}\n{jti}", b"1", DPOP_IAT_WINDOW + 2 * CLOCK_SKEW):
        raise OAuthError("invalid_dpop_proof", "the DPoP proof was used before (jti replay)")
    return DpopProof(jkt, jti)
