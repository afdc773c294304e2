"""The demo portal: a municipal MijnOmgeving with a debt-help intake page and the Blue Button.

NOT FOR PRODUCTION: a small stand-in for a portal's back-end, to show and test the journey.
It has its own port and its own client key (registered in
`policies/portals/demo-mijngemeente.toml`). Its back-end makes the pushed authorization request
with `private_key_jwt`, receives the code, redeems it with DPoP, downloads the bundle as JSON
for the overview, and offers it in all four formats: JSON from memory, the JWS, XML and PDF
fetched from the gateway when the citizen asks, with the same token, within its life. A real
portal keeps its sessions in its own shared store; this demo keeps them (and the tokens and
DPoP keys in them) in memory, bounded in number and age.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from html import escape
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.browser_security import harden, secure_origin, strict_csp
from gateway.demo.portal.keys import ClientKey
from gateway.demo.portal.oauth import PortalClient, Token
from gateway.documents.service import EXTENSIONS
from gateway.errors import OAuthError

CLIENT_ID = "demo-mijngemeente"
PURPOSES = ("schuldhulp-intake", "inzage-avg")
SCOPES = ("financiele-zaken", "inkomen", "betalingsregelingen", "contactgegevens")
COOKIE = "portaal_sessie"
MAX_SESSIONS = 1000
SESSION_SECONDS = 30 * 60

Lang = Literal["nl", "en"]


@dataclass(frozen=True, slots=True)
class PortalConfig:
    gateway_url: str  # where the back-end reaches the gateway
    public_url: str  # this portal's own base URL, for its redirect URI
    key: ClientKey
    client_id: str = CLIENT_ID
    gateway_browser_url: str | None = None  # where browsers load the button from, if different

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/blauwe-knop/callback"

    @property
    def script_origin(self) -> str:
        parts = urlsplit(self.gateway_browser_url or self.gateway_url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True, slots=True)
class PortalSession:
    created: float
    lang: Lang = "nl"
    state: str | None = None
    verifier: str | None = None
    purpose: str | None = None
    dpop_key: ec.EllipticCurvePrivateKey | None = None
    token: Token | None = None  # bound to dpop_key; fetches the other formats until it expires
    overview: bytes | None = None  # the JSON download: the result page and the JSON file
    message: str | None = None


CONFIG = web.AppKey("portal_config", PortalConfig)


class Sessions(OrderedDict[str, PortalSession]):
    """The demo's in-memory sessions, oldest first."""


SESSIONS = web.AppKey("portal_sessions", Sessions)
HTTP = web.AppKey("portal_http", aiohttp.ClientSession)

