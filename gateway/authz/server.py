"""The gateway as OAuth 2.0 authorization server for portals, and the bundle endpoint.

Flow: the portal's back-end pushes its authorization request (RFC 9126, `POST /par`, with
`private_key_jwt`); the browser goes to `/authorize?client_id&request_uri`; the citizen logs in
with DigiD (gateway.login) and decides on the consent page; the portal receives a code (single
use, 60 s), redeems it at `/token` with its client assertion, the PKCE verifier and a DPoP proof,
and gets a DPoP-bound access token (5 minutes, no refresh token) for `GET /v1/bundel`.

All state goes through the store (`put_new`, `take`, `get`), so any replica can serve any step.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from urllib.parse import urlencode, urlsplit

import orjson
from aiohttp import web
from prometheus_client import Counter

from gateway.app import (
    AUDIT,
    ISSUER,
    METRICS,
    SESSION,
    SETTINGS,
    TRANSACTIE_ID,
    problem,
    release,
)
from gateway.assurance import at_least
from gateway.authz import pages
from gateway.authz.grants import (
    TRANSACTION_TTL,
    USED_CODE_TTL,
    AccessToken,
    AuthorizationRequest,
    Grant,
    Transaction,
    digest,
    dump,
    load,
    new_secret,
    require_param,
)
from gateway.authz.proofs import (
    DPOP_ALGORITHMS,
    authenticate_client,
    verify_dpop,
)
from gateway.authz.registry import CLIENT_KEY_ALGORITHMS, Registry
from gateway.bodies import read_form
from gateway.browser_security import strict_csp
from gateway.documents.service import MEDIA_TYPES
from gateway.documents.web import DOCUMENTS
from gateway.errors import ConfigError, DocumentUnavailable, MalformedRequest, OAuthError
from gateway.jws import b64url
from gateway.login import Citizen, begin_login, current_citizen
from gateway.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

REGISTRY = web.AppKey("authz_registry", Registry)
OUTCOMES = web.AppKey("authz_outcomes", Counter)
REQUEST_URI_PREFIX = "urn:ietf:params:oauth:request_uri:"
JSON = "application/json"
JOSE = "application/jose"
_XML_ALIASES = {"text/xml": "application/xml"}
_CODE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url SHA-256, unpadded
_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_STATE = re.compile(r"[\x21-\x7e]{8,512}")
_TX_ID = re.compile(r"[A-Za-z0-9_-]{43}")
_SENSITIVE_PARAMS = frozenset({"bsn", "burgerservicenummer", "sub"})

PATH_METADATA = "/.well-known/oauth-authorization-server"
PATH_PAR = "/par"
PATH_AUTHORIZE = "/authorize"
PATH_CONSENT = "/toestemming/{tx}"
PATH_TOKEN = "/token"  # noqa: S105 (a path, not a password)
PATH_BUNDEL = "/v1/bundel"


def add_routes(app: web.Application, registry: Registry) -> None:
    app[REGISTRY] = registry
    app[OUTCOMES] = Counter(
        "blauweknop_authz",
        "Authorization server requests by endpoint and outcome (ok, or the OAuth error code).",
        ["endpoint", "outcome"],
        registry=app[METRICS].registry,
    )
    app.router.add_get(PATH_METADATA, _metadata)
    app.router.add_post(PATH_PAR, _json_errors(_par, "par"))
    app.router.add_get(PATH_AUTHORIZE, _html_errors(_authorize, "authorize"))
    app.router.add_post(PATH_AUTHORIZE, _html_errors(_authorize, "authorize"))
    app.router.add_get(PATH_CONSENT, _html_errors(_consent_page, "consent"))
    app.router.add_post(PATH_CONSENT, _html_errors(_consent_decision, "consent"))
    app.router.add_post(PATH_TOKEN, _json_errors(_token, "token"))
    app.router.add_get(PATH_BUNDEL, _json_errors(_bundel, "bundel"))
    app.router.add_get("/static/{name}", _static)


_STATIC = {"blauwe-knop.js": "text/javascript", "gateway.css": "text/css"}


async def _static(request: web.Request) -> web.Response:
    """The button's script and the pages' stylesheet: files, so a strict CSP allows them."""
    name = request.match_info["name"]
    if name not in _STATIC:
        raise web.HTTPNotFound()
    body = resources.files("gateway.static").joinpath(name).read_bytes()
    response = web.Response(body=body, content_type=_STATIC[name], charset="utf-8")
    response.headers["Cache-Control"] = "public, max-age=300"
    # Portals on other origins load the button with a plain script tag (or as a module).
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return response


def issuer(request: web.Request) -> str:
    """The configured public URL; sandbox mode without one uses the address it was reached on."""
    configured = request.app[SETTINGS].public_url
    if configured:
        return configured
    return f"{request.scheme}://{request.host}"


def _store(request: web.Request) -> Store:
    return request.app[AUDIT].store


def _oauth_json(error: OAuthError, extra_headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        status=error.status,
        body=orjson.dumps({"error": error.error, "error_description": error.description}),
        content_type=JSON,
        headers={
            "Cache-Control": "no-store",
            _OUTCOME_HEADER: error.error,
            **(extra_headers or {}),
        },
    )


def _count(request: web.Request, endpoint: str, response: web.StreamResponse) -> None:
    outcome = response.headers.get(_OUTCOME_HEADER)
    if outcome is None:
        outcome = "ok" if response.status < 400 else str(response.status)
    else:
        del response.headers[_OUTCOME_HEADER]
    request.app[OUTCOMES].labels(endpoint, outcome).inc()


_OUTCOME_HEADER = "X-Authz-Outcome"  # internal: set by handlers, removed before sending


def _json_errors(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], endpoint: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except OAuthError as error:
            log.info("oauth error", extra={"error": error.error, "path": request.path})
            response = _oauth_json(error)
        except StoreUnavailable:
            log.exception("store unavailable; nothing issued")
            response = _oauth_json(_UNAVAILABLE)
        _count(request, endpoint, response)
        return response

    return wrapped


_UNAVAILABLE = OAuthError(
    "temporarily_unavailable",
    "the gateway cannot store or read its records right now, so nothing is issued; try again",
    503,
)


def _html_errors(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], endpoint: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """For the citizen's pages: OAuth errors and an unavailable store as an error page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as redirect:
            _count(request, endpoint, redirect)
            raise
        except OAuthError as error:
            response = _html_error(request, error)
        except MalformedRequest as exc:
            response = _html_error(request, OAuthError("invalid_request", str(exc)))
        except StoreUnavailable:
            log.exception("store unavailable; no consent recorded, nothing issued")
            response = _html_error(request, _UNAVAILABLE)
        _count(request, endpoint, response)
        return response

    return wrapped


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "send the parameters form-encoded")
    try:
        form = await read_form(request)
    except MalformedRequest as exc:
        raise OAuthError("invalid_request", "the form-encoded body cannot be decoded") from exc
    values: dict[str, str] = {}
    for key in form:
        items = form.getall(key)
        if len(items) != 1 or not isinstance(items[0], str):
            raise OAuthError("invalid_request", f"the {key} parameter must appear once")
        values[key] = items[0]
    return values


