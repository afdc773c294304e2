"""Full validation of the ID token: the one and only source of the citizen's BSN.

Order matters: decrypt (JWE) if encrypted, check the algorithm against the allow-list *before*
touching a key, verify the signature with the provider's published key, then the claims
(`iss`, `aud`/`azp`, `exp`, `iat`, `nbf`, `nonce`), then what this gateway requires on top:
no `represents`, the identifier type, a BSN that passes the 11-proef, and the assurance level.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey

from gateway.assurance import at_least
from gateway.bsn import is_bsn
from gateway.config import OidcSettings
from gateway.errors import LoginError
from gateway.login.keys import CONTENT_ENCRYPTION, ENCRYPTION_ALGS, RelyingPartyKeys

MAX_ID_TOKEN_CHARS = 32 * 1024
KeyLookup = Callable[[str | None, str], Awaitable[RSAKey | ECKey]]


@dataclass(frozen=True, slots=True)
class VerifiedLogin:
    bsn: str
    acr: str
    provider_acr: str
    auth_time: int
    encrypted: bool


def _refuse(reason: str, description: str) -> LoginError:
    return LoginError("invalid_id_token", reason, description)


def _header(segment: str) -> dict[str, Any]:
    try:
        padded = segment + "=" * (-len(segment) % 4)
        header = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError, orjson.JSONDecodeError) as exc:
        raise _refuse("malformed", "The ID token's header is not base64url JSON.") from exc
    if not isinstance(header, dict):
        raise _refuse("malformed", "The ID token's header is not a JSON object.")
    return header


def decrypt(raw: str, keys: RelyingPartyKeys) -> str:
    """Open a JWE (compact) ID token with one of our encryption keys; returns the nested JWS."""
    header = _header(raw.split(".", 1)[0])
    alg, enc = header.get("alg"), header.get("enc")
    if alg not in ENCRYPTION_ALGS.values() or enc != CONTENT_ENCRYPTION:
        raise _refuse(
            "jwe_alg_not_allowed",
            f"The ID token is encrypted with {alg}/{enc}; accepted are "
            f"{sorted(ENCRYPTION_ALGS.values())} with {CONTENT_ENCRYPTION}.",
        )
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    candidates = keys.decryption_candidates(str(alg), kid) or keys.decryption_candidates(
        str(alg), None
    )
    for key in candidates:
        try:
            opened = jwe.decrypt_compact(raw, key, algorithms=[str(alg), CONTENT_ENCRYPTION])
        except (JoseError, ValueError):
            continue
        if opened.plaintext is not None:
            try:
                return opened.plaintext.decode("ascii")
            except UnicodeDecodeError:
                break
    raise _refuse(
        "decryption_failed",
        "The encrypted ID token cannot be opened with the gateway's encryption keys: the "
        "provider encrypted it to another key. Check the keys registered at the provider "
        "against /login/jwks.json.",
    )


async def validate_id_token(
    raw: str,
    *,
    settings: OidcSettings,
    keys: RelyingPartyKeys,
    signing_key: KeyLookup,
    issuer: str,
    nonce: str,
    min_acr: str,
    now: float | None = None,
) -> VerifiedLogin:
    if not isinstance(raw, str) or len(raw) > MAX_ID_TOKEN_CHARS:
        raise _refuse("malformed", "The ID token is missing or too large.")
    now = time.time() if now is None else now
    skew = settings.clock_skew_seconds
    encrypted = raw.count(".") == 4
    if encrypted:
        raw = decrypt(raw, keys)
    elif settings.require_encrypted_id_token:
        raise _refuse("not_encrypted", "The configuration requires encrypted ID tokens.")
    if raw.count(".") != 2:
        raise _refuse("malformed", "The ID token is not a compact JWS.")

    header = _header(raw.split(".", 1)[0])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in settings.id_token_algs:
        raise _refuse(
            "alg_not_allowed",
            f"The ID token's algorithm {alg!r} is not accepted; accepted are "
            f"{list(settings.id_token_algs)}. 'none' and HMAC algorithms never are.",
        )
    if "crit" in header:
        raise _refuse("unsupported_crit", "The ID token has critical header extensions.")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _refuse("malformed", "The ID token's kid is not a string.")
    key = await signing_key(kid, alg)
    try:
        verified = jws.deserialize_compact(raw, key, algorithms=[alg])
    except (JoseError, ValueError) as exc:
        raise _refuse("bad_signature", "The ID token's signature does not verify.") from exc
    try:
        claims = orjson.loads(verified.payload)
    except orjson.JSONDecodeError as exc:
        raise _refuse("malformed", "The ID token's payload is not JSON.") from exc
    if not isinstance(claims, dict):
        raise _refuse("malformed", "The ID token's payload is not a JSON object.")

    _check_registered_claims(claims, settings, issuer, nonce, now, skew)

    # Acting on behalf of someone else (machtigen) is not supported yet: refuse, never ignore.
    if "represents" in claims:
        raise LoginError(
            "unsupported_representation",
            "represents",
            "This login acts on behalf of someone else (the 'represents' claim). The Blauwe "
            "Knop supports only citizens acting for themselves for now.",
            status=403,
        )
    if claims.get(settings.sub_id_type_claim) != settings.sub_id_type:
        raise LoginError(
            "invalid_subject",
            "wrong_sub_id_type",
            f"The ID token's {settings.sub_id_type_claim} is not {settings.sub_id_type!r}, so "
            "its subject is not a BSN.",
        )
    bsn = claims.get(settings.bsn_claim)
    if not isinstance(bsn, str) or not is_bsn(bsn):
        raise LoginError(
            "invalid_subject",
            "invalid_bsn",
            f"The ID token's {settings.bsn_claim} is not a valid BSN (nine digits, 11-proef).",
        )
    provider_acr = claims.get("acr")
    eidas = settings.acr_mapping.get(provider_acr) if isinstance(provider_acr, str) else None
    if eidas is None:
        raise LoginError(
            "insufficient_assurance",
            "unknown_acr",
            f"The ID token's acr {provider_acr!r} is not in [oidc] acr_mapping.",
            status=403,
        )
    if not at_least(eidas, min_acr):
        raise LoginError(
            "insufficient_assurance",
            "acr_too_low",
            f"The login's assurance level is {eidas}; at least {min_acr} is required. Log in "
            "again with a higher DigiD level (for example the DigiD app with identity check).",
            status=403,
        )
    auth_time = claims.get("auth_time", claims["iat"])
    if not isinstance(auth_time, int | float) or auth_time > now + skew:
        raise _refuse("bad_auth_time", "The ID token's auth_time is not a past time.")
    return VerifiedLogin(bsn, eidas, str(provider_acr), int(auth_time), encrypted)


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_registered_claims(
    claims: dict[str, Any], settings: OidcSettings, issuer: str, nonce: str, now: float, skew: float
) -> None:
    if claims.get("iss") != issuer:
        raise _refuse("wrong_iss", f"The ID token was issued by {claims.get('iss')!r}, not us.")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if settings.client_id not in audiences:
        raise _refuse("wrong_aud", "The ID token is meant for another client (aud).")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != settings.client_id:
        raise _refuse(
            "wrong_azp", "The ID token has several audiences but is not authorised to us (azp)."
        )
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf", claims.get("iat"))
    if not (_is_time(exp) and _is_time(iat) and _is_time(nbf)):
        raise _refuse("malformed", "The ID token's exp, iat or nbf is missing or not a number.")
    assert isinstance(exp, int | float)
    assert isinstance(iat, int | float)
    assert isinstance(nbf, int | float)
    if now > exp + skew:
        raise _refuse("expired", "The ID token has expired (exp).")
    if iat > now + skew or nbf > now + skew:
        raise _refuse("not_yet_valid", "The ID token is not valid yet (iat or nbf in the future).")
    if now - iat > settings.login_seconds + skew:
        raise _refuse("stale", "The ID token was issued too long ago (iat).")
    token_nonce = claims.get("nonce")
    if not isinstance(token_nonce, str) or not hmac.compare_digest(
        token_nonce.encode(), nonce.encode()
    ):
        raise _refuse("nonce_mismatch", "The ID token's nonce is not the one this login sent.")
