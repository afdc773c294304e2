"""The UWV connector against its sandbox, over real sockets with two-sided TLS."""

from __future__ import annotations

import base64
import dataclasses
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from lxml import etree

from connectors._sandbox import CITIZENS, rogue_identity
from connectors._sandbox.runner import RunningSandbox, serve_app, start_sandbox
from connectors.uwv import CONTACTOPTIES, ORGANISATIE, create
from connectors.uwv.sandbox import server_tls
from connectors.uwv.soap import NS, SERVICE_PATH, SIGNATURE_SHAPE, WSU_ID, q, sign_response
from gateway.connector import (
    Connector,
    ConnectorSettings,
    FetchRequest,
    SourceData,
    certificate_key_id,
    client_tls,
    load_certificate,
)
from gateway.errors import ConfigError, SourceInvalid, SourceTimeout, SourceUnreachable
from gateway.models import FinancieleZaak
from gateway.pki import DevPki
from gateway.xmldsig import sign, signing_key, x509_key_info
from gateway.zaak import build_zaak

TX = "tx-test-1"


def settings_for(pki: DevPki, url: str, **overrides: Any) -> ConnectorSettings:
    client = pki.identity("gateway-client")
    values: dict[str, Any] = {
        "organisatie": ORGANISATIE,
        "base_url": url,
        "trust_cert": pki.identity("uwv-sign").cert,
        "connect_timeout": 1.0,
        "read_timeout": 2.0,
        "client_cert": client.cert,
        "client_key": client.key,
        "ca_cert": pki.root_cert,
    }
    return ConnectorSettings(**(values | overrides))


@pytest.fixture
async def sandbox(pki: DevPki) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox("uwv", pki, port=0)
    yield running
    await running.runner.cleanup()


async def fetch(
    pki: DevPki, url: str, session: aiohttp.ClientSession, bsn: str, **overrides: Any
) -> SourceData:
    return await create(settings_for(pki, url, **overrides)).fetch(FetchRequest(bsn, TX, session))


async def set_faults(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession, **knobs: Any
) -> None:
    tls = client_tls(settings_for(pki, sandbox.url))
    assert tls is not None
    async with session.put(f"{sandbox.url}/_sandbox/faults", json=knobs, ssl=tls) as response:
        assert response.status == 200, await response.text()


def raw_of(data: SourceData) -> bytes:
    return base64.b64decode(data.herkomst.inhoud)


def assert_totals_derived(zaak: FinancieleZaak) -> None:
    rebuilt = build_zaak(
        zaakkenmerk=zaak.zaakkenmerk,
        omschrijving=zaak.omschrijving,
        verplichtingtype=zaak.verplichtingtype,
        juridische_grondslag=zaak.juridische_grondslag,
        gebeurtenissen=zaak.gebeurtenissen,
    )
    assert rebuilt == zaak


@pytest.mark.parametrize("citizen", CITIZENS, ids=lambda c: c.naam)
async def test_every_citizen_signed_and_reverifiable(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession, citizen: Any
) -> None:
    connector = create(settings_for(pki, sandbox.url))
    data = await connector.fetch(FetchRequest(citizen.bsn, TX, session))

    assert data.gegevens.is_empty == ("uwv" not in citizen.holders)
    assert data.herkomst.media_type == "text/xml"
    assert data.herkomst.handtekening == "wss-xmldsig"
    assert data.herkomst.sleutel_id == certificate_key_id(
        load_certificate(pki.identity("uwv-sign").cert)
    )
    # Offline re-verification of the archived bytes gives exactly the same data.
    assert connector.verify(raw_of(data)) == data.gegevens
    for zaak in data.gegevens.financiele_zaken:
        assert_totals_derived(zaak)
    # The transaction id reached UWV: its signed answer echoes it.
    envelope = etree.fromstring(raw_of(data))
    assert envelope.findtext("soap:Header/uwv:TransactieId", None, NS) == TX