# --- metadata (RFC 8414) -------------------------------------------------------------------


async def _metadata(request: web.Request) -> web.Response:
    base = issuer(request)
    registry = request.app[REGISTRY]
    document = {
        "issuer": base,
        "pushed_authorization_request_endpoint": base + PATH_PAR,
        "require_pushed_authorization_requests": True,
        "request_uri_parameter_supported": True,
        "authorization_endpoint": base + PATH_AUTHORIZE,
        "token_endpoint": base + PATH_TOKEN,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_KEY_ALGORITHMS),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        "authorization_response_iss_parameter_supported": True,
        "scopes_supported": sorted(registry.categories),
        "jwks_uri": base + "/.well-known/jwks.json",
        "ui_locales_supported": ["nl", "en"],
        "bundle_endpoint": base + PATH_BUNDEL,
    }
    response = web.json_response(document)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --- pushed authorization request (RFC 9126) ----------------------------------------------


async def _par(request: web.Request) -> web.Response:
    form = await _form(request)
    base = issuer(request)
    registry = request.app[REGISTRY]
    store = _store(request)
    portal = await authenticate_client(form, registry, store, [base, base + PATH_PAR])
    if "request_uri" in form:
        raise OAuthError("invalid_request", "a pushed request must not contain request_uri")
    if form.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "response_type must be code")
    redirect_uri = require_param(form, "redirect_uri", max_len=2048)
    if redirect_uri not in portal.redirect_uris:
        raise OAuthError(
            "invalid_request",
            "redirect_uri is not registered for this client (exact match required)",
        )
    method = form.get("code_challenge_method")
    challenge = form.get("code_challenge")
    if not challenge:
        raise OAuthError("invalid_request", "PKCE is required: send code_challenge (S256)")
    if method != "S256":
        raise OAuthError("invalid_request", "code_challenge_method must be S256 (plain is refused)")
    if not _CODE_CHALLENGE.fullmatch(challenge):
        raise OAuthError("invalid_request", "code_challenge must be an unpadded base64url SHA-256")
    purpose_id = require_param(form, "purpose_id", max_len=128)
    purpose = registry.purposes.get(purpose_id)
    if purpose is None or purpose_id not in portal.purposes:
        raise OAuthError(
            "invalid_request", f"purpose_id {purpose_id!r} is not registered for this client"
        )
    scopes = tuple(dict.fromkeys(require_param(form, "scope", max_len=1024).split()))
    unknown = [s for s in scopes if s not in registry.categories]
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope(s): {' '.join(unknown)}")
    not_allowed = [s for s in scopes if s not in portal.scopes or s not in purpose.scopes]
    if not_allowed:
        raise OAuthError(
            "invalid_scope",
            f"scope(s) not allowed for this client and purpose: {' '.join(not_allowed)}",
        )
    state = require_param(form, "state")
    if not _STATE.fullmatch(state):
        raise OAuthError("invalid_request", "state must be 8-512 printable characters")
    dpop_jkt = form.get("dpop_jkt")
    if dpop_jkt is not None and not _CODE_CHALLENGE.fullmatch(dpop_jkt):
        raise OAuthError("invalid_request", "dpop_jkt must be an RFC 7638 SHA-256 thumbprint")
    if "DPoP" in request.headers:
        proof = await verify_dpop(
            request.headers["DPoP"], store, method="POST", url=base + PATH_PAR
        )
        if dpop_jkt is not None and dpop_jkt != proof.jkt:
            raise OAuthError("invalid_dpop_proof", "dpop_jkt differs from the DPoP proof's key")
        dpop_jkt = proof.jkt
    authorization = AuthorizationRequest(
        client_id=portal.client_id,
        redirect_uri=redirect_uri,
        scopes=scopes,
        purpose_id=purpose_id,
        state=state,
        code_challenge=challenge,
        dpop_jkt=dpop_jkt,
    )
    handle = new_secret()
    ttl = request.app[SETTINGS].authz.request_uri_seconds
    await store.put_new("par", handle, dump(authorization), ttl)
    return web.json_response(
        {"request_uri": REQUEST_URI_PREFIX + handle, "expires_in": ttl},
        status=201,
        headers={"Cache-Control": "no-store"},
    )


