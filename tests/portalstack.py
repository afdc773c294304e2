"""The whole demo journey on real sockets: sandboxes, stand-in DigiD, gateway and demo portal.

Besides the demo portal, two test portals are registered (in a policies directory made for the
test, next to the repository's categories and purposes): `test-portaal`, allowed only the
`inzage-avg` purpose and two scopes, and `ander-portaal`, allowed everything. Their back-ends
are the test itself, through `PortalClient`; their redirect URIs are never fetched.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
from aiohttp import web

from gateway.config import DEFAULT_POLICIES_DIR
from gateway.demo.digid import start_digid
from gateway.demo.journey import (
    Browser,
    LoopbackCookieJar,
    fill_consent_form,
    fill_login_form,
)
from gateway.demo.portal.app import PortalConfig, create_portal_app
from gateway.demo.portal.keys import ClientKey, ensure_client_key, jwks_document, new_client_key
from gateway.demo.portal.oauth import PortalClient, Started
from gateway.pki import DevPki
from tests.conftest import Stack, start_stack

ALL_SCOPES = ("financiele-zaken", "inkomen", "betalingsregelingen", "contactgegevens")
TEST_REDIRECT = "http://127.0.0.1:9/test-portaal/callback"
OTHER_REDIRECT = "http://127.0.0.1:9/ander-portaal/callback"


@dataclass
class PortalStack:
    stack: Stack
    portal_url: str
    test: PortalClient  # test-portaal: purpose inzage-avg; scopes financiele-zaken, contactgegevens
    other: PortalClient  # ander-portaal: every purpose and scope
    runners: list[web.AppRunner] = field(default_factory=list)
    digid_url: str = ""

    async def register_gateways(self, *urls: str) -> None:
        """Tell the stand-in DigiD where the gateway's (replicas') login callbacks are."""
        registration = {
            "redirect_uris": [f"{u}/login/callback" for u in urls],
            "jwks_uri": f"{urls[0]}/login/jwks.json",
            "id_token_encrypted_response_alg": "RSA-OAEP-256",
        }
        async with self.session.put(
            f"{self.digid_url}/_sandbox/clients/blauweknop-gateway", json=registration
        ) as response:
            assert response.status == 200, await response.text()

    @property
    def url(self) -> str:
        return self.stack.url

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.stack.session

    async def issued_bundles(self) -> float:
        """Bundles released so far, from the gateway's own metrics."""
        return await self._metric("blauweknop_bundles_total{", '"issued"')

    async def bundle_requests(self) -> float:
        """Requests to the bundle endpoint so far, whatever their outcome."""
        return await self._metric("blauweknop_authz_total{", 'endpoint="bundel"')

    async def _metric(self, prefix: str, label: str) -> float:
        async with self.session.get(f"{self.url}/metrics") as response:
            text = await response.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(prefix) and label in line
        )


