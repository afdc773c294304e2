"""Policies and rate limits on the portal path: decisions audited, refusals explained.

The whole journey on real sockets (tests/portalstack.py): PAR, stand-in DigiD, consent page,
token, and `GET /v1/bundel`, with the Cedar policies of a policies directory made for the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.app import AUDIT
from gateway.demo.portal.oauth import PortalClient, dpop_proof
from gateway.federation.api import FEDERATION
from gateway.pki import DevPki
from tests.conftest import fresh_state
from tests.portalstack import PortalStack, authorize, start_portal_stack, stop_portal_stack

CITIZEN = "999990020"


async def events(world: PortalStack, name: str) -> list[dict[str, Any]]:
    records = await world.stack.app[AUDIT].store.unsent(1_000_000)
    found = [orjson.loads(r.payload) for r in records]
    return [e for e in found if e["type"] == f"nl.blauweknop.audit.{name}.v1"]


async def token_for(
    world: PortalStack, client: PortalClient, **kwargs: Any
) -> tuple[str, ec.EllipticCurvePrivateKey]:
    back = await authorize(world, client, **kwargs)
    key = ec.generate_private_key(ec.SECP256R1())
    token = await client.redeem(
        world.session, code=back.params["code"], verifier=back.started.pkce.verifier, dpop_key=key
    )
    return token.access_token, key


async def fetch(
    world: PortalStack, token: str, key: ec.EllipticCurvePrivateKey
) -> tuple[int, str, bytes, Mapping[str, str]]:
    url = world.url + "/v1/bundel"
    headers = {
        "Authorization": f"DPoP {token}",
        "DPoP": dpop_proof(key, "GET", url, access_token=token),
        "Accept": "application/json",
    }
    async with world.session.get(url, headers=headers) as response:
        return response.status, response.content_type, await response.read(), response.headers


@pytest.fixture
async def world(tmp_path: Path, pki: DevPki) -> AsyncIterator[PortalStack]:
    state = fresh_state(tmp_path, pki)
    made = await start_portal_stack(
        state,
        pki,
        tmp_path / "policies",
        federation={"poll_seconds": 0.1, "rate_citizen_per_minute": 2},
    )
    yield made
    await stop_portal_stack(made)


async def test_every_bundle_request_is_decided_by_policy_and_audited_with_its_ids(
    world: PortalStack,
) -> None:
    token, key = await token_for(
        world, world.other, purpose_id="schuldhulp-intake", scopes=("financiele-zaken", "inkomen")
    )
    status, _, body, _ = await fetch(world, token, key)
    assert status == 200, body
    decided = await events(world, "beleid.besluit")
    # The consent page's offer and the download: each decision is audited with its policies.
    assert len(decided) >= 2
    offered = {d["organisatie"]: d for d in decided[0]["data"]["besluiten"]}
    assert offered["duo"]["beleid"] == ["wgs-schuldhulp-intake"]
    data = decided[-1]["data"]
    assert data["purpose_id"] == "schuldhulp-intake"
    assert data["bewaartermijn_dagen"] == 30
    assert data["burger"] == world.stack.app[AUDIT].key.pseudonym(CITIZEN)
    assert {d["organisatie"]: (d["besluit"], d["beleid"]) for d in data["besluiten"]} == {
        code: ("toegestaan", ["wgs-schuldhulp-intake"]) for code in ("duo", "uwv", "cak", "gm0363")
    }
    assert CITIZEN.encode() not in orjson.dumps(decided)


async def test_a_policy_change_applies_without_restart_and_a_refusal_is_explained(
    world: PortalStack, tmp_path: Path
) -> None:
    token, key = await token_for(world, world.test, purpose_id="inzage-avg")
    # The federation withdraws the right-of-access policy while the portal holds its token.
    cedar = tmp_path / "policies" / "federatie.cedar"
    text = cedar.read_text()
    start = text.index('@id("avg-art15-inzage")')
    end = text.index('@id("alleen-eigen-gemeente")')
    cedar.write_text(text[:start] + text[end:])
    federation = world.stack.app[FEDERATION]
    deadline = time.monotonic() + 5
    while "avg-art15-inzage" in federation.policy.policy_ids:
        assert time.monotonic() < deadline, "policy change not picked up"
        await asyncio.sleep(0.05)

    status, content_type, body, _ = await fetch(world, token, key)
    assert status == 403
    assert content_type == "application/problem+json"
    problem = orjson.loads(body)
    assert problem["title"] == "Niet toegestaan"
    assert "Het beleid van de Blauwe Knop staat niet toe" in problem["detail"]
    assert "standaard-weigering" in problem["detail"]
    refused = (await events(world, "beleid.besluit"))[-1]["data"]["besluiten"]
    assert {d["besluit"] for d in refused} == {"geweigerd"}
    assert not await events(world, "bundel.uitgegeven")

    # A broken policy edit keeps the last good set rather than denying or allowing everything.
    cedar.write_text("permit (principal, action, resource")
    await asyncio.sleep(0.3)
    assert "wgs-schuldhulp-intake" in federation.policy.policy_ids


async def test_rate_limit_per_citizen_answers_429_in_dutch(world: PortalStack) -> None:
    token, key = await token_for(world, world.other, purpose_id="inzage-avg")
    for _ in range(2):
        status, _, body, _ = await fetch(world, token, key)
        assert status == 200, body
    status, content_type, body, headers = await fetch(world, token, key)
    assert status == 429
    assert content_type == "application/problem+json"
    assert headers["Retry-After"] == "60"
    assert "Probeer het over een minuut opnieuw" in orjson.loads(body)["detail"]


async def test_consent_offers_only_the_citizens_own_municipality(
    tmp_path: Path, pki: DevPki
) -> None:
    from connectors._sandbox.runner import serve_app
    from connectors.brp.sandbox import create_app as create_brp
    from connectors.gemeente.sandbox import create_app as create_gemeente
    from gateway.federation.client import approval_request, jwks_for, organisation_request, send
    from gateway.federation.keys import development_admin_key

    state = fresh_state(tmp_path, pki)
    brp, brp_port = await serve_app(create_brp(pki))
    rotterdam, rotterdam_port = await serve_app(create_gemeente(pki, gemeentecode="0599"))
    world = await start_portal_stack(
        state,
        pki,
        tmp_path / "policies",
        federation={"poll_seconds": 0.1, "brp_url": f"http://127.0.0.1:{brp_port}"},
    )
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        entry = {
            "oin": "00000001059900000000",
            "code": "gm0599",
            "gemeentecode": "0599",
            "naam": "Gemeente Rotterdam",
            "connector": "gemeente",
            "url": f"http://127.0.0.1:{rotterdam_port}",
            "jwks": jwks_for(key),
            "x509": pki.identity("gemeente-sign").cert.read_text(),
            "categorieen": ["financiele-zaken", "inkomen"],
        }
        status, body = await send(
            world.session, world.url, organisation_request(key, "aanmelden", entry)
        )
        assert status == 200, body
        admin, _ = development_admin_key(state)
        status, body = await send(
            world.session, world.url, approval_request(admin, str(entry["oin"]), 1)
        )
        assert status == 200, body
        federation = world.stack.app[FEDERATION]
        deadline = time.monotonic() + 5
        while "gm0599" not in federation.members:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        for bsn, own, other in (
            ("999990020", "gm0363", "gm0599"),
            ("999990007", "gm0599", "gm0363"),
        ):
            token, dpop_key = await token_for(
                world, world.other, bsn=bsn, purpose_id="schuldhulp-intake"
            )
            consent = (await events(world, "toestemming.gegeven"))[-1]["data"]
            assert own in consent["organisaties"]
            assert other not in consent["organisaties"]
            status, _, raw, _ = await fetch(world, token, dpop_key)
            assert status == 200, raw
            codes = {b["organisatie"]["code"] for b in orjson.loads(raw)["bundel"]["bronnen"]}
            assert own in codes
            assert other not in codes
    finally:
        await stop_portal_stack(world)
        await brp.cleanup()
        await rotterdam.cleanup()
