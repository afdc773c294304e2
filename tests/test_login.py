"""Citizen login over real HTTP: the gateway as relying party, the stand-in DigiD as provider."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from joserfc.jwk import ECKey
from yarl import URL

from gateway.app import AUDIT
from tests.login_world import CLIENT_ID, EVERYWHERE, Callback, LoginWorld, login_world, query_of


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


async def assert_refused(
    world: LoginWorld,
    browser: aiohttp.ClientSession,
    answer: Callback,
    *,
    error: str,
    reason: str,
    status: int = 400,
) -> None:
    """A clear OIDC error as problem+json, an audit record of the refusal, and no session."""
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    problem = answer.json()
    assert (problem["error"], problem["reden"]) == (error, reason), problem
    assert problem["status"] == status
    assert problem["detail"]
    assert not any(c.startswith("__Host-bk-sessie=") for c in answer.set_cookies)
    assert (await world.session_info(browser)) == {"ingelogd": False}
    events = await world.events(answer.headers["X-Transactie-Id"])
    assert [e["type"] for e in events] == ["nl.blauweknop.audit.login.geweigerd.v1"]
    assert events[0]["data"]["reden"] == reason
    assert EVERYWHERE not in str(events) + str(problem)


# Each knob makes the stand-in DigiD send one kind of bad ID token, over real HTTP.
BAD_TOKENS = [
    pytest.param({"alg_none": True}, "invalid_id_token", "alg_not_allowed", id="alg-none"),
    pytest.param(
        {"hs256_public_key": True}, "invalid_id_token", "alg_not_allowed", id="hs256-public-key"
    ),
    pytest.param({"bad_signature": True}, "invalid_id_token", "bad_signature", id="bad-signature"),
    pytest.param({"expired": True}, "invalid_id_token", "expired", id="expired"),
    pytest.param({"not_yet_valid": True}, "invalid_id_token", "not_yet_valid", id="not-yet-valid"),
    pytest.param({"wrong_iss": True}, "invalid_id_token", "wrong_iss", id="wrong-iss"),
    pytest.param({"wrong_aud": True}, "invalid_id_token", "wrong_aud", id="wrong-aud"),
    pytest.param(
        {"extra_aud_without_azp": True}, "invalid_id_token", "wrong_azp", id="aud-without-azp"
    ),
    pytest.param({"wrong_nonce": True}, "invalid_id_token", "nonce_mismatch", id="wrong-nonce"),
    pytest.param({"omit_nonce": True}, "invalid_id_token", "nonce_mismatch", id="no-nonce"),
    pytest.param({"sub": "123456789"}, "invalid_subject", "invalid_bsn", id="sub-fails-11-proef"),
    pytest.param(
        {"sub_id_type": "urn:nl-eid-gdi:1.0:id:pseudonym"},
        "invalid_subject",
        "wrong_sub_id_type",
        id="wrong-sub-id-type",
    ),
    pytest.param(
        {"wrong_encryption_key": True}, "invalid_id_token", "decryption_failed", id="jwe-wrong-key"
    ),
    pytest.param(
        {"encryption": "RSA-OAEP"},
        "invalid_id_token",
        "jwe_alg_not_allowed",
        id="jwe-rsa-oaep-sha1",
    ),
]


@pytest.mark.parametrize(("knobs", "error", "reason"), BAD_TOKENS)
async def test_bad_id_token_is_refused_without_a_session(
    world: LoginWorld, knobs: dict[str, Any], error: str, reason: str
) -> None:
    await world.knobs(**knobs)
    async with world.browser() as browser:
        answer = await world.login(browser)
        await assert_refused(world, browser, answer, error=error, reason=reason)


async def test_represents_is_refused_clearly(world: LoginWorld) -> None:
    await world.knobs(represents=True)
    async with world.browser() as browser:
        answer = await world.login(browser)
        await assert_refused(
            world,
            browser,
            answer,
            error="unsupported_representation",
            reason="represents",
            status=403,
        )
    assert "on behalf of someone else" in answer.json()["detail"]


async def test_too_low_assurance_is_refused(world: LoginWorld) -> None:
    async with world.browser() as browser:
        answer = await world.login(browser, niveau="midden")
        await assert_refused(
            world, browser, answer, error="insufficient_assurance", reason="acr_too_low", status=403
        )


async def test_a_caller_can_raise_the_minimum_but_not_lower_it(world: LoginWorld) -> None:
    async with world.browser() as browser:
        raised = await world.login(browser, min_acr="http://eidas.europa.eu/LoA/high")
        await assert_refused(
            world, browser, raised, error="insufficient_assurance", reason="acr_too_low", status=403
        )
        lowered = await world.login(
            browser, niveau="basis", min_acr="http://eidas.europa.eu/LoA/low"
        )
        await assert_refused(
            world,
            browser,
            lowered,
            error="insufficient_assurance",
            reason="acr_too_low",
            status=403,
        )
        high = await world.login(browser, niveau="hoog", min_acr="http://eidas.europa.eu/LoA/high")
        assert high.status == 303
        assert (await world.session_info(browser))["acr"] == "http://eidas.europa.eu/LoA/high"


async def test_unknown_acr_is_refused(world: LoginWorld) -> None:
    await world.knobs(acr="urn:example:acr:unknown")
    async with world.browser() as browser:
        answer = await world.login(browser)
        await assert_refused(
            world, browser, answer, error="insufficient_assurance", reason="unknown_acr", status=403
        )


async def test_state_of_another_browser_is_refused_as_csrf(world: LoginWorld) -> None:
    async with world.browser() as victim, world.browser() as attacker:
        authorize = await world.start(attacker)
        back = await world.pick(attacker, authorize)
        # The attacker makes the victim's browser complete the attacker's login (login CSRF).
        await world.start(victim)
        answer = await world.callback(victim, back)
        await assert_refused(world, victim, answer, error="invalid_state", reason="state_mismatch")
        # The state is spent: the attacker cannot use it either.
        again = await world.callback(attacker, back)
        await assert_refused(world, attacker, again, error="invalid_state", reason="unknown_state")


async def test_authorization_response_from_another_issuer_is_refused(world: LoginWorld) -> None:
    await world.knobs(wrong_response_iss=True)
    async with world.browser() as browser:
        answer = await world.login(browser)
        await assert_refused(world, browser, answer, error="invalid_request", reason="iss_mismatch")


async def test_tampered_state_is_refused(world: LoginWorld) -> None:
    async with world.browser() as browser:
        authorize = await world.start(browser)
        back = await world.pick(browser, authorize)
        state = query_of(back)["state"]
        answer = await world.callback(browser, back.replace(state, state[:-2] + "xx"))
        await assert_refused(world, browser, answer, error="invalid_state", reason="unknown_state")


async def test_replayed_callback_is_refused(world: LoginWorld) -> None:
    async with world.browser() as browser:
        authorize = await world.start(browser)
        back = await world.pick(browser, authorize)
        first = await world.callback(browser, back)
        assert first.status == 303
    async with world.browser() as other:
        # The same state and code again, even with the binding cookie restored: spent.
        await world.start(other)
        replay = await world.callback(other, back)
        await assert_refused(world, other, replay, error="invalid_state", reason="unknown_state")


async def test_unknown_kid_refetches_the_jwks_once_then_refuses(world: LoginWorld) -> None:
    async with world.browser() as first_browser:
        assert (await world.login(first_browser)).status == 303  # keys cached now
    before = (await world.stats())["jwks_requests"]
    await world.knobs(unknown_kid=True)
    async with world.browser() as browser:
        first = await world.login(browser)
        await assert_refused(world, browser, first, error="invalid_id_token", reason="unknown_kid")
        assert (await world.stats())["jwks_requests"] == before + 1
        # Within the rate limit a second unknown kid does not make the gateway fetch again.
        second = await world.login(browser)
        await assert_refused(world, browser, second, error="invalid_id_token", reason="unknown_kid")
        assert (await world.stats())["jwks_requests"] == before + 1


async def test_key_rotation_at_the_provider_is_followed(world: LoginWorld) -> None:
    async with world.browser() as browser, aiohttp.ClientSession() as control:
        assert (await world.login(browser)).status == 303
        before = (await world.stats())["jwks_requests"]
        async with control.post(
            f"{world.digid.url}/_sandbox/keys/rotate", json={"keep_old": False}
        ) as response:
            rotated = await response.json()
        assert [k["kid"] for k in rotated["keys"]] == [rotated["kid"]]
        answer = await world.login(browser)
        assert answer.status == 303, answer.body
        assert (await world.stats())["jwks_requests"] == before + 1


@pytest.mark.parametrize("encryption", ["ECDH-ES", "none"])
async def test_ecdh_es_and_plain_signed_id_tokens_are_accepted(
    world: LoginWorld, encryption: str
) -> None:
    await world.knobs(encryption=encryption)
    async with world.browser() as browser:
        answer = await world.login(browser)
        assert answer.status == 303, answer.body
    events = await world.events(answer.headers["X-Transactie-Id"])
    assert events[0]["data"]["versleuteld"] is (encryption != "none")


async def test_encryption_can_be_required(state_dir: Path) -> None:
    async with (
        login_world(state_dir, encrypt=None, require_encrypted_id_token=True) as world,
        world.browser() as browser,
    ):
        answer = await world.login(browser)
        await assert_refused(
            world, browser, answer, error="invalid_id_token", reason="not_encrypted"
        )


async def test_cancel_at_the_provider_makes_no_session(world: LoginWorld) -> None:
    async with world.browser() as browser:
        authorize = await world.start(browser)
        back = await world.pick(browser, authorize, actie="annuleren")
        assert query_of(back)["error"] == "access_denied"
        answer = await world.callback(browser, back)
        await assert_refused(
            world, browser, answer, error="access_denied", reason="access_denied", status=403
        )


async def test_browsers_get_a_dutch_error_page_with_english(world: LoginWorld) -> None:
    await world.knobs(expired=True)
    async with world.browser() as browser:
        authorize = await world.start(browser)
        back = await world.pick(browser, authorize)
        answer = await world.callback(browser, back, accept="text/html,*/*")
    assert answer.status == 400
    page = answer.body.decode()
    assert '<html lang="nl">' in page
    assert "Inloggen niet gelukt" in page
    assert '<section lang="en"' in page
    assert "expired" in page
    assert "style=" not in page
    assert "<script" not in page


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/", "/\\evil.example", "welkom", "/a\nb"]
)
async def test_return_to_must_be_a_path_on_the_gateway(world: LoginWorld, target: str) -> None:
    async with (
        world.browser() as browser,
        browser.get(
            f"{world.gateway}/login",
            params={"return_to": target},
            headers={"Accept": "application/json"},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json(content_type=None))["reden"] == "unsafe_return_to"
        assert "Location" not in response.headers


async def test_logout_ends_the_session(world: LoginWorld) -> None:
    async with world.browser() as browser:
        assert (await world.login(browser)).status == 303
        assert (await world.session_info(browser))["ingelogd"] is True
        async with browser.post(
            f"{world.gateway}/login/uitloggen", data={"return_to": "/"}, allow_redirects=False
        ) as response:
            assert response.status == 303
        assert (await world.session_info(browser)) == {"ingelogd": False}


async def test_gateway_publishes_its_client_and_encryption_keys(world: LoginWorld) -> None:
    async with (
        world.browser() as browser,
        browser.get(f"{world.gateway}/login/jwks.json") as response,
    ):
        jwks = await response.json(content_type=None)
    uses = sorted((k["use"], k["alg"]) for k in jwks["keys"])
    assert uses == [("enc", "ECDH-ES"), ("enc", "RSA-OAEP-256"), ("sig", "ES256")]
    assert not any("d" in k for k in jwks["keys"])  # public halves only


async def test_provider_gone_at_the_token_request_is_a_clear_503(state_dir: Path) -> None:
    async with login_world(state_dir) as world, world.browser() as browser:
        authorize = await world.start(browser)
        back = await world.pick(browser, authorize)
        await world.digid.runner.cleanup()
        answer = await world.callback(browser, back)
        await assert_refused(
            world,
            browser,
            answer,
            error="temporarily_unavailable",
            reason="provider_unreachable",
            status=503,
        )


async def test_a_new_login_ends_the_earlier_session(world: LoginWorld) -> None:
    async def as_thief(cookie: str) -> dict[str, Any]:
        name, value = cookie.split(";")[0].split("=", 1)
        async with world.browser() as thief:
            thief.cookie_jar.update_cookies({name: value}, URL(world.gateway))
            return await world.session_info(thief)

    async with world.browser() as browser:
        first = (await world.login(browser)).cookie("__Host-bk-sessie")
        assert (await as_thief(first))["burger"] == world.pseudonym(EVERYWHERE)
        assert (await world.login(browser, bsn="999990019")).status == 303
        assert (await world.session_info(browser))["burger"] == world.pseudonym("999990019")
    assert await as_thief(first) == {"ingelogd": False}


async def test_logins_are_counted_in_metrics(world: LoginWorld) -> None:
    async with world.browser() as browser:
        assert (await world.login(browser)).status == 303
        await world.knobs(wrong_aud=True)
        assert (await world.login(browser)).status == 400
        async with browser.get(f"{world.gateway}/metrics") as response:
            metrics = await response.text()
    assert 'blauweknop_logins_total{fout="",outcome="geslaagd"} 1.0' in metrics
    assert 'blauweknop_logins_total{fout="invalid_id_token",outcome="geweigerd"} 1.0' in metrics
    assert EVERYWHERE not in metrics


async def test_the_jwks_is_refreshed_when_old(state_dir: Path) -> None:
    async with (
        login_world(state_dir, jwks_max_age_seconds=1.5) as world,
        world.browser() as browser,
    ):
        assert (await world.login(browser)).status == 303
        before = (await world.stats())["jwks_requests"]
        assert (await world.login(browser)).status == 303
        assert (await world.stats())["jwks_requests"] == before  # still fresh: no fetch
        await asyncio.sleep(1.6)
        assert (await world.login(browser)).status == 303
        assert (await world.stats())["jwks_requests"] == before + 1


async def test_two_tabs_can_each_finish_their_login(world: LoginWorld) -> None:
    async with world.browser() as browser:
        first_tab = await world.start(browser)
        second_tab = await world.start(browser)
        first = await world.callback(browser, await world.pick(browser, first_tab))
        second = await world.callback(
            browser, await world.pick(browser, second_tab, bsn="999990019")
        )
        assert (first.status, second.status) == (303, 303)
        assert (await world.session_info(browser))["burger"] == world.pseudonym("999990019")


async def test_no_login_without_a_working_store(state_dir: Path, tmp_path: Path) -> None:
    async with login_world(tmp_path / "own-state") as world, world.browser() as browser:
        authorize = await world.start(browser)
        back = await world.pick(browser, authorize)
        await world.app[AUDIT].store.close()
        answer = await world.callback(browser, back)
        assert answer.status == 503
        assert answer.json()["error"] == "temporarily_unavailable"
        assert not any(c.startswith("__Host-bk-sessie=") for c in answer.set_cookies)
        async with browser.get(
            f"{world.gateway}/login",
            params={"return_to": "/"},
            headers={"Accept": "application/json"},
            allow_redirects=False,
        ) as response:
            assert response.status == 503
            assert (await response.json(content_type=None))["reden"] == "store_unavailable"


async def test_provider_refusing_our_client_assertion_ends_the_login(world: LoginWorld) -> None:
    stranger = ECKey.generate_key("P-256", {"use": "sig"})
    async with (
        aiohttp.ClientSession() as control,
        control.put(
            f"{world.digid.url}/_sandbox/clients/{CLIENT_ID}",
            json={
                "redirect_uris": [f"{world.gateway}/login/callback"],
                "jwks": {"keys": [stranger.as_dict()]},  # not the gateway's key
            },
        ) as response,
    ):
        assert response.status == 200
    async with world.browser() as browser:
        answer = await world.login(browser)
        await assert_refused(
            world,
            browser,
            answer,
            error="token_request_refused",
            reason="invalid_client",
            status=502,
        )
