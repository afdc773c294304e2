"""The authorization server for portals refuses what it must: each case a clear OAuth error
(RFC 6749, RFC 9126, RFC 9449 error codes) and no data released.

Everything runs over real sockets: sandboxes, the stand-in DigiD, the gateway; the test plays
the portal's back-end (PortalClient and hand-made proofs) and the citizen's browser.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.app import AUDIT
from gateway.demo.journey import Browser, LoopbackCookieJar, fill_consent_form, fill_login_form
from gateway.demo.portal.keys import new_client_key, public_jwk
from gateway.demo.portal.oauth import (
    CLIENT_ASSERTION_TYPE,
    PortalClient,
    client_assertion,
    dpop_proof,
    pkce_pair,
)
from gateway.pki import DevPki
from tests.portalstack import (
    TEST_REDIRECT,
    PortalStack,
    authorize,
    start_portal_stack,
    stop_portal_stack,
)

CITIZEN_A = "999990020"  # Citlali Bakker
CITIZEN_B = "999990032"  # Daan Visser


@pytest.fixture
async def world(state_dir: Path, pki: DevPki, tmp_path: Path) -> AsyncIterator[PortalStack]:
    made = await start_portal_stack(state_dir, pki, tmp_path / "policies")
    yield made
    await stop_portal_stack(made)


@pytest.fixture
async def short(
    request: pytest.FixtureRequest, state_dir: Path, pki: DevPki, tmp_path: Path
) -> AsyncIterator[PortalStack]:
    """One lifetime (the test's parameter) cut to one second, to see it expire; the others keep
    their defaults, so a slow machine does not make the rest of the flow expire too."""
    made = await start_portal_stack(state_dir, pki, tmp_path / "policies", authz={request.param: 1})
    yield made
    await stop_portal_stack(made)


# --- helpers -------------------------------------------------------------------------------


async def oauth_error(response: aiohttp.ClientResponse, status: int, error: str) -> dict[str, Any]:
    body = await response.read()
    assert response.status == status, body
    data: dict[str, Any] = orjson.loads(body)
    assert data["error"] == error, data
    assert data["error_description"], "every refusal says what to fix"
    assert b'"bundel"' not in body  # no bundle in any refusal
    assert response.headers.get("Cache-Control") == "no-store"
    return data


def par_form(world: PortalStack, client: PortalClient, **changes: str | None) -> dict[str, str]:
    pkce = pkce_pair()
    form: dict[str, str | None] = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": client.redirect_uri,
        "scope": "financiele-zaken contactgegevens",
        "purpose_id": "inzage-avg",
        "state": "state-12345678",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(client.key, client.client_id, world.url),
    }
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


async def post_par(world: PortalStack, form: dict[str, str]) -> aiohttp.ClientResponse:
    return await world.session.post(f"{world.url}/par", data=form)


def token_form(
    world: PortalStack, client: PortalClient, code: str, verifier: str | None, **changes: str
) -> dict[str, str]:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": client.redirect_uri,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client_assertion(client.key, client.client_id, world.url),
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(changes)
    return form


async def post_token(
    world: PortalStack, form: dict[str, str], key: ec.EllipticCurvePrivateKey | None, **proof: Any
) -> aiohttp.ClientResponse:
    headers = {}
    if key is not None:
        headers["DPoP"] = dpop_proof(key, "POST", f"{world.url}/token", **proof)
    return await world.session.post(f"{world.url}/token", data=form, headers=headers)


async def token_for(
    world: PortalStack, client: PortalClient | None = None, bsn: str = CITIZEN_A
) -> tuple[str, ec.EllipticCurvePrivateKey]:
    """A real access token through the whole flow, bound to a fresh DPoP key."""
    client = client or world.test
    back = await authorize(world, client, bsn=bsn)
    key = ec.generate_private_key(ec.SECP256R1())
    token = await client.redeem(
        world.session, code=back.params["code"], verifier=back.started.pkce.verifier, dpop_key=key
    )
    return token.access_token, key


async def get_bundle(
    world: PortalStack,
    token: str,
    proof: str | None,
    *,
    scheme: str = "DPoP",
    accept: str = "application/json",
    query: str = "",
) -> aiohttp.ClientResponse:
    headers = {"Authorization": f"{scheme} {token}", "Accept": accept}
    if proof is not None:
        headers["DPoP"] = proof
    return await world.session.get(f"{world.url}/v1/bundel{query}", headers=headers)


async def resource_error(response: aiohttp.ClientResponse, error: str, status: int = 401) -> None:
    await oauth_error(response, status, error)
    if status == 401:
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("DPoP ")
        assert f'error="{error}"' in challenge


def bundle_url(world: PortalStack) -> str:
    return f"{world.url}/v1/bundel"


# --- authorization requests: PAR required, client authentication ---------------------------


async def test_plain_authorization_request_without_par_is_refused(world: PortalStack) -> None:
    pkce = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": "test-portaal",
        "redirect_uri": TEST_REDIRECT,
        "scope": "financiele-zaken",
        "state": "state-12345678",
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
    }
    async with world.session.get(
        f"{world.url}/authorize", params=params, allow_redirects=False
    ) as response:
        text = await response.text()
        assert response.status == 400
        assert "invalid_request" in text
        assert "pushed authorization requests are required" in text
        assert "Location" not in response.headers  # never redirected to an unverified URI


async def test_unknown_client_at_par(world: PortalStack) -> None:
    stranger = PortalClient(world.url, "onbekend-portaal", new_client_key(), TEST_REDIRECT)
    form = par_form(world, stranger)
    async with await post_par(world, form) as response:
        await oauth_error(response, 401, "invalid_client")
        assert "X-Authz-Outcome" not in response.headers
    async with world.session.get(f"{world.url}/metrics") as response:
        metrics = await response.text()
    assert 'blauweknop_authz_total{endpoint="par",outcome="invalid_client"} 1.0' in metrics


async def test_unknown_client_at_authorize(world: PortalStack) -> None:
    started = await world.test.push(
        world.session, purpose_id="inzage-avg", scopes=["financiele-zaken"]
    )
    url = started.authorize_url.replace("client_id=test-portaal", "client_id=onbekend")
    async with world.session.get(url, allow_redirects=False) as response:
        assert response.status == 400
        assert "invalid_client" in await response.text()


async def test_client_assertion_signed_by_wrong_key(world: PortalStack) -> None:
    wrong = new_client_key()
    form = par_form(
        world, world.test, client_assertion=client_assertion(wrong, "test-portaal", world.url)
    )
    async with await post_par(world, form) as response:
        data = await oauth_error(response, 401, "invalid_client")
        assert "registered key" in data["error_description"]


async def test_client_assertion_of_another_portal_key(world: PortalStack) -> None:
    # ander-portaal's real key, claiming to be test-portaal.
    form = par_form(
        world,
        world.test,
        client_assertion=client_assertion(world.other.key, "test-portaal", world.url),
    )
    async with await post_par(world, form) as response:
        await oauth_error(response, 401, "invalid_client")


async def test_client_assertion_expired(world: PortalStack) -> None:
    old = time.time() - 600
    form = par_form(
        world,
        world.test,
        client_assertion=client_assertion(world.test.key, "test-portaal", world.url, now=old),
    )
    async with await post_par(world, form) as response:
        data = await oauth_error(response, 401, "invalid_client")
        assert "expired" in data["error_description"]


async def test_client_assertion_wrong_audience(world: PortalStack) -> None:
    form = par_form(
        world,
        world.test,
        client_assertion=client_assertion(world.test.key, "test-portaal", "https://elders.example"),
    )
    async with await post_par(world, form) as response:
        data = await oauth_error(response, 401, "invalid_client")
        assert "aud" in data["error_description"]


async def test_client_assertion_jti_replay(world: PortalStack) -> None:
    assertion = client_assertion(world.test.key, "test-portaal", world.url)
    async with await post_par(world, par_form(world, world.test, client_assertion=assertion)) as ok:
        assert ok.status == 201, await ok.text()
    async with await post_par(
        world, par_form(world, world.test, client_assertion=assertion)
    ) as again:
        data = await oauth_error(again, 401, "invalid_client")
        assert "jti" in data["error_description"]


async def test_client_assertion_living_too_long(world: PortalStack) -> None:
    assertion = client_assertion(world.test.key, "test-portaal", world.url, lifetime=3600)
    async with await post_par(world, par_form(world, world.test, client_assertion=assertion)) as r:
        await oauth_error(r, 401, "invalid_client")


async def test_client_assertion_with_sub_other_than_iss(world: PortalStack) -> None:
    assertion = client_assertion(world.test.key, "test-portaal", world.url, sub="ander-portaal")
    async with await post_par(world, par_form(world, world.test, client_assertion=assertion)) as r:
        await oauth_error(r, 401, "invalid_client")


async def test_client_authentication_missing(world: PortalStack) -> None:
    form = par_form(world, world.test, client_assertion=None, client_assertion_type=None)
    form["client_secret"] = "geheim"
    async with await post_par(world, form) as response:
        await oauth_error(response, 401, "invalid_client")


async def test_client_assertion_with_alg_none(world: PortalStack) -> None:
    claims = {
        "iss": "test-portaal",
        "sub": "test-portaal",
        "aud": world.url,
        "exp": int(time.time()) + 60,
        "jti": "jti-none-12345",
    }
    unsigned = jwt.encode(claims, "", algorithm="none")
    async with await post_par(world, par_form(world, world.test, client_assertion=unsigned)) as r:
        await oauth_error(r, 401, "invalid_client")


# --- PKCE, redirect URI, purpose and scope --------------------------------------------------


async def test_pkce_missing(world: PortalStack) -> None:
    form = par_form(world, world.test, code_challenge=None, code_challenge_method=None)
    async with await post_par(world, form) as response:
        data = await oauth_error(response, 400, "invalid_request")
        assert "PKCE" in data["error_description"]


async def test_pkce_plain_refused(world: PortalStack) -> None:
    verifier = pkce_pair().verifier
    form = par_form(world, world.test, code_challenge=verifier[:43], code_challenge_method="plain")
    async with await post_par(world, form) as response:
        data = await oauth_error(response, 400, "invalid_request")
        assert "S256" in data["error_description"]


async def test_pkce_wrong_verifier(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    form = token_form(world, world.test, back.params["code"], pkce_pair().verifier)
    async with await post_token(world, form, ec.generate_private_key(ec.SECP256R1())) as r:
        data = await oauth_error(r, 400, "invalid_grant")
        assert "PKCE" in data["error_description"]


async def test_pkce_verifier_missing_at_token(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    form = token_form(world, world.test, back.params["code"], None)
    async with await post_token(world, form, ec.generate_private_key(ec.SECP256R1())) as r:
        await oauth_error(r, 400, "invalid_grant")


@pytest.mark.parametrize(
    "redirect",
    [
        TEST_REDIRECT + "/",
        TEST_REDIRECT + "?x=1",
        TEST_REDIRECT.upper(),
        "http://127.0.0.1:9/elders/callback",
    ],
    ids=["trailing-slash", "extra-query", "case", "other-path"],
)
async def test_redirect_uri_not_an_exact_match(world: PortalStack, redirect: str) -> None:
    async with await post_par(world, par_form(world, world.test, redirect_uri=redirect)) as r:
        data = await oauth_error(r, 400, "invalid_request")
        assert "exact match" in data["error_description"]


async def test_redirect_uri_changed_at_token(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    form = token_form(
        world,
        world.test,
        back.params["code"],
        back.started.pkce.verifier,
        redirect_uri=TEST_REDIRECT + "/other",
    )
    async with await post_token(world, form, ec.generate_private_key(ec.SECP256R1())) as r:
        await oauth_error(r, 400, "invalid_grant")


async def test_purpose_not_allowed_for_the_client(world: PortalStack) -> None:
    # schuldhulp-intake is registered, but not for test-portaal.
    async with await post_par(
        world, par_form(world, world.test, purpose_id="schuldhulp-intake")
    ) as response:
        data = await oauth_error(response, 400, "invalid_request")
        assert "purpose_id" in data["error_description"]


async def test_unknown_purpose(world: PortalStack) -> None:
    async with await post_par(world, par_form(world, world.test, purpose_id="marketing")) as r:
        await oauth_error(r, 400, "invalid_request")


async def test_unknown_scope(world: PortalStack) -> None:
    async with await post_par(
        world, par_form(world, world.test, scope="financiele-zaken alles")
    ) as r:
        data = await oauth_error(r, 400, "invalid_scope")
        assert "alles" in data["error_description"]


async def test_scope_not_allowed_for_the_client(world: PortalStack) -> None:
    async with await post_par(world, par_form(world, world.test, scope="inkomen")) as response:
        await oauth_error(response, 400, "invalid_scope")


# --- request_uri ----------------------------------------------------------------------------


async def test_request_uri_replay(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    assert "code" in back.params
    async with world.session.get(back.started.authorize_url, allow_redirects=False) as response:
        assert response.status == 400
        assert "invalid_request_uri" in await response.text()


@pytest.mark.parametrize("short", ["request_uri_seconds"], indirect=True)
async def test_request_uri_expired(short: PortalStack) -> None:
    started = await short.test.push(
        short.session, purpose_id="inzage-avg", scopes=["financiele-zaken"]
    )
    await asyncio.sleep(1.2)
    async with short.session.get(started.authorize_url, allow_redirects=False) as response:
        assert response.status == 400
        assert "invalid_request_uri" in await response.text()


async def test_request_uri_of_another_client(world: PortalStack) -> None:
    started = await world.other.push(world.session, purpose_id="inzage-avg", scopes=["inkomen"])
    url = started.authorize_url.replace("client_id=ander-portaal", "client_id=test-portaal")
    async with world.session.get(url, allow_redirects=False) as response:
        assert response.status == 400
        assert "invalid_request_uri" in await response.text()


async def test_request_uri_inside_a_pushed_request(world: PortalStack) -> None:
    form = par_form(world, world.test, request_uri="urn:ietf:params:oauth:request_uri:x")
    async with await post_par(world, form) as response:
        await oauth_error(response, 400, "invalid_request")


# --- authorization codes --------------------------------------------------------------------


async def test_authorization_code_replay_revokes_the_token(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    key = ec.generate_private_key(ec.SECP256R1())
    form = token_form(world, world.test, back.params["code"], back.started.pkce.verifier)
    async with await post_token(world, form, key) as first:
        assert first.status == 200
        token = (await first.json())["access_token"]
    form = token_form(world, world.test, back.params["code"], back.started.pkce.verifier)
    async with await post_token(world, form, key) as replay:
        data = await oauth_error(replay, 400, "invalid_grant")
        assert "already used" in data["error_description"]
    before = await world.issued_bundles()
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_token")
    assert await world.issued_bundles() == before


async def test_code_of_another_client(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    form = token_form(world, world.other, back.params["code"], back.started.pkce.verifier)
    form["redirect_uri"] = TEST_REDIRECT
    async with await post_token(world, form, ec.generate_private_key(ec.SECP256R1())) as r:
        await oauth_error(r, 400, "invalid_grant")


@pytest.mark.parametrize("short", ["code_seconds"], indirect=True)
async def test_code_expired(short: PortalStack) -> None:
    back = await authorize(short, short.test)
    await asyncio.sleep(1.2)
    form = token_form(short, short.test, back.params["code"], back.started.pkce.verifier)
    async with await post_token(short, form, ec.generate_private_key(ec.SECP256R1())) as r:
        await oauth_error(r, 400, "invalid_grant")


async def test_refresh_tokens_do_not_exist(world: PortalStack) -> None:
    form = token_form(world, world.test, "x", None, grant_type="refresh_token", refresh_token="r")
    async with await post_token(world, form, ec.generate_private_key(ec.SECP256R1())) as r:
        await oauth_error(r, 400, "unsupported_grant_type")


async def test_token_request_without_dpop(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    form = token_form(world, world.test, back.params["code"], back.started.pkce.verifier)
    async with await post_token(world, form, None) as response:
        await oauth_error(response, 400, "invalid_dpop_proof")


async def test_consent_refused_gives_no_code(world: PortalStack) -> None:
    back = await authorize(world, world.test, give=False)
    assert back.params["error"] == "access_denied"
    assert "code" not in back.params
    assert back.params["state"] == back.started.state
    assert back.params["iss"] == world.url
    refusals = [
        e
        for e in await world.stack.app[AUDIT].store.unsent(1_000_000)
        if b"toestemming.geweigerd" in e.payload
    ]
    data = orjson.loads(refusals[-1].payload)["data"]
    assert data["burger"] == world.stack.app[AUDIT].key.pseudonym(CITIZEN_A)
    assert data["organisaties"] == []
    assert data["client_id"] == "test-portaal"
    async with world.session.get(f"{world.url}/metrics") as response:
        metrics = await response.text()
    assert 'blauweknop_authz_total{endpoint="consent",outcome="access_denied"} 1.0' in metrics


async def test_consent_form_of_another_session(world: PortalStack) -> None:
    """The consent form is bound to the login that showed it (CSRF)."""
    started = await world.test.push(
        world.session, purpose_id="inzage-avg", scopes=["financiele-zaken"]
    )
    async with world.session.get(started.authorize_url, allow_redirects=False) as response:
        consent = response.headers["Location"]
    async with world.session.post(
        f"{world.url}{consent}",
        data={"csrf": "forged", "besluit": "geven", "organisatie": "duo"},
        allow_redirects=False,
    ) as response:
        assert response.status == 403
        assert "Location" not in response.headers


# --- DPoP at the bundle endpoint ------------------------------------------------------------


async def test_dpop_proof_replayed(world: PortalStack) -> None:
    token, key = await token_for(world)
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof) as first:
        assert first.status == 200
    before = await world.issued_bundles()
    async with await get_bundle(world, token, proof) as again:
        await resource_error(again, "invalid_dpop_proof")
    assert await world.issued_bundles() == before


async def test_dpop_proof_for_another_url(world: PortalStack) -> None:
    token, key = await token_for(world)
    proof = dpop_proof(key, "GET", f"{world.url}/v1/iets-anders", access_token=token)
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_dpop_proof")


async def test_dpop_proof_for_another_method(world: PortalStack) -> None:
    token, key = await token_for(world)
    proof = dpop_proof(key, "POST", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_dpop_proof")


async def test_dpop_proof_without_ath(world: PortalStack) -> None:
    token, key = await token_for(world)
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token, include_ath=False)
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_dpop_proof")


async def test_dpop_proof_with_ath_of_another_token(world: PortalStack) -> None:
    token, key = await token_for(world)
    proof = dpop_proof(key, "GET", bundle_url(world), access_token="een-ander-token")
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_dpop_proof")


async def test_dpop_proof_with_stale_iat(world: PortalStack) -> None:
    token, key = await token_for(world)
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token, iat=time.time() - 300)
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_dpop_proof")


async def test_dpop_proof_signed_by_another_key(world: PortalStack) -> None:
    token, _ = await token_for(world)
    thief = ec.generate_private_key(ec.SECP256R1())
    proof = dpop_proof(thief, "GET", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof) as response:
        data = await oauth_error(response, 401, "invalid_dpop_proof")
        assert "another key" in data["error_description"]


async def test_dpop_proof_missing(world: PortalStack) -> None:
    token, _ = await token_for(world)
    async with await get_bundle(world, token, None) as response:
        await resource_error(response, "invalid_dpop_proof")


async def test_dpop_proof_with_wrong_typ(world: PortalStack) -> None:
    token, key = await token_for(world)
    claims = {
        "htm": "GET",
        "htu": bundle_url(world),
        "iat": int(time.time()),
        "jti": "jti-typ-1234",
    }
    proof = jwt.encode(
        claims, key, algorithm="ES256", headers={"typ": "JWT", "jwk": public_jwk(key.public_key())}
    )
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_dpop_proof")


async def test_dpop_token_sent_as_bearer(world: PortalStack) -> None:
    token, key = await token_for(world)
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof, scheme="Bearer") as response:
        await resource_error(response, "invalid_token")


async def test_unknown_access_token(world: PortalStack) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = "verzonnen-token-" + "x" * 30
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof) as response:
        await resource_error(response, "invalid_token")


@pytest.mark.parametrize("short", ["access_token_seconds"], indirect=True)
async def test_access_token_after_expiry(short: PortalStack) -> None:
    token, key = await token_for(short)
    await asyncio.sleep(1.2)
    before = await short.issued_bundles()
    proof = dpop_proof(key, "GET", bundle_url(short), access_token=token)
    async with await get_bundle(short, token, proof) as response:
        await resource_error(response, "invalid_token")
    assert await short.issued_bundles() == before


async def test_token_of_citizen_a_never_yields_citizen_b(world: PortalStack) -> None:
    token, key = await token_for(world, bsn=CITIZEN_A)
    before = await world.issued_bundles()
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof, query=f"?bsn={CITIZEN_B}") as response:
        await resource_error(response, "invalid_request", status=400)
        assert CITIZEN_B not in await response.text()
    assert await world.issued_bundles() == before
    # The same token still gives citizen A's bundle, and only A's.
    proof = dpop_proof(key, "GET", bundle_url(world), access_token=token)
    async with await get_bundle(world, token, proof) as response:
        assert response.status == 200
        outer = orjson.loads(await response.read())
    assert outer["bundel"]["bsn"] == CITIZEN_A


async def test_unknown_formats_are_not_acceptable(world: PortalStack) -> None:
    token, key = await token_for(world)
    for accept in ("text/html", "image/png", "application/json;q=0"):
        proof = dpop_proof(key, "GET", bundle_url(world), access_token=token)
        async with await get_bundle(world, token, proof, accept=accept) as response:
            await oauth_error(response, 406, "not_acceptable")


async def test_code_bound_to_a_dpop_key_at_par(world: PortalStack) -> None:
    """A DPoP proof at PAR binds the code: redeeming it with another key is refused."""
    bound = ec.generate_private_key(ec.SECP256R1())
    form = par_form(world, world.test)
    proof = dpop_proof(bound, "POST", f"{world.url}/par")
    async with world.session.post(f"{world.url}/par", data=form, headers={"DPoP": proof}) as r:
        assert r.status == 201, await r.text()
        request_uri = (await r.json())["request_uri"]
    assert request_uri.startswith("urn:ietf:params:oauth:request_uri:")
    mismatch = par_form(world, world.test, dpop_jkt="A" * 43)
    async with world.session.post(
        f"{world.url}/par",
        data=mismatch,
        headers={"DPoP": dpop_proof(bound, "POST", f"{world.url}/par")},
    ) as r:
        await oauth_error(r, 400, "invalid_dpop_proof")


async def test_dpop_proof_with_a_symmetric_algorithm(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    form = token_form(world, world.test, back.params["code"], back.started.pkce.verifier)
    claims = {
        "htm": "POST",
        "htu": f"{world.url}/token",
        "iat": int(time.time()),
        "jti": "hs-12345678",
    }
    forged = jwt.encode(
        claims, "geheim" * 8, algorithm="HS256", headers={"typ": "dpop+jwt", "jwk": {"kty": "oct"}}
    )
    async with world.session.post(
        f"{world.url}/token", data=form, headers={"DPoP": forged}
    ) as response:
        await oauth_error(response, 400, "invalid_dpop_proof")


async def test_nothing_is_issued_when_the_store_is_unavailable(world: PortalStack) -> None:
    back = await authorize(world, world.test)
    await world.stack.app[AUDIT].store.close()
    form = token_form(world, world.test, back.params["code"], back.started.pkce.verifier)
    async with await post_token(world, form, ec.generate_private_key(ec.SECP256R1())) as r:
        await oauth_error(r, 503, "temporarily_unavailable")
    authorize_url = (
        f"{world.url}/authorize?client_id=test-portaal"
        "&request_uri=urn:ietf:params:oauth:request_uri:x"
    )
    async with world.session.get(authorize_url, allow_redirects=False) as response:
        assert response.status == 503
        assert "Location" not in response.headers


async def test_purpose_that_needs_a_higher_level_refuses_a_lower_login(
    world: PortalStack,
) -> None:
    """A purpose registered with min_acr high: a DigiD Substantieel login gets no consent page."""
    for level, expected in (("substantieel", 403), ("hoog", 200)):
        started = await world.other.push(world.session, purpose_id="hoog-test", scopes=["inkomen"])
        async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
            browser = Browser(browser_session)
            page = await browser.open("authorize", "GET", started.authorize_url)
            form, pairs = fill_login_form(page.html, CITIZEN_A, level)
            page = await browser.send_form("login", page.url, form, pairs, expect=expected)
            if expected == 403:
                assert "/toestemming/" not in page.url
                assert "inlogniveau" in page.html
                continue
            assert "/toestemming/" in page.url
            form, pairs = fill_consent_form(page.html)
            back = await browser.send_form(
                "consent", page.url, form, pairs, stop_at=world.other.redirect_uri
            )
            assert "code=" in back.url


async def test_consent_without_any_organisation_is_asked_again(world: PortalStack) -> None:
    started = await world.test.push(
        world.session, purpose_id="inzage-avg", scopes=["financiele-zaken"]
    )
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        browser = Browser(browser_session)
        page = await browser.open("authorize", "GET", started.authorize_url)
        form, pairs = fill_login_form(page.html, CITIZEN_A, "substantieel")
        page = await browser.send_form("login", page.url, form, pairs)
        form, pairs = fill_consent_form(page.html)
        none = [(k, v) for k, v in pairs if k != "organisatie"]
        again = await browser.send_form("consent", page.url, form, none)
        assert again.url == page.url  # no redirect to the portal, no code
        assert 'role="alert"' in again.html
        assert "minstens één organisatie" in again.html
        # The transaction is still open: choosing one organisation now works.
        form, pairs = fill_consent_form(again.html)
        one = [(k, v) for k, v in pairs if k != "organisatie"] + [("organisatie", "duo")]
        back = await browser.send_form(
            "consent", again.url, form, one, stop_at=world.test.redirect_uri
        )
    assert "code=" in back.url


async def test_scope_outside_the_purpose(world: PortalStack) -> None:
    # ander-portaal may ask every scope, but the hoog-test purpose covers income only.
    form = par_form(
        world,
        world.other,
        purpose_id="hoog-test",
        scope="inkomen financiele-zaken",
        client_assertion=client_assertion(world.other.key, "ander-portaal", world.url),
    )
    async with await post_par(world, form) as response:
        data = await oauth_error(response, 400, "invalid_scope")
        assert "financiele-zaken" in data["error_description"]


async def test_a_login_from_before_the_authorization_is_not_reused(world: PortalStack) -> None:
    """A shared computer: A logged in for one portal request; the next request in the same
    browser must log in again, and the one who does gets their own data, not A's."""
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        browser = Browser(browser_session)
        codes = []
        for bsn in (CITIZEN_A, CITIZEN_B):
            started = await world.test.push(
                world.session, purpose_id="inzage-avg", scopes=["financiele-zaken"]
            )
            page = await browser.open("authorize", "GET", started.authorize_url)
            assert "/toestemming/" not in page.url  # DigiD's page, every time
            form, pairs = fill_login_form(page.html, bsn, "substantieel")
            page = await browser.send_form("login", page.url, form, pairs)
            form, pairs = fill_consent_form(page.html)
            back = await browser.send_form(
                "consent", page.url, form, pairs, stop_at=world.test.redirect_uri
            )
            codes.append((back.url, started))
    key = ec.generate_private_key(ec.SECP256R1())
    for (redirected, started), bsn in zip(codes, (CITIZEN_A, CITIZEN_B), strict=True):
        code = redirected.split("code=")[1].split("&")[0]
        token = await world.test.redeem(
            world.session, code=code, verifier=started.pkce.verifier, dpop_key=key
        )
        download = await world.test.download(
            world.session, access_token=token.access_token, dpop_key=key
        )
        assert orjson.loads(download.body)["bundel"]["bsn"] == bsn
