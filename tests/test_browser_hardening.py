"""Browser hardening of every page we serve (issue #8, docs/hostile-input.md).

One walk, over real sockets, through the whole demo stack as a browser goes: the gateway's pages
(sandbox index, verify page, login and its errors, authorization and consent pages and their
errors), the stand-in DigiD's and the demo portal's, with a real DigiD login and a real consent.
Every response on the way (redirects too) is recorded through aiohttp's tracing and checked:

* every response: HSTS (two years, subdomains), `X-Content-Type-Options: nosniff`, and a CSP;
* every HTML page: a CSP with `default-src 'none'`, `frame-ancestors 'none'` and `base-uri`,
  without `unsafe-inline`, `unsafe-eval`, wildcards or `data:`;
* every cookie set: `Secure`, `HttpOnly`, `SameSite=Lax|Strict`, and a `__Host-` name (path /,
  no Domain): the stack runs on loopback, which browsers treat as a secure context.

So that a new page is not forgotten, the list of pages is derived, not written down: for the
gateway, every operation and status that its own /openapi.json documents as `text/html` must have
been seen in the walk (the few that need a broken component are listed with the reason); for the
demo portal and the stand-in DigiD, every route of their routers.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.demo.digid.app import PROVIDER
from gateway.demo.forms import parse_forms
from gateway.demo.journey import (
    Browser,
    LoopbackCookieJar,
    fill_consent_form,
    fill_login_form,
    reach_result_page,
)
from gateway.demo.portal.app import CONFIG as PORTAL_CONFIG
from gateway.pki import DevPki
from tests.portalstack import PortalStack, start_portal_stack, stop_portal_stack

CITIZEN = "999990020"
MAX_VERIFY_BYTES = 300_000
HSTS_MIN_SECONDS = 365 * 24 * 3600

# Documented HTML answers the walk cannot reach without breaking a component on purpose. Each
# comes from the same handler, through the same response hook, as a status the walk does see.
UNREACHED: dict[tuple[str, str, str], str] = {
    ("GET", "/login", "502"): "the identity provider's discovery must fail",
    ("GET", "/login", "503"): "the store must be down",
    ("GET", "/login/callback", "401"): "documented, but no login error answers 401 today",
    ("GET", "/login/callback", "503"): "the store must be down",
    ("GET", "/authorize", "503"): "the store must be down",
    ("GET", "/toestemming/{tx}", "502"): "a login started from consent must fail at DigiD",
    ("GET", "/toestemming/{tx}", "503"): "the store must be down",
    ("POST", "/toestemming/{tx}", "503"): "the store must be down",
    ("POST", "/verifieer", "503"): "a document worker must die (tests/test_hostile.py)",
}
# Routes of the demo portal and the stand-in DigiD that are machine interfaces, not pages; the
# walk still checks the headers of every one it happens to call.
NOT_PAGES = {
    ("digid", "POST", "/token"): "the gateway's back-end calls it",
    ("digid", "PUT", "/_sandbox/idtoken"): "test knob",
    ("digid", "DELETE", "/_sandbox/idtoken"): "test knob",
    ("digid", "GET", "/_sandbox/idtoken"): "test knob",
    ("digid", "POST", "/_sandbox/keys/rotate"): "test knob",
    ("digid", "GET", "/_sandbox/stats"): "test knob",
    ("digid", "PUT", "/_sandbox/clients/{client_id}"): "test knob",
}


@dataclass(frozen=True)
class Seen:
    method: str
    url: str
    status: int
    headers: CIMultiDictProxy[str]

    @property
    def is_html(self) -> bool:
        return self.headers.get("Content-Type", "").startswith("text/html")


class Recorder:
    """Every response any of the walk's clients receives, redirects included."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_end.append(self._end)

    async def _end(
        self, session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        response = params.response
        self.seen.append(
            Seen(params.method, str(params.url), response.status, response.headers.copy())
        )

    def browser(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookie_jar=LoopbackCookieJar(), trace_configs=[self.trace])


@pytest.fixture
async def world(state_dir: Path, pki: DevPki, tmp_path: Path) -> AsyncIterator[PortalStack]:
    made = await start_portal_stack(
        state_dir,
        pki,
        tmp_path / "policies",
        documents={"max_verify_bytes": MAX_VERIFY_BYTES},
    )
    yield made
    await stop_portal_stack(made)


# --- the checks -------------------------------------------------------------------------------


def _directives(csp: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for part in csp.split(";"):
        words = part.split()
        if words:
            found[words[0].lower()] = words[1:]
    return found


def header_problems(seen: Seen) -> list[str]:
    """What is wrong with one response's headers; empty when nothing is."""
    problems: list[str] = []
    hsts = seen.headers.get("Strict-Transport-Security", "")
    max_age = re.search(r"max-age=(\d+)", hsts)
    if not max_age or int(max_age.group(1)) < HSTS_MIN_SECONDS:
        problems.append(f"HSTS missing or shorter than a year: {hsts!r}")
    elif "includesubdomains" not in hsts.lower():
        problems.append(f"HSTS without includeSubDomains: {hsts!r}")
    if seen.headers.get("X-Content-Type-Options", "").lower() != "nosniff":
        problems.append("no X-Content-Type-Options: nosniff")
    csp = seen.headers.get("Content-Security-Policy")
    if csp is None:
        problems.append("no Content-Security-Policy")
    elif seen.is_html:
        problems += csp_problems(csp)
    for raw in seen.headers.getall("Set-Cookie", []):
        problems += cookie_problems(raw)
    return problems


def csp_problems(csp: str) -> list[str]:
    """A page's policy: nothing inline, nothing evaluated, no wildcards, never framed."""
    problems: list[str] = []
    directives = _directives(csp)
    if directives.get("default-src") != ["'none'"]:
        problems.append(f"CSP default-src is not 'none': {csp}")
    if directives.get("frame-ancestors") != ["'none'"]:
        problems.append(f"CSP without frame-ancestors 'none': {csp}")
    if "base-uri" not in directives:
        problems.append(f"CSP without base-uri: {csp}")
    for name, sources in directives.items():
        for source in sources:
            lowered = source.lower()
            if lowered in ("'unsafe-inline'", "'unsafe-eval'", "'unsafe-hashes'", "*", "data:"):
                problems.append(f"CSP {name} allows {source}")
            elif lowered in ("http:", "https:") or lowered.startswith(("*", "http://*")):
                problems.append(f"CSP {name} allows a whole scheme or wildcard host: {source}")
    return problems


def cookie_problems(raw: str) -> list[str]:
    problems: list[str] = []
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(raw)
    for name, morsel in cookie.items():
        if not morsel["secure"]:
            problems.append(f"cookie {name} without Secure")
        if not morsel["httponly"]:
            problems.append(f"cookie {name} without HttpOnly")
        if str(morsel["samesite"]).lower() not in ("lax", "strict"):
            problems.append(f"cookie {name} without SameSite=Lax or Strict")
        # Loopback is a secure context, so every cookie can and must be host-only.
        if not name.startswith("__Host-"):
            problems.append(f"cookie {name} is not a __Host- cookie")
        if morsel["domain"] or morsel["path"] != "/":
            problems.append(f"cookie {name} has a Domain or a path other than /")
    return problems


def test_the_checks_catch_what_they_should() -> None:
    """The checks themselves fail on the weaknesses they look for."""
    bad = Seen(
        "GET",
        "http://127.0.0.1/x",
        200,
        CIMultiDictProxy(
            CIMultiDict(
                [
                    ("Content-Type", "text/html"),
                    ("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'"),
                    ("Set-Cookie", "sessie=x; Path=/"),
                ]
            )
        ),
    )
    problems = " | ".join(header_problems(bad))
    for expected in (
        "HSTS",
        "nosniff",
        "default-src",
        "frame-ancestors",
        "base-uri",
        "unsafe-inline",
        "without Secure",
        "without HttpOnly",
        "SameSite",
        "__Host-",
    ):
        assert expected in problems, problems


# --- the walk ---------------------------------------------------------------------------------


async def _get(browser: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with browser.get(url, allow_redirects=False, **kwargs) as response:
        return response.status, await response.text()


async def _post(browser: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with browser.post(url, allow_redirects=False, **kwargs) as response:
        return response.status, await response.text()


async def _login_redirect(browser: aiohttp.ClientSession, gateway: str) -> str:
    """Where the gateway's login start sends the browser: the stand-in DigiD."""
    async with browser.get(
        f"{gateway}/login", params={"return_to": "/login/sessie"}, allow_redirects=False
    ) as response:
        return response.headers["Location"]


def _with_query(url: str, **changes: str) -> str:
    split = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(split.query).items()}
    return urlunsplit(split._replace(query=urlencode({**query, **changes})))


async def walk(world: PortalStack, recorder: Recorder) -> None:
    gateway, portal, digid = world.url, world.portal_url, world.digid_url
    async with recorder.browser() as session:
        browser = Browser(session)
        # The whole journey: portal, button, gateway /authorize, login at DigiD, consent page,
        # back at the portal's result page, and a download through the portal.
        await browser.get("portal home", f"{portal}/")
        await browser.get("portal css", f"{portal}/static/portaal.css")
        result = await reach_result_page(browser, portal, bsn=CITIZEN)
        for form in parse_forms(result.html):
            if form.action and "/download/bundel.json" in form.action:
                await _post(session, f"{portal}{form.action}", data=form.values({}, None))
        await _get(session, f"{portal}/blauwe-knop/start?purpose=onbekend")  # 400
        await _get(session, f"{portal}/blauwe-knop/callback")  # no request in progress

        # The consent page's other answers: no organisation chosen (the page again), a form of
        # another session (403), an unknown transaction (400); then a decision (the portal's
        # redirect URI is not fetched), and the same form again (400).
        started = await world.other.push(
            world.session, purpose_id="schuldhulp-intake", scopes=("financiele-zaken",)
        )
        page = await browser.open("authorize", "GET", started.authorize_url)
        form, pairs = fill_login_form(page.html, CITIZEN, "substantieel")
        page = await browser.send_form("login", page.url, form, pairs)
        form, pairs = fill_consent_form(page.html, give=True)
        action = page.url
        without = [(k, v) for k, v in pairs if k != "organisatie"]
        await _post(session, action, data=without)
        forged = [(k, "vals" if k == "csrf" else v) for k, v in pairs]
        await _post(session, action, data=forged)
        await _get(session, f"{gateway}/toestemming/onbekend")
        await _post(session, f"{gateway}/toestemming/onbekend", data={"csrf": "x"})
        await _post(session, action, data=pairs)
        await _post(session, action, data=pairs)
        await _get(session, f"{gateway}/authorize")
        await _post(session, f"{gateway}/authorize", data={})

        # Login: its start refused, a callback without state, a cancel at DigiD (403) and a
        # provider error (502): the cancel's own callback with another error code.
        await _get(session, f"{gateway}/login", params={"return_to": "https://elders.example/"})
        await _get(session, f"{gateway}/login/callback")
        for error in (None, "server_error"):
            status, html = await _get(session, await _login_redirect(session, gateway))
            pending = re.search(r'name="pending" value="([^"]+)"', html)
            assert status == 200, html
            assert pending, html
            async with session.post(
                f"{digid}/authorize",
                data={"pending": pending.group(1), "bsn": CITIZEN, "actie": "annuleren"},
                allow_redirects=False,
            ) as response:
                back = response.headers["Location"]
            if error:
                back = _with_query(back, error=error)
            await _get(session, back, headers={"Accept": "text/html"})
        await _get(session, f"{digid}/authorize")  # no request: the provider's error page
        await _get(session, f"{digid}/")
        for path in ("/.well-known/openid-configuration", "/jwks.json", "/static/digid.css"):
            await _get(session, f"{digid}{path}")
        await _get(session, f"{digid}/_sandbox/health")

        # A whole login, then the session page, and logging out (which clears the cookie).
        page = await browser.open("digid", "GET", await _login_redirect(session, gateway))
        form, pairs = fill_login_form(page.html, CITIZEN, "substantieel")
        await browser.send_form("login", page.url, form, pairs)
        await _post(session, f"{gateway}/login/uitloggen", data={"return_to": "/verifieer"})

        # The verify page: the form, a real download verified, no file, a file too large.
        await _get(session, f"{gateway}/")
        await _get(session, f"{gateway}/verifieer")
        async with session.post(
            f"{gateway}/v1/sandbox/bundel", json={"bsn": "999990019"}
        ) as response:
            download = await response.read()
        assert len(download) < MAX_VERIFY_BYTES
        for body in (download, None, b"x" * (MAX_VERIFY_BYTES + 128 * 1024)):
            upload = aiohttp.FormData()
            if body is None:
                upload.add_field("iets", "anders", content_type="text/plain")  # multipart
            else:
                upload.add_field("bestand", body, filename="overzicht.json")
            await _post(session, f"{gateway}/verifieer", data=upload)

        # Every other GET the gateway documents without a path parameter: headers everywhere.
        async with session.get(f"{gateway}/openapi.json") as response:
            described = await response.json()
        for path, operations in described["paths"].items():
            if "get" in operations and "{" not in path:
                await _get(session, f"{gateway}{path}")
        await _get(session, f"{gateway}/static/blauwe-knop.js")
        await _get(session, f"{gateway}/nergens")  # the router's own 404


def html_statuses(described: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(method, path, status) of every answer the description gives as an HTML page."""
    shared = described["components"]["responses"]
    found: set[tuple[str, str, str]] = set()
    for path, operations in described["paths"].items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):  # path-level `parameters`
                continue
            for status, response in operation.get("responses", {}).items():
                if "$ref" in response:
                    response = shared[response["$ref"].rsplit("/", 1)[1]]
                if "text/html" in response.get("content", {}):
                    found.add((method.upper(), path, status))
    return found


def _template(path: str, templates: Iterable[str]) -> str | None:
    for template in templates:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    return None


def _route_of(app: web.Application, method: str, path: str) -> str | None:
    for route in app.router.routes():
        if route.method != method:
            continue
        info = route.resource.get_info() if route.resource else {}
        if info.get("path") == path or (
            "pattern" in info and info["pattern"].fullmatch(path) is not None
        ):
            return route.resource.canonical if route.resource else None
    return None


async def test_every_page_is_hardened(world: PortalStack) -> None:
    recorder = Recorder()
    await walk(world, recorder)

    problems = [
        f"{s.method} {s.url} ({s.status}): {p}" for s in recorder.seen for p in header_problems(s)
    ]
    assert not problems, "\n".join(problems)

    # Every HTML answer the gateway documents was seen, or is listed as unreachable.
    async with world.session.get(f"{world.url}/openapi.json") as response:
        described = await response.json()
    documented = html_statuses(described)
    seen_pages: set[tuple[str, str, str]] = set()
    for s in recorder.seen:
        split = urlsplit(s.url)
        if f"{split.scheme}://{split.netloc}" != world.url or not s.is_html:
            continue
        template = _template(split.path, described["paths"])
        if template is not None:
            seen_pages.add((s.method, template, str(s.status)))
    missing = documented - seen_pages - UNREACHED.keys()
    assert not missing, f"documented HTML answers the walk never saw: {sorted(missing)}"
    assert not UNREACHED.keys() & seen_pages, (
        "listed as unreachable but seen: drop it from the list"
    )
    assert {(m, p) for m, p, _ in documented} == {(m, p) for m, p, _ in seen_pages & documented}

    # Every route of the demo portal and the stand-in DigiD was called, or is not a page.
    apps = {
        "portal": next(r.app for r in world.runners if PORTAL_CONFIG in r.app),
        "digid": next(r.app for r in world.runners if PROVIDER in r.app),
    }
    origins = {"portal": world.portal_url, "digid": world.digid_url}
    for name, app in apps.items():
        routes = {
            (name, route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
        called = set()
        for s in recorder.seen:
            split = urlsplit(s.url)
            if f"{split.scheme}://{split.netloc}" == origins[name]:
                canonical = _route_of(app, s.method, split.path)
                if canonical is not None:
                    called.add((name, s.method, canonical))
        missing_routes = routes - called - NOT_PAGES.keys()
        assert not missing_routes, f"{name}: routes the walk never called: {sorted(missing_routes)}"
