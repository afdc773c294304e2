"""Federation end to end: organisations register, are approved and appear in bundles; safety.

Real sockets throughout: the gateway, the built-in sandboxes, the SVB sandbox (which implements
the generic provider API and has no code in the gateway), municipality sandboxes and the BRP.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from connectors._sandbox.runner import RunningSandbox, serve_app, start_sandbox
from connectors.brp.sandbox import create_app as create_brp
from connectors.gemeente.sandbox import create_app as create_gemeente
from connectors.svb.sandbox import jwks as svb_jwks
from gateway.app import AUDIT
from gateway.federation.client import approval_request, jwks_for, organisation_request, send
from gateway.federation.keys import development_admin_key
from gateway.federation.registry import Rules, parse_entry
from gateway.federation.safety import GuardedResolver, UnsafeAddress, check_url
from gateway.pki import DevPki
from tests.conftest import Stack, fresh_state, start_stack

SVB_OIN = "00000001001000000000"
EVERYWHERE = "999990020"


def svb_entry(url: str, pki: DevPki, **extra: Any) -> dict[str, Any]:
    return {
        "oin": SVB_OIN,
        "code": "svb",
        "naam": "Sociale Verzekeringsbank",
        "connector": "generic",
        "url": url,
        "jwks": svb_jwks(pki),
        "categorieen": ["financiele-zaken", "inkomen", "contactgegevens"],
        "contactopties": [
            {"contactvorm": "telefoon", "waarde": "030 264 90 00", "omschrijving": "SVB"}
        ],
        **extra,
    }


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll a condition briefly (the gateway polls its store every 0.1 s in these tests)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def statuses(bundle: dict[str, Any]) -> dict[str, str]:
    return {b["organisatie"]["code"]: b["status"] for b in bundle["bundel"]["bronnen"]}


async def audit_events(stack: Stack, name: str) -> list[dict[str, Any]]:
    records = await stack.app[AUDIT].store.unsent(1_000_000)
    events = [orjson.loads(r.payload) for r in records]
    return [e["data"] for e in events if e["type"] == f"nl.blauweknop.audit.{name}.v1"]


@pytest.fixture
async def fed(tmp_path: Path, pki: DevPki) -> AsyncIterator[tuple[Stack, RunningSandbox, Path]]:
    """A gateway with its own state (so registrations don't leak between tests) and the SVB."""
    state = fresh_state(tmp_path, pki)
    stack, runners = await start_stack(state, pki, federation={"poll_seconds": 0.1})
    svb = await start_sandbox("svb", pki)
    yield stack, svb, state
    await stack.session.close()
    for runner in [*runners, svb.runner]:
        await runner.cleanup()


async def register_and_approve(
    stack: Stack, state: Path, key: ec.EllipticCurvePrivateKey, entry: dict[str, Any]
) -> None:
    status, body = await send(
        stack.session, stack.url, organisation_request(key, "aanmelden", entry)
    )
    assert status == 200, body
    assert body["status"] == "aangemeld"
    admin, _ = development_admin_key(state)
    status, body = await send(
        stack.session, stack.url, approval_request(admin, entry["oin"], body["versie"])
    )
    assert status == 200, body
    assert body["status"] == "goedgekeurd"


async def test_svb_joins_end_to_end_with_no_gateway_code(
    fed: tuple[Stack, RunningSandbox, Path], pki: DevPki
) -> None:
    stack, svb, state = fed
    from connectors.svb.sandbox import signing_key

    key = signing_key(pki)
    entry = svb_entry(svb.url, pki)
    status, body = await send(
        stack.session, stack.url, organisation_request(key, "aanmelden", entry)
    )
    assert (status, body["status"], body["versie"]) == (200, "aangemeld", 1)
    await asyncio.sleep(0.3)  # several polls: a registered but unapproved entry is never asked
    assert "svb" not in statuses(await stack.bundle(EVERYWHERE))

    admin, _ = development_admin_key(state)
    # An approval signed by the organisation itself is not an administrator's approval.
    status, body = await send(stack.session, stack.url, approval_request(key, SVB_OIN, 1))
    assert status == 401, body
    status, body = await send(stack.session, stack.url, approval_request(admin, SVB_OIN, 1))
    assert (status, body["status"]) == (200, "goedgekeurd")

    async def svb_in_bundle() -> bool:
        return statuses(await stack.bundle(EVERYWHERE)).get("svb") == "ok"

    await eventually(svb_in_bundle)
    bundle = await stack.bundle(EVERYWHERE)
    bron = next(b for b in bundle["bundel"]["bronnen"] if b["organisatie"]["code"] == "svb")
    assert bron["gegevens"]["financiele_zaken"][0]["saldo"] == 21250
    assert bron["gegevens"]["inkomsten"][0]["inkomenstype"] == "svb_kinderbijslag"
    assert bron["herkomst"]["handtekening"] == "jws"
    assert bron["contactopties"][0]["waarde"] == "030 264 90 00"
    assert statuses(await stack.bundle("999990007"))["svb"] == "geen_gegevens"

    changes = await audit_events(stack, "registratie.gewijzigd")
    assert [(c["actie"], c["status"], c["versie"]) for c in changes] == [
        ("aanmelden", "aangemeld", 1),
        ("goedkeuren", "goedgekeurd", 2),
    ]
    async with stack.session.get(f"{stack.url}/v1/federatie/organisaties/{SVB_OIN}") as r:
        history = await r.json()
    assert [v["status"] for v in history["versies"]] == ["aangemeld", "goedgekeurd"]


async def test_update_with_wrong_key_refused_and_right_key_takes_effect_live(
    fed: tuple[Stack, RunningSandbox, Path], pki: DevPki
) -> None:
    stack, svb, state = fed
    from connectors.svb.sandbox import signing_key

    key = signing_key(pki)
    await register_and_approve(stack, state, key, svb_entry(svb.url, pki))
    changed = svb_entry(
        svb.url,
        pki,
        contactopties=[
            {"contactvorm": "website", "waarde": "https://www.svb.nl/", "omschrijving": "Nieuw"}
        ],
    )
    intruder = ec.generate_private_key(ec.SECP256R1())
    # The intruder signs with its own key and even lists it in the entry: still refused.
    forged = dict(changed, jwks=jwks_for(intruder))
    status, body = await send(
        stack.session, stack.url, organisation_request(intruder, "wijzigen", forged)
    )
    assert status == 401, body
    assert "not a registered key" in body["detail"]

    token = organisation_request(key, "wijzigen", changed, versie=2)
    status, body = await send(stack.session, stack.url, token)
    assert (status, body["versie"], body["status"]) == (200, 3, "goedgekeurd")
    status, body = await send(stack.session, stack.url, token)
    assert status == 409
    assert "replayed" in body["detail"]

    async def new_contact() -> bool:
        bundle = await stack.bundle(EVERYWHERE)
        bron = [b for b in bundle["bundel"]["bronnen"] if b["organisatie"]["code"] == "svb"]
        return bool(bron) and bron[0]["contactopties"][0]["waarde"] == "https://www.svb.nl/"

    await eventually(new_contact)
    changes = await audit_events(stack, "registratie.gewijzigd")
    assert [c["actie"] for c in changes] == ["aanmelden", "goedkeuren", "wijzigen"]


async def test_registration_strictness(
    fed: tuple[Stack, RunningSandbox, Path], pki: DevPki
) -> None:
    stack, svb, _ = fed
    key = ec.generate_private_key(ec.SECP256R1())
    entry = svb_entry(svb.url, pki, jwks=jwks_for(key))
    bad = {
        "code": dict(entry, code="gm0363"),
        "unknown field": dict(entry, opties={"client_secret_file": "/etc/passwd"}),
        "category": dict(entry, categorieen=["alles"]),
        "connector": dict(entry, connector="cak"),
        "scheme": dict(entry, url="ftp://svb.example"),
    }
    for name, data in bad.items():
        status, body = await send(
            stack.session, stack.url, organisation_request(key, "aanmelden", data)
        )
        assert status == 400, (name, body)
    # Signed by a key that is not in the submitted entry: no proof of possession.
    other = ec.generate_private_key(ec.SECP256R1())
    status, _ = await send(
        stack.session, stack.url, organisation_request(other, "aanmelden", entry)
    )
    assert status == 401
    async with stack.session.post(
        f"{stack.url}/v1/federatie/verzoeken",
        data=b"x" * 70_000,
        headers={"Content-Type": "application/jwt"},
    ) as response:
        assert response.status == 413
        assert response.content_type == "application/problem+json"


def test_production_rules_refuse_internal_addresses() -> None:
    rules = Rules(frozenset({"inkomen"}), frozenset({"generic"}), sandbox=False)
    for url in (
        "http://svb.example",
        "https://127.0.0.1",
        "https://10.1.2.3:8443",
        "https://169.254.169.254/latest",
        "https://[::1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://localhost",
        "https://user:pw@svb.example",
    ):
        with pytest.raises(UnsafeAddress):
            check_url(url, sandbox=False)
        with pytest.raises(ValueError, match="url"):
            parse_entry(
                {
                    "oin": SVB_OIN,
                    "code": "svb",
                    "naam": "SVB",
                    "url": url,
                    "jwks": jwks_for(ec.generate_private_key(ec.SECP256R1())),
                    "categorieen": ["inkomen"],
                },
                rules,
            )
    assert check_url("https://api.svb.example/", sandbox=False) == "https://api.svb.example"


async def test_resolver_refuses_names_that_resolve_to_internal_addresses() -> None:
    """DNS rebinding: a name is checked each time it is resolved, not only at registration."""
    guarded = GuardedResolver()
    with pytest.raises(OSError, match="non-public"):
        await guarded.resolve("localhost", 443)
    sandbox = GuardedResolver(allow_private=True)
    assert (await sandbox.resolve("localhost", 443))[0]["host"] in ("127.0.0.1", "::1")
    await guarded.close()
    await sandbox.close()


MUNICIPALITIES = {
    "0599": "Rotterdam",
    "0344": "Utrecht",
    "0518": "'s-Gravenhage",
    "0014": "Groningen",
    "0034": "Almere",
    "0772": "Eindhoven",
    "0855": "Tilburg",
    "0758": "Breda",
    "0193": "Zwolle",
    "0200": "Apeldoorn",
    "0268": "Nijmegen",
    "0392": "Haarlem",
    "0402": "Hilversum",
    "0439": "Purmerend",
    "0453": "Velsen",
    "0505": "Dordrecht",
    "0546": "Leiden",
    "0603": "Rijswijk",
    "0637": "Zoetermeer",
    "0935": "Maastricht",
}


async def test_25_organisations_and_each_citizen_reaches_only_their_municipality(
    tmp_path: Path, pki: DevPki
) -> None:
    state = fresh_state(tmp_path, pki)
    brp_runner, brp_port = await serve_app(create_brp(pki))
    stack, runners = await start_stack(
        state,
        pki,
        federation={"poll_seconds": 0.1, "brp_url": f"http://127.0.0.1:{brp_port}"},
    )
    svb = await start_sandbox("svb", pki)
    gemeenten = []
    try:
        from connectors.svb.sandbox import signing_key

        await register_and_approve(stack, state, signing_key(pki), svb_entry(svb.url, pki))
        cert = pki.identity("gemeente-sign").cert.read_text()
        for i, (code, naam) in enumerate(MUNICIPALITIES.items()):
            runner, port = await serve_app(create_gemeente(pki, gemeentecode=code))
            gemeenten.append(runner)
            key = ec.generate_private_key(ec.SECP256R1())
            entry = {
                "oin": f"00000001{code}{i:04d}0000",
                "code": f"gm{code}",
                "gemeentecode": code,
                "naam": f"Gemeente {naam}",
                "connector": "gemeente",
                "url": f"http://127.0.0.1:{port}",
                "jwks": jwks_for(key),
                "x509": cert,
                "categorieen": ["financiele-zaken", "inkomen", "betalingsregelingen"],
                "contactopties": [
                    {"contactvorm": "telefoon", "waarde": "14 0" + code[-2:], "omschrijving": naam}
                ],
            }
            await register_and_approve(stack, state, key, entry)

        async with stack.session.get(f"{stack.url}/v1/federatie/organisaties") as response:
            listing = await response.json()
        assert len(listing["organisaties"]) == 21

        async def all_active() -> bool:
            async with stack.session.get(f"{stack.url}/v1/federatie/organisaties") as r:
                return len((await r.json())["actief"]) >= 25

        await eventually(all_active)

        amsterdam = statuses(await stack.bundle(EVERYWHERE))
        assert amsterdam == {"duo": "ok", "uwv": "ok", "cak": "ok", "gm0363": "ok", "svb": "ok"}
        rotterdam = statuses(await stack.bundle("999990007"))
        assert set(rotterdam) == {"duo", "uwv", "cak", "svb", "gm0599"}
        assert rotterdam["gm0599"] == "geen_gegevens"
        groningen = statuses(await stack.bundle("999990081"))
        assert "gm0014" in groningen
        assert "gm0363" not in groningen
    finally:
        await stack.session.close()
        for runner in [*runners, svb.runner, brp_runner, *gemeenten]:
            await runner.cleanup()


async def test_a_second_replica_on_the_same_store_picks_up_the_change(
    fed: tuple[Stack, RunningSandbox, Path], pki: DevPki
) -> None:
    from connectors.svb.sandbox import signing_key
    from gateway.app import create_app

    stack, svb, state = fed
    replica, port = await serve_app(create_app(stack.settings))
    try:
        other = f"http://127.0.0.1:{port}"
        await register_and_approve(stack, state, signing_key(pki), svb_entry(svb.url, pki))

        async def svb_at_replica() -> bool:
            async with stack.session.post(
                f"{other}/v1/sandbox/bundel", json={"bsn": EVERYWHERE}
            ) as response:
                return statuses(await response.json()).get("svb") == "ok"

        await eventually(svb_at_replica)
    finally:
        await replica.cleanup()


async def test_calls_to_registered_organisations_check_the_resolved_address_each_time(
    pki: DevPki, session: aiohttp.ClientSession
) -> None:
    """A registered municipality whose name resolves to loopback: refused outside sandbox mode,
    at the connection itself, even though the built-in connector uses the shared session."""
    from connectors.gemeente import create as create_gemeente_connector
    from gateway.connector import ConnectorSettings, FetchRequest
    from gateway.errors import SourceUnreachable
    from gateway.federation.safety import GuardedConnector, check_resolves
    from gateway.models import Organisatie

    runner, port = await serve_app(create_gemeente(pki, gemeentecode="0599"))
    try:
        settings = ConnectorSettings(
            organisatie=Organisatie("00000001059900000000", "gm0599", "Gemeente Rotterdam"),
            base_url=f"http://localhost:{port}",
            trust_cert=pki.identity("gemeente-sign").cert,
            options={"gemeentecode": "0599"},
        )
        request = FetchRequest("999990007", "tx-guard-test", session)
        guarded = GuardedConnector(create_gemeente_connector(settings), allow_private=False)
        with pytest.raises(SourceUnreachable):
            await guarded.fetch(request)
        sandbox = GuardedConnector(create_gemeente_connector(settings), allow_private=True)
        assert (await sandbox.fetch(request)).gegevens.is_empty
        await guarded.aclose()
        await sandbox.aclose()
        with pytest.raises(UnsafeAddress):
            await check_resolves(f"https://localhost:{port}")
    finally:
        await runner.cleanup()


async def test_changing_who_an_organisation_is_needs_approval_again(
    fed: tuple[Stack, RunningSandbox, Path], pki: DevPki
) -> None:
    from connectors.svb.sandbox import signing_key

    stack, svb, state = fed
    key = signing_key(pki)
    await register_and_approve(stack, state, key, svb_entry(svb.url, pki))
    # Renaming itself "cjib" would give the SVB the CJIB's place in the policies.
    token = organisation_request(key, "wijzigen", svb_entry(svb.url, pki, code="cjib"), versie=2)
    status, body = await send(stack.session, stack.url, token)
    assert (status, body["status"], body["versie"]) == (200, "aangemeld", 3)

    async def gone() -> bool:
        codes = statuses(await stack.bundle(EVERYWHERE))
        return "svb" not in codes and "cjib" not in codes

    await eventually(gone)


async def run_cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("blauweknop")),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def test_org_commands_register_approve_update_and_list(
    fed: tuple[Stack, RunningSandbox, Path], pki: DevPki, tmp_path: Path
) -> None:
    stack, svb, state = fed
    entry_file = tmp_path / "svb.json"
    entry_file.write_bytes(orjson.dumps(svb_entry(svb.url, pki)))
    key_file = pki.directory / "svb-sign.es256.key.pem"
    code, out = await run_cli(
        "org", "register", str(entry_file), "--key", str(key_file), "--gateway", stack.url
    )
    assert code == 0, out
    assert '"status": "aangemeld"' in out
    admin_key = state / "federation" / "admin.key.pem"
    code, out = await run_cli(
        "org",
        "approve",
        SVB_OIN,
        "--versie",
        "2",
        "--admin-key",
        str(admin_key),
        "--gateway",
        stack.url,
    )
    assert code == 1, out  # not the version that was reviewed
    assert "approve the version you reviewed" in out
    code, out = await run_cli(
        "org",
        "approve",
        SVB_OIN,
        "--versie",
        "1",
        "--admin-key",
        str(admin_key),
        "--gateway",
        stack.url,
    )
    assert code == 0, out
    code, out = await run_cli("org", "list", "--gateway", stack.url)
    assert code == 0, out
    assert "svb" in out
    assert "goedgekeurd" in out