# --- authorization endpoint -----------------------------------------------------------------


def _html_error(request: web.Request, error: OAuthError) -> web.Response:
    """Errors shown to the citizen: never redirected, since the redirect URI is not trusted."""
    lang = pages.pick_lang(request.query.get("lang"))
    html = pages.error_page(
        lang=lang, error=error.error, description=error.description, switch_href=None
    )
    log.info("authorization refused", extra={"error": error.error})
    return web.Response(
        status=error.status,
        text=html,
        content_type="text/html",
        headers={_OUTCOME_HEADER: error.error},
    )


async def _authorize(request: web.Request) -> web.StreamResponse:
    params = request.query
    if request.method == "POST" or "request_uri" not in params:
        raise OAuthError(
            "invalid_request",
            "pushed authorization requests are required: POST the request to "
            f"{PATH_PAR} and send only client_id and request_uri here",
        )
    client_id = params.get("client_id", "")
    registry = request.app[REGISTRY]
    if client_id not in registry.portals:
        raise OAuthError("invalid_client", "unknown client_id", 400)
    request_uri = params["request_uri"]
    extra = set(params) - {"client_id", "request_uri", "lang"}
    if extra:
        raise OAuthError(
            "invalid_request",
            f"with PAR, only client_id and request_uri are sent here; not {sorted(extra)}",
        )
    if not request_uri.startswith(REQUEST_URI_PREFIX):
        raise OAuthError("invalid_request_uri", "request_uri was not issued by this gateway")
    raw = await _store(request).take("par", request_uri.removeprefix(REQUEST_URI_PREFIX))
    if raw is None:
        raise OAuthError(
            "invalid_request_uri",
            "request_uri is unknown, expired or already used: push a new request",
        )
    authorization = load(AuthorizationRequest, raw)
    if authorization.client_id != client_id:
        raise OAuthError("invalid_request_uri", "request_uri was pushed by another client")
    tx = new_secret()
    before = await current_citizen(request)
    prior = digest(before.session_id) if before is not None else None
    transaction = Transaction(authorization, new_secret(), prior)
    await _store(request).put_new("authz-tx", tx, orjson.dumps(transaction), TRANSACTION_TTL)
    location = PATH_CONSENT.format(tx=tx)
    if params.get("lang") == "en":
        location += "?lang=en"
    raise web.HTTPSeeOther(location)


