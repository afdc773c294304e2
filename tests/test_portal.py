"""The journey a portal offers: demo portal, button, PAR, DigiD, consent, DPoP, the bundle.

Everything over real sockets; the citizen's browser is the journey's scripted browser.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from connectors._sandbox.runner import serve_app
from gateway.app import AUDIT, create_app
from gateway.authz.proofs import authenticate_client
from gateway.authz.registry import Registry
from gateway.authz.server import negotiate
from gateway.config import DEFAULT_POLICIES_DIR
from gateway.demo.forms import parse_forms
from gateway.demo.journey import (
    Browser,
    LoopbackCookieJar,
    Page,
    ResultPage,
    download,
    fill_consent_form,
    fill_login_form,
    find_download_form,
    gateway_trust,
    reach_result_page,
    run_journey,
)
from gateway.demo.portal.keys import ensure_client_key, jwks_document, new_client_key
from gateway.demo.portal.oauth import CLIENT_ASSERTION_TYPE, client_assertion
from gateway.documents.service import document_trust
from gateway.documents.verify import DocumentTrust, Format, verify_file
from gateway.errors import ConfigError, OAuthError
from gateway.pki import DevPki
from gateway.store.sqlite import SqliteStore
from gateway.verify import verify_compact, verify_download
from tests.conftest import fresh_state
from tests.portalstack import PortalStack, authorize, start_portal_stack, stop_portal_stack

BLAUWEKNOP = str(Path(sys.executable).with_name("blauweknop"))
EVERYWHERE = "999990020"
ALL_OK = {"duo": "ok", "uwv": "ok", "cak": "ok", "gm0363": "ok"}


@pytest.fixture
async def world(state_dir: Path, pki: DevPki, tmp_path: Path) -> AsyncIterator[PortalStack]:
    made = await start_portal_stack(state_dir, pki, tmp_path / "policies")
    yield made
    await stop_portal_stack(made)


def trust(world: PortalStack) -> DocumentTrust:
    """The demo's trust roots and every organisation's certificate, as `blauweknop demo` has."""
    return document_trust(world.stack.settings)


def statuses(bundel: dict[str, Any]) -> dict[str, str]:
    return {b["organisatie"]["code"]: b["status"] for b in bundel["bronnen"]}


async def events(world: PortalStack) -> list[dict[str, Any]]:
    records = await world.stack.app[AUDIT].store.unsent(1_000_000)
    return [orjson.loads(r.payload) for r in records]


async def test_journey_through_the_demo_portal_json(world: PortalStack) -> None:
    result = await run_journey(world.portal_url, bsn=EVERYWHERE, trust=trust(world), fmt="json")
    assert result.media_type == "application/json"
    assert result.bundel["bsn"] == EVERYWHERE
    assert statuses(result.bundel) == ALL_OK
    assert {s.provenance for s in result.sources} == {"verified"}
    names = [s.name for s in result.steps]
    assert names[0] == "portal"
    assert names[-1] == "download"
    assert any("/toestemming/" in s.url for s in result.steps)
    assert any("/login/callback" in s.url for s in result.steps)


async def test_journey_through_the_demo_portal_jws(world: PortalStack) -> None:
    result = await run_journey(
        world.portal_url, bsn="999990019", trust=trust(world), fmt="jws", lang="en"
    )
    assert result.media_type == "application/jose"
    # Independently of the journey's own check: the gateway's published keys verify the file.
    keys = await gateway_trust(world.session, world.url)
    verdict = verify_compact(result.body, keys)
    assert verdict.document["bsn"] == "999990019"
    assert statuses(verdict.document)["duo"] == "ok"


def offered(html: str) -> list[str]:
    """The labels of the result page's download buttons, in order."""
    return [f.label for form in parse_forms(html) for f in form.fields if f.kind == "submit"]


async def press(browser: Browser, page: ResultPage, fmt: Format) -> Page:
    """Press a download button where no file comes: follow the portal to the page it shows."""
    action = find_download_form(page.html, fmt).action
    return await browser.open("download", "POST", urljoin(page.url, action))