_TEXT: dict[str, dict[Lang, str]] = {
    "site": {"nl": "MijnGemeente", "en": "MyMunicipality"},
    "demo": {
        "nl": "Demoportaal — niet echt, alleen om te testen",
        "en": "Demo portal — not real, for testing only",
    },
    "home_title": {"nl": "Mijn omgeving", "en": "My environment"},
    "home_intro": {
        "nl": "Welkom in uw persoonlijke omgeving van de gemeente.",
        "en": "Welcome to your personal environment at the municipality.",
    },
    "home_link": {"nl": "Aanmelden voor schuldhulp", "en": "Apply for debt help"},
    "intake_title": {"nl": "Aanmelden voor schuldhulp", "en": "Apply for debt help"},
    "intake_intro": {
        "nl": "Voor een goed gesprek hebben we een overzicht van uw schulden en inkomsten nodig. "
        "Met de Blauwe Knop haalt u dat in één keer op bij DUO, UWV, het CAK en de gemeente.",
        "en": "For a good conversation we need an overview of your debts and income. With the "
        "Blue Button you collect it at once from DUO, UWV, CAK and the municipality.",
    },
    "intake_steps": {
        "nl": "U logt in met DigiD, ziet welke gegevens we vragen en waarom, en kiest zelf wat "
        "u deelt.",
        "en": "You log in with DigiD, see which data we ask for and why, and choose what you "
        "share.",
    },
    "result_title": {"nl": "Uw gegevens zijn opgehaald", "en": "Your data has been collected"},
    "result_intro": {
        "nl": "Dit is wat de organisaties hebben gegeven. U kunt het bestand ook zelf bewaren.",
        "en": "This is what the organisations provided. You can also keep the file yourself.",
    },
    "org": {"nl": "Organisatie", "en": "Organisation"},
    "status": {"nl": "Resultaat", "en": "Result"},
    "items": {"nl": "Gegevens", "en": "Items"},
    "downloads": {"nl": "Bestanden", "en": "Files"},
    "downloads_time": {
        "nl": "Om uw gegevens te beschermen kunt u de bestanden alleen downloaden binnen "
        "{minutes} na het ophalen. Daarna drukt u opnieuw op de Blauwe Knop.",
        "en": "To protect your data, you can download the files only within {minutes} of "
        "collecting them. After that, press the Blue Button again.",
    },
    "minute": {"nl": "1 minuut", "en": "1 minute"},
    "minutes": {"nl": "{n} minuten", "en": "{n} minutes"},
    "nothing": {
        "nl": "Er zijn (nog) geen gegevens opgehaald. Begin bij de aanmeldpagina.",
        "en": "No data has been collected (yet). Start at the application page.",
    },
    "refused": {
        "nl": "U heeft geen toestemming gegeven. Er zijn geen gegevens gedeeld.",
        "en": "You did not consent. No data has been shared.",
    },
    "failed": {
        "nl": "Het ophalen is niet gelukt. Probeer het later opnieuw.",
        "en": "Collecting the data failed. Please try again later.",
    },
    "expired": {
        "nl": "Downloaden kan niet meer: de toegang tot uw gegevens is verlopen. Druk opnieuw op "
        "de Blauwe Knop om uw gegevens op te halen.",
        "en": "Downloading is no longer possible: the access to your data has expired. Press the "
        "Blue Button again to collect your data.",
    },
    "download_failed": {
        "nl": "Dit bestand kon niet worden opgehaald. Probeer het zo opnieuw, of kies een ander "
        "bestand.",
        "en": "This file could not be collected. Try again shortly, or choose another file.",
    },
    "back": {"nl": "Terug naar de aanmeldpagina", "en": "Back to the application page"},
    "switch": {"nl": "English", "en": "Nederlands"},
    "skip": {"nl": "Naar de inhoud", "en": "Skip to content"},
}


# What the citizen can download, in the order offered: the PDF is what people read, the
# others are what systems read. The media types are the gateway's (`/v1/bundel`).
_DOWNLOADS: dict[str, dict[Lang, str]] = {
    "pdf": {"nl": "Download als PDF (gewaarmerkt)", "en": "Download as PDF (certified)"},
    "xml": {"nl": "Download als XML (gewaarmerkt)", "en": "Download as XML (certified)"},
    "json": {"nl": "Download als JSON-bestand", "en": "Download as JSON file"},
    "jws": {"nl": "Download als ondertekend JWS-bestand", "en": "Download as signed JWS"},
}

_STATUS: dict[str, dict[Lang, str]] = {
    "ok": {"nl": "Gegevens ontvangen", "en": "Data received"},
    "geen_gegevens": {"nl": "Geen gegevens over u", "en": "No data about you"},
    "niet_opgevraagd": {"nl": "Niet gevraagd (uw keuze)", "en": "Not asked (your choice)"},
    "onbereikbaar": {"nl": "Niet bereikbaar, probeer later", "en": "Unreachable, try later"},
    "time-out": {"nl": "Reageerde niet op tijd", "en": "Did not answer in time"},
    "ongeldig": {"nl": "Antwoord niet te vertrouwen", "en": "Answer could not be trusted"},
}


def _t(key: str, lang: Lang) -> str:
    return _TEXT[key][lang]


def _lang(request: web.Request) -> Lang:
    return "en" if request.query.get("lang") == "en" else "nl"


