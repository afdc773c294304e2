"""HTTP for documents: the XSD, `POST /v1/verify` (JSON) and the `/verifieer` page.

The page is for debt-help workers: choose or drop a file, press the button, read the verdict.
Plain HTML, no script and no inline style (the gateway's CSP forbids both), Dutch with an
English switch (`?lang=en`). Uploads are read with a size limit and verified in the document
process pool, so a hostile file costs a worker, never the event loop.
"""

from __future__ import annotations

import asyncio
from html import escape
from typing import Literal

import orjson
from aiohttp import BodyPartReader, web

from gateway.bodies import parsing_body
from gateway.documents.service import DocumentService
from gateway.documents.verify import Verdict
from gateway.documents.xml import XSD_FILE, xsd_bytes
from gateway.errors import DocumentUnavailable, MalformedRequest

DOCUMENTS = web.AppKey("documents", DocumentService)
MAX_VERIFY_BYTES = web.AppKey("max_verify_bytes", int)
Lang = Literal["nl", "en"]
VERIFY_TIMEOUT_SECONDS = 30.0


def add_routes(app: web.Application, max_verify_bytes: int) -> None:
    app[MAX_VERIFY_BYTES] = max_verify_bytes
    app.router.add_get(f"/schema/{XSD_FILE}", _xsd)
    app.router.add_post("/v1/verify", _verify_api)
    app.router.add_get("/verifieer", _page)
    app.router.add_post("/verifieer", _page_result)
    app.router.add_get("/verifieer.css", _css)


async def _xsd(request: web.Request) -> web.Response:
    response = web.Response(body=xsd_bytes(), content_type="application/xml")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


class _TooLarge(Exception):
    pass


async def _read_limited(request: web.Request, limit: int) -> tuple[bytes, str | None]:
    """The uploaded file: the raw body, or the first file part of a multipart form."""
    if (request.content_length or 0) > limit + 64 * 1024:
        raise _TooLarge
    if request.content_type == "multipart/form-data":
        async with parsing_body():
            reader = await request.multipart()
            async for part in reader:
                if isinstance(part, BodyPartReader) and part.name == "bestand":
                    data = bytearray()
                    while chunk := await part.read_chunk(64 * 1024):
                        data.extend(chunk)
                        if len(data) > limit:
                            raise _TooLarge
                    return bytes(data), part.filename
        return b"", None
    data = bytearray()
    while chunk := await request.content.read(64 * 1024):
        data.extend(chunk)
        if len(data) > limit:
            raise _TooLarge
    return bytes(data), None


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/problem+json"
    )


async def _verify_api(request: web.Request) -> web.Response:
    """Verify one uploaded download; 200 with `geldig` true or false and the reasons."""
    limit = request.app[MAX_VERIFY_BYTES]
    try:
        data, name = await _read_limited(request, limit)
    except _TooLarge:
        return _problem(413, "Bestand te groot", f"Upload at most {limit} bytes.")
    if not data:
        return _problem(400, "Geen bestand", "Send the file as the body or as form field bestand.")
    try:
        verdict = await _verify_in_time(request, data, name)
    except (TimeoutError, DocumentUnavailable):
        # DocumentUnavailable: a worker died (a file that crashes a parser); no 500 for that.
        return _problem(503, "Controle duurde te lang", "Verification took too long; try again.")
    return web.Response(body=orjson.dumps(verdict.as_json()), content_type="application/json")


async def _verify_in_time(request: web.Request, data: bytes, name: str | None) -> Verdict:
    """A hostile file may keep a worker busy, but never a request for longer than this."""
    async with asyncio.timeout(VERIFY_TIMEOUT_SECONDS):
        return await request.app[DOCUMENTS].verify(data, name)


TEXT: dict[str, dict[Lang, str]] = {
    "title": {"nl": "Document controleren", "en": "Verify a document"},
    "intro": {
        "nl": "Heeft u van iemand een overzicht van de Blauwe Knop gekregen (PDF, XML of JSON)? "
        "Controleer hier of het echt is en of er niets aan veranderd is. Het bestand wordt "
        "alleen gecontroleerd, niet bewaard.",
        "en": "Did someone give you a Blauwe Knop overview (PDF, XML or JSON)? Check here "
        "that it is genuine and unchanged. The file is only checked, not stored.",
    },
    "file": {"nl": "Bestand (kies of sleep het hierheen)", "en": "File (choose or drop it here)"},
    "button": {"nl": "Controleren", "en": "Verify"},
    "other": {"nl": "English", "en": "Nederlands"},
    "ok": {
        "nl": "Geldig: dit document is echt en ongewijzigd.",
        "en": "Valid: this document is genuine and unchanged.",
    },
    "bad": {
        "nl": "NIET GELDIG: vertrouw dit document niet.",
        "en": "NOT VALID: do not trust this document.",
    },
    "signer": {"nl": "Verzegeld door", "en": "Sealed by"},
    "signed": {"nl": "Verzegeld op", "en": "Sealed at"},
    "stamp": {"nl": "Tijdstempel", "en": "Time-stamp"},
    "bundle": {"nl": "Kenmerk", "en": "Reference"},
    "sources": {"nl": "Organisaties", "en": "Organisations"},
    "reasons": {"nl": "Waarom niet", "en": "Why not"},
    "again": {"nl": "Nog een document controleren", "en": "Verify another document"},
    "too_large": {"nl": "Het bestand is te groot.", "en": "The file is too large."},
    "empty": {"nl": "Kies eerst een bestand.", "en": "Choose a file first."},
    "slow": {
        "nl": "De controle duurde te lang. Probeer het later opnieuw.",
        "en": "Verification took too long. Please try again later.",
    },
}
PROVENANCE: dict[str, dict[Lang, str]] = {
    "verified": {
        "nl": "eigen handtekening van de organisatie klopt",
        "en": "the organisation's own signature is valid",
    },
    "absent": {"nl": "geen gegevens opgehaald", "en": "no data fetched"},
    "not checked": {"nl": "handtekening niet gecontroleerd", "en": "signature not checked"},
}