async def test_portal_offers_four_formats_and_fetches_them_on_demand(world: PortalStack) -> None:
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        browser = Browser(browser_session)
        page = await reach_result_page(browser, world.portal_url, bsn=EVERYWHERE)
        assert offered(page.html) == [
            "Download als PDF (gewaarmerkt)",
            "Download als XML (gewaarmerkt)",
            "Download als JSON-bestand",
            "Download als ondertekend JWS-bestand",
        ]
        assert "binnen 5 minuten na het ophalen" in page.html
        before = await world.issued_bundles()
        # The JSON is the overview's own download: the gateway releases nothing more for it.
        as_json = await download(browser, page, "json")
        assert await world.issued_bundles() == before
        as_xml = await download(browser, page, "xml")
        assert await world.issued_bundles() == before + 1
        # A release takes the page's form (POST); a link any site can make takes nothing.
        async with browser_session.get(f"{world.portal_url}/download/bundel.xml") as response:
            assert response.status == 405
        assert await world.issued_bundles() == before + 1
        _, english = await browser.get("result", f"{page.url.split('?')[0]}?lang=en")
    assert offered(english)[0] == "Download as PDF (certified)"
    assert "within 5 minutes of collecting" in english
    assert as_json.disposition == 'attachment; filename="blauwe-knop-bundel.json"'
    assert as_xml.disposition == 'attachment; filename="blauwe-knop-bundel.xml"'
    keys = await gateway_trust(world.session, world.url)
    assert verify_download(as_json.body, keys).document["bsn"] == EVERYWHERE
    verdict = await asyncio.to_thread(verify_file, as_xml.body, trust(world))
    assert verdict.ok, verdict.problems
    assert verdict.format == "xml"
    assert verdict.bundel is not None
    assert verdict.bundel["bsn"] == EVERYWHERE


async def test_portal_says_start_again_when_the_gateway_revokes_the_token(
    world: PortalStack,
) -> None:
    """The gateway refuses the portal's token (its code was replayed, which revokes it): the
    portal forgets the token, says so in Dutch and English, and keeps only the JSON it has."""
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        browser = Browser(browser_session)
        page = await reach_result_page(browser, world.portal_url, bsn=EVERYWHERE, lang="en")
        callback = next(s.url for s in browser.steps if "/blauwe-knop/callback" in s.url)
        code = parse_qs(urlsplit(callback).query)["code"][0]
        with pytest.raises(OAuthError, match="invalid_grant"):
            await world.test.redeem(
                world.session,
                code=code,
                verifier=secrets.token_urlsafe(48),
                dpop_key=ec.generate_private_key(ec.SECP256R1()),
            )
        before = await world.issued_bundles()
        back = await press(browser, page, "pdf")
        assert urlsplit(back.url).path == "/schuldhulp/resultaat"
        assert "the access to your data has expired" in back.html
        assert offered(back.html) == ["Download as JSON file"]
        # Forgotten now: a second press (from a page still showing the button) does not even
        # ask the gateway.
        asked = await world.bundle_requests()
        again = await press(browser, page, "jws")
        assert "Press the Blue Button again" in again.html
        assert await world.bundle_requests() == asked
        kept = await download(browser, ResultPage(back.url, back.html, page.gateway_url), "json")
        _, dutch = await browser.get("result", f"{world.portal_url}/schuldhulp/resultaat")
    assert await world.issued_bundles() == before
    assert orjson.loads(kept.body)["bundel"]["bsn"] == EVERYWHERE
    assert "de toegang tot uw gegevens is verlopen" in dutch


@pytest.fixture
async def limited(tmp_path: Path, pki: DevPki) -> AsyncIterator[PortalStack]:
    """Tokens live 5 s, and a citizen may have one bundle a minute: the overview's. A state
    directory (and store, which counts the requests) of its own: other tests' do not count."""
    state = fresh_state(tmp_path, pki)
    made = await start_portal_stack(
        state,
        pki,
        tmp_path / "policies",
        authz={"access_token_seconds": 5},
        federation={"rate_citizen_per_minute": 1},
    )
    yield made
    await stop_portal_stack(made)