# --- consent --------------------------------------------------------------------------------


async def _transaction(request: web.Request, *, take: bool) -> tuple[str, Transaction]:
    tx = request.match_info["tx"]
    if not _TX_ID.fullmatch(tx):
        raise OAuthError("invalid_request", "unknown authorization")
    store = _store(request)
    raw = await (store.take("authz-tx", tx) if take else store.get("authz-tx", tx))
    if raw is None:
        raise OAuthError(
            "invalid_request",
            "this authorization is unknown, expired or finished: start again at the portal",
        )
    return tx, Transaction.from_json(raw)


def _csrf(transaction: Transaction, session_id: str) -> str:
    """Binds the consent form to the login session that saw it."""
    mac = hmac.new(transaction.csrf_secret.encode(), session_id.encode(), hashlib.sha256)
    return b64url(mac.digest())


async def _choices(
    request: web.Request, transaction: Transaction, citizen: Citizen
) -> list[pages.OrganisationChoice]:
    """The organisations the federation's policies allow for this request (policies/*.cedar)."""
    from gateway.federation.api import FEDERATION
    from gateway.federation.policy import Question

    federation = request.app[FEDERATION]
    authorization = transaction.request
    gemeentecode = await federation.gemeentecode(citizen.bsn, request.app[SESSION])
    question = Question(
        authorization.client_id,
        authorization.purpose_id,
        authorization.scopes,
        citizen.acr,
        gemeentecode,
    )
    decisions = federation.decide(question, federation.among(gemeentecode))
    # What the citizen is offered is a policy decision too, so it is audited like the download's.
    await federation.audit_decisions(request[TRANSACTIE_ID], question, decisions, citizen.bsn)
    return [
        pages.OrganisationChoice(d.code, federation.members[d.code].naam)
        for d in decisions
        if d.allowed
    ]


def _reused_login(transaction: Transaction, citizen: Citizen) -> bool:
    """True for a login that existed before this authorization began: each one logs in anew."""
    return transaction.prior_session is not None and hmac.compare_digest(
        transaction.prior_session, digest(citizen.session_id)
    )


def _consent_csp(redirect_uri: str) -> str:
    parts = urlsplit(redirect_uri)
    # Browsers apply form-action to the redirect after the form, so the portal must be named.
    return strict_csp(form_action=f"'self' {parts.scheme}://{parts.netloc}")


async def _consent_page(request: web.Request) -> web.StreamResponse:
    tx, transaction = await _transaction(request, take=False)
    return await _render_consent(request, tx, transaction, None)


