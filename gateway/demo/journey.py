"""The scripted journey: a citizen's whole path through the demo stack, headless, over HTTP.

Demo portal → the button's start URL (the portal's back-end pushes its authorization request)
→ the gateway's authorization endpoint → login at the stand-in DigiD (its form, filled as a
tester would) → the consent page (all organisations kept) → back at the portal, whose back-end
redeems the code with DPoP and shows the overview → the download button for the format (the
portal fetches it from the gateway) → the file, verified: JSON and JWS against the gateway's
published keys, XML and PDF as a debt-help worker would, against the trust roots (and for the
PDF its time-stamp and embedded validation material). `blauweknop demo` runs it; so do the
tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from http.cookies import BaseCookie
from typing import Any, get_args
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
import orjson
from yarl import URL

from gateway.demo.forms import Field, Form, find_elements, parse_forms
from gateway.documents.service import EXTENSIONS
from gateway.documents.verify import DocumentTrust, Format, Verdict, verify_file
from gateway.errors import BlauweKnopError
from gateway.verify import SourceVerdict, Trust, verify_compact, verify_download

FORMATS: tuple[Format, ...] = get_args(Format)
MAX_PAGE_BYTES = 2 * 1024 * 1024
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024


class JourneyError(BlauweKnopError):
    """A step of the journey did not go as a citizen's would; the message names the step."""


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    url: str
    status: int


@dataclass(frozen=True, slots=True)
class JourneyResult:
    body: bytes
    media_type: str
    bundel: dict[str, Any]  # the bundle as the seal covers it
    kid: str  # the gateway's seal key (RFC 7638 thumbprint)
    sources: tuple[SourceVerdict, ...]  # each organisation's own signature
    steps: tuple[Step, ...]
    gateway_url: str
    certified: Verdict | None = None  # XML and PDF: the offline verifier's whole verdict


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class LoopbackCookieJar(aiohttp.CookieJar):
    """Cookies as a browser keeps them: loopback http counts as a secure context, so `Secure`
    and `__Host-` cookies of the demo stack are sent back, as Chromium and Firefox do."""

    def __init__(self) -> None:
        super().__init__(unsafe=True)

    def filter_cookies(self, request_url: URL = URL()) -> BaseCookie[str]:  # noqa: B008
        if request_url.scheme == "http" and request_url.host in _LOOPBACK:
            request_url = request_url.with_scheme("https")
        return super().filter_cookies(request_url)


async def read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or `limit` + 1 bytes when it is larger (the caller refuses those)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)[: limit + 1]


@dataclass(frozen=True, slots=True)
class Page:
    url: str
    status: int
    html: str


class Browser:
    """A minimal browser: follows redirects, keeps cookies, reads and submits forms.

    `stop_at` ends a request at the first redirect to a URL with that prefix and returns that
    URL (tests use it to catch the redirect to a portal that is not running).
    """

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.steps: list[Step] = []

    async def get(self, name: str, url: str) -> tuple[str, str]:
        page = await self.open(name, "GET", url)
        return page.url, page.html

    async def submit(
        self, name: str, page_url: str, form: Form, pairs: Sequence[tuple[str, str]]
    ) -> tuple[str, str]:
        page = await self.send_form(name, page_url, form, pairs)
        return page.url, page.html

    async def send_form(
        self,
        name: str,
        page_url: str,
        form: Form,
        pairs: Sequence[tuple[str, str]],
        *,
        stop_at: str | None = None,
        expect: int = 200,
    ) -> Page:
        target = urljoin(page_url, form.action or page_url)
        if form.method == "post":
            return await self.open(
                name, "POST", target, data=urlencode(list(pairs)), stop_at=stop_at, expect=expect
            )
        target = urlsplit(target)._replace(query=urlencode(list(pairs))).geturl()
        return await self.open(name, "GET", target, stop_at=stop_at, expect=expect)

    async def open(
        self,
        name: str,
        method: str,
        url: str,
        *,
        data: str | None = None,
        stop_at: str | None = None,
        expect: int = 200,
    ) -> Page:
        for _ in range(20):
            headers = {"Content-Type": "application/x-www-form-urlencoded"} if data else {}
            async with self.session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as response:
                self.steps.append(Step(name, url, response.status))
                if response.status in (301, 302, 303, 307, 308):
                    location = urljoin(url, response.headers.get("Location", ""))
                    if stop_at is not None and location.startswith(stop_at):
                        return Page(location, response.status, "")
                    if response.status in (301, 302, 303):
                        method, data = "GET", None
                    url = location
                    continue
                body = await read_limited(response, MAX_PAGE_BYTES)
            if len(body) > MAX_PAGE_BYTES:
                raise JourneyError(f"step {name!r}: the page is larger than {MAX_PAGE_BYTES} bytes")
            html = body.decode("utf-8", errors="replace")
            if response.status != expect:
                raise JourneyError(f"step {name!r}: {url} answered {response.status}: {html[:300]}")
            return Page(url, response.status, html)
        raise JourneyError(f"step {name!r}: more than 20 redirects")