async def test_portal_after_a_refusal_and_after_the_token_expired(limited: PortalStack) -> None:
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        browser = Browser(browser_session)
        page = await reach_result_page(browser, limited.portal_url, bsn=EVERYWHERE)
        # Refused for now (429: too many requests): said once, and the token is kept.
        refused = await press(browser, page, "pdf")
        assert "Dit bestand kon niet worden opgehaald" in refused.html
        assert len(offered(refused.html)) == 4
        _, reloaded = await browser.get("result", page.url)
        assert "Dit bestand kon niet worden opgehaald" not in reloaded
        await asyncio.sleep(5.5)
        asked = await limited.bundle_requests()
        expired = await press(browser, page, "pdf")
    assert urlsplit(expired.url).path == "/schuldhulp/resultaat"
    assert "Downloaden kan niet meer" in expired.html
    assert offered(expired.html) == ["Download als JSON-bestand"]
    # The portal knows when its token ends: an expired one is not sent.
    assert await limited.bundle_requests() == asked


async def test_every_download_and_the_consent_are_audited_without_bsn(world: PortalStack) -> None:
    before = {e["id"] for e in await events(world)}
    await run_journey(world.portal_url, bsn=EVERYWHERE, trust=trust(world), fmt="jws")
    new = [e for e in await events(world) if e["id"] not in before]
    kinds = [e["type"].removeprefix("nl.blauweknop.audit.").removesuffix(".v1") for e in new]
    assert kinds.count("toestemming.gegeven") == 1
    # The demo portal fetches the JSON for its overview, and the JWS when the citizen asks:
    # two releases, each with its consent link.
    assert kinds.count("toestemming.gebruikt") == 2
    assert kinds.count("bundel.uitgegeven") == 2
    consent = next(e for e in new if e["type"].endswith("toestemming.gegeven.v1"))
    pseudonym = world.stack.app[AUDIT].key.pseudonym(EVERYWHERE)
    assert consent["data"]["burger"] == pseudonym
    assert consent["data"]["client_id"] == "demo-mijngemeente"
    assert consent["data"]["purpose_id"] == "schuldhulp-intake"
    assert "Wgs" in consent["data"]["grondslag"]
    assert all(EVERYWHERE.encode() not in orjson.dumps(e) for e in new)


async def test_citizen_leaves_organisations_out(world: PortalStack) -> None:
    back = await authorize(
        world,
        world.other,
        purpose_id="inzage-avg",
        drop=("duo", "cak"),
        scopes=("financiele-zaken", "inkomen"),
    )
    key = ec.generate_private_key(ec.SECP256R1())
    token = await world.other.redeem(
        world.session, code=back.params["code"], verifier=back.started.pkce.verifier, dpop_key=key
    )
    download = await world.other.download(
        world.session, access_token=token.access_token, dpop_key=key
    )
    bundel = orjson.loads(download.body)["bundel"]
    assert statuses(bundel) == {
        "duo": "niet_opgevraagd",
        "uwv": "ok",
        "cak": "niet_opgevraagd",
        "gm0363": "ok",
    }
    consent = [e for e in await events(world) if e["type"].endswith("toestemming.gegeven.v1")]
    assert consent[-1]["data"]["weggelaten"] == ["duo", "cak"]
    assert consent[-1]["data"]["organisaties"] == ["uwv", "gm0363"]


async def test_scopes_decide_which_organisations_are_asked(world: PortalStack) -> None:
    # Income comes from UWV and the municipality only.
    back = await authorize(world, world.other, purpose_id="inzage-avg", scopes=("inkomen",))
    key = ec.generate_private_key(ec.SECP256R1())
    token = await world.other.redeem(
        world.session, code=back.params["code"], verifier=back.started.pkce.verifier, dpop_key=key
    )
    download = await world.other.download(
        world.session, access_token=token.access_token, dpop_key=key, media_type="application/jose"
    )
    assert download.media_type == "application/jose"
    payload = orjson.loads(base64.urlsafe_b64decode(download.body.split(b".")[1] + b"==="))
    assert statuses(payload) == {
        "duo": "niet_opgevraagd",
        "uwv": "ok",
        "cak": "niet_opgevraagd",
        "gm0363": "ok",
    }