async def _render_consent(
    request: web.Request, tx: str, transaction: Transaction, message: str | None
) -> web.StreamResponse:
    registry = request.app[REGISTRY]
    authorization = transaction.request
    purpose = registry.purposes[authorization.purpose_id]
    citizen = await current_citizen(request)
    min_acr = purpose.min_acr
    if (
        citizen is None
        or _reused_login(transaction, citizen)
        or (min_acr is not None and not at_least(citizen.acr, min_acr))
    ):
        response = await begin_login(request, return_to=request.path_qs, min_acr=min_acr)
        if isinstance(response, web.HTTPException):
            raise response
        return response
    lang = pages.pick_lang(request.query.get("lang"))
    path = PATH_CONSENT.format(tx=tx)
    html = pages.consent_page(
        lang=lang,
        action=path,
        csrf=_csrf(transaction, citizen.session_id),
        portal=registry.portals[authorization.client_id],
        purpose=purpose,
        categories=[registry.categories[s] for s in authorization.scopes],
        organisations=await _choices(request, transaction, citizen),
        switch_href=path + ("" if lang == "en" else "?lang=en"),
        token_seconds=request.app[SETTINGS].authz.access_token_seconds,
        message=message,
    )
    response = web.Response(text=html, content_type="text/html")
    response.headers["Content-Security-Policy"] = _consent_csp(authorization.redirect_uri)
    return response


def _redirect(authorization: AuthorizationRequest, base: str, **params: str) -> web.HTTPSeeOther:
    query = urlencode({**params, "state": authorization.state, "iss": base})
    separator = "&" if urlsplit(authorization.redirect_uri).query else "?"
    return web.HTTPSeeOther(authorization.redirect_uri + separator + query)


async def _consent_decision(request: web.Request) -> web.StreamResponse:
    tx, transaction = await _transaction(request, take=False)
    citizen = await current_citizen(request)
    if citizen is None or _reused_login(transaction, citizen):
        return _html_error(
            request,
            OAuthError("access_denied", "you are not logged in (any more): start again", 403),
        )
    form = await read_form(request)
    csrf = form.get("csrf")
    if not isinstance(csrf, str) or not hmac.compare_digest(
        csrf, _csrf(transaction, citizen.session_id)
    ):
        return _html_error(
            request,
            OAuthError("access_denied", "the consent form does not belong to this session", 403),
        )
    authorization = transaction.request
    registry = request.app[REGISTRY]
    purpose = registry.purposes[authorization.purpose_id]
    if purpose.min_acr is not None and not at_least(citizen.acr, purpose.min_acr):
        return _html_error(
            request, OAuthError("access_denied", "the login's assurance level is too low", 403)
        )
    offered = [c.code for c in await _choices(request, transaction, citizen)]
    chosen = [o for o in form.getall("organisatie", []) if isinstance(o, str)]
    organisations = tuple(code for code in offered if code in chosen)
    decision = form.get("besluit")
    if decision == "geven" and not organisations:
        lang = pages.pick_lang(str(form.get("lang", "")))
        return await _render_consent(request, tx, transaction, pages.t("none", lang))
    if await _store(request).take("authz-tx", tx) is None:
        return _html_error(
            request, OAuthError("invalid_request", "this authorization is already finished")
        )
    trail = request.app[AUDIT]
    grant_id = new_secret()
    given = decision == "geven"
    await trail.record(
        "toestemming.gegeven" if given else "toestemming.geweigerd",
        request[TRANSACTIE_ID],
        {
            "burger": trail.key.pseudonym(citizen.bsn),
            "toestemming_id": digest(grant_id) if given else None,
            "client_id": authorization.client_id,
            "purpose_id": authorization.purpose_id,
            "grondslag": purpose.legal_basis_nl,
            "scopes": list(authorization.scopes),
            "organisaties": list(organisations) if given else [],
            "weggelaten": [code for code in offered if code not in organisations or not given],
            "acr": citizen.acr,
        },
    )
    base = issuer(request)
    if not given:
        refused = _redirect(
            authorization, base, error="access_denied", error_description="consent refused"
        )
        refused.headers[_OUTCOME_HEADER] = "access_denied"
        raise refused
    grant = Grant(
        grant_id=grant_id,
        client_id=authorization.client_id,
        redirect_uri=authorization.redirect_uri,
        purpose_id=authorization.purpose_id,
        scopes=authorization.scopes,
        organisations=organisations,
        bsn=citizen.bsn,
        acr=citizen.acr,
        code_challenge=authorization.code_challenge,
        dpop_jkt=authorization.dpop_jkt,
    )
    code = new_secret()
    ttl = request.app[SETTINGS].authz.code_seconds
    await _store(request).put_new("authz-code", digest(code), dump(grant), ttl)
    raise _redirect(authorization, base, code=code)


