"""A gateway and the stand-in DigiD on real sockets, and a scripted browser between them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
from aiohttp import web
from yarl import URL

from connectors._sandbox.runner import serve_app
from gateway.app import AUDIT, create_app
from gateway.config import Settings, settings_from_mapping
from gateway.demo.digid import RunningDigid, start_digid

CLIENT_ID = "blauweknop-gateway"
EVERYWHERE = "999990020"  # Citlali Bakker
_PENDING = re.compile(r'name="pending" value="([^"]+)"')


@dataclass
class Callback:
    """The gateway's answer to the provider's redirect back."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str
    set_cookies: list[str]

    def cookie(self, name: str) -> str:
        return next(c for c in self.set_cookies if c.startswith(f"{name}="))

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = orjson.loads(self.body)
        return value


@dataclass
class LoginWorld:
    gateway: str
    digid: RunningDigid
    app: web.Application
    settings: Settings

    def browser(self) -> aiohttp.ClientSession:
        """A cookie-keeping client, as a browser: loopback counts as a secure origin."""
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[self.gateway])
        return aiohttp.ClientSession(cookie_jar=jar)

    async def knobs(self, **values: Any) -> None:
        async with (
            aiohttp.ClientSession() as s,
            s.put(f"{self.digid.url}/_sandbox/idtoken", json=values) as response,
        ):
            assert response.status == 200, await response.text()

    async def stats(self) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.get(f"{self.digid.url}/_sandbox/stats") as response,
        ):
            value: dict[str, Any] = await response.json()
            return value

    async def start(
        self, browser: aiohttp.ClientSession, return_to: str = "/welkom", **query: str
    ) -> str:
        """Press 'log in' at the gateway; returns the provider's authorization URL."""
        async with browser.get(
            f"{self.gateway}/login",
            params={"return_to": return_to, **query},
            allow_redirects=False,
        ) as response:
            assert response.status == 303, await response.text()
            return response.headers["Location"]

    async def pick(
        self,
        browser: aiohttp.ClientSession,
        authorize_url: str,
        *,
        bsn: str = EVERYWHERE,
        niveau: str = "substantieel",
        actie: str = "inloggen",
    ) -> str:
        """On the stand-in's page, choose a citizen and a level; returns the callback URL."""
        async with browser.get(URL(authorize_url, encoded=True)) as response:
            page = await response.text()
            assert response.status == 200, page
        match = _PENDING.search(page)
        assert match, page
        async with browser.post(
            f"{self.digid.url}/authorize",
            data={"pending": match.group(1), "bsn": bsn, "niveau": niveau, "actie": actie},
            allow_redirects=False,
        ) as response:
            assert response.status == 302, await response.text()
            return response.headers["Location"]

    async def callback(
        self, browser: aiohttp.ClientSession, url: str, *, accept: str = "application/json"
    ) -> Callback:
        async with browser.get(
            URL(url, encoded=True), headers={"Accept": accept}, allow_redirects=False
        ) as response:
            return Callback(
                response.status,
                dict(response.headers),
                await response.read(),
                str(response.url),
                response.headers.getall("Set-Cookie", []),
            )

    async def login(
        self,
        browser: aiohttp.ClientSession,
        *,
        bsn: str = EVERYWHERE,
        niveau: str = "substantieel",
        **query: str,
    ) -> Callback:
        """The whole journey: gateway → provider page → form post → callback."""
        authorize = await self.start(browser, **query)
        back = await self.pick(browser, authorize, bsn=bsn, niveau=niveau)
        return await self.callback(browser, back)

    async def session_info(self, browser: aiohttp.ClientSession) -> dict[str, Any]:
        async with browser.get(f"{self.gateway}/login/sessie") as response:
            assert response.status == 200
            value: dict[str, Any] = await response.json()
            return value

    async def events(self, transactie_id: str) -> list[dict[str, Any]]:
        records = await self.app[AUDIT].store.unsent(100_000)
        return [orjson.loads(r.payload) for r in records if r.key == transactie_id]

    def pseudonym(self, bsn: str) -> str:
        return self.app[AUDIT].key.pseudonym(bsn)


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


@asynccontextmanager
async def login_world(
    state_dir: Path, *, encrypt: str | None = "RSA-OAEP-256", **oidc: Any
) -> AsyncIterator[LoginWorld]:
    digid = await start_digid()
    app: web.Application | None = None
    runner: web.AppRunner | None = None
    try:
        settings = settings_from_mapping(
            {"state_dir": str(state_dir), "oidc": {"issuer": digid.url, **oidc}}
        )
        app = create_app(settings)
        runner, port = await serve_app(app)
        gateway = f"http://127.0.0.1:{port}"
        body: dict[str, Any] = {
            "redirect_uris": [f"{gateway}/login/callback"],
            "jwks_uri": f"{gateway}/login/jwks.json",
            "id_token_encrypted_response_alg": encrypt,
        }
        async with (
            aiohttp.ClientSession() as s,
            s.put(f"{digid.url}/_sandbox/clients/{CLIENT_ID}", json=body) as response,
        ):
            assert response.status == 200, await response.text()
        yield LoginWorld(gateway, digid, app, settings)
    finally:
        if runner is not None:
            await runner.cleanup()
        await digid.runner.cleanup()