@pytest.mark.parametrize("media_type", ["application/xml", "application/pdf"])
async def test_certified_documents_for_the_portal(world: PortalStack, media_type: str) -> None:
    back = await authorize(world, world.other, purpose_id="inzage-avg")
    key = ec.generate_private_key(ec.SECP256R1())
    token = await world.other.redeem(
        world.session, code=back.params["code"], verifier=back.started.pkce.verifier, dpop_key=key
    )
    download = await world.other.download(
        world.session, access_token=token.access_token, dpop_key=key, media_type=media_type
    )
    assert download.media_type == media_type
    verdict = await asyncio.to_thread(
        verify_file, download.body, document_trust(world.stack.settings)
    )
    assert verdict.ok, verdict.problems
    assert verdict.format == media_type.rsplit("/", 1)[1]
    assert {s.code: s.provenance for s in verdict.sources}["uwv"] == "verified"


async def test_metadata_document(world: PortalStack) -> None:
    async with world.session.get(f"{world.url}/.well-known/oauth-authorization-server") as r:
        meta = await r.json()
    assert meta["issuer"] == world.url
    assert meta["require_pushed_authorization_requests"] is True
    assert meta["pushed_authorization_request_endpoint"] == f"{world.url}/par"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(meta["dpop_signing_alg_values_supported"]) == {"ES256", "EdDSA"}
    assert meta["grant_types_supported"] == ["authorization_code"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "inkomen" in meta["scopes_supported"]


async def consent_page(world: PortalStack, lang: str) -> tuple[str, dict[str, str]]:
    started = await world.test.push(
        world.session, purpose_id="inzage-avg", scopes=["financiele-zaken"], lang=lang
    )
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        browser = Browser(browser_session)
        page = await browser.open("authorize", "GET", started.authorize_url)
        form, pairs = fill_login_form(page.html, EVERYWHERE, "substantieel")
        page = await browser.send_form("login", page.url, form, pairs)
        async with browser_session.get(page.url) as response:
            return await response.text(), dict(response.headers)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [
        (
            "nl",
            ["Toestemming geven", "Wettelijke grondslag", "artikel 15", "Van welke organisaties"],
        ),
        ("en", ["Give consent", "Legal basis", "article 15", "From which organisations"]),
    ],
)
async def test_consent_page_in_dutch_and_english_under_strict_csp(
    world: PortalStack, lang: str, expected: list[str]
) -> None:
    html, headers = await consent_page(world, lang)
    assert f'<html lang="{lang}">' in html
    for text in expected:
        assert text in html
    assert "<script" not in html
    assert "style=" not in html
    assert "<style" not in html
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert "form-action 'self' http://127.0.0.1:9" in csp  # the portal it returns to
    for code in ("duo", "uwv", "cak", "gm0363"):
        assert f'<label for="org-{code}">' in html


async def test_button_script_and_portal_csp(world: PortalStack) -> None:
    async with world.session.get(f"{world.url}/static/blauwe-knop.js") as response:
        assert response.status == 200
        assert response.content_type == "text/javascript"
        script = await response.text()
    assert 'customElements.define("blauwe-knop"' in script
    assert "Download mijn gegevens" in script
    assert "adoptedStyleSheets" in script
    async with world.session.get(f"{world.portal_url}/schuldhulp") as response:
        html = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert "<blauwe-knop" in html
    assert f"script-src {world.url}" in csp
    assert "unsafe-inline" not in csp
    assert "style=" not in html