def write_policies(target: Path, test_key: ClientKey, other_key: ClientKey) -> Path:
    """The repository's policies plus the two test portals."""
    shutil.copytree(DEFAULT_POLICIES_DIR, target, dirs_exist_ok=True)

    def portal(
        name: str, key: ClientKey, redirect: str, purposes: list[str], scopes: list[str]
    ) -> None:
        jwks = orjson.dumps(jwks_document(key)).decode()
        (target / "portals" / f"{name}.toml").write_text(
            f'client_id = "{name}"\nnaam = "{name}"\nredirect_uris = ["{redirect}"]\n'
            f"purposes = {orjson.dumps(purposes).decode()}\n"
            f"scopes = {orjson.dumps(scopes).decode()}\n"
            f"jwks = {_toml_inline(orjson.loads(jwks))}\n"
        )

    (target / "purposes" / "hoog-test.toml").write_text(
        'purpose_id = "hoog-test"\nscopes = ["inkomen"]\norganisaties = ["uwv"]\n'
        'min_acr = "http://eidas.europa.eu/LoA/high"\n'
        '[naam]\nnl = "Test hoog"\nen = "Test high"\n'
        '[omschrijving]\nnl = "Alleen voor tests."\nen = "Tests only."\n'
        '[grondslag]\nnl = "Geen: test"\nen = "None: test"\n'
    )
    # Every purpose needs a Cedar policy that permits it (policies/federatie.cedar): Cedar
    # denies by default, so a purpose without one would offer no organisation at all.
    (target / "hoog-test.cedar").write_text(
        '@id("test-hoog")\npermit (principal is Portal, action == Action::"gegevens_ophalen", '
        'resource is Organisatie)\nwhen { context.purpose == Purpose::"hoog-test" && '
        'principal.purposes.contains("hoog-test") };\n'
    )
    portal(
        "test-portaal",
        test_key,
        TEST_REDIRECT,
        ["inzage-avg"],
        ["financiele-zaken", "contactgegevens"],
    )
    portal(
        "ander-portaal",
        other_key,
        OTHER_REDIRECT,
        ["schuldhulp-intake", "inzage-avg", "hoog-test"],
        list(ALL_SCOPES),
    )
    return target


def _toml_inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(v) for v in value) + "]"
    return orjson.dumps(value).decode()


async def start_portal_stack(
    state_dir: Path, pki: DevPki, policies: Path, **overrides: Any
) -> PortalStack:
    test_key, other_key = new_client_key(), new_client_key()
    write_policies(policies, test_key, other_key)
    # The portal's port must be known before the gateway loads its registration.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    portal_port = sock.getsockname()[1]
    digid = await start_digid()
    stack, runners = await start_stack(
        state_dir,
        pki,
        policies_dir=str(policies),
        demo_portal_port=portal_port,
        oidc={"issuer": digid.url},
        **overrides,
    )
    runners.append(digid.runner)
    portal_url = f"http://127.0.0.1:{portal_port}"
    config = PortalConfig(
        gateway_url=stack.url, public_url=portal_url, key=ensure_client_key(state_dir)
    )
    runner = web.AppRunner(create_portal_app(config), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    made = PortalStack(
        stack,
        portal_url,
        PortalClient(stack.url, "test-portaal", test_key, TEST_REDIRECT),
        PortalClient(stack.url, "ander-portaal", other_key, OTHER_REDIRECT),
        [runner, *runners],
        digid.url,
    )
    await made.register_gateways(stack.url)
    return made


async def stop_portal_stack(made: PortalStack) -> None:
    await made.stack.session.close()
    for runner in made.runners:
        await runner.cleanup()


@dataclass(frozen=True, slots=True)
class Redirected:
    """Where the gateway sent the browser back to the portal, and with what."""

    url: str
    params: Mapping[str, str]
    started: Started


async def authorize(
    made: PortalStack,
    client: PortalClient,
    *,
    bsn: str = "999990020",
    level: str = "substantieel",
    purpose_id: str = "inzage-avg",
    scopes: tuple[str, ...] = ("financiele-zaken", "contactgegevens"),
    give: bool = True,
    drop: tuple[str, ...] = (),
) -> Redirected:
    """Push, log in at the stand-in DigiD, decide on the consent page: the redirect back."""
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        started = await client.push(made.session, purpose_id=purpose_id, scopes=scopes)
        browser = Browser(browser_session)
        page = await browser.open("authorize", "GET", started.authorize_url)
        form, pairs = fill_login_form(page.html, bsn, level)
        page = await browser.send_form("login", page.url, form, pairs)
        form, pairs = fill_consent_form(page.html, give=give)
        pairs = [(k, v) for k, v in pairs if not (k == "organisatie" and v in drop)]
        back = await browser.send_form(
            "consent", page.url, form, pairs, stop_at=client.redirect_uri
        )
    query = {k: v[0] for k, v in parse_qs(urlsplit(back.url).query).items()}
    return Redirected(back.url, query, started)
