"""The gateway against the four organisation sandboxes, over real sockets, nothing mocked."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from connectors._sandbox import CITIZENS
from connectors._sandbox.runner import serve_app
from gateway.app import create_app
from gateway.audit.archive import write_key_pair
from gateway.config import connector_factory, sandbox_organisation_table, settings_from_mapping
from gateway.errors import ConfigError
from gateway.logs import JsonFormatter
from gateway.pki import DevPki
from gateway.verify import Trust, verify_compact, verify_download
from tests.conftest import Stack, start_stack
from tests.production import production_config

ORGS = {"duo": "duo", "uwv": "uwv", "cak": "cak", "gemeente": "gm0363"}
EVERYWHERE = "999990020"  # Citlali Bakker: data at all four organisations


async def trust(stack: Stack) -> Trust:
    async with stack.session.get(f"{stack.url}/.well-known/jwks.json") as response:
        jwks = orjson.loads(await response.read())
    connectors = {
        o.settings.organisatie.code: connector_factory(o.connector)(o.settings)
        for o in stack.settings.organisations
    }
    return Trust.from_jwks(jwks, connectors)


def statuses(outer: dict[str, object]) -> dict[str, str]:
    bundel = outer["bundel"]
    assert isinstance(bundel, dict)
    return {b["organisatie"]["code"]: b["status"] for b in bundel["bronnen"]}


@pytest.mark.parametrize("citizen", CITIZENS, ids=lambda c: f"{c.bsn}-{c.naam.split()[0]}")
async def test_every_citizen_gets_a_signed_verifiable_bundle(stack: Stack, citizen: object) -> None:
    from connectors._sandbox import TestCitizen

    assert isinstance(citizen, TestCitizen)
    outer = await stack.bundle(citizen.bsn)
    expected = {
        code: "ok" if org in citizen.holders else "geen_gegevens" for org, code in ORGS.items()
    }
    assert statuses(outer) == expected
    verdict = verify_download(orjson.dumps(outer), await trust(stack))
    assert verdict.document["bsn"] == citizen.bsn
    # Every source's own signature re-verifies and re-derives exactly the data in the bundle.
    assert {s.code: s.provenance for s in verdict.sources} == {c: "verified" for c in ORGS.values()}
    for bron in verdict.document["bronnen"]:
        assert bron["contactopties"], "the citizen can always contact the organisation"


async def test_large_history_citizen_has_over_500_events(stack: Stack) -> None:
    outer = await stack.bundle("999990068")
    events = sum(
        len(zaak["gebeurtenissen"])
        for bron in outer["bundel"]["bronnen"]
        for zaak in bron["gegevens"]["financiele_zaken"]
    )
    assert events >= 500


FAULTS = [
    ({"latency_ms": 5000}, "time-out"),
    ({"hang": True}, "time-out"),
    ({"error_rate": 1.0}, "onbereikbaar"),
    ({"malformed": True}, "ongeldig"),
    ({"oversized": True}, "ongeldig"),
    ({"wrong_signature": True}, "ongeldig"),
]


@pytest.mark.parametrize("org", list(ORGS))
@pytest.mark.parametrize(("knobs", "expected"), FAULTS, ids=lambda v: str(v))
async def test_fault_at_one_organisation_leaves_the_others_intact(
    stack: Stack, org: str, knobs: dict[str, object], expected: str
) -> None:
    await stack.set_faults(org, **knobs)
    started = time.monotonic()
    outer = await stack.bundle(EVERYWHERE)
    elapsed = time.monotonic() - started
    assert elapsed < stack.settings.deadline_seconds + 1.0, "the deadline bounds every fault"
    want = {code: "ok" for code in ORGS.values()} | {ORGS[org]: expected}
    assert statuses(outer) == want
    verdict = verify_download(orjson.dumps(outer), await trust(stack))
    broken = next(b for b in verdict.document["bronnen"] if b["organisatie"]["code"] == ORGS[org])
    assert broken["herkomst"] is None
    assert broken["toelichting"]
    assert broken["gegevens"] == {
        "financiele_zaken": [],
        "inkomsten": [],
        "betalingsregelingen": [],
    }


async def test_fanout_is_concurrent(stack: Stack) -> None:
    for org in ORGS:
        await stack.set_faults(org, latency_ms=200)
    await stack.bundle(EVERYWHERE)  # warm connections and the CAK token
    started = time.monotonic()
    outer = await stack.bundle(EVERYWHERE)
    elapsed = time.monotonic() - started
    assert set(statuses(outer).values()) == {"ok"}
    # Sequential calls would need the sum of the four calls' times (at least 800 ms);
    # concurrent ones about the longest. Relative to the calls' own times, so that a busy
    # machine, which slows each call too, does not make the test fail.
    calls = sum(b["duur_ms"] for b in outer["bundel"]["bronnen"]) / 1000
    assert calls >= 0.8
    assert elapsed < calls / 2, f"took {elapsed:.3f}s for calls taking {calls:.3f}s in all"


async def test_selected_organisations_only(stack: Stack) -> None:
    outer = await stack.bundle(EVERYWHERE, organisaties=["duo", "cak"])
    assert statuses(outer) == {
        "duo": "ok",
        "uwv": "niet_opgevraagd",
        "cak": "ok",
        "gm0363": "niet_opgevraagd",
    }
    verify_download(orjson.dumps(outer), await trust(stack))


async def test_circuit_breaker_stops_calling_a_down_organisation(
    state_dir: Path, pki: DevPki
) -> None:
    stack, runners = await start_stack(state_dir, pki, breaker={"failures": 2, "reset_seconds": 60})
    try:
        await stack.set_faults("cak", error_rate=1.0)
        for _ in range(2):
            assert statuses(await stack.bundle(EVERYWHERE))["cak"] == "onbereikbaar"
        await stack.set_faults("cak")  # CAK is healthy again, but the circuit is open
        assert statuses(await stack.bundle(EVERYWHERE))["cak"] == "onbereikbaar"
        async with stack.session.get(f"{stack.url}/metrics") as response:
            text = await response.text()
        assert 'blauweknop_circuit_open{org="cak"} 1.0' in text
        assert 'blauweknop_circuit_open{org="duo"} 0.0' in text
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()


async def test_compact_jws_by_content_negotiation(stack: Stack) -> None:
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel",
        json={"bsn": EVERYWHERE},
        headers={"Accept": "application/jose"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/jose"
        token = await response.text()
    verdict = verify_compact(token, await trust(stack))
    assert verdict.document["bsn"] == EVERYWHERE


async def test_transaction_id_is_returned_and_sent_to_organisations(stack: Stack) -> None:
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel", json={"bsn": EVERYWHERE}
    ) as response:
        tx = response.headers["X-Transactie-Id"]
        outer = orjson.loads(await response.read())
    assert outer["bundel"]["transactie_id"] == tx
    import base64

    for bron in outer["bundel"]["bronnen"]:
        raw = base64.b64decode(bron["herkomst"]["inhoud"])
        if bron["herkomst"]["handtekening"] == "jws":
            from gateway import jws

            raw = jws.parse(raw)[0].payload
        assert tx.encode() in raw, f"{bron['organisatie']['code']} did not receive {tx}"


@pytest.mark.parametrize(
    "body",
    [
        {"bsn": "123456789"},
        {"bsn": "99999002"},
        {"bsn": 999990020},
        {},
        {"bsn": "999990020", "organisaties": "duo"},
    ],
)
async def test_bad_requests_get_a_problem_and_no_data(
    stack: Stack, body: dict[str, object]
) -> None:
    async with stack.session.post(f"{stack.url}/v1/sandbox/bundel", json=body) as response:
        assert response.status == 400
        assert response.content_type == "application/problem+json"
        problem = orjson.loads(await response.read())
        assert problem["status"] == 400
        assert problem["detail"]


async def test_operations_endpoints(stack: Stack) -> None:
    await stack.bundle(EVERYWHERE)
    async with stack.session.get(f"{stack.url}/metrics") as response:
        text = await response.text()
    for code in ORGS.values():
        assert f'blauweknop_source_request_seconds_count{{org="{code}"}} 1.0' in text
        assert f'blauweknop_source_requests_total{{org="{code}",status="ok"}} 1.0' in text
    for path in ("/healthz", "/readyz"):
        async with stack.session.get(stack.url + path) as response:
            assert response.status == 200
    async with stack.session.get(f"{stack.url}/schema/bundel-v1.schema.json") as response:
        schema = orjson.loads(await response.read())
    assert schema["$id"] == "urn:blauweknop:schema:bundel:1"


async def test_logs_and_metrics_never_show_the_bsn(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await stack.set_faults("uwv", malformed=True)
    await stack.set_faults("cak", error_rate=1.0)
    await stack.bundle(EVERYWHERE)
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    assert any("source failed" in line for line in lines), "the failures were logged"
    assert not any(EVERYWHERE in line for line in lines)
    async with stack.session.get(f"{stack.url}/metrics") as response:
        assert EVERYWHERE not in await response.text()


async def test_production_mode_has_no_sandbox_route(pki: DevPki, tmp_path: Path) -> None:
    seal = pki.identity(pki.seal_names()[-1])
    key_file = tmp_path / "pseudonym.key"
    key_file.write_bytes(b"k" * 32)
    write_key_pair(tmp_path / "archivist.key", tmp_path / "archivist.pub")
    settings = settings_from_mapping(
        {
            "mode": "production",
            "public_url": "https://gateway.example",
            "state_dir": str(tmp_path / "state"),
            "signing": {"key": str(seal.key), "chain": str(seal.chain)},
            "audit": {
                "pseudonym_key_file": str(key_file),
                "archive_public_key_file": str(tmp_path / "archivist.pub"),
            },
            "documents": {"tsa_url": "https://tsa.invalid/", "trust_roots": [str(pki.root_cert)]},
            # Unreachable: the relay retries in the background and never blocks a request.
            "kafka": {"bootstrap_servers": "127.0.0.1:1", "security_protocol": "SSL"},
            "organisations": sandbox_organisation_table(
                pki, {org: f"https://{org}.invalid" for org in ORGS}
            ),
            "oidc": {
                "issuer": "https://digid.invalid",
                "client_key": str(pki.identity("gateway-client").key),
            },
        }
    )
    runner, port = await serve_app(create_app(settings))
    try:
        async with aiohttp.ClientSession() as session:
            for method, path in (("POST", "/v1/sandbox/bundel"), ("GET", "/")):
                async with session.request(
                    method, f"http://127.0.0.1:{port}{path}", json={"bsn": EVERYWHERE}
                ) as response:
                    assert response.status in (404, 405), path
                    assert EVERYWHERE not in await response.text()
            async with session.get(f"http://127.0.0.1:{port}/.well-known/jwks.json") as response:
                assert response.status == 200
    finally:
        await runner.cleanup()


def test_production_refuses_unsafe_configuration(pki: DevPki, tmp_path: Path) -> None:
    valid = production_config(pki, tmp_path)
    assert settings_from_mapping(valid).mode == "production"
    with pytest.raises(ConfigError, match="signing"):
        settings_from_mapping({k: v for k, v in valid.items() if k != "signing"})
    with pytest.raises(ConfigError, match="pseudonym_key_file"):
        settings_from_mapping({**valid, "audit": {"archive_public_key_file": "/a.pub"}})
    with pytest.raises(ConfigError, match="archive_public_key_file"):
        settings_from_mapping({**valid, "audit": {"pseudonym_key_file": "/p.key"}})
    duo = valid["organisations"]["duo"]
    with pytest.raises(ConfigError, match="https"):
        settings_from_mapping(
            {**valid, "organisations": {"duo": {**duo, "url": "http://duo.example"}}}
        )
    with pytest.raises(ConfigError, match="public_url"):
        settings_from_mapping({**valid, "public_url": "http://gateway.example"})
    with pytest.raises(ConfigError, match="tsa_url"):
        settings_from_mapping({**valid, "documents": {}})


async def test_many_concurrent_bundles(stack: Stack) -> None:
    results = await asyncio.gather(*(stack.bundle(c.bsn) for c in CITIZENS for _ in range(3)))
    assert len({r["bundel"]["bundel_id"] for r in results}) == len(results)