_CANCEL_WORDS = ("annuleer", "annuleren", "cancel", "weiger", "afbreken")


def _submit_button(form: Form) -> Field | None:
    for button in form.submits():
        text = f"{button.name} {button.value} {button.label}".lower()
        if not any(word in text for word in _CANCEL_WORDS):
            return button
    return None


def fill_login_form(html: str, bsn: str, level: str) -> tuple[Form, list[tuple[str, str]]]:
    """The stand-in DigiD's form: pick the test citizen and the assurance level."""
    for form in parse_forms(html):
        citizen = form.field_with_option(bsn)
        radios = [f for f in form.fields if f.kind == "radio" and f.value == bsn]
        if citizen is None and not radios:
            continue
        choices: dict[str, str | list[str]] = {}
        if citizen is not None:
            choices[citizen.name] = bsn
        else:
            choices[radios[0].name] = bsn
        for f in form.fields:
            if f.kind == "select" and f is not citizen:
                for value, label, _ in f.options:
                    if level in value.lower() or level in label.lower():
                        choices[f.name] = value
            elif f.kind == "radio" and f.name not in choices and level in f.value.lower():
                choices[f.name] = f.value
        return form, form.values(choices, _submit_button(form))
    raise JourneyError(f"step 'login': the DigiD page has no form to pick test citizen {bsn}")


def fill_consent_form(html: str, *, give: bool = True) -> tuple[Form, list[tuple[str, str]]]:
    for form in parse_forms(html):
        decision = [f for f in form.submits() if f.name == "besluit"]
        if not decision:
            continue
        wanted = "geven" if give else "weigeren"
        button = next((f for f in decision if f.value == wanted), None)
        return form, form.values({}, button)
    raise JourneyError("step 'consent': the gateway showed no consent form")


async def gateway_trust(session: aiohttp.ClientSession, gateway_url: str) -> Trust:
    async with session.get(f"{gateway_url}/.well-known/jwks.json") as response:
        if response.status != 200:
            raise JourneyError(f"cannot fetch the gateway's keys: {response.status}")
        return Trust.from_jwks(orjson.loads(await response.read()))


async def run_journey(
    portal_url: str,
    *,
    bsn: str,
    trust: DocumentTrust,
    fmt: Format = "json",
    level: str = "substantieel",
    lang: str = "nl",
) -> JourneyResult:
    """Walk the journey for test citizen `bsn` and return the verified download.

    `trust` holds the roots for the XML and PDF seals and the connectors that re-check each
    organisation's own signature; JSON and JWS are checked against the keys the gateway publishes.
    """
    if fmt not in FORMATS:
        raise JourneyError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    try:
        return await _journey(portal_url, bsn, fmt, level, trust, lang)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise JourneyError(
            f"cannot complete the journey at {portal_url}: {exc!r}. Is the demo stack running "
            "(make demo / blauweknop up)? Or let the journey start its own: --start"
        ) from exc


@dataclass(frozen=True, slots=True)
class ResultPage:
    """The portal's page after consent, with the overview and the download buttons."""

    url: str
    html: str
    gateway_url: str  # where the portal loads the button from