# --- token endpoint -------------------------------------------------------------------------


async def _token(request: web.Request) -> web.Response:
    form = await _form(request)
    base = issuer(request)
    store = _store(request)
    portal = await authenticate_client(
        form, request.app[REGISTRY], store, [base, base + PATH_TOKEN]
    )
    if form.get("grant_type") != "authorization_code":
        raise OAuthError(
            "unsupported_grant_type", "only authorization_code; there are no refresh tokens"
        )
    proof = await verify_dpop(
        request.headers.get("DPoP"), store, method="POST", url=base + PATH_TOKEN
    )
    code = require_param(form, "code")
    code_key = digest(code)
    raw = await store.take("authz-code", code_key)
    if raw is None:
        used = await store.get("authz-code-used", code_key)
        if used is not None:
            # RFC 6749 §4.1.2: a replayed code revokes what was issued on it.
            await store.put_new("grant-revoked", used.decode(), b"1", USED_CODE_TTL)
            raise OAuthError(
                "invalid_grant", "the code was already used; tokens issued on it are revoked"
            )
        raise OAuthError("invalid_grant", "the code is unknown or expired (codes live 60 s)")
    grant = load(Grant, raw)
    await store.put_new("authz-code-used", code_key, grant.grant_id.encode(), USED_CODE_TTL)
    if grant.client_id != portal.client_id:
        raise OAuthError("invalid_grant", "the code was issued to another client")
    if form.get("redirect_uri") != grant.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri must equal the one in the request")
    verifier = form.get("code_verifier")
    if not verifier:
        raise OAuthError("invalid_grant", "PKCE: code_verifier is required")
    if not _VERIFIER.fullmatch(verifier):
        raise OAuthError("invalid_grant", "PKCE: code_verifier must be 43-128 unreserved chars")
    computed = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    if not hmac.compare_digest(computed, grant.code_challenge):
        raise OAuthError("invalid_grant", "PKCE: code_verifier does not match code_challenge")
    if grant.dpop_jkt is not None and grant.dpop_jkt != proof.jkt:
        raise OAuthError("invalid_dpop_proof", "the DPoP key differs from the one at PAR")
    token = new_secret()
    lifetime = request.app[SETTINGS].authz.access_token_seconds
    record = AccessToken(grant, proof.jkt, time.time() + lifetime)
    await store.put_new("access-token", digest(token), orjson.dumps(record), lifetime)
    return web.json_response(
        {
            "access_token": token,
            "token_type": "DPoP",
            "expires_in": lifetime,
            "scope": " ".join(grant.scopes),
        },
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


# --- the bundle endpoint --------------------------------------------------------------------


def _resource_error(error: OAuthError) -> web.Response:
    status = 401 if error.error in ("invalid_token", "invalid_dpop_proof") else error.status
    challenge = (
        f'DPoP error="{error.error}", error_description="{error.description}", '
        f'algs="{" ".join(DPOP_ALGORITHMS)}"'
    )
    return _oauth_json(
        OAuthError(error.error, error.description, status), {"WWW-Authenticate": challenge}
    )


def negotiate(accept: str) -> str:
    """The media type to answer with: JSON by default; JWS, XML or PDF when preferred; else 406."""
    offers: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept.split(",")):
        media, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and media:
            offers.append((-q, index, media.strip().lower()))
    if not accept.strip():
        return JSON
    for _, _, media in sorted(offers):
        if media in ("application/*", "*/*"):
            return JSON
        media = _XML_ALIASES.get(media, media)
        if media in MEDIA_TYPES:
            return media
    raise OAuthError(
        "not_acceptable",
        "this endpoint serves application/json, application/jose, application/xml and "
        "application/pdf",
        406,
    )