def create_portal_app(config: PortalConfig) -> web.Application:
    app = web.Application(client_max_size=64 * 1024, middlewares=[_headers])
    app[CONFIG] = config
    app[SESSIONS] = Sessions()
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_http)
    app.router.add_get("/", _home)
    app.router.add_get("/schuldhulp", _intake)
    app.router.add_get("/blauwe-knop/start", _start)
    app.router.add_get("/blauwe-knop/callback", _callback)
    app.router.add_get("/schuldhulp/resultaat", _result)
    # POST: each download but the JSON is a release at the gateway, audited there; a link that
    # any page could make the browser follow (SameSite=Lax cookies go along) must not cause one.
    app.router.add_post("/download/bundel.{fmt:" + "|".join(_DOWNLOADS) + "}", _download)
    app.router.add_get("/static/portaal.css", _css)
    return app


async def _http(app: web.Application) -> Any:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app[HTTP] = session
        yield


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = web.Response(status=exc.status, text=exc.text or exc.reason)
    return response


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, also redirects and what aiohttp answers itself."""
    harden(response, strict_csp(script_src=request.app[CONFIG].script_origin))


def _cookie_name(config: PortalConfig) -> str:
    # `__Host-`: this exact origin only, path /, Secure; browsers refuse it without Secure.
    return f"__Host-{COOKIE}" if secure_origin(config.public_url) else COOKIE


def _session(request: web.Request) -> tuple[str, PortalSession] | None:
    sessions = request.app[SESSIONS]
    sid = request.cookies.get(_cookie_name(request.app[CONFIG]))
    if sid is None or sid not in sessions:
        return None
    found = sessions[sid]
    if time.time() - found.created > SESSION_SECONDS:
        del sessions[sid]
        return None
    return sid, found


def _save(request: web.Request, sid: str, value: PortalSession) -> None:
    sessions = request.app[SESSIONS]
    sessions[sid] = value
    sessions.move_to_end(sid)
    while len(sessions) > MAX_SESSIONS:
        sessions.popitem(last=False)


def _page(request: web.Request, lang: Lang, title: str, body: str) -> web.Response:
    config = request.app[CONFIG]
    other = "en" if lang == "nl" else "nl"
    switch_query = urlencode({**request.query, "lang": other})
    html = f"""<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} — {_t("site", lang)}</title>
<link rel="stylesheet" href="/static/portaal.css">
<script type="module" src="{escape(config.script_origin)}/static/blauwe-knop.js"></script>
</head>
<body>
<a class="skip" href="#inhoud">{_t("skip", lang)}</a>
<header class="kop">
<p class="merk"><a href="/?lang={lang}">{_t("site", lang)}</a></p>
<p class="demo">{_t("demo", lang)}</p>
<a class="taal" href="{escape(request.path)}?{escape(switch_query)}" hreflang="{other}"
 lang="{other}">{_t("switch", lang)}</a>
</header>
<main id="inhoud">
{body}
</main>
</body>
</html>"""
    return web.Response(text=html, content_type="text/html")


async def _home(request: web.Request) -> web.Response:
    lang = _lang(request)
    body = f"""<h1>{_t("home_title", lang)}</h1>
<p>{_t("home_intro", lang)}</p>
<nav aria-label="{_t("home_title", lang)}"><ul>
<li><a href="/schuldhulp?lang={lang}">{_t("home_link", lang)}</a></li>
</ul></nav>"""
    return _page(request, lang, _t("home_title", lang), body)


async def _intake(request: web.Request) -> web.Response:
    lang = _lang(request)
    config = request.app[CONFIG]
    body = f"""<h1>{_t("intake_title", lang)}</h1>
{_flash(request, lang)}
<p>{_t("intake_intro", lang)}</p>
<p>{_t("intake_steps", lang)}</p>
<blauwe-knop client-id="{escape(config.client_id)}" purpose="schuldhulp-intake"
 start-url="/blauwe-knop/start" lang="{lang}"></blauwe-knop>"""
    return _page(request, lang, _t("intake_title", lang), body)


def _flash(request: web.Request, lang: Lang) -> str:
    """The session's message, shown once: a reload must not repeat an old failure."""
    found = _session(request)
    message = found[1].message if found is not None else None
    if found is None or message is None:
        return ""
    _save(request, found[0], replace(found[1], message=None))
    return f'<p class="melding" role="alert">{_t(message, lang)}</p>'


