"""The DUO connector against its sandbox, over real sockets: data, signatures and faults."""

from __future__ import annotations

import base64
import datetime as dt
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import xmlsec
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key
from cryptography.x509.oid import NameOID
from lxml import etree

from connectors._sandbox import rogue_identity
from connectors._sandbox.citizens import CITIZENS
from connectors._sandbox.runner import RunningSandbox, serve_app, start_sandbox
from connectors.duo import CONTACTOPTIES, ORGANISATIE, create
from connectors.duo.mapping import cents, datumtijd
from connectors.duo.protocol import NSMAP, PATH, SIGNATURE_SHAPE, request_body
from gateway.bsn import is_bsn
from gateway.connector import (
    Connector,
    ConnectorSettings,
    FetchRequest,
    SourceData,
    certificate_key_id,
    load_certificate,
)
from gateway.errors import SourceError, SourceInvalid, SourceTimeout, SourceUnreachable
from gateway.models import Bron, Bundel, FinancieleZaak, Gegevens
from gateway.pki import DevPki
from gateway.schema import validate_bundel
from gateway.xmldsig import (
    C14N,
    ENVELOPED,
    SignatureShape,
    sign,
    signing_key,
    x509_key_info,
)
from gateway.zaak import build_zaak

TX = "tx-test-1"
BRAM, CITLALI, DAAN, FLEUR, GERRIT = (
    "999990019",
    "999990020",
    "999990032",
    "999990056",
    "999990068",
)
UNKNOWN_BSN = "999990111"  # valid, but no test citizen


@pytest.fixture
async def sandbox(pki: DevPki) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox("duo", pki, port=0)
    yield running
    await running.runner.cleanup()


def settings(pki: DevPki, url: str, **overrides: Any) -> ConnectorSettings:
    base = ConnectorSettings(
        organisatie=ORGANISATIE,
        base_url=url,
        trust_cert=pki.identity("duo-sign").cert,
        connect_timeout=0.5,
        read_timeout=0.5,
    )
    return replace(base, **overrides)


@pytest.fixture
def connector(pki: DevPki, sandbox: RunningSandbox) -> Connector:
    return create(settings(pki, sandbox.url))


async def fetch(connector: Connector, session: aiohttp.ClientSession, bsn: str) -> SourceData:
    return await connector.fetch(FetchRequest(bsn, TX, session))


def raw_of(data: SourceData) -> bytes:
    return base64.b64decode(data.herkomst.inhoud)


def zaak_van(gegevens: Gegevens, verplichtingtype: str) -> FinancieleZaak:
    (zaak,) = (z for z in gegevens.financiele_zaken if z.verplichtingtype == verplichtingtype)
    return zaak


def assert_fits_the_common_schema(bsn: str, data: SourceData) -> None:
    bron = Bron(
        organisatie=ORGANISATIE,
        status="geen_gegevens" if data.gegevens.is_empty else "ok",
        toelichting=None,
        opgehaald_op="2026-11-01T12:00:00+01:00",
        duur_ms=1,
        herkomst=data.herkomst,
        contactopties=CONTACTOPTIES,
        gegevens=data.gegevens,
    )
    bundel = Bundel(
        bundel_id=str(uuid.uuid4()),
        transactie_id=TX,
        uitgegeven_op="2026-11-01T12:00:00+01:00",
        uitgever=ORGANISATIE,
        bsn=bsn,
        bronnen=(bron,),
    )
    validate_bundel(orjson.loads(orjson.dumps(bundel)))


def duo_signer(pki: DevPki) -> tuple[xmlsec.Key, etree._Element]:
    """DUO's real signing key, and the KeyInfo naming its certificate."""
    identity = pki.identity("duo-sign")
    key = load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return signing_key(key), x509_key_info(load_certificate(identity.cert))


