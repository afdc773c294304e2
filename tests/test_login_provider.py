"""The stand-in DigiD holds clients to the rules: PKCE S256, exact redirect URI, private_key_jwt."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc.jwk import ECKey
from yarl import URL

from gateway.demo.digid import NOT_FOR_PRODUCTION, RunningDigid, create_digid_app, start_digid
from gateway.errors import ConfigError
from tests.login_world import EVERYWHERE, query_of

CLIENT = "testportaal"
REDIRECT = "http://127.0.0.1:9/terug"
VERIFIER = "v" * 50
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_PENDING = re.compile(r'name="pending" value="([^"]+)"')


@dataclass
class Rp:
    """A hand-driven relying party, so each rule can be broken on purpose."""

    digid: RunningDigid
    http: aiohttp.ClientSession
    key: ECKey

    def authorize_params(self, **changes: str | None) -> dict[str, str]:
        params: dict[str, str | None] = {
            "response_type": "code",
            "client_id": CLIENT,
            "redirect_uri": REDIRECT,
            "scope": "openid",
            "state": "s" * 20,
            "nonce": "n" * 20,
            "code_challenge": create_s256_code_challenge(VERIFIER),
            "code_challenge_method": "S256",
        }
        params.update(changes)
        return {k: v for k, v in params.items() if v is not None}

    async def authorize(self, **changes: str | None) -> aiohttp.ClientResponse:
        response = await self.http.get(
            f"{self.digid.url}/authorize",
            params=self.authorize_params(**changes),
            allow_redirects=False,
        )
        await response.read()
        return response

    async def code(self, **changes: str | None) -> str:
        response = await self.authorize(**changes)
        page = await response.text()
        assert response.status == 200, page
        match = _PENDING.search(page)
        assert match
        async with self.http.post(
            f"{self.digid.url}/authorize",
            data={"pending": match.group(1), "bsn": EVERYWHERE, "niveau": "substantieel"},
            allow_redirects=False,
        ) as decided:
            assert decided.status == 302
            location = decided.headers["Location"]
        assert location.startswith(REDIRECT + "?")
        return query_of(location)["code"]

    def assertion(self, key: ECKey | None = None, **claims: Any) -> str:
        signed: str = private_key_jwt_sign(
            key or self.key,
            client_id=CLIENT,
            token_endpoint=f"{self.digid.url}/token",
            alg="ES256",
            claims=claims or None,
        )
        return signed

    async def token(self, code: str, **changes: str | None) -> tuple[int, dict[str, Any]]:
        form: dict[str, str | None] = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.assertion(),
        }
        form.update(changes)
        async with self.http.post(
            f"{self.digid.url}/token", data={k: v for k, v in form.items() if v is not None}
        ) as response:
            body: dict[str, Any] = await response.json()
            return response.status, body


@pytest.fixture
async def rp() -> AsyncIterator[Rp]:
    digid = await start_digid()
    key = ECKey.generate_key("P-256", {"use": "sig"})
    key.ensure_kid()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.put(
                f"{digid.url}/_sandbox/clients/{CLIENT}",
                json={"redirect_uris": [REDIRECT], "jwks": {"keys": [key.as_dict()]}},
            ) as response:
                assert response.status == 200
            yield Rp(digid, http, key)
    finally:
        await digid.runner.cleanup()


def error_of(response: aiohttp.ClientResponse) -> dict[str, str]:
    assert response.status == 302
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    return query_of(location)


async def test_a_correct_client_gets_an_id_token(rp: Rp) -> None:
    status, body = await rp.token(await rp.code())
    assert status == 200, body
    assert body["id_token"].count(".") == 2  # no encryption registered for this client
    assert body["token_type"] == "Bearer"


async def test_missing_pkce_is_refused(rp: Rp) -> None:
    response = await rp.authorize(code_challenge=None, code_challenge_method=None)
    error = error_of(response)
    assert error["error"] == "invalid_request"
    assert "PKCE" in error["error_description"]
    assert error["state"] == "s" * 20


async def test_plain_pkce_is_refused(rp: Rp) -> None:
    response = await rp.authorize(code_challenge=VERIFIER, code_challenge_method="plain")
    error = error_of(response)
    assert error["error"] == "invalid_request"
    assert "S256" in error["error_description"]


async def test_pkce_method_must_be_named(rp: Rp) -> None:
    error = error_of(await rp.authorize(code_challenge_method=None))
    assert error["error"] == "invalid_request"


async def test_redirect_uri_must_match_exactly_and_is_never_used_otherwise(rp: Rp) -> None:
    for wrong in (REDIRECT + "/", REDIRECT + "?x=1", "http://127.0.0.1:9/terug2", None):
        response = await rp.authorize(redirect_uri=wrong)
        assert response.status == 400, wrong
        assert "Location" not in response.headers


async def test_unknown_client_is_refused_without_redirect(rp: Rp) -> None:
    response = await rp.authorize(client_id="onbekend")
    assert response.status == 400
    assert "Location" not in response.headers


async def test_nonce_is_required(rp: Rp) -> None:
    assert error_of(await rp.authorize(nonce=None))["error"] == "invalid_request"


async def test_wrong_code_verifier_is_refused(rp: Rp) -> None:
    status, body = await rp.token(await rp.code(), code_verifier="w" * 50)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_missing_code_verifier_is_refused(rp: Rp) -> None:
    status, body = await rp.token(await rp.code(), code_verifier=None)
    assert (status, body["error"]) == (400, "invalid_request")


async def test_token_redirect_uri_must_match(rp: Rp) -> None:
    status, body = await rp.token(await rp.code(), redirect_uri=REDIRECT + "/")
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_code_is_single_use(rp: Rp) -> None:
    code = await rp.code()
    assert (await rp.token(code))[0] == 200
    status, body = await rp.token(code)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_code_is_spent_by_a_failed_attempt(rp: Rp) -> None:
    code = await rp.code()
    assert (await rp.token(code, code_verifier="w" * 50))[0] == 400
    status, body = await rp.token(code)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_client_assertion_from_another_key_is_refused(rp: Rp) -> None:
    other = ECKey.generate_key("P-256")
    status, body = await rp.token(await rp.code(), client_assertion=rp.assertion(other))
    assert (status, body["error"]) == (400, "invalid_client")


async def test_missing_client_assertion_is_refused(rp: Rp) -> None:
    status, body = await rp.token(
        await rp.code(), client_assertion=None, client_assertion_type=None, client_id=CLIENT
    )
    assert status in (400, 401)
    assert body["error"] == "invalid_client"


async def test_replayed_client_assertion_is_refused(rp: Rp) -> None:
    assertion = rp.assertion()
    assert (await rp.token(await rp.code(), client_assertion=assertion))[0] == 200
    status, body = await rp.token(await rp.code(), client_assertion=assertion)
    assert (status, body["error"]) == (400, "invalid_client")


async def test_client_assertion_for_another_audience_is_refused(rp: Rp) -> None:
    wrong = private_key_jwt_sign(
        rp.key, client_id=CLIENT, token_endpoint="https://elders.invalid/token", alg="ES256"
    )
    status, body = await rp.token(await rp.code(), client_assertion=wrong)
    assert (status, body["error"]) == (400, "invalid_client")


async def test_login_page_is_marked_accessible_and_switches_to_english(rp: Rp) -> None:
    response = await rp.authorize()
    page = await response.text()
    assert NOT_FOR_PRODUCTION in response.headers["X-Not-For-Production"]
    assert "niet voor productie" in page
    assert '<html lang="nl">' in page
    csp = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in csp
    assert "script-src" not in csp  # default-src 'none': no script at all
    assert "style=" not in page
    assert "<script" not in page
    inputs = re.findall(r"<input type=\"radio\"", page)
    labelled = re.findall(r"<label><input type=\"radio\"", page)
    assert len(inputs) == len(labelled) == 9 + 4
    assert page.count("<legend>") == 2
    english = re.search(r'<a href="([^"]+)" lang="en">English</a>', page)
    assert english
    async with rp.http.get(
        URL(f"{rp.digid.url}{english.group(1).replace('&amp;', '&')}", encoded=True)
    ) as switched:
        text = await switched.text()
    assert '<html lang="en">' in text
    assert "not for production" in text
    async with rp.http.get(f"{rp.digid.url}/static/digid.css") as css:
        assert css.status == 200
        assert ":focus-visible" in await css.text()


async def test_discovery_document(rp: Rp) -> None:
    async with rp.http.get(f"{rp.digid.url}/.well-known/openid-configuration") as response:
        meta = await response.json()
    assert meta["issuer"] == rp.digid.url
    assert meta["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert "none" not in meta["id_token_signing_alg_values_supported"]


def test_stand_in_refuses_production_mode() -> None:
    with pytest.raises(ConfigError, match="only in sandbox mode"):
        create_digid_app(mode="production")