def _lang(request: web.Request) -> Lang:
    return "en" if request.query.get("lang") == "en" else "nl"


def _html(lang: Lang, body: str) -> web.Response:
    other: Lang = "en" if lang == "nl" else "nl"
    html = f"""<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TEXT["title"][lang]} — Blauwe Knop</title>
<link rel="stylesheet" href="/verifieer.css"></head>
<body><header><p class="lang"><a href="/verifieer?lang={other}" hreflang="{other}"
lang="{other}">{TEXT["other"][lang]}</a></p></header>
<main><h1>{TEXT["title"][lang]}</h1>
{body}
</main></body></html>"""
    return web.Response(text=html, content_type="text/html")


def _form(lang: Lang) -> str:
    return f"""<p>{TEXT["intro"][lang]}</p>
<form method="post" action="/verifieer?lang={lang}" enctype="multipart/form-data">
<label for="bestand">{TEXT["file"][lang]}</label>
<input id="bestand" name="bestand" type="file" required
 accept=".pdf,.xml,.json,.jws,application/pdf,application/xml,application/json">
<button type="submit">{TEXT["button"][lang]}</button>
</form>"""


async def _page(request: web.Request) -> web.Response:
    return _html(_lang(request), _form(_lang(request)))


def _result(lang: Lang, verdict: Verdict) -> str:
    rows = []

    def row(label: str, value: object) -> None:
        if value:
            rows.append(
                f'<tr><th scope="row">{TEXT[label][lang]}</th><td>{escape(str(value))}</td></tr>'
            )

    row("signer", verdict.signer)
    row("signed", verdict.signing_time.isoformat() if verdict.signing_time else None)
    if verdict.timestamp_time:
        row(
            "stamp",
            f"{verdict.timestamp_time.isoformat()} ({verdict.timestamp_authority or '?'})",
        )
    row("bundle", verdict.bundel_id)
    sources = "".join(
        f"<li>{escape(s.code)}: {escape(s.status)} — "
        f"{PROVENANCE.get(s.provenance, {}).get(lang, escape(s.provenance))}</li>"
        for s in verdict.sources
    )
    status = (
        f'<p class="ok" role="status">{TEXT["ok"][lang]}</p>'
        if verdict.ok
        else f'<p class="bad" role="alert">{TEXT["bad"][lang]}</p>'
    )
    reasons = (
        f"<h2>{TEXT['reasons'][lang]}</h2><ul>"
        + "".join(f"<li>{escape(p)}</li>" for p in verdict.problems)
        + "</ul>"
        if verdict.problems
        else ""
    )
    return f"""{status}
<table>{"".join(rows)}</table>
{f"<h2>{TEXT['sources'][lang]}</h2><ul>{sources}</ul>" if sources else ""}
{reasons}
<p><a href="/verifieer?lang={lang}">{TEXT["again"][lang]}</a></p>"""


async def _page_result(request: web.Request) -> web.Response:
    lang = _lang(request)
    try:
        data, name = await _read_limited(request, request.app[MAX_VERIFY_BYTES])
    except _TooLarge:
        response = _html(
            lang, f'<p class="bad" role="alert">{TEXT["too_large"][lang]}</p>' + _form(lang)
        )
        response.set_status(413)
        return response
    except MalformedRequest:
        data = b""  # a broken upload reads as no file: the page asks to choose one
    if not data:
        response = _html(
            lang, f'<p class="bad" role="alert">{TEXT["empty"][lang]}</p>' + _form(lang)
        )
        response.set_status(400)
        return response
    try:
        verdict = await _verify_in_time(request, data, name)
    except (TimeoutError, DocumentUnavailable):
        response = _html(
            lang, f'<p class="bad" role="alert">{TEXT["slow"][lang]}</p>' + _form(lang)
        )
        response.set_status(503)
        return response
    return _html(lang, _result(lang, verdict))


CSS = b"""body{font-family:system-ui,sans-serif;max-width:44rem;margin:1rem auto;padding:0 1rem;
line-height:1.5;color:#1a1a1a}h1{color:#154273}.lang{text-align:right}
label{display:block;font-weight:bold;margin:1rem 0 .25rem}
input[type=file]{display:block;width:100%;padding:2rem 1rem;border:2px dashed #154273;
background:#f3f6f9}button{margin-top:1rem;padding:.6rem 1.4rem;font-size:1rem;background:#154273;
color:#fff;border:0;border-radius:3px}button:focus,a:focus,input:focus{outline:3px solid #ffb612}
.ok{border-left:6px solid #2e7d32;padding:.5rem 1rem;background:#eef7ee;font-weight:bold}
.bad{border-left:6px solid #b00020;padding:.5rem 1rem;background:#fdecee;font-weight:bold}
th{text-align:left;padding-right:1rem;vertical-align:top}
"""


async def _css(request: web.Request) -> web.Response:
    response = web.Response(body=CSS, content_type="text/css")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