def serialise(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def sign_as_duo(pki: DevPki, document: bytes) -> bytes:
    """Sign any document with DUO's real key, to test what happens after the signature check."""
    root = etree.fromstring(document)
    key, key_info = duo_signer(pki)
    sign(root, key, SIGNATURE_SHAPE, key_info=key_info)
    return serialise(root)


async def unsigned_answer(
    connector: Connector, session: aiohttp.ClientSession, bsn: str = BRAM
) -> etree._Element:
    """A genuine answer from the sandbox with its signature taken off."""
    answer = etree.fromstring(raw_of(await fetch(connector, session, bsn)))
    answer.remove(answer[-1])
    return answer


# --- every test citizen ---------------------------------------------------------------------


def test_unknown_bsn_is_valid() -> None:
    assert is_bsn(UNKNOWN_BSN)
    assert UNKNOWN_BSN not in {c.bsn for c in CITIZENS}


@pytest.mark.parametrize("bsn", [*(c.bsn for c in CITIZENS), UNKNOWN_BSN])
async def test_every_citizen_gets_a_signed_answer(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession, bsn: str
) -> None:
    data = await fetch(connector, session, bsn)

    holders = next((c.holders for c in CITIZENS if c.bsn == bsn), frozenset[str]())
    assert data.gegevens.is_empty == ("duo" not in holders)
    herkomst = data.herkomst
    assert (herkomst.media_type, herkomst.handtekening) == ("application/xml", "xmldsig")
    assert herkomst.sleutel_id == certificate_key_id(
        load_certificate(pki.identity("duo-sign").cert)
    )
    # Offline re-verification of the stored bytes gives exactly the same data.
    assert connector.verify(raw_of(data)) == data.gegevens
    assert_fits_the_common_schema(bsn, data)

    kenmerken = [
        g.gebeurtenis_kenmerk for z in data.gegevens.financiele_zaken for g in z.gebeurtenissen
    ]
    assert len(kenmerken) == len(set(kenmerken))
    for zaak in data.gegevens.financiele_zaken:
        assert zaak.verplichtingtype.startswith("duo_")
        assert zaak == build_zaak(
            zaakkenmerk=zaak.zaakkenmerk,
            omschrijving=zaak.omschrijving,
            verplichtingtype=zaak.verplichtingtype,
            juridische_grondslag=zaak.juridische_grondslag,
            gebeurtenissen=zaak.gebeurtenissen,
        )
        for event in zaak.gebeurtenissen:
            assert event.gebeurtenis_kenmerk.startswith("duo-")
            moment = dt.datetime.fromisoformat(event.datumtijd)
            assert moment.utcoffset() is not None
            assert 2010 <= moment.year <= 2026
            assert isinstance(event.bedrag, int)


async def test_bram_repays_his_student_loan_monthly(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    gegevens = (await fetch(connector, session, BRAM)).gegevens
    zaak = zaak_van(gegevens, "duo_studielening")
    assert zaak.zaakkenmerk == "duo-SL-0019-2016"
    assert zaak.juridische_grondslag == "Wet studiefinanciering 2000"
    first = zaak.gebeurtenissen[0]
    assert (first.gebeurtenis_type, first.bedrag) == ("FinancieleVerplichtingOpgelegd", 1483240)
    assert first.datumtijd == "2023-10-02T00:00:00+02:00"
    payments = [g for g in zaak.gebeurtenissen if g.gebeurtenis_type == "BetalingVerwerkt"]
    assert len(payments) == 36
    assert (payments[0].bedrag, payments[-1].bedrag) == (4237, 5012)
    assert (zaak.totaal_financieel_verplicht, zaak.totaal_financieel_vereffend) == (
        1562367,
        177922,
    )
    assert zaak.saldo == 1562367 - 177922


async def test_citlali_has_a_loan_with_repayments(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    zaak = zaak_van((await fetch(connector, session, CITLALI)).gegevens, "duo_studielening")
    payments = [g.bedrag for g in zaak.gebeurtenissen if g.gebeurtenis_type == "BetalingVerwerkt"]
    assert len(payments) == 59
    assert 250000 in payments  # the one extra repayment
    assert (zaak.totaal_financieel_vereffend, zaak.saldo) == (1263696, 1604469)


async def test_daan_has_arrears_reminders_and_demands(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    gegevens = (await fetch(connector, session, DAAN)).gegevens
    assert {z.verplichtingtype for z in gegevens.financiele_zaken} == {
        "duo_studielening",
        "duo_terugvordering_sf",
        "duo_lesgeld",
    }
    lening = zaak_van(gegevens, "duo_studielening")
    demands = [
        g for g in lening.gebeurtenissen if g.gebeurtenis_type == "BetalingsverplichtingOpgelegd"
    ]
    assert {g.aanschrijvingstype for g in demands} == {"Aanschrijving", "Herinnering", "Aanmaning"}
    aanmaning = next(g for g in demands if g.aanschrijvingstype == "Aanmaning")
    assert (aanmaning.bedrag, aanmaning.vervaldatum) == (39360, "2023-11-02")

    terugvordering = zaak_van(gegevens, "duo_terugvordering_sf")
    assert (
        terugvordering.totaal_financieel_verplicht,
        terugvordering.totaal_financieel_vereffend,
        terugvordering.saldo,
    ) == (231862, 45000, 186862)
    assert zaak_van(gegevens, "duo_lesgeld").saldo == 40200

    (regeling,) = gegevens.betalingsregelingen
    assert regeling.zaakkenmerken == (terugvordering.zaakkenmerk,)
    assert (regeling.termijnbedrag, regeling.frequentie, regeling.status) == (
        7500,
        "maand",
        "afgebroken",
    )
    assert (regeling.startdatum, regeling.einddatum) == ("2023-07-01", "2024-02-29")


async def test_fleur_has_a_correction_and_a_withdrawal(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    gegevens = (await fetch(connector, session, FLEUR)).gegevens
    zaak = zaak_van(gegevens, "duo_terugvordering_sf")
    by_type = {g.gebeurtenis_type: g for g in zaak.gebeurtenissen}
    opgelegd = by_type["FinancieleVerplichtingOpgelegd"]
    correctie = by_type["FinancieleVerplichtingGecorrigeerd"]
    intrekking = by_type["BetalingsverplichtingIngetrokken"]
    assert correctie.verwijst_naar == opgelegd.gebeurtenis_kenmerk
    assert (opgelegd.bedrag, correctie.bedrag) == (184320, 61200)
    withdrawn = next(
        g for g in zaak.gebeurtenissen if g.gebeurtenis_kenmerk == intrekking.verwijst_naar
    )
    assert (withdrawn.aanschrijvingstype, withdrawn.bedrag) == ("Aanschrijving", 184320)
    # The correction replaces the original amount; the withdrawal moves no money.
    assert (zaak.totaal_financieel_verplicht, zaak.totaal_financieel_vereffend, zaak.saldo) == (
        61200,
        61200,
        0,
    )
    assert {(i.soort, i.inkomenstype, i.bedrag_bruto) for i in gegevens.inkomsten} == {
        ("studiefinanciering", "duo_basisbeurs", 32529),
        ("studiefinanciering", "duo_aanvullende_beurs", 41851),
    }


async def test_gerrit_has_a_very_long_generated_history(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    first = (await fetch(connector, session, GERRIT)).gegevens
    assert sum(len(z.gebeurtenissen) for z in first.financiele_zaken) > 500
    lening = zaak_van(first, "duo_studielening")
    assert lening.totaal_financieel_kwijtgescholden == 838137
    assert lening.saldo == 0
    assert zaak_van(first, "duo_levenlanglerenkrediet").saldo > 0
    # Generated, but deterministic: the same every time.
    assert (await fetch(connector, session, GERRIT)).gegevens == first


def test_contact_options_point_at_duo() -> None:
    assert {c.contactvorm for c in CONTACTOPTIES} == {"website", "telefoon", "post"}
    assert all(
        c.waarde.startswith("https://duo.nl/") for c in CONTACTOPTIES if c.contactvorm == "website"
    )


# --- the protocol -----------------------------------------------------------------------------


async def test_the_transaction_id_reaches_duo_and_comes_back_signed(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    data = await connector.fetch(FetchRequest(BRAM, "tx-echo-42", session))
    answer = etree.fromstring(raw_of(data))
    assert answer.findtext("d:TransactieId", namespaces=NSMAP) == "tx-echo-42"


@pytest.mark.parametrize(
    ("asked_bsn", "asked_tx", "message"),
    [(BRAM, "tx-other", "another transaction"), (CITLALI, TX, "another citizen")],
)
async def test_a_replayed_answer_is_refused(
    pki: DevPki,
    connector: Connector,
    session: aiohttp.ClientSession,
    asked_bsn: str,
    asked_tx: str,
    message: str,
) -> None:
    """A genuine signed answer, replayed for another request, must not be accepted."""
    recorded = raw_of(await fetch(connector, session, BRAM))

    async def replay(request: web.Request) -> web.Response:
        return web.Response(body=recorded, content_type="application/xml")

    app = web.Application()
    app.router.add_post(PATH, replay)
    runner, port = await serve_app(app)
    try:
        replaying = create(settings(pki, f"http://127.0.0.1:{port}"))
        with pytest.raises(SourceInvalid, match=message):
            await replaying.fetch(FetchRequest(asked_bsn, asked_tx, session))
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (request_body("123456789", TX), "DUO-400-BSN"),
        (request_body("12345", TX), "DUO-400-VERZOEK"),
        (b"<OverzichtVerzoek>", "DUO-400-VERZOEK"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "x">]><x>&e;</x>', "DUO-400-VERZOEK"),
    ],
)
async def test_the_sandbox_refuses_bad_requests(
    sandbox: RunningSandbox, session: aiohttp.ClientSession, body: bytes, code: str
) -> None:
    async with session.post(sandbox.url + PATH, data=body) as response:
        assert response.status == 400
        fout = etree.fromstring(await response.read())
    assert fout.findtext("d:Foutcode", namespaces=NSMAP) == code


async def test_an_invalid_bsn_is_an_error_not_an_empty_answer(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(SourceUnreachable, match="HTTP 400"):
        await fetch(connector, session, "123456789")


def test_amounts_become_exact_cents() -> None:
    assert [cents("0.10"), cents("1234.56"), cents("38712.44")] == [10, 123456, 3871244]
    for bad in ("1.005", "abc", "Infinity", "NaN"):
        with pytest.raises(ValueError, match="amount"):
            cents(bad)


def test_dates_get_the_dutch_offset() -> None:
    assert datumtijd("2024-01-15") == "2024-01-15T00:00:00+01:00"
    assert datumtijd("2024-07-15") == "2024-07-15T00:00:00+02:00"


# --- faults and forgeries -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "limits", "error"),
    [
        ({"latency_ms": 1500}, {}, SourceTimeout),
        ({"hang": True}, {}, SourceTimeout),
        ({"error_rate": 1.0}, {}, SourceUnreachable),
        ({"malformed": True}, {}, SourceInvalid),
        (
            {"oversized": True, "oversized_bytes": 4 << 20},
            {"max_body_bytes": 256 << 10},
            SourceInvalid,
        ),
        ({"wrong_signature": True}, {}, SourceInvalid),
    ],
)
async def test_fault_knobs(
    pki: DevPki,
    sandbox: RunningSandbox,
    session: aiohttp.ClientSession,
    knobs: dict[str, Any],
    limits: dict[str, Any],
    error: type[SourceError],
) -> None:
    async with session.put(f"{sandbox.url}/_sandbox/faults", json=knobs) as response:
        assert response.status == 200
    with pytest.raises(error):
        await fetch(create(settings(pki, sandbox.url, **limits)), session, BRAM)


async def test_nothing_listening_is_unreachable(
    pki: DevPki, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceUnreachable):
        await fetch(create(settings(pki, f"http://127.0.0.1:{port}")), session, BRAM)


async def test_a_changed_amount_breaks_the_signature(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    raw = raw_of(await fetch(connector, session, BRAM))
    tampered = raw.replace(b"<Bedrag>14832.40</Bedrag>", b"<Bedrag>1483.24</Bedrag>", 1)
    assert tampered != raw
    with pytest.raises(SourceInvalid, match="signature"):
        connector.verify(tampered)


@pytest.mark.parametrize(
    "doctype",
    [
        b'<!DOCTYPE OverzichtAntwoord [<!ENTITY bedrag "1.00">]>',
        b'<!DOCTYPE OverzichtAntwoord SYSTEM "http://duo.example/antwoord.dtd">',
    ],
)
async def test_a_doctype_is_refused(
    connector: Connector, session: aiohttp.ClientSession, doctype: bytes
) -> None:
    raw = raw_of(await fetch(connector, session, BRAM))
    declaration, rest = raw.split(b"\n", 1)
    with pytest.raises(SourceInvalid, match="DOCTYPE"):
        connector.verify(declaration + b"\n" + doctype + rest)


async def test_an_unsigned_answer_is_refused(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    answer = etree.fromstring(raw_of(await fetch(connector, session, BRAM)))
    answer.remove(answer[-1])
    with pytest.raises(SourceInvalid, match="signature"):
        connector.verify(etree.tostring(answer))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ((b"<Bedrag>14832.40</Bedrag>", b"<Bedrag>14832.405</Bedrag>"), "schema"),
        ((b"<Mutatiesoort>Vaststelling<", b"<Mutatiesoort>Boete<"), "schema"),
        ((b"<Boekdatum>2023-10-02<", b"<Boekdatum>2023-10-02+02:00<"), "schema"),
        ((b"SL-0019-2016-0002</Mutatienummer>", b"SL-0019-2016-0001</Mutatienummer>"), "schema"),
    ],
)
async def test_a_signed_answer_that_breaks_the_contract_is_refused(
    pki: DevPki,
    connector: Connector,
    session: aiohttp.ClientSession,
    change: tuple[bytes, bytes],
    message: str,
) -> None:
    """DUO's own key does not make a malformed answer usable."""
    answer = etree.fromstring(raw_of(await fetch(connector, session, BRAM)))
    answer.remove(answer[-1])
    document = etree.tostring(answer).replace(*change, 1)
    with pytest.raises(SourceInvalid, match=message):
        connector.verify(sign_as_duo(pki, document))


def test_a_signed_message_of_another_kind_is_refused(pki: DevPki, connector: Connector) -> None:
    with pytest.raises(SourceInvalid, match="expected OverzichtAntwoord"):
        connector.verify(sign_as_duo(pki, request_body(BRAM, TX)))


async def test_a_herberekening_must_name_what_it_corrects(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession
) -> None:
    answer = etree.fromstring(raw_of(await fetch(connector, session, FLEUR)))
    answer.remove(answer[-1])
    (betreft,) = answer.iterfind(
        ".//d:Mutatie[d:Mutatiesoort='Herberekening']/d:BetreftMutatie", NSMAP
    )
    parent = betreft.getparent()
    assert parent is not None
    parent.remove(betreft)
    with pytest.raises(SourceInvalid, match="BetreftMutatie"):
        connector.verify(sign_as_duo(pki, etree.tostring(answer)))


async def test_a_signature_by_another_key_is_refused_whatever_its_key_info_says(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    """Only the pinned certificate counts, not the certificate the signature brings along."""
    answer = await unsigned_answer(connector, session)
    key, cert = rogue_identity("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    sign(answer, signing_key(key), SIGNATURE_SHAPE, key_info=x509_key_info(cert))
    with pytest.raises(SourceInvalid, match="not signed by the pinned certificate's key"):
        connector.verify(serialise(answer))


async def test_a_signature_over_part_of_the_answer_is_refused(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession
) -> None:
    """DUO's own key over one element is not enough: the mapping reads the whole answer."""
    answer = await unsigned_answer(connector, session)
    vorderingen = answer.find("d:Vorderingen", NSMAP)
    assert vorderingen is not None
    vorderingen.set("Id", "vorderingen")
    by_id = SignatureShape(
        parent=".", references=1, transforms=(ENVELOPED, C14N), id_attribute="Id"
    )
    key, key_info = duo_signer(pki)
    sign(answer, key, by_id, key_info=key_info, signed=[vorderingen])
    with pytest.raises(SourceInvalid, match="cover the whole document"):
        connector.verify(serialise(answer))


@pytest.mark.parametrize(
    ("signed", "forged"),
    [
        (b"<Bedrag>14832.40</Bedrag>", b"<Bedrag>148<!-- 1.00 -->32.40</Bedrag>"),
        (b"<Mutatiesoort>Vaststelling<", b"<Mutatiesoort>Vast<!---->stelling<"),
    ],
)
async def test_a_comment_cannot_change_what_is_read(
    connector: Connector, session: aiohttp.ClientSession, signed: bytes, forged: bytes
) -> None:
    """Signatures leave comments out, so one can be slipped into a signed value unnoticed;
    it must not split the value that is read."""
    raw = raw_of(await fetch(connector, session, BRAM))
    commented = raw.replace(signed, forged, 1)
    assert commented != raw
    assert connector.verify(commented) == connector.verify(raw)


@pytest.mark.parametrize(
    ("algorithm", "forbidden"),
    [
        (b"http://www.w3.org/2001/04/xmlenc#sha256", b"http://www.w3.org/2000/09/xmldsig#sha1"),
        (
            b"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            b"http://www.w3.org/2000/09/xmldsig#rsa-sha1",
        ),
        (
            b"http://www.w3.org/2001/10/xml-exc-c14n#",
            b"http://www.w3.org/2001/10/xml-exc-c14n#WithComments",
        ),
    ],
)
async def test_a_weaker_or_other_algorithm_is_refused(
    connector: Connector, session: aiohttp.ClientSession, algorithm: bytes, forbidden: bytes
) -> None:
    raw = raw_of(await fetch(connector, session, BRAM))
    assert algorithm in raw
    with pytest.raises(SourceInvalid, match="not allowed"):
        connector.verify(raw.replace(algorithm, forbidden))


async def test_a_signature_elsewhere_than_under_the_root_is_refused(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession
) -> None:
    """Cryptographically fine (it still covers the whole document), but not DUO's protocol."""
    answer = await unsigned_answer(connector, session)
    key, key_info = duo_signer(pki)
    sign(answer[0], key, SIGNATURE_SHAPE, key_info=key_info)
    with pytest.raises(SourceInvalid, match="not where the protocol puts it"):
        connector.verify(serialise(answer))


async def test_a_second_signature_is_refused(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession
) -> None:
    answer = await unsigned_answer(connector, session)
    for _ in range(2):
        key, key_info = duo_signer(pki)
        sign(answer, key, SIGNATURE_SHAPE, key_info=key_info)
    with pytest.raises(SourceInvalid, match="expected one signature, found 2"):
        connector.verify(serialise(answer))


async def test_a_pinned_certificate_that_has_expired_is_refused(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A good signature by a key whose certificate is no longer valid does not count."""
    answer = await unsigned_answer(connector, session)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "duo-sign 2000")])
    expired = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "expired.pem").write_bytes(expired.public_bytes(Encoding.PEM))
    sign(answer, signing_key(key), SIGNATURE_SHAPE, key_info=x509_key_info(expired))
    pinned = create(settings(pki, "http://127.0.0.1:9", trust_cert=tmp_path / "expired.pem"))
    with pytest.raises(SourceInvalid, match="not valid at"):
        pinned.verify(serialise(answer))