def test_registry_refuses_unsafe_registrations(tmp_path: Path) -> None:
    shutil.copytree(DEFAULT_POLICIES_DIR, tmp_path / "p")
    portals = tmp_path / "p" / "portals"
    variables = {"state_dir": str(tmp_path), "demo_portal_url": "http://127.0.0.1:1"}
    ensure_client_key(tmp_path)  # the demo portal's, which sandbox mode registers
    key = new_client_key()
    jwks = orjson.dumps(jwks_document(key)).decode()
    (tmp_path / "k.json").write_text(jwks)
    base = 'client_id = "x"\nnaam = "x"\npurposes = ["inzage-avg"]\nscopes = ["inkomen"]\n'
    cases = {
        "redirect URI": f'{base}redirect_uris = ["http://portal.example/cb"]\n'
        f'jwks_file = "{tmp_path}/k.json"\n',
        "unknown variable": f'{base}redirect_uris = ["${{portal}}/cb"]\njwks_file = "k.json"\n',
        "purposes": 'client_id = "x"\nnaam = "x"\npurposes = ["reclame"]\nscopes = ["inkomen"]\n'
        f'redirect_uris = ["https://p.example/cb"]\njwks_file = "{tmp_path}/k.json"\n',
        "public keys": f'{base}redirect_uris = ["https://p.example/cb"]\n'
        'jwks = {keys = [{kty = "EC", crv = "P-256", x = "a", y = "b", d = "c"}]}\n',
    }
    for message, text in cases.items():
        (portals / "x.toml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            Registry.load(tmp_path / "p", variables, sandbox=True)
    (portals / "x.toml").unlink()
    # Production never loads the sandbox-only demo portal (nor needs its variables).
    registry = Registry.load(tmp_path / "p", {"state_dir": str(tmp_path)}, sandbox=False)
    assert "demo-mijngemeente" not in registry.portals
    assert {"schuldhulp-intake", "inzage-avg"} <= set(registry.purposes)


def test_demo_command_starts_its_own_stack_and_writes_a_verified_file(tmp_path: Path) -> None:
    out = tmp_path / "bundel.jws"
    env_state = {"BLAUWEKNOP_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [
            BLAUWEKNOP,
            "demo",
            "--start",
            "--citizen",
            "999990044",
            "--format",
            "jws",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env_state},
    )
    assert done.returncode == 0, done.stderr
    assert "signature verified" in done.stdout
    assert "999990044" not in done.stdout + done.stderr  # the BSN is never printed in clear
    assert out.read_bytes().count(b".") == 2
    nobody = subprocess.run(
        [BLAUWEKNOP, "demo", "--citizen", "999990044", "--portal", "http://127.0.0.1:9", "-o", out],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env_state},
    )
    assert nobody.returncode == 1
    assert "Is the demo stack running" in nobody.stderr
    assert "Traceback" not in nobody.stderr
    # Where no stack ever ran there are no keys to check a file against: said before trying.
    fresh = subprocess.run(
        [BLAUWEKNOP, "demo", "--citizen", "999990044", "-o", out],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "BLAUWEKNOP_STATE_DIR": str(tmp_path / "nothing")},
    )
    assert fresh.returncode == 1
    assert "no demo stack has run" in fresh.stderr
    assert "Traceback" not in fresh.stderr


async def test_two_replicas_share_every_step_through_the_store(world: PortalStack) -> None:
    """Request URIs, logins, consent transactions, codes, tokens and revocations live in the
    store, so a second gateway on the same store serves any step of a flow begun at the first."""
    replica, port = await serve_app(create_app(world.stack.settings))
    second = f"http://127.0.0.1:{port}"
    try:
        await world.register_gateways(world.url, second)
        first_client = world.test
        second_client = replace(world.test, gateway_url=second)
        started = await first_client.push(
            world.session, purpose_id="inzage-avg", scopes=["financiele-zaken"]
        )
        async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
            browser = Browser(browser_session)
            # The browser reaches the second replica with the first one's request_uri.
            page = await browser.open(
                "authorize", "GET", started.authorize_url.replace(world.url, second)
            )
            form, pairs = fill_login_form(page.html, EVERYWHERE, "substantieel")
            page = await browser.send_form("login", page.url, form, pairs)
            assert page.url.startswith(f"{second}/toestemming/")
            form, pairs = fill_consent_form(page.html)
            back = await browser.send_form(
                "consent", page.url, form, pairs, stop_at=first_client.redirect_uri
            )
        code = parse_qs(urlsplit(back.url).query)["code"][0]
        key = ec.generate_private_key(ec.SECP256R1())
        token = await first_client.redeem(
            world.session, code=code, verifier=started.pkce.verifier, dpop_key=key
        )
        download = await second_client.download(
            world.session, access_token=token.access_token, dpop_key=key
        )
        assert orjson.loads(download.body)["bundel"]["bsn"] == EVERYWHERE
        # Replaying the code at the second replica is caught, and revokes the token everywhere.
        with pytest.raises(OAuthError, match="invalid_grant"):
            await second_client.redeem(
                world.session, code=code, verifier=started.pkce.verifier, dpop_key=key
            )
        with pytest.raises(OAuthError, match="invalid_token"):
            await first_client.download(
                world.session, access_token=token.access_token, dpop_key=key
            )
    finally:
        await replica.cleanup()