async def test_citlali_wages_and_ww(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    gegevens = (await fetch(pki, sandbox.url, session, "999990020")).gegevens
    assert gegevens.financiele_zaken == ()
    by_type = {(i.soort, i.inkomenstype): i for i in gegevens.inkomsten}
    assert len(gegevens.inkomsten) == 3
    ww = by_type["uitkering", "uwv_ww"]
    assert (ww.bedrag_bruto, ww.bedrag_netto, ww.verstrekker) == (221045, 184219, "UWV")
    assert (ww.periode_start, ww.periode_eind) == ("2025-07-01", None)
    loon = next(i for i in gegevens.inkomsten if i.verstrekker.startswith("Kinderopvang"))
    assert (loon.soort, loon.inkomenstype, loon.frequentie) == ("loon", "uwv_loon", "maand")
    assert (loon.bedrag_bruto, loon.bedrag_netto) == (315000, 248731)
    assert loon.periode_eind == "2025-06-30"
    assert loon.kenmerk == "uwv-IKV-2019-5521873"


async def test_daan_recovery_and_fine_with_demands_and_partial_payments(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    gegevens = (await fetch(pki, sandbox.url, session, "999990032")).gegevens
    zaken = {z.verplichtingtype: z for z in gegevens.financiele_zaken}
    assert set(zaken) == {"uwv_terugvordering_ww", "uwv_boete"}

    terug = zaken["uwv_terugvordering_ww"]
    assert terug.juridische_grondslag == "Werkloosheidswet art. 36"
    # 3412.67 corrected to 2987.12 after bezwaar; six termijnen of 75 and one payment of 200.
    assert (terug.totaal_financieel_verplicht, terug.totaal_financieel_vereffend) == (298712, 65000)
    assert terug.saldo == 233712
    types = [g.gebeurtenis_type for g in terug.gebeurtenissen]
    assert types.count("BetalingVerwerkt") == 7
    correctie = next(
        g
        for g in terug.gebeurtenissen
        if g.gebeurtenis_type == "FinancieleVerplichtingGecorrigeerd"
    )
    assert correctie.verwijst_naar == "uwv-TV-2023-0418276-01"
    ingetrokken = next(
        g for g in terug.gebeurtenissen if g.gebeurtenis_type == "BetalingsverplichtingIngetrokken"
    )
    assert ingetrokken.verwijst_naar == "uwv-TV-2023-0418276-07"

    boete = zaken["uwv_boete"]
    assert (boete.totaal_financieel_verplicht, boete.totaal_financieel_vereffend) == (45000, 10000)
    demands = [g for g in boete.gebeurtenissen if g.aanschrijvingstype is not None]
    assert [g.aanschrijvingstype for g in demands] == ["Aanschrijving", "Herinnering", "Aanmaning"]
    assert demands[-1].vervaldatum == "2023-07-21"
    assert demands[-1].datumtijd == "2023-07-07T09:00:00+02:00"

    (regeling,) = gegevens.betalingsregelingen
    assert regeling.zaakkenmerken == (terug.zaakkenmerk,)
    assert (regeling.termijnbedrag, regeling.frequentie, regeling.status) == (
        7500,
        "maand",
        "afgebroken",
    )
    for zaak in gegevens.financiele_zaken:
        kenmerken = [g.gebeurtenis_kenmerk for g in zaak.gebeurtenissen]
        assert all(k.startswith("uwv-") for k in kenmerken)
        assert len(set(kenmerken)) == len(kenmerken)


async def test_hanna_two_employers_and_sickness_benefit(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    gegevens = (await fetch(pki, sandbox.url, session, "999990081")).gegevens
    assert gegevens.financiele_zaken == ()
    assert gegevens.betalingsregelingen == ()
    loon = [i for i in gegevens.inkomsten if i.soort == "loon"]
    assert len({i.verstrekker for i in loon}) == 2
    assert sorted(i.periode_eind is None for i in loon) == [False, True]
    assert {i.frequentie for i in loon} == {"week", "vier_weken"}
    (zw,) = [i for i in gegevens.inkomsten if i.soort == "uitkering"]
    assert (zw.inkomenstype, zw.bedrag_bruto, zw.frequentie) == ("uwv_zw", 118734, "maand")


@pytest.mark.parametrize("bsn", ["999990001", "12345", "99999002A"])
async def test_invalid_bsn_is_a_client_fault(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession, bsn: str
) -> None:
    with pytest.raises(SourceUnreachable, match=r"HTTP 500 \(soap:Client: Burgerservicenummer"):
        await fetch(pki, sandbox.url, session, bsn)


@pytest.mark.parametrize(
    ("knobs", "overrides", "error", "reason"),
    [
        ({"latency_ms": 1000}, {"read_timeout": 0.5}, SourceTimeout, "in time"),
        ({"hang": True}, {"read_timeout": 0.5}, SourceTimeout, "in time"),
        ({"error_rate": 1.0}, {}, SourceUnreachable, "HTTP 503"),
        ({"malformed": True}, {}, SourceInvalid, "malformed XML"),
        (
            {"oversized": True, "oversized_bytes": 4 * 1024 * 1024},
            {"max_body_bytes": 65536},
            SourceInvalid,
            "exceeds the limit",
        ),
        ({"wrong_signature": True}, {}, SourceInvalid, "Signature verification failed"),
    ],
    ids=["latency", "hang", "error_rate", "malformed", "oversized", "wrong_signature"],
)
async def test_fault_knobs(
    pki: DevPki,
    sandbox: RunningSandbox,
    session: aiohttp.ClientSession,
    knobs: dict[str, Any],
    overrides: dict[str, Any],
    error: type[Exception],
    reason: str,
) -> None:
    await set_faults(pki, sandbox, session, **knobs)
    with pytest.raises(error, match=reason):
        await fetch(pki, sandbox.url, session, "999990020", **overrides)


@pytest.fixture
async def captured(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> tuple[Connector, bytes]:
    connector = create(settings_for(pki, sandbox.url))
    return connector, raw_of(await connector.fetch(FetchRequest("999990032", TX, session)))


async def test_tampered_amount_is_refused(captured: tuple[Connector, bytes]) -> None:
    connector, raw = captured
    assert raw.count(b">3412.67<") == 2
    with pytest.raises(SourceInvalid, match="Digest mismatch"):
        connector.verify(raw.replace(b">3412.67<", b">341.27<", 1))


async def test_doctype_is_refused(captured: tuple[Connector, bytes]) -> None:
    connector, raw = captured
    declaration, rest = raw.split(b"\n", 1)
    evil = declaration + b'\n<!DOCTYPE soap:Envelope [<!ENTITY x "3412.67">]>\n' + rest
    with pytest.raises(SourceInvalid, match="DOCTYPE"):
        connector.verify(evil)


async def test_signature_wrapping_is_refused(captured: tuple[Connector, bytes]) -> None:
    connector, raw = captured
    envelope = etree.fromstring(raw)
    body = envelope.find("soap:Body", NS)
    assert body is not None
    # Classic wrapping: hide the signed Body in the header and show a forged one instead.
    header = envelope.find("soap:Header", NS)
    assert header is not None
    header.append(body)
    forged = etree.SubElement(envelope, body.tag)
    forged.append(etree.fromstring(etree.tostring(body[0]).replace(b"3412.67", b"1.00")))
    with pytest.raises(SourceInvalid, match="not the envelope's Body"):
        connector.verify(etree.tostring(envelope))


def header_of(envelope: etree._Element) -> etree._Element:
    header = envelope.find("soap:Header", NS)
    assert header is not None
    return header


async def test_an_id_naming_two_elements_is_refused(captured: tuple[Connector, bytes]) -> None:
    """A forged TransactieId carrying the signed one's wsu:Id: which one would be read?"""
    connector, raw = captured
    envelope = etree.fromstring(raw)
    forged = etree.SubElement(header_of(envelope), q("uwv", "TransactieId"))
    forged.text = "tx-forged"
    forged.set(WSU_ID, "id-transactie")
    with pytest.raises(SourceInvalid, match="more than one element"):
        connector.verify(etree.tostring(envelope))


async def test_an_xml_id_cannot_take_over_a_reference(captured: tuple[Connector, bytes]) -> None:
    connector, raw = captured
    envelope = etree.fromstring(raw)
    decoy = etree.SubElement(header_of(envelope), q("uwv", "Decoy"))
    decoy.set("{http://www.w3.org/XML/1998/namespace}id", "id-body")
    with pytest.raises(SourceInvalid, match="more than one element"):
        connector.verify(etree.tostring(envelope))


@pytest.mark.parametrize("uri", ["", "#xpointer(/)", "http://127.0.0.1:9/body.xml", "#nothing"])
async def test_a_reference_to_anything_else_is_refused(
    captured: tuple[Connector, bytes], uri: str
) -> None:
    connector, raw = captured
    assert raw.count(b'URI="#id-body"') == 1
    changed = raw.replace(b'URI="#id-body"', f'URI="{uri}"'.encode())
    with pytest.raises(SourceInvalid, match="names no element"):
        connector.verify(changed)


async def test_a_signature_that_leaves_out_the_transaction_id_is_refused(
    pki: DevPki, captured: tuple[Connector, bytes]
) -> None:
    """Signed by UWV's own key, six references, but one covers the token instead of the
    transaction id, which is then changed: the connector reads only signed parts."""
    connector, raw = captured
    envelope = etree.fromstring(raw)
    security = envelope.find("soap:Header/wsse:Security", NS)
    assert security is not None
    security.remove(security[-1])
    transactie = envelope.find("soap:Header/uwv:TransactieId", NS)
    assert transactie is not None
    transactie.text = "tx-forged"
    signed = [e for e in envelope.iter() if e.get(WSU_ID) is not None and e is not transactie]
    assert len(signed) == 6  # five parts and the BinarySecurityToken
    identity = pki.identity("uwv-sign")
    key = load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    key_info = x509_key_info(load_certificate(identity.cert))
    sign(security, signing_key(key), SIGNATURE_SHAPE, key_info=key_info, signed=signed)
    with pytest.raises(SourceInvalid, match="does not cover exactly"):
        connector.verify(etree.tostring(envelope))


async def test_replayed_answer_is_refused(
    pki: DevPki, captured: tuple[Connector, bytes], session: aiohttp.ClientSession
) -> None:
    # A validly signed answer, but to an earlier request: wsa:RelatesTo gives it away.
    raw = captured[1]

    async def replay(_: web.Request) -> web.Response:
        return web.Response(body=raw, content_type="text/xml")

    app = web.Application()
    app.router.add_post(SERVICE_PATH, replay)
    runner, port = await serve_app(app, ssl_context=server_tls(pki))
    try:
        with pytest.raises(SourceInvalid, match="RelatesTo"):
            await fetch(pki, f"https://127.0.0.1:{port}", session, "999990032")
    finally:
        await runner.cleanup()


async def test_connection_refused(pki: DevPki, session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnreachable):
        await fetch(pki, f"https://127.0.0.1:{port}", session, "999990020")


async def test_untrusted_client_certificate_is_refused(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    key, cert = rogue_identity("ec")
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    with pytest.raises(SourceUnreachable):
        await fetch(
            pki,
            sandbox.url,
            session,
            "999990020",
            client_cert=tmp_path / "cert.pem",
            client_key=tmp_path / "key.pem",
        )


def test_two_sided_tls_is_required(pki: DevPki) -> None:
    settings = settings_for(pki, "https://127.0.0.1:9102")
    with pytest.raises(ConfigError, match="two-sided TLS"):
        create(dataclasses.replace(settings, client_cert=None, client_key=None))
    with pytest.raises(ConfigError, match="https"):
        create(dataclasses.replace(settings, base_url="http://127.0.0.1:9102"))


def test_public_surface() -> None:
    assert ORGANISATIE.code == "uwv"
    assert ORGANISATIE.oin == "00000099000000002000"
    assert {c.contactvorm for c in CONTACTOPTIES} == {"telefoon", "website", "post"}
    website = next(c for c in CONTACTOPTIES if c.contactvorm == "website")
    assert website.waarde.startswith("https://www.uwv.nl/")


async def test_an_answer_signed_when_the_certificate_was_not_valid_is_refused(
    pki: DevPki, captured: tuple[Connector, bytes]
) -> None:
    """UWV's own key, but a signed wsu:Created from before its certificate was issued."""
    connector, raw = captured
    body = etree.fromstring(raw).find("soap:Body/uwv:VraagInkomensEnVorderingenResponse", NS)
    assert body is not None
    identity = pki.identity("uwv-sign")
    key = load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    backdated = sign_response(
        body,
        relates_to="urn:uuid:earlier",
        transactie_id=TX,
        message_id="urn:uuid:answer",
        key=signing_key(key),
        cert=load_certificate(identity.cert),
        now=datetime(2000, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(SourceInvalid, match="not valid at 2000-01-01"):
        connector.verify(backdated)