async def reach_result_page(
    browser: Browser, portal_url: str, *, bsn: str, level: str = "substantieel", lang: str = "nl"
) -> ResultPage:
    """Portal, button, DigiD, consent: the steps up to the portal's result page."""
    intake_url, intake = await browser.get("portal", f"{portal_url}/schuldhulp?lang={lang}")
    buttons = find_elements(intake, "blauwe-knop")
    scripts = [
        s["src"] for s in find_elements(intake, "script") if "blauwe-knop" in s.get("src", "")
    ]
    if not buttons or not scripts:
        raise JourneyError("step 'portal': the intake page has no <blauwe-knop> button")
    button = buttons[0]
    gateway_url = f"{urlsplit(scripts[0]).scheme}://{urlsplit(scripts[0]).netloc}"
    start = urljoin(intake_url, button["start-url"])
    query = urlencode(
        {"purpose": button["purpose"], "client_id": button["client-id"], "lang": lang}
    )
    login_url, login_page = await browser.get("button", f"{start}?{query}")
    form, pairs = fill_login_form(login_page, bsn, level)
    consent_url, consent_page = await browser.submit("login", login_url, form, pairs)
    form, pairs = fill_consent_form(consent_page)
    result_url, result_page = await browser.submit("consent", consent_url, form, pairs)
    if "/resultaat" not in urlsplit(result_url).path:
        raise JourneyError(f"step 'consent': expected the portal's result page, got {result_url}")
    return ResultPage(result_url, result_page, gateway_url)


def find_download_form(html: str, fmt: Format) -> Form:
    """The result page's form whose button names the format, as a citizen picks it."""
    for form in parse_forms(html):
        for button in form.fields:
            if button.kind == "submit" and fmt.upper() in button.label.upper():
                return form
    raise JourneyError(f"step 'download': the portal's result page offers no {fmt.upper()} file")


@dataclass(frozen=True, slots=True)
class File:
    body: bytes
    media_type: str
    disposition: str  # the Content-Disposition header


async def download(browser: Browser, page: ResultPage, fmt: Format) -> File:
    """Press the result page's button for `fmt`; the file, or a JourneyError saying why not."""
    form = find_download_form(page.html, fmt)
    target = urljoin(page.url, form.action or page.url)
    async with browser.session.request(
        form.method.upper(),
        target,
        data=urlencode(form.values({}, None)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        allow_redirects=False,
    ) as response:
        body = await read_limited(response, MAX_DOWNLOAD_BYTES)
        browser.steps.append(Step("download", target, response.status))
        if response.status != 200:
            where = response.headers.get("Location", "")
            raise JourneyError(
                f"step 'download': the portal answered {response.status} {where}".strip()
            )
        if len(body) > MAX_DOWNLOAD_BYTES:
            raise JourneyError(f"step 'download': larger than {MAX_DOWNLOAD_BYTES} bytes")
        if response.content_type != EXTENSIONS[fmt]:
            raise JourneyError(
                f"step 'download': expected {EXTENSIONS[fmt]}, got {response.content_type}"
            )
        return File(body, response.content_type, response.headers.get("Content-Disposition", ""))


async def _journey(
    portal_url: str,
    bsn: str,
    fmt: Format,
    level: str,
    trust: DocumentTrust,
    lang: str,
) -> JourneyResult:
    # A PDF is made and sealed (with a time-stamp) while the journey waits for it.
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=LoopbackCookieJar()) as session:
        browser = Browser(session)
        page = await reach_result_page(browser, portal_url, bsn=bsn, level=level, lang=lang)
        file = await download(browser, page, fmt)
        published = (
            await gateway_trust(session, page.gateway_url) if fmt in ("json", "jws") else None
        )
    steps = tuple(browser.steps)
    # Verifying is CPU work (for the PDF it runs an event loop of its own): off this loop.
    if published is not None:
        check = verify_download if fmt == "json" else verify_compact
        verdict = await asyncio.to_thread(
            check, file.body, Trust(published.seal_keys, trust.connectors)
        )
        result = JourneyResult(
            file.body,
            file.media_type,
            verdict.document,
            verdict.kid,
            verdict.sources,
            steps,
            page.gateway_url,
        )
    else:
        certified = await asyncio.to_thread(verify_file, file.body, trust, name=f"bundel.{fmt}")
        if (
            not certified.ok
            or certified.format != fmt
            or certified.bundel is None
            or certified.signer_kid is None
        ):
            problems = "; ".join(certified.problems) or f"it is not a sealed {fmt.upper()}"
            raise JourneyError(f"the downloaded {fmt.upper()} does not verify: {problems}")
        result = JourneyResult(
            file.body,
            file.media_type,
            certified.bundel,
            certified.signer_kid,
            certified.sources,
            steps,
            page.gateway_url,
            certified,
        )
    if result.bundel["bsn"] != bsn:
        raise JourneyError("the downloaded bundle is about another citizen")
    return result
