"""The browser side of the login: start, callback, session cookie, logout, error pages."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web
from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from prometheus_client import Counter

from gateway.assurance import EIDAS_LEVELS, at_least, provider_values_for
from gateway.bodies import read_form
from gateway.errors import LoginError
from gateway.login.client import OidcClient
from gateway.login.idtoken import validate_id_token
from gateway.login.keys import load_rp_keys
from gateway.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from gateway.audit import AuditTrail
    from gateway.config import Settings

log = logging.getLogger(__name__)

CALLBACK_PATH = "/login/callback"
STATE_NAMESPACE = "login.state"
SESSION_NAMESPACE = "login.sessie"
SESSION_COOKIE = "bk-sessie"
BINDING_COOKIE = "bk-login"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")

OIDC_CLIENT = web.AppKey("oidc_client", OidcClient)
LOGINS = web.AppKey("login_counter", Counter)


@dataclass(frozen=True, slots=True)
class Citizen:
    """A verified login. The BSN comes only from a validated ID token, never from a request."""

    bsn: str
    acr: str
    auth_time: int
    session_id: str


# --- the gateway's own app keys, looked up when used: gateway.app imports this package --------


def _settings(app: web.Application) -> Settings:
    from gateway import app as gateway_app

    return app[gateway_app.SETTINGS]


def _audit(app: web.Application) -> AuditTrail:
    from gateway import app as gateway_app

    return app[gateway_app.AUDIT]


def _transactie_id(request: web.Request) -> str:
    from gateway import app as gateway_app

    tx = request.get(gateway_app.TRANSACTIE_ID)
    return tx if isinstance(tx, str) else "-"


# --- cookies ----------------------------------------------------------------------------------


def _secure(request: web.Request) -> bool:
    """Secure cookies over https, and on loopback, which browsers treat as a secure context."""
    public_url = _settings(request.app).public_url
    if public_url is not None:
        split = urlsplit(public_url)
        return split.scheme == "https" or split.hostname in _LOOPBACK
    return request.secure or request.url.host in _LOOPBACK


def _cookie_name(request: web.Request, base: str) -> str:
    # `__Host-`: only this exact origin, path /, and Secure; browsers refuse it without Secure.
    return f"__Host-{base}" if _secure(request) else base


def _set_cookie(
    response: web.StreamResponse, request: web.Request, base: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        _cookie_name(request, base),
        value,
        max_age=max_age,
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="Lax",
    )


def _clear_cookie(response: web.StreamResponse, request: web.Request, base: str) -> None:
    response.del_cookie(
        _cookie_name(request, base),
        path="/",
        secure=_secure(request),
        httponly=True,
        samesite="Lax",
    )


def _cookie(request: web.Request, base: str) -> str | None:
    value = request.cookies.get(_cookie_name(request, base))
    # Ours are URL-safe base64. Bytes that are not UTF-8 reach us as lone surrogates, which no
    # encoder (and so no digest) takes: such a cookie is simply not ours.
    return value if value is not None and value.isascii() else None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- public surface ---------------------------------------------------------------------------


def safe_return_to(return_to: str) -> str:
    """A path on this gateway only: no scheme, no host, no `//` or `\\` tricks (open redirect)."""
    split = urlsplit(return_to)
    if (
        not return_to.startswith("/")
        or return_to.startswith(("//", "/\\"))
        or "\\" in return_to
        or split.scheme
        or split.netloc
        or any(ord(c) < 0x21 or ord(c) == 0x7F for c in return_to)
        or len(return_to) > 2048
    ):
        raise LoginError(
            "invalid_request",
            "unsafe_return_to",
            "return_to must be a path on this gateway (starting with a single '/').",
        )
    return return_to


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def redirect_uri(request: web.Request) -> str:
    public_url = _settings(request.app).public_url
    base = public_url if public_url is not None else str(request.url.origin())
    return base.rstrip("/") + CALLBACK_PATH


async def begin_login(
    request: web.Request, *, return_to: str, min_acr: str | None = None
) -> web.StreamResponse:
    """Send the browser to DigiD; after a good login it comes back to `return_to`."""
    try:
        return await _begin(request, return_to, min_acr)
    except LoginError as exc:
        return _error_response(request, exc)


async def _begin(request: web.Request, return_to: str, min_acr: str | None) -> web.StreamResponse:
    oidc = _settings(request.app).oidc
    target = safe_return_to(return_to)
    if min_acr is not None and min_acr not in EIDAS_LEVELS:
        raise ValueError(f"min_acr must be one of {EIDAS_LEVELS}")
    # A caller may raise the bar, never lower it below the configured minimum.
    required = min_acr if min_acr is not None and at_least(min_acr, oidc.min_acr) else oidc.min_acr
    client = request.app[OIDC_CLIENT]
    meta = await client.metadata()
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier = generate_token(64)
    # Logins started in several tabs share one binding, so each tab's callback still fits.
    binding = _cookie(request, BINDING_COOKIE)
    if binding is None or not 32 <= len(binding) <= 128:
        binding = secrets.token_urlsafe(32)
    callback = redirect_uri(request)
    record = {
        "nonce": nonce,
        "verifier": verifier,
        "return_to": target,
        "min_acr": required,
        "binding": _digest(binding),
        "redirect_uri": callback,
    }
    try:
        stored = await _audit(request.app).store.put_new(
            STATE_NAMESPACE, state, orjson.dumps(record), oidc.login_seconds
        )
    except StoreUnavailable as exc:
        raise LoginError(
            "temporarily_unavailable",
            "store_unavailable",
            "The login could not be started because the gateway's store is unavailable. "
            "Try again later.",
            status=503,
        ) from exc
    assert stored, "a fresh random state cannot exist yet"
    location = client.authorization_url(
        meta,
        redirect_uri=callback,
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier),
        acr_values=provider_values_for(required, oidc.acr_mapping),
    )
    response = _see_other(location)
    _set_cookie(response, request, BINDING_COOKIE, binding, oidc.login_seconds)
    return response


async def current_citizen(request: web.Request) -> Citizen | None:
    """The verified login of this browser, or None."""
    token = _cookie(request, SESSION_COOKIE)
    if not token or len(token) > 128:
        return None
    try:
        value = await _audit(request.app).store.get(SESSION_NAMESPACE, _digest(token))
    except StoreUnavailable:
        log.warning("session store unavailable; treating the browser as logged out")
        return None
    if value is None:
        return None
    data = orjson.loads(value)
    return Citizen(
        bsn=data["bsn"], acr=data["acr"], auth_time=data["auth_time"], session_id=data["sid"]
    )


def setup(app: web.Application) -> None:
    """Add the login routes and the provider client; call from `create_app`."""
    from gateway import app as gateway_app

    app[LOGINS] = Counter(
        "blauweknop_logins",
        "Citizen logins by outcome, and for refusals the error code.",
        ["outcome", "fout"],
        registry=app[gateway_app.METRICS].registry,
    )
    app.cleanup_ctx.append(_oidc_client)
    app.router.add_get("/login", _login_start)
    app.router.add_get(CALLBACK_PATH, _callback)
    app.router.add_post("/login/uitloggen", _logout)
    app.router.add_get("/login/sessie", _session_info)
    app.router.add_get("/login/jwks.json", _rp_jwks)


async def _oidc_client(app: web.Application) -> AsyncIterator[None]:
    settings = _settings(app)
    keys = load_rp_keys(
        settings.oidc, settings.dev_pki.directory, sandbox=settings.mode == "sandbox"
    )
    connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        client = OidcClient(settings.oidc, keys, session)
        app[OIDC_CLIENT] = client
        prefetch = asyncio.create_task(client.prefetch())
        try:
            yield
        finally:
            prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prefetch


# --- handlers ---------------------------------------------------------------------------------


async def _login_start(request: web.Request) -> web.StreamResponse:
    """`GET /login?return_to=/path[&min_acr=eIDAS URI]`: a link that starts the login.

    `min_acr` can only raise the configured minimum, never lower it.
    """
    min_acr = request.query.get("min_acr")
    return await begin_login(
        request,
        return_to=request.query.get("return_to", "/"),
        min_acr=min_acr if min_acr in EIDAS_LEVELS else None,
    )


async def _callback(request: web.Request) -> web.StreamResponse:
    trail = _audit(request.app)
    tx = _transactie_id(request)
    issuer = _settings(request.app).oidc.issuer
    try:
        citizen, return_to = await _complete(request)
    except LoginError as exc:
        data: dict[str, Any] = {"fout": exc.error, "reden": exc.reason, "issuer": issuer}
        try:
            await trail.record("login.geweigerd", tx, data)
        except StoreUnavailable:
            log.exception("refused login not recorded")
        log.info("login refused", extra={"fout": exc.error, "reden": exc.reason})
        request.app[LOGINS].labels("geweigerd", exc.error).inc()
        response = _error_response(request, exc)
        return response
    request.app[LOGINS].labels("geslaagd", "").inc()
    # A new login replaces any earlier session of this browser (no session fixation).
    previous = _cookie(request, SESSION_COOKIE)
    if previous and len(previous) <= 128:
        with contextlib.suppress(StoreUnavailable):
            await trail.store.take(SESSION_NAMESPACE, _digest(previous))
    response = _see_other(return_to)
    _set_cookie(
        response,
        request,
        SESSION_COOKIE,
        citizen.session_token,
        _settings(request.app).oidc.session_seconds,
    )
    return response


@dataclass(frozen=True, slots=True)
class _NewSession:
    session_token: str


async def _complete(request: web.Request) -> tuple[_NewSession, str]:
    app = request.app
    settings = _settings(app)
    oidc = settings.oidc
    store = _audit(app).store
    query = request.query
    state = query.get("state")
    if not state or len(state) > 256:
        raise LoginError(
            "invalid_state", "missing_state", "The callback carries no state; start again."
        )
    # Single use: taken, so a replayed callback finds nothing.
    raw = await _take(store, state)
    if raw is None:
        raise LoginError(
            "invalid_state",
            "unknown_state",
            "This login is unknown, expired or already used (state). Start the login again.",
        )
    record = orjson.loads(raw)
    binding = _cookie(request, BINDING_COOKIE)
    if binding is None or not secrets.compare_digest(_digest(binding), record["binding"]):
        raise LoginError(
            "invalid_state",
            "state_mismatch",
            "This callback belongs to a login started in another browser (CSRF protection). "
            "Start the login again in this browser.",
        )
    # RFC 9207: the authorization response names its issuer; a mismatch is a mix-up attack.
    client = app[OIDC_CLIENT]
    meta = await client.metadata()
    response_iss = query.get("iss")
    iss_required = meta.document.get("authorization_response_iss_parameter_supported") is True
    if (response_iss is not None or iss_required) and response_iss != oidc.issuer:
        raise LoginError(
            "invalid_request",
            "iss_mismatch",
            "The authorization response does not come from the configured identity provider "
            "(RFC 9207 iss); start the login again.",
        )
    if "error" in query:
        error = query["error"][:100]
        described = f"{error} {query.get('error_description', '')}".strip()[:400]
        raise LoginError(
            "access_denied" if error == "access_denied" else "provider_error",
            error,
            f"The identity provider ended the login: {described}",
            status=403 if error == "access_denied" else 502,
        )
    code = query.get("code")
    if not code or len(code) > 512:
        raise LoginError("invalid_request", "missing_code", "The callback carries no code.")
    id_token = await client.exchange_code(code, record["redirect_uri"], record["verifier"])
    login = await validate_id_token(
        id_token,
        settings=oidc,
        keys=client.keys,
        signing_key=client.signing_key,
        issuer=oidc.issuer,
        nonce=record["nonce"],
        min_acr=record["min_acr"],
    )
    token = secrets.token_urlsafe(32)
    session_id = secrets.token_urlsafe(16)
    trail = _audit(app)
    try:
        await trail.record(
            "login.geslaagd",
            _transactie_id(request),
            {
                "burger": trail.key.pseudonym(login.bsn),
                "acr": login.acr,
                "acr_idp": login.provider_acr,
                "auth_time": login.auth_time,
                "sessie_id": session_id,
                "issuer": oidc.issuer,
                "versleuteld": login.encrypted,
            },
        )
        value = orjson.dumps(
            {"bsn": login.bsn, "acr": login.acr, "auth_time": login.auth_time, "sid": session_id}
        )
        await store.put_new(SESSION_NAMESPACE, _digest(token), value, oidc.session_seconds)
    except StoreUnavailable as exc:
        raise LoginError(
            "temporarily_unavailable",
            "store_unavailable",
            "The login could not be recorded, so no session was made. Try again later.",
            status=503,
        ) from exc
    return _NewSession(token), record["return_to"]


async def _take(store: Store, key: str) -> bytes | None:
    try:
        return await store.take(STATE_NAMESPACE, key)
    except StoreUnavailable as exc:
        raise LoginError(
            "temporarily_unavailable", "store_unavailable", "Try again later.", status=503
        ) from exc


async def _logout(request: web.Request) -> web.StreamResponse:
    token = _cookie(request, SESSION_COOKIE)
    if token and len(token) <= 128:
        with contextlib.suppress(StoreUnavailable):
            await _audit(request.app).store.take(SESSION_NAMESPACE, _digest(token))
    form = await read_form(request)
    target = form.get("return_to", "/")
    try:
        location = safe_return_to(target if isinstance(target, str) else "/")
    except LoginError:
        location = "/"
    response = _see_other(location)
    _clear_cookie(response, request, SESSION_COOKIE)
    return response


async def _session_info(request: web.Request) -> web.Response:
    """Whether this browser is logged in, and at what level; never the BSN."""
    citizen = await current_citizen(request)
    if citizen is None:
        return web.json_response({"ingelogd": False})
    body: dict[str, Any] = {
        "ingelogd": True,
        "acr": citizen.acr,
        "auth_time": citizen.auth_time,
        "sessie_id": citizen.session_id,
    }
    if _settings(request.app).mode == "sandbox":
        # The keyed pseudonym, so tests can tell which test citizen logged in.
        body["burger"] = _audit(request.app).key.pseudonym(citizen.bsn)
    return web.json_response(body)


async def _rp_jwks(request: web.Request) -> web.Response:
    """Our public keys: the client assertion key and the ID-token encryption keys."""
    body = orjson.dumps(request.app[OIDC_CLIENT].keys.public_jwks())
    response = web.Response(body=body, content_type="application/jwk-set+json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --- errors -----------------------------------------------------------------------------------

_DUTCH: dict[str, tuple[str, str]] = {
    "invalid_id_token": (
        "Inloggen niet gelukt",
        "Het antwoord van DigiD kon niet worden gecontroleerd. Uw gegevens zijn niet opgehaald. "
        "Probeer opnieuw in te loggen.",
    ),
    "invalid_state": (
        "Inloggen verlopen of ongeldig",
        "Deze inlogpoging is verlopen, al gebruikt of in een andere browser begonnen. "
        "Begin opnieuw.",
    ),
    "insufficient_assurance": (
        "Hoger inlogniveau nodig",
        "Voor financiële gegevens is minimaal DigiD Substantieel nodig: log in met de DigiD app "
        "met identiteitscontrole (ID-check).",
    ),
    "unsupported_representation": (
        "Machtigen wordt nog niet ondersteund",
        "U kunt alleen voor uzelf inloggen. Inloggen namens iemand anders kan nog niet.",
    ),
    "invalid_subject": (
        "Inloggen niet gelukt",
        "DigiD gaf geen geldig burgerservicenummer door. Uw gegevens zijn niet opgehaald.",
    ),
    "access_denied": ("Inloggen afgebroken", "U heeft het inloggen afgebroken."),
    "temporarily_unavailable": (
        "Tijdelijk niet beschikbaar",
        "Inloggen lukt op dit moment niet. Probeer het over een paar minuten opnieuw.",
    ),
}
_DEFAULT_DUTCH = (
    "Inloggen niet gelukt",
    "Er ging iets mis bij het inloggen. Uw gegevens zijn niet opgehaald. Probeer het opnieuw.",
)


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return "json" in accept and "text/html" not in accept


def _error_response(request: web.Request, exc: LoginError) -> web.Response:
    title, explanation = _DUTCH.get(exc.error, _DEFAULT_DUTCH)
    tx = _transactie_id(request)
    if _wants_json(request):
        body = {
            "type": "about:blank",
            "title": title,
            "status": exc.status,
            "detail": exc.description,
            "error": exc.error,
            "reden": exc.reason,
            "transactie_id": tx,
        }
        return web.Response(
            status=exc.status, body=orjson.dumps(body), content_type="application/problem+json"
        )
    html = f"""<!doctype html>
<html lang="nl"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — Blauwe Knop</title>
<link rel="stylesheet" href="/static/gateway.css"></head>
<body><header class="kop"><p class="merk">Blauwe Knop</p></header>
<main id="inhoud">
<h1>{escape(title)}</h1>
<p class="melding">{escape(explanation)}</p>
<p><a href="/">Terug naar het begin</a></p>
<p>Foutcode: <code>{escape(exc.error)}</code> · kenmerk <code>{escape(tx)}</code></p>
<section lang="en" aria-labelledby="en-title">
<h2 id="en-title">In English</h2>
<p>{escape(exc.description)}</p>
</section>
</main></body></html>"""
    return web.Response(status=exc.status, text=html, content_type="text/html")