async def _start(request: web.Request) -> web.StreamResponse:
    """The portal's back-end: push the authorization request, then send the browser on."""
    config = request.app[CONFIG]
    lang = _lang(request)
    purpose = request.query.get("purpose", PURPOSES[0])
    if purpose not in PURPOSES or request.query.get("client_id", config.client_id) != (
        config.client_id
    ):
        raise web.HTTPBadRequest(text="Onbekend doel of portaal. / Unknown purpose or client.")
    client = PortalClient(config.gateway_url, config.client_id, config.key, config.redirect_uri)
    started = await client.push(request.app[HTTP], purpose_id=purpose, scopes=SCOPES, lang=lang)
    sid = secrets.token_urlsafe(32)
    _save(
        request,
        sid,
        PortalSession(
            created=time.time(),
            lang=lang,
            state=started.state,
            verifier=started.pkce.verifier,
            purpose=purpose,
            dpop_key=ec.generate_private_key(ec.SECP256R1()),
        ),
    )
    response = web.HTTPSeeOther(started.authorize_url)
    # Lax, not Strict: the cookie must come along on the gateway's redirect back (a top-level
    # GET from another site). Secure wherever browsers keep Secure cookies (see secure_origin).
    config = request.app[CONFIG]
    response.set_cookie(
        _cookie_name(config),
        sid,
        httponly=True,
        samesite="Lax",
        path="/",
        secure=secure_origin(config.public_url),
    )
    raise response


