"""Registry requests over mTLS: the organisation's client certificate instead of a signature.

Real TLS sockets: the gateway's `[federation] mtls_port` listener checks that the client
certificate chains to the configured federation root (the handshake), then that it chains to
the organisation's own registered X.509 anchor and names its OIN (the registry).
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from connectors._sandbox.runner import RunningSandbox, start_sandbox
from connectors.svb.sandbox import signing_key
from gateway.federation.api import FEDERATION
from gateway.federation.client import (
    approval_request,
    mtls_context,
    organisation_request,
    send,
    send_mtls,
)
from gateway.federation.keys import development_admin_key
from gateway.pki import DevPki
from tests.conftest import Stack, fresh_state, start_stack
from tests.federation_pki import Issued, issue, root
from tests.test_federation import (
    EVERYWHERE,
    SVB_OIN,
    audit_events,
    eventually,
    statuses,
    svb_entry,
)

OTHER_OIN = "00000001002000000000"


@dataclass(frozen=True, slots=True)
class World:
    stack: Stack
    svb: RunningSandbox
    state: Path
    pki: DevPki
    root: Issued
    svb_ca: Issued
    tsp_ca: Issued
    files: Path

    @property
    def mtls_url(self) -> str:
        url = self.stack.app[FEDERATION].mtls_url
        assert url is not None
        return url

    def client(self, name: str, leaf: Issued, *chain: Issued) -> ssl.SSLContext:
        cert, key = leaf.write(self.files, name, *chain)
        return mtls_context(cert, key, self.pki.root_cert)

    def entry(self, **extra: Any) -> dict[str, Any]:
        return svb_entry(self.svb.url, self.pki, x509=self.svb_ca.pem, **extra)

    async def send(self, context: ssl.SSLContext, request: dict[str, Any]) -> tuple[int, Any]:
        return await send_mtls(self.stack.session, self.mtls_url, request, context)

    async def version(self) -> int:
        async with self.stack.session.get(
            f"{self.stack.url}/v1/federatie/organisaties/{SVB_OIN}"
        ) as response:
            return int((await response.json())["versies"][-1]["versie"])


@pytest.fixture
async def world(tmp_path: Path, pki: DevPki) -> AsyncIterator[World]:
    federation_root = root()
    # A trust service provider's issuing CA, configured beside the root (as the PKIoverheid
    # intermediates would be).
    tsp_ca = issue("TSP organisatie CA", federation_root, use="ca")
    files = tmp_path / "certs"
    files.mkdir()
    root_file = files / "federation-root.pem"
    root_file.write_text(federation_root.pem + tsp_ca.pem)
    state = fresh_state(tmp_path, pki)
    stack, runners = await start_stack(
        state,
        pki,
        federation={"poll_seconds": 0.1, "mtls_port": 0, "mtls_client_ca": str(root_file)},
    )
    svb = await start_sandbox("svb", pki)
    svb_ca = issue("SVB CA", federation_root, use="ca")
    yield World(stack, svb, state, pki, federation_root, svb_ca, tsp_ca, files)
    await stack.session.close()
    for runner in [*runners, svb.runner]:
        await runner.cleanup()


async def test_the_right_certificate_registers_updates_and_withdraws(world: World) -> None:
    leaf = issue("SVB", world.svb_ca, use="tls-client", oin=SVB_OIN)
    context = world.client("svb", leaf, world.svb_ca)
    status, body = await world.send(
        context, {"actie": "aanmelden", "oin": SVB_OIN, "inschrijving": world.entry()}
    )
    assert (status, body["status"], body["versie"]) == (200, "aangemeld", 1), body
    admin, _ = development_admin_key(world.state)
    status, body = await send(
        world.stack.session, world.stack.url, approval_request(admin, SVB_OIN, 1)
    )
    assert status == 200, body

    changed = world.entry(
        contactopties=[{"contactvorm": "website", "waarde": "https://svb.nl/", "omschrijving": "W"}]
    )
    request = {"actie": "wijzigen", "oin": SVB_OIN, "inschrijving": changed, "versie": 2}
    status, body = await world.send(context, request)
    assert (status, body["versie"], body["status"]) == (200, 3, "goedgekeurd"), body

    async def new_contact() -> bool:
        bundle = await world.stack.bundle(EVERYWHERE)
        svb = [b for b in bundle["bundel"]["bronnen"] if b["organisatie"]["code"] == "svb"]
        return bool(svb) and svb[0]["contactopties"][0]["waarde"] == "https://svb.nl/"

    await eventually(new_contact)

    status, body = await world.send(
        context, {"actie": "intrekken", "oin": SVB_OIN, "reden": "Stopt met de Blauwe Knop"}
    )
    assert (status, body["status"]) == (200, "ingetrokken"), body

    async def gone() -> bool:
        return "svb" not in statuses(await world.stack.bundle(EVERYWHERE))

    await eventually(gone)
    changes = await audit_events(world.stack, "registratie.gewijzigd")
    assert [(c["actie"], c["methode"]) for c in changes] == [
        ("aanmelden", "mtls"),
        ("goedkeuren", "private_key_jwt"),
        ("wijzigen", "mtls"),
        ("intrekken", "mtls"),
    ]
    assert changes[-1]["sleutel_id"].startswith("x5t#S256:")
    assert changes[-1]["door"] == SVB_OIN
    assert changes[-1]["reden"] == "Stopt met de Blauwe Knop"


async def registered(world: World) -> None:
    key = signing_key(world.pki)
    status, body = await send(
        world.stack.session,
        world.stack.url,
        organisation_request(key, "aanmelden", world.entry()),
    )
    assert status == 200, body


async def test_a_certificate_for_another_oin_or_another_anchor_is_refused(world: World) -> None:
    await registered(world)
    change = {"actie": "wijzigen", "oin": SVB_OIN, "inschrijving": world.entry(naam="SVB!")}
    other_oin = issue("Someone else", world.svb_ca, use="tls-client", oin=OTHER_OIN)
    status, body = await world.send(world.client("other", other_oin, world.svb_ca), change)
    assert status == 403, body
    assert f"for OIN {OTHER_OIN}, not {SVB_OIN}" in body["detail"]
    # Chained to the federation root (the handshake passes) but not to the SVB's own anchor.
    elsewhere_ca = issue("Another organisation's CA", world.root, use="ca")
    elsewhere = issue("SVB?", elsewhere_ca, use="tls-client", oin=SVB_OIN)
    status, body = await world.send(world.client("elsewhere", elsewhere, elsewhere_ca), change)
    assert status == 403, body
    assert "does not chain to a registered anchor" in body["detail"]
    # Administrator actions are never taken on a certificate.
    leaf = issue("SVB", world.svb_ca, use="tls-client", oin=SVB_OIN)
    right = world.client("svb", leaf, world.svb_ca)
    status, body = await world.send(right, {"actie": "goedkeuren", "oin": SVB_OIN, "versie": 1})
    assert status == 403, body
    assert await world.version() == 1


async def test_self_signed_and_expired_certificates_fail_the_handshake(world: World) -> None:
    await registered(world)
    change = {"actie": "intrekken", "oin": SVB_OIN}
    self_signed = issue("SVB (self-signed)", None, use="tls-client", oin=SVB_OIN)
    now = dt.datetime.now(dt.UTC)
    expired = issue(
        "SVB (expired)",
        world.svb_ca,
        use="tls-client",
        oin=SVB_OIN,
        valid_from=now - dt.timedelta(days=30),
        valid_until=now - dt.timedelta(minutes=1),
    )
    for name, leaf, chain in (
        ("self-signed", self_signed, ()),
        ("expired", expired, (world.svb_ca,)),
    ):
        with pytest.raises(aiohttp.ClientError):
            await world.send(world.client(name, leaf, *chain), change)
    assert await world.version() == 1


async def test_plain_json_without_a_client_certificate_is_refused(world: World) -> None:
    await registered(world)
    change = {"actie": "intrekken", "oin": SVB_OIN}
    # Over TLS without a certificate, and on the plain listener: a 401 that says what to do.
    context = ssl.create_default_context(cafile=str(world.pki.root_cert))
    for url, ctx in ((world.mtls_url, context), (world.stack.url, None)):
        async with world.stack.session.post(
            f"{url}/v1/federatie/verzoeken", json=change, ssl=ctx if ctx else True
        ) as response:
            assert response.status == 401
            assert "mtls_port" in (await response.json())["detail"]
    assert await world.version() == 1


async def test_an_entry_without_x509_anchors_cannot_be_changed_over_mtls(
    world: World, pki: DevPki
) -> None:
    key = signing_key(pki)
    entry = svb_entry(world.svb.url, pki)
    status, body = await send(
        world.stack.session, world.stack.url, organisation_request(key, "aanmelden", entry)
    )
    assert status == 200, body
    leaf = issue("SVB", world.svb_ca, use="tls-client", oin=SVB_OIN)
    status, body = await world.send(
        world.client("svb", leaf, world.svb_ca), {"actie": "intrekken", "oin": SVB_OIN}
    )
    assert status == 403, body
    assert "no registered X.509 trust anchor" in body["detail"]


async def test_an_anchor_above_the_issuing_ca_is_reached_through_the_configured_cas(
    world: World, pki: DevPki
) -> None:
    """The organisation registered the root; its certificate comes from a configured TSP CA."""
    key = signing_key(pki)
    entry = svb_entry(world.svb.url, pki, x509=world.root.pem)
    token = organisation_request(key, "aanmelden", entry)
    status, body = await send(world.stack.session, world.stack.url, token)
    assert status == 200, body
    leaf = issue("SVB", world.tsp_ca, use="tls-client", oin=SVB_OIN)
    request = {"actie": "wijzigen", "oin": SVB_OIN, "inschrijving": dict(entry, naam="SVB")}
    status, body = await world.send(world.client("svb", leaf), request)
    assert (status, body["versie"]) == (200, 2), body
    # Under the same root and TSP, another organisation's certificate still names its own OIN.
    other = issue("Someone else", world.tsp_ca, use="tls-client", oin=OTHER_OIN)
    status, body = await world.send(world.client("other", other), request)
    assert status == 403, body


def test_production_needs_the_listener_certificate_and_the_client_ca(
    pki: DevPki, tmp_path: Path
) -> None:
    from gateway.config import settings_from_mapping
    from gateway.errors import ConfigError
    from tests.production import production_config

    config = production_config(pki, tmp_path)
    config["federation"] = {"mtls_port": 8443, "mtls_cert": str(pki.root_cert)}
    with pytest.raises(ConfigError, match="mtls_key, mtls_client_ca"):
        settings_from_mapping(config)
    identity = pki.identity("gateway-client")
    config["federation"] |= {"mtls_key": str(identity.key), "mtls_client_ca": str(pki.root_cert)}
    assert settings_from_mapping(config).federation.mtls_port == 8443


async def test_registering_over_mtls_needs_a_certificate_that_names_the_oin(
    world: World,
) -> None:
    """A certificate without an OIN cannot register an OIN by pinning itself as the anchor."""
    anonymous = issue("Anyone", world.root, use="tls-client")
    entry = svb_entry(world.svb.url, world.pki, x509=anonymous.pem)
    request = {"actie": "aanmelden", "oin": SVB_OIN, "inschrijving": entry}
    status, body = await world.send(world.client("anyone", anonymous), request)
    assert status == 403, body
    assert "names no OIN" in body["detail"]


async def test_org_commands_send_over_mtls_with_cert(world: World) -> None:
    import orjson

    from tests.test_federation import run_cli

    await registered(world)
    leaf = issue("SVB", world.svb_ca, use="tls-client", oin=SVB_OIN)
    cert, key = leaf.write(world.files, "svb-cli", world.svb_ca)
    entry_file = world.files / "svb.json"
    entry_file.write_bytes(orjson.dumps(world.entry(naam="SVB (via mTLS)")))
    tls = ("--cert", str(cert), "--cert-key", str(key), "--ca", str(world.pki.root_cert))
    code, out = await run_cli(
        "org", "update", str(entry_file), *tls, "--versie", "1", "--gateway", world.mtls_url
    )
    assert code == 0, out
    assert '"versie": 2' in out
    code, out = await run_cli("org", "withdraw", SVB_OIN, *tls, "--gateway", world.mtls_url)
    assert code == 0, out
    assert '"status": "ingetrokken"' in out
    changes = await audit_events(world.stack, "registratie.gewijzigd")
    assert [(c["actie"], c["methode"]) for c in changes][1:] == [
        ("wijzigen", "mtls"),
        ("intrekken", "mtls"),
    ]
