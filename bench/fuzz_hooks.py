"""schemathesis hooks for bench/fuzz_api.py: no body leaks internal detail; portal credentials.

Loaded by schemathesis through SCHEMATHESIS_HOOKS in its own process, never by the gateway.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import schemathesis
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.demo.journey import Browser, LoopbackCookieJar, fill_consent_form, fill_login_form
from gateway.demo.portal.keys import ClientKey, ensure_client_key
from gateway.demo.portal.oauth import (
    CLIENT_ASSERTION_TYPE,
    PortalClient,
    client_assertion,
    dpop_proof,
    pkce_pair,
)

# What a leaked exception or debug page carries: a traceback, source paths, module names of the
# libraries underneath, or the text of a Python exception.
LEAKS = (
    b"Traceback (most recent call last)",
    b'File "/',
    b'.py", line ',
    b"site-packages",
    b"aiohttp.",
    b"asyncio.",
    b"orjson.",
    b"lxml.",
    b"Exception(",
    b"Error(",
    b"object at 0x",
)


@schemathesis.check
def no_internal_detail(ctx: Any, response: Any, case: Any) -> None:
    body: bytes = response.content or b""
    found = [leak.decode() for leak in LEAKS if leak in body]
    if found:
        raise AssertionError(f"the response body shows internal detail: {found}")
    server = response.headers.get("server", [""])
    if any("python" in value.lower() or "aiohttp" in value.lower() for value in server):
        raise AssertionError(f"the Server header names the software and its version: {server}")


# --- getting past authentication ------------------------------------------------------------
#
# bench/fuzz_api.py sets these when it starts a gateway: its URL, its state directory (where
# the demo portal's key is made) and the portal's registered redirect URI. The hooks then act
# as that portal: on /par and /token they add a fresh client assertion (private_key_jwt) and
# DPoP proof to what schemathesis generated (on /par one case in three is also made a valid
# request, and a generated client_id is the portal's half the time); on /token, one case in
# three also gets a real authorization code, from a whole PAR → DigiD login → consent round;
# on /v1/bundel, four
# cases in five get a real DPoP-bound access token and a proof for it. The rest stay as
# generated, so the unauthenticated paths are fuzzed too.

GATEWAY = os.environ.get("BLAUWEKNOP_FUZZ_GATEWAY")
STATE_DIR = os.environ.get("BLAUWEKNOP_FUZZ_STATE_DIR")
REDIRECT_URI = os.environ.get("BLAUWEKNOP_FUZZ_REDIRECT_URI", "")
CLIENT_ID = "demo-mijngemeente"
PURPOSE = "inzage-avg"
SCOPES = ("financiele-zaken", "contactgegevens")
CITIZEN = "999990020"


@dataclass(frozen=True)
class Grant:
    """What the portal holds after the redirect back: a code and its PKCE verifier."""

    code: str
    verifier: str


@dataclass(frozen=True)
class Bound:
    """A DPoP-bound access token and the key it is bound to."""

    access_token: str
    dpop_key: ec.EllipticCurvePrivateKey


def _portal() -> PortalClient:
    assert GATEWAY is not None
    assert STATE_DIR is not None
    return PortalClient(GATEWAY, CLIENT_ID, ensure_client_key(Path(STATE_DIR)), REDIRECT_URI)


async def _grant() -> Grant:
    """One citizen's round: PAR, the stand-in DigiD's login, consent; the code sent back."""
    client = _portal()
    async with (
        aiohttp.ClientSession() as session,
        aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session,
    ):
        started = await client.push(session, purpose_id=PURPOSE, scopes=SCOPES)
        browser = Browser(browser_session)
        page = await browser.open("authorize", "GET", started.authorize_url)
        form, pairs = fill_login_form(page.html, CITIZEN, "substantieel")
        page = await browser.send_form("login", page.url, form, pairs)
        form, pairs = fill_consent_form(page.html)
        back = await browser.send_form("consent", page.url, form, pairs, stop_at=REDIRECT_URI)
    code = parse_qs(urlsplit(back.url).query)["code"][0]
    return Grant(code, started.pkce.verifier)


async def _bound() -> Bound:
    grant = await _grant()
    key = ec.generate_private_key(ec.SECP256R1())
    async with aiohttp.ClientSession() as session:
        token = await _portal().redeem(
            session, code=grant.code, verifier=grant.verifier, dpop_key=key
        )
    return Bound(token.access_token, key)


def _form(case: Any) -> dict[str, Any] | None:
    """The generated form body, when it is one (negative cases may send something else)."""
    return case.body if isinstance(case.body, dict) else None


def _valid_par_request() -> dict[str, str]:
    """The fields of a pushed authorization request the demo portal may make."""
    return {
        "response_type": "code",
        "client_id": CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": " ".join(SCOPES),
        "purpose_id": PURPOSE,
        "state": secrets.token_urlsafe(16),
        "code_challenge": pkce_pair().challenge,
        "code_challenge_method": "S256",
    }


class ClientAuth:
    """private_key_jwt and DPoP for /par and /token, fresh for every case (both single-use)."""

    def get(self, case: Any, ctx: Any) -> ClientKey:
        assert STATE_DIR is not None
        return ensure_client_key(Path(STATE_DIR))

    def set(self, case: Any, data: ClientKey, ctx: Any) -> None:
        form = _form(case)
        if form is None:
            return
        assert GATEWAY is not None
        path = case.operation.path
        real_code = path == "/token" and random.random() < 1 / 3
        if real_code:
            grant = asyncio.run(_grant())
            form.update(
                grant_type="authorization_code",
                code=grant.code,
                code_verifier=grant.verifier,
                redirect_uri=REDIRECT_URI,
            )
        if path == "/par" and random.random() < 1 / 3:
            form.update(_valid_par_request())
        # Half the rest get the one accepted grant or response type, to reach the checks after.
        if path == "/token" and not real_code and random.random() < 0.5:
            form["grant_type"] = "authorization_code"
        if path == "/par" and random.random() < 0.5:
            form["response_type"] = "code"
        if "client_id" in form and random.random() < 0.5:
            form["client_id"] = CLIENT_ID
        form["client_assertion_type"] = CLIENT_ASSERTION_TYPE
        form["client_assertion"] = client_assertion(data, CLIENT_ID, GATEWAY)
        if path == "/token" or random.random() < 0.5:
            key = ec.generate_private_key(ec.SECP256R1())
            case.headers["DPoP"] = dpop_proof(key, "POST", GATEWAY + path)


class BundleAuth:
    """A real access token for GET /v1/bundel, kept for four minutes of its five."""

    def get(self, case: Any, ctx: Any) -> Bound:
        return asyncio.run(_bound())

    def set(self, case: Any, data: Bound, ctx: Any) -> None:
        if random.random() < 0.2:  # keep some requests as generated: no or a broken token
            return
        assert GATEWAY is not None
        case.headers["Authorization"] = f"DPoP {data.access_token}"
        case.headers["DPoP"] = dpop_proof(
            data.dpop_key, "GET", GATEWAY + "/v1/bundel", access_token=data.access_token
        )


if GATEWAY and STATE_DIR:
    schemathesis.auth(refresh_interval=None).apply_to(path=["/par", "/token"])(ClientAuth)
    schemathesis.auth(refresh_interval=240).apply_to(path="/v1/bundel")(BundleAuth)


TALLY = os.environ.get("BLAUWEKNOP_FUZZ_TALLY")


@schemathesis.hook
def after_call(context: Any, case: Any, response: Any) -> None:
    """One line per call, `METHOD path status[:oauth error]`, for bench/fuzz_api.py's figures."""
    if TALLY:
        status = str(response.status_code)
        try:
            error = response.json().get("error")
        except Exception:  # not JSON, or not an object: the status says enough
            error = None
        if isinstance(error, str) and error.isidentifier():
            status += f":{error}"
        line = f"{case.operation.method.upper()} {case.operation.path} {status}\n"
        with open(TALLY, "a", encoding="utf-8") as tally:  # O_APPEND: whole lines, any thread
            tally.write(line)
