"""The stand-in DigiD served by aiohttp: discovery, JWKS, the login page, the token endpoint.

NOT FOR PRODUCTION. It exists so the demo stack and the tests can log in over real HTTP
through exactly the code path a real DigiD broker takes; `create_digid_app` refuses to run in
production mode, and every page says what it is.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc6749 import OAuth2Error
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from connectors._sandbox import CITIZENS
from connectors._sandbox.citizens import citizen
from connectors._sandbox.runner import serve_app
from gateway.assurance import DIGID_LEVELS, DIGID_SUBSTANTIEEL
from gateway.browser_security import harden, strict_csp
from gateway.demo.digid.provider import AiohttpRequest, DigidUser, Provider, RegisteredClient
from gateway.errors import ConfigError

PROVIDER = web.AppKey("digid_provider", Provider)
HTTP = web.AppKey("digid_http", aiohttp.ClientSession)
PENDING_SECONDS = 600
NOT_FOR_PRODUCTION = "stand-in DigiD: for tests and demos only, not for production"
_CSS = b"""/* Stand-in DigiD: plain, high-contrast, visible focus. */
:root { color: #1a1a1a; background: #fff; font: 1.05rem/1.5 system-ui, sans-serif; }
body { margin: 0; }
main { max-width: 44rem; margin: 0 auto; padding: 1rem 1.25rem 3rem; }
.banner { background: #7a1c00; color: #fff; padding: .75rem 1.25rem; font-weight: 700; margin: 0; }
h1 { color: #154273; font-size: 1.6rem; }
fieldset { border: 2px solid #154273; border-radius: .4rem; margin: 1rem 0; padding: .5rem 1rem; }
legend { font-weight: 700; padding: 0 .4rem; }
label { display: block; padding: .35rem 0; cursor: pointer; }
.hint { display: block; color: #404040; font-size: .92rem; margin-left: 1.7rem; }
button { font: inherit; padding: .6rem 1.3rem; border-radius: .3rem; border: 2px solid #154273;
  margin: .5rem .6rem .5rem 0; cursor: pointer; }
button.primary { background: #154273; color: #fff; }
button.secondary { background: #fff; color: #154273; }
a { color: #154273; }
:focus-visible { outline: 3px solid #d35400; outline-offset: 2px; }
code { background: #f0f0f0; padding: 0 .2rem; }
"""

_TEXT = {
    "nl": {
        "banner": "Nep-DigiD voor testen en demo's — niet voor productie. Dit is geen echte DigiD.",
        "title": "Inloggen met DigiD (testomgeving)",
        "intro": "wil weten wie u bent. Kies een testburger en het inlogniveau.",
        "citizen": "Kies een testburger",
        "level": "Kies het betrouwbaarheidsniveau",
        "requested": "Gevraagd minimaal niveau",
        "or_higher": "of hoger",
        "login": "Inloggen",
        "cancel": "Annuleren",
        "switch": "English",
        "error": "Dit inlogverzoek is niet in orde",
    },
    "en": {
        "banner": "Stand-in DigiD for tests and demos — not for production. This is not DigiD.",
        "title": "Log in with DigiD (test environment)",
        "intro": "wants to know who you are. Choose a test citizen and a level of assurance.",
        "citizen": "Choose a test citizen",
        "level": "Choose the level of assurance",
        "requested": "Minimum level requested",
        "or_higher": "or higher",
        "login": "Log in",
        "cancel": "Cancel",
        "switch": "Nederlands",
        "error": "This login request is not valid",
    },
}


@dataclass(frozen=True, slots=True)
class RunningDigid:
    url: str
    runner: web.AppRunner
    app: web.Application

    @property
    def provider(self) -> Provider:
        return self.app[PROVIDER]


def create_digid_app(
    *, mode: str = "sandbox", clients: Iterable[RegisteredClient] = ()
) -> web.Application:
    if mode != "sandbox":
        raise ConfigError(
            "the stand-in DigiD runs only in sandbox mode; production uses a real DigiD broker "
            "configured in [oidc]"
        )
    provider = Provider()
    for client in clients:
        provider.clients[client.client_id] = client
    app = web.Application(client_max_size=64 * 1024, middlewares=[_headers])
    app[PROVIDER] = provider
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_http)
    app.router.add_get("/", _home)
    app.router.add_get("/.well-known/openid-configuration", _discovery)
    app.router.add_get("/jwks.json", _jwks)
    app.router.add_get("/authorize", _authorize)
    app.router.add_post("/authorize", _authorize_decision)
    app.router.add_post("/token", _token)
    app.router.add_get("/static/digid.css", _css)
    app.router.add_get("/_sandbox/idtoken", _get_knobs)
    app.router.add_put("/_sandbox/idtoken", _put_knobs)
    app.router.add_delete("/_sandbox/idtoken", _reset_knobs)
    app.router.add_post("/_sandbox/keys/rotate", _rotate)
    app.router.add_get("/_sandbox/stats", _stats)
    app.router.add_put("/_sandbox/clients/{client_id}", _register_client)
    app.router.add_get("/_sandbox/health", _health)
    return app


async def start_digid(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    mode: str = "sandbox",
    clients: Iterable[RegisteredClient] = (),
) -> RunningDigid:
    """Serve the stand-in on a real socket (port 0: any free one); the issuer is its URL."""
    app = create_digid_app(mode=mode, clients=clients)
    runner, bound = await serve_app(app, host=host, port=port)
    url = f"http://{host}:{bound}"
    app[PROVIDER].issuer = url
    return RunningDigid(url, runner, app)


def gateway_client(
    client_id: str, gateway_urls: Sequence[str], *, encrypt: str | None = "RSA-OAEP-256"
) -> RegisteredClient:
    """The registration of a Blauwe Knop gateway at these base URLs (its JWKS and callback)."""
    return RegisteredClient(
        client_id=client_id,
        redirect_uris=tuple(f"{u.rstrip('/')}/login/callback" for u in gateway_urls),
        jwks_uri=f"{gateway_urls[0].rstrip('/')}/login/jwks.json",
        id_token_encrypted_response_alg=encrypt,
    )


async def _http(app: web.Application) -> AsyncIterator[None]:
    async with aiohttp.ClientSession() as session:
        app[HTTP] = session
        yield


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _mark(exc)
        raise
    _mark(response)
    return response


def _mark(response: web.StreamResponse) -> None:
    response.headers["X-Not-For-Production"] = NOT_FOR_PRODUCTION


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, also what aiohttp answers itself (the login page sets its own CSP)."""
    harden(response, strict_csp())


def _adapter(
    request: web.Request,
    query: Iterable[tuple[str, str]],
    form: Iterable[tuple[str, str]] = (),
    method: str | None = None,
) -> AiohttpRequest:
    provider = request.app[PROVIDER]
    uri = f"{provider.issuer}{request.path}"
    return AiohttpRequest(method or request.method, uri, request.headers, query, form)


def _to_aiohttp(
    result: tuple[int, Any, list[tuple[str, str]]], *, issuer: str | None = None
) -> web.Response:
    """authlib's (status, body, headers) as a response; `issuer` adds RFC 9207 `iss`."""
    status, body, headers = result
    if issuer is not None:
        headers = [
            (n, add_params_to_uri(v, [("iss", issuer)]) if n.lower() == "location" else v)
            for n, v in headers
        ]
    if isinstance(body, dict):
        response = web.Response(status=status, body=orjson.dumps(body))
        response.content_type = "application/json"
    else:
        response = web.Response(status=status, text=str(body or ""))
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


# --- pages --------------------------------------------------------------------------------


def _lang(value: str | None) -> str:
    return "en" if value == "en" else "nl"


def _page(lang: str, title: str, body: str, status: int = 200) -> web.Response:
    t = _TEXT[lang]
    html = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — nep-DigiD</title>
<link rel="stylesheet" href="/static/digid.css"></head>
<body><p class="banner" role="note">{escape(t["banner"])}</p>
<main>
{body}
</main></body></html>"""
    return web.Response(status=status, text=html, content_type="text/html")


def _error_page(lang: str, detail: str, status: int = 400) -> web.Response:
    t = _TEXT[lang]
    body = f'<h1>{escape(t["error"])}</h1>\n<p lang="en"><code>{escape(detail)}</code></p>'
    return _page(lang, t["error"], body, status)


async def _home(request: web.Request) -> web.Response:
    lang = _lang(request.query.get("lang"))
    body = f"""<h1>{escape(_TEXT[lang]["title"])}</h1>
<p>{escape(NOT_FOR_PRODUCTION)}.</p>
<p><a href="/.well-known/openid-configuration">openid-configuration</a> ·
<a href="/jwks.json">JWKS</a></p>"""
    return _page(lang, _TEXT[lang]["title"], body)


async def _css(request: web.Request) -> web.Response:
    response = web.Response(body=_CSS, content_type="text/css")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


async def _discovery(request: web.Request) -> web.Response:
    return web.json_response(request.app[PROVIDER].metadata(), dumps=_dumps)


async def _jwks(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    provider.jwks_requests += 1
    return web.json_response(provider.jwks(), dumps=_dumps)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


async def _authorize(request: web.Request) -> web.Response:
    """Validate the authorization request with authlib, then show the login page."""
    provider = request.app[PROVIDER]
    query = [(k, v) for k, v in request.query.items() if k != "lang"]
    lang = _lang(request.query.get("lang"))
    try:
        grant = provider.server.get_consent_grant(_adapter(request, query), end_user=None)
    except OAuth2Error as error:
        if error.redirect_uri:  # a verified redirect URI: tell the client
            result = provider.server.handle_error_response(None, error)
            return _to_aiohttp(result, issuer=_response_issuer(provider))
        return _error_page(lang, f"{error.error}: {error.description}")
    pending = secrets.token_urlsafe(24)
    now = time.time()
    provider.pending = {k: v for k, v in provider.pending.items() if v[1] > now}
    provider.pending[pending] = (query, now + PENDING_SECONDS)
    response = _login_page(request, lang, grant, pending, dict(query))
    # Chrome applies form-action to the redirect after the form post: allow the client's origin.
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(grant.redirect_uri))
    response.headers["Content-Security-Policy"] = strict_csp(form_action=f"'self' {origin}")
    return response


def _login_page(
    request: web.Request, lang: str, grant: Any, pending: str, query: dict[str, str]
) -> web.Response:
    t = _TEXT[lang]
    requested = query.get("acr_values", "").split()
    levels_by_acr = {acr: name for _, name, acr in DIGID_LEVELS}
    default_acr = next((a for a in requested if a in levels_by_acr), DIGID_SUBSTANTIEEL)
    citizens = "\n".join(
        f'<label><input type="radio" name="bsn" value="{c.bsn}"{" checked" if i == 2 else ""}> '
        f"{escape(c.naam)} — BSN {c.bsn}"
        f'<span class="hint">{escape(c.scenario if lang == "nl" else c.scenario_en)}</span></label>'
        for i, c in enumerate(CITIZENS)
    )
    levels = "\n".join(
        f'<label><input type="radio" name="niveau" value="{key}"'
        f"{' checked' if acr == default_acr else ''}> DigiD {name}"
        f'<span class="hint"><code>{escape(acr)}</code></span></label>'
        for key, name, acr in DIGID_LEVELS
    )
    known = [name for _, name, acr in DIGID_LEVELS if acr in requested]
    wanted = f"DigiD {known[0]} {t['or_higher']}" if known else "—"
    other = "en" if lang == "nl" else "nl"
    switch = f"{request.path}?{urlencode([*query.items(), ('lang', other)])}"
    body = f"""<p><a href="{escape(switch)}" lang="{other}">{escape(t["switch"])}</a></p>
<h1>{escape(t["title"])}</h1>
<p><strong>{escape(grant.client.client_id)}</strong> {escape(t["intro"])}</p>
<p>{escape(t["requested"])}: {escape(wanted)}</p>
<form method="post" action="/authorize">
<input type="hidden" name="pending" value="{pending}">
<input type="hidden" name="lang" value="{lang}">
<fieldset><legend>{escape(t["citizen"])}</legend>
{citizens}
</fieldset>
<fieldset><legend>{escape(t["level"])}</legend>
{levels}
</fieldset>
<button type="submit" name="actie" value="inloggen" class="primary">{escape(t["login"])}
</button>
<button type="submit" name="actie" value="annuleren" class="secondary">{escape(t["cancel"])}
</button>
</form>"""
    return _page(lang, t["title"], body)


async def _authorize_decision(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    form = await request.post()
    lang = _lang(str(form.get("lang", "nl")))
    pending = provider.pending.pop(str(form.get("pending", "")), None)
    if pending is None or pending[1] < time.time():
        return _error_page(lang, "unknown or expired login page; start again at the client")
    query = pending[0]
    # The authorization request as it came in (a GET), now with the tester's decision.
    adapter = _adapter(request, query, method="GET")
    try:
        grant = provider.server.get_consent_grant(adapter, end_user=None)
    except OAuth2Error as error:
        return _error_page(lang, f"{error.error}: {error.description}")
    user: DigidUser | None = None
    if form.get("actie") != "annuleren":
        chosen = citizen(str(form.get("bsn", "")))
        levels = {key: acr for key, _, acr in DIGID_LEVELS}
        acr = levels.get(str(form.get("niveau", "")))
        if chosen is None or acr is None:
            return _error_page(lang, "choose one of the test citizens and a level")
        user = DigidUser(chosen.bsn, acr, int(time.time()))
    result = provider.server.create_authorization_response(adapter, grant_user=user, grant=grant)
    return _to_aiohttp(result, issuer=_response_issuer(provider))


def _response_issuer(provider: Provider) -> str:
    return "https://nep-digid.invalid" if provider.knobs.wrong_response_iss else provider.issuer


async def _token(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    form = list((await request.post()).items())
    pairs = [(k, v) for k, v in form if isinstance(v, str)]
    client_id = _claimed_client(dict(pairs))
    client = provider.clients.get(client_id) if client_id else None
    if client is not None and client.jwks_uri:
        await _refresh_client_keys(request.app, client)
    return _to_aiohttp(provider.server.create_token_response(_adapter(request, [], pairs)))


def _claimed_client(form: dict[str, str]) -> str | None:
    """The client the request claims to be: from the assertion's sub, verified later by authlib."""
    assertion = form.get("client_assertion")
    if assertion:
        try:
            claims = orjson.loads(jws.extract_compact(assertion.encode()).payload)
            sub = claims.get("sub") if isinstance(claims, dict) else None
            return sub if isinstance(sub, str) else None
        except (JoseError, ValueError, orjson.JSONDecodeError):
            return None
    return form.get("client_id")


async def _refresh_client_keys(app: web.Application, client: RegisteredClient) -> None:
    assert client.jwks_uri is not None
    try:
        async with app[HTTP].get(
            client.jwks_uri, timeout=aiohttp.ClientTimeout(total=5, sock_connect=2)
        ) as response:
            if response.status != 200:
                return
            body = await response.content.read(64 * 1024 + 1)
        if len(body) > 64 * 1024:
            return
        jwks = orjson.loads(body)
        KeySet.import_key_set(jwks)
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, JoseError, ValueError):
        return  # keep what was registered; authentication then fails with invalid_client
    client.jwks = jwks


# --- test-only control routes -------------------------------------------------------------


async def _get_knobs(request: web.Request) -> web.Response:
    from dataclasses import asdict

    return web.json_response(asdict(request.app[PROVIDER].knobs), dumps=_dumps)


async def _put_knobs(request: web.Request) -> web.Response:
    try:
        values = orjson.loads(await request.read())
        if not isinstance(values, dict):
            raise ValueError("expected a JSON object of knobs")
        request.app[PROVIDER].knobs.update(values)
    except (orjson.JSONDecodeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return await _get_knobs(request)


async def _reset_knobs(request: web.Request) -> web.Response:
    request.app[PROVIDER].knobs.reset()
    return await _get_knobs(request)


async def _rotate(request: web.Request) -> web.Response:
    body = await request.read()
    options = orjson.loads(body) if body else {}
    keep_old = bool(options.get("keep_old", True)) if isinstance(options, dict) else True
    kid = request.app[PROVIDER].rotate(keep_old=keep_old)
    return web.json_response({"kid": kid, **request.app[PROVIDER].jwks()}, dumps=_dumps)


async def _stats(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    return web.json_response(
        {"jwks_requests": provider.jwks_requests, "codes": len(provider.codes)}, dumps=_dumps
    )


async def _register_client(request: web.Request) -> web.Response:
    try:
        data = orjson.loads(await request.read())
        if not isinstance(data, dict) or not isinstance(data.get("redirect_uris"), list):
            raise ValueError("expected {redirect_uris: [...], jwks_uri | jwks, ...}")
        client = RegisteredClient(
            client_id=request.match_info["client_id"],
            redirect_uris=tuple(str(u) for u in data["redirect_uris"]),
            jwks_uri=data.get("jwks_uri"),
            jwks=data.get("jwks"),
            id_token_encrypted_response_alg=data.get("id_token_encrypted_response_alg"),
        )
    except (orjson.JSONDecodeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    request.app[PROVIDER].clients[client.client_id] = client
    return web.json_response({"client_id": client.client_id}, dumps=_dumps)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})