async def test_dpop_with_an_ed25519_key(world: PortalStack) -> None:
    """EdDSA proofs are accepted as well as ES256: the token is bound to the Ed25519 key."""
    back = await authorize(world, world.test)
    key = ed25519.Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}

    def proof(method: str, url: str, token: str | None = None) -> str:
        claims: dict[str, Any] = {
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(16),
        }
        if token is not None:
            digest = hashlib.sha256(token.encode()).digest()
            claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return jwt.encode(claims, key, algorithm="EdDSA", headers={"typ": "dpop+jwt", "jwk": jwk})

    form = {
        "grant_type": "authorization_code",
        "code": back.params["code"],
        "redirect_uri": world.test.redirect_uri,
        "code_verifier": back.started.pkce.verifier,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(world.test.key, "test-portaal", world.url),
    }
    async with world.session.post(
        f"{world.url}/token", data=form, headers={"DPoP": proof("POST", f"{world.url}/token")}
    ) as response:
        assert response.status == 200, await response.text()
        token = (await response.json())["access_token"]
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": proof("GET", f"{world.url}/v1/bundel", token),
    }
    async with world.session.get(f"{world.url}/v1/bundel", headers=headers) as response:
        assert response.status == 200, await response.text()
        assert orjson.loads(await response.read())["bundel"]["bsn"] == EVERYWHERE


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("", "application/json"),
        ("*/*", "application/json"),
        ("application/jose", "application/jose"),
        ("application/json;q=0.2, application/jose;q=0.9", "application/jose"),
        ("application/jose;q=0, application/json", "application/json"),
        ("text/html, application/*;q=0.5", "application/json"),
        ("application/pdf", "application/pdf"),
        ("application/xml", "application/xml"),
        ("text/xml", "application/xml"),
        ("text/html, image/png", None),
        ("application/json;q=0", None),
    ],
)
def test_bundle_content_negotiation(accept: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(OAuthError) as refused:
            negotiate(accept)
        assert refused.value.status == 406
    else:
        assert negotiate(accept) == expected


async def test_portal_keys_rotate_by_kid(tmp_path: Path) -> None:
    """A portal publishes its new key next to the old one; each signs, a stranger's does not."""
    shutil.copytree(DEFAULT_POLICIES_DIR, tmp_path / "p")
    (tmp_path / "p" / "portals" / "demo-mijngemeente.toml").unlink()
    old, new, stranger = new_client_key(), new_client_key(), new_client_key()
    (tmp_path / "k.json").write_bytes(orjson.dumps(jwks_document(old, new)))
    (tmp_path / "p" / "portals" / "r.toml").write_text(
        'client_id = "r"\nnaam = "r"\npurposes = ["inzage-avg"]\nscopes = ["inkomen"]\n'
        f'redirect_uris = ["https://r.example/cb"]\njwks_file = "{tmp_path}/k.json"\n'
    )
    registry = Registry.load(tmp_path / "p", {"state_dir": str(tmp_path)})
    store = await SqliteStore.open(tmp_path / "store.db")
    try:
        aud = ["https://gateway.example"]
        for key in (old, new):
            form = {
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": client_assertion(key, "r", aud[0]),
            }
            assert (await authenticate_client(form, registry, store, aud)).client_id == "r"
        form = {
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": client_assertion(stranger, "r", aud[0]),
        }
        with pytest.raises(OAuthError, match="invalid_client"):
            await authenticate_client(form, registry, store, aud)
    finally:
        await store.close()