async def _bundel(request: web.Request) -> web.StreamResponse:
    try:
        token_record, media = await _authorise_bundle(request)
    except OAuthError as error:
        log.info("bundle refused", extra={"error": error.error})
        if error.status == 406 or error.error == "invalid_request":
            return _oauth_json(error)
        return _resource_error(error)
    grant = token_record.grant
    trail = request.app[AUDIT]
    from gateway.federation.api import FEDERATION, rate_limited
    from gateway.federation.policy import Question

    limited = await rate_limited(request, grant.client_id, trail.key.pseudonym(grant.bsn))
    if limited is not None:
        return limited
    federation = request.app[FEDERATION]
    # The consent named the citizen's municipality (looked up in the BRP for the consent page):
    # the download asks that one, without a second BRP call on the bundle's critical path.
    gemeentecode = federation.consented_gemeentecode(grant.organisations)
    among = federation.among(gemeentecode)
    question = Question(grant.client_id, grant.purpose_id, grant.scopes, grant.acr, gemeentecode)
    decisions = federation.decide(question, among)
    await federation.audit_decisions(request[TRANSACTIE_ID], question, decisions, grant.bsn)
    allowed = {d.code for d in decisions if d.allowed}
    selected = [code for code in grant.organisations if code in allowed]
    if not selected:
        return problem(
            403,
            "Niet toegestaan",
            "Het beleid van de Blauwe Knop staat niet toe dat dit portaal voor dit doel gegevens "
            "ophaalt bij de organisaties waarvoor u toestemming gaf. Neem contact op met het "
            "portaal. (The federation's policy does not allow this portal to fetch data for this "
            "purpose from the organisations you consented to.) Beleid/policy: "
            + ", ".join(sorted({p for d in decisions if not d.allowed for p in d.policies})),
        )
    await trail.record(
        "toestemming.gebruikt",
        request[TRANSACTIE_ID],
        {
            "burger": trail.key.pseudonym(grant.bsn),
            "toestemming_id": digest(grant.grant_id),
            "client_id": grant.client_id,
            "purpose_id": grant.purpose_id,
            "organisaties": list(grant.organisations),
        },
    )
    signed = await request.app[ISSUER].issue(
        bsn=grant.bsn,
        transactie_id=request[TRANSACTIE_ID],
        session=request.app[SESSION],
        selected=selected,
        among=among,
    )
    try:
        body = await request.app[DOCUMENTS].render(signed, media)
    except (DocumentUnavailable, ConfigError) as exc:
        log.error("document not made: %s", exc)
        return problem(
            503,
            "Tijdelijk niet beschikbaar",
            f"The {MEDIA_TYPES[media].upper()} document cannot be made right now; nothing was "
            "released. Try again later, or ask for JSON.",
        )
    response = await release(request, signed, body, media, MEDIA_TYPES[media])
    response.headers["Vary"] = "Accept"
    return response


async def _authorise_bundle(request: web.Request) -> tuple[AccessToken, str]:
    if _SENSITIVE_PARAMS & set(request.query):
        raise OAuthError(
            "invalid_request",
            "the citizen is the one bound to the access token; send no bsn or sub parameter",
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "dpop" or not token.strip():
        raise OAuthError(
            "invalid_token", "send the access token as Authorization: DPoP <token>, with a proof"
        )
    token = token.strip()
    if not token.isascii():
        raise OAuthError("invalid_token", "the access token is unknown or expired")
    store = _store(request)
    proof = await verify_dpop(
        request.headers.get("DPoP"),
        store,
        method=request.method,
        url=issuer(request) + request.path,
        access_token=token,
    )
    raw = await store.get("access-token", digest(token))
    if raw is None:
        raise OAuthError("invalid_token", "the access token is unknown or expired")
    record = AccessToken.from_json(raw)
    if record.expires_at <= time.time():
        raise OAuthError("invalid_token", "the access token has expired")
    if await store.get("grant-revoked", record.grant.grant_id) is not None:
        raise OAuthError("invalid_token", "the access token was revoked (its code was replayed)")
    if record.jkt != proof.jkt:
        raise OAuthError(
            "invalid_dpop_proof", "the DPoP proof is signed by another key than the token's"
        )
    media = negotiate(request.headers.get("Accept", ""))
    return record, media
