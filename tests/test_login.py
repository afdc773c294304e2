"""Citizen login over real HTTP: the gateway as relying party, the stand-in DigiD as provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.login_world import EVERYWHERE, LoginWorld, login_world, query_of


@pytest.fixture
async def world(state_dir: Path) -> AsyncIterator[LoginWorld]:
    async with login_world(state_dir) as made:
        yield made


async def test_full_login_makes_a_session_for_the_chosen_citizen(world: LoginWorld) -> None:
    async with world.browser() as browser:
        authorize = await world.start(browser, return_to="/welkom?x=1")
        request = query_of(authorize)
        assert authorize.startswith(f"{world.digid.url}/authorize?")
        assert request["code_challenge_method"] == "S256"
        assert request["response_type"] == "code"
        assert request["redirect_uri"] == f"{world.gateway}/login/callback"
        assert all(request[k] for k in ("state", "nonce", "code_challenge"))
        back = await world.pick(browser, authorize, bsn=EVERYWHERE, niveau="substantieel")
        answer = await world.callback(browser, back)
        assert answer.status == 303, answer.body
        assert answer.headers["Location"] == "/welkom?x=1"
        cookie = answer.cookie("__Host-bk-sessie")
        assert "Max-Age=0" in answer.cookie("__Host-bk-login")  # the login binding is cleared
        for attribute in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
            assert attribute in cookie
        assert EVERYWHERE not in cookie + answer.headers["Location"] + back + authorize
        info = await world.session_info(browser)
    assert info["ingelogd"] is True
    assert info["acr"] == "http://eidas.europa.eu/LoA/substantial"
    assert info["burger"] == world.pseudonym(EVERYWHERE)
    events = await world.events(answer.headers["X-Transactie-Id"])
    assert [e["type"] for e in events] == ["nl.blauweknop.audit.login.geslaagd.v1"]
    assert events[0]["data"]["burger"] == world.pseudonym(EVERYWHERE)
    assert events[0]["data"]["versleuteld"] is True
    assert EVERYWHERE not in str(events)