async def _callback(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    found = _session(request)
    if found is None or found[1].state is None:
        raise web.HTTPBadRequest(
            text="Er loopt geen aanvraag: begin opnieuw. / No request in progress: start again."
        )
    sid, current = found
    lang = current.lang
    if not secrets.compare_digest(request.query.get("state", ""), current.state or ""):
        raise web.HTTPBadRequest(
            text="Dit antwoord hoort niet bij uw aanvraag: begin opnieuw. / "
            "This answer does not belong to your request (state): start again."
        )
    client = PortalClient(config.gateway_url, config.client_id, config.key, config.redirect_uri)
    session = request.app[HTTP]
    meta = await client.metadata(session)
    if request.query.get("iss") != meta.issuer:
        raise web.HTTPBadRequest(
            text="Dit antwoord komt niet van de Blauwe Knop: begin opnieuw. / "
            "This answer does not come from the gateway (iss): start again."
        )
    done = replace(current, state=None, verifier=None)
    if "error" in request.query:
        refused = request.query["error"] == "access_denied"
        _save(request, sid, replace(done, message="refused" if refused else "failed"))
        raise web.HTTPSeeOther(f"/schuldhulp?lang={lang}")
    assert current.dpop_key is not None
    assert current.verifier is not None
    try:
        token = await client.redeem(
            session,
            code=request.query.get("code", ""),
            verifier=current.verifier,
            dpop_key=current.dpop_key,
        )
        as_json = await client.download(
            session, access_token=token.access_token, dpop_key=current.dpop_key
        )
    except OAuthError:
        _save(request, sid, replace(done, message="failed"))
        raise web.HTTPSeeOther(f"/schuldhulp?lang={lang}") from None
    _save(request, sid, replace(done, message=None, token=token, overview=as_json.body))
    raise web.HTTPSeeOther(f"/schuldhulp/resultaat?lang={lang}")


async def _result(request: web.Request) -> web.Response:
    lang = _lang(request)
    found = _session(request)
    overview = found[1].overview if found is not None else None
    if found is None or overview is None:
        body = f"""<h1>{_t("result_title", lang)}</h1>
<p role="alert">{_t("nothing", lang)}</p>
<p><a href="/schuldhulp?lang={lang}">{_t("back", lang)}</a></p>"""
        return _page(request, lang, _t("result_title", lang), body)
    bundel = orjson.loads(overview)["bundel"]
    rows = []
    for bron in bundel["bronnen"]:
        data = bron["gegevens"]
        count = sum(len(data.get(k, [])) for k in ("financiele_zaken", "inkomsten"))
        count += len(data.get("betalingsregelingen", []))
        rows.append(
            f'<tr><th scope="row">{escape(bron["organisatie"]["naam"])}</th>'
            f"<td>{escape(_STATUS.get(bron['status'], {}).get(lang, bron['status']))}</td>"
            f"<td>{count}</td></tr>"
        )
    token = found[1].token
    if token is not None and not token.expired():
        n = math.ceil(token.expires_in / 60)
        minutes = _t("minute", lang) if n == 1 else _t("minutes", lang).format(n=n)
        note = f"<p>{_t('downloads_time', lang).format(minutes=minutes)}</p>"
        offered = list(_DOWNLOADS)
    else:
        # The JSON is here already; every other format needs the gateway, and a new token.
        note = f"""<p class="melding" role="alert">{_t("expired", lang)}</p>
<p><a href="/schuldhulp?lang={lang}">{_t("back", lang)}</a></p>"""
        offered = ["json"]
    buttons = "\n".join(
        f'<li><form method="post" action="/download/bundel.{fmt}?lang={lang}">'
        f'<button type="submit">{_DOWNLOADS[fmt][lang]}</button></form></li>'
        for fmt in offered
    )
    body = f"""<h1>{_t("result_title", lang)}</h1>
<p>{_t("result_intro", lang)}</p>
<table>
<thead><tr><th scope="col">{_t("org", lang)}</th><th scope="col">{_t("status", lang)}</th>
<th scope="col">{_t("items", lang)}</th></tr></thead>
<tbody>
{"".join(rows)}
</tbody>
</table>
<h2 id="bestanden">{_t("downloads", lang)}</h2>
{_flash(request, lang)}
{note}
<ul class="downloads" aria-labelledby="bestanden">
{buttons}
</ul>"""
    return _page(request, lang, _t("result_title", lang), body)


async def _download(request: web.Request) -> web.Response:
    """One format of the citizen's bundle as a file: the JSON from memory, the others fetched
    from the gateway now; on failure, back to the result page, which says what happened."""
    fmt = request.match_info["fmt"]
    found = _session(request)
    body = found[1].overview if found is not None else None
    if found is None or body is None:
        raise web.HTTPNotFound(
            text="Er is niets te downloaden: begin bij de aanmeldpagina. / "
            "Nothing to download: start at the application page."
        )
    sid, current = found
    if fmt != "json":
        config = request.app[CONFIG]
        client = PortalClient(config.gateway_url, config.client_id, config.key, config.redirect_uri)
        token, key = current.token, current.dpop_key
        try:
            if token is None or key is None or token.expired():
                # Known to be dead, so not sent: the same outcome as the gateway's refusal.
                raise OAuthError("invalid_token", "the access token has expired")
            download = await client.download(
                request.app[HTTP],
                access_token=token.access_token,
                dpop_key=key,
                media_type=EXTENSIONS[fmt],
            )
        except (OAuthError, aiohttp.ClientError, TimeoutError) as error:
            if isinstance(error, OAuthError) and error.error == "invalid_token":
                # Expired or revoked: forget token and key; the result page then says that
                # access has ended and how to start again.
                _save(request, sid, replace(current, token=None, dpop_key=None))
            else:
                # Anything else may pass (busy, unreachable, a document not made): say so, and
                # keep the token for another try.
                _save(request, sid, replace(current, message="download_failed"))
            raise web.HTTPSeeOther(f"/schuldhulp/resultaat?lang={_lang(request)}") from None
        body = download.body
    response = web.Response(body=body, content_type=EXTENSIONS[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="blauwe-knop-bundel.{fmt}"'
    return response


async def _css(request: web.Request) -> web.Response:
    css = resources.files("gateway.demo.portal").joinpath("portaal.css").read_bytes()
    return web.Response(body=css, content_type="text/css")
