"""The municipality connector against its sandbox, over real sockets; no mocks."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from connectors._sandbox.citizens import CITIZENS
from connectors._sandbox.citizens import TestCitizen as Burger
from connectors._sandbox.runner import RunningSandbox, start_sandbox
from connectors.gemeente import CONTACTOPTIES, ORGANISATIE, create
from connectors.gemeente.sandbox import create_app
from gateway.connector import (
    Connector,
    ConnectorSettings,
    FetchRequest,
    certificate_key_id,
    load_certificate,
    verify_source_jws,
)
from gateway.errors import SourceError, SourceInvalid, SourceTimeout, SourceUnreachable
from gateway.jws import b64url, b64url_decode, sign_es256
from gateway.models import FinancieleZaak, Gebeurtenis, Gegevens, Organisatie
from gateway.pki import DevPki
from gateway.zaak import build_zaak

TX = "tx-test-1"
CITLALI, DAAN, ESRA, FLEUR, IRIS = "999990020", "999990032", "999990044", "999990056", "999990093"
ROTTERDAM = Organisatie(oin="00000001001234567000", code="gm0599", naam="Gemeente Rotterdam")


def settings_for(pki: DevPki, url: str, **changes: Any) -> ConnectorSettings:
    base = ConnectorSettings(
        organisatie=ORGANISATIE,
        base_url=url,
        trust_cert=pki.identity("gemeente-sign").cert,
        options={"gemeentecode": "0363"},
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
async def sandbox(pki: DevPki) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox("gemeente", pki, port=0)
    yield running
    await running.runner.cleanup()


@pytest.fixture
def connector(pki: DevPki, sandbox: RunningSandbox) -> Connector:
    return create(settings_for(pki, sandbox.url))


async def gegevens_of(connector: Connector, session: aiohttp.ClientSession, bsn: str) -> Gegevens:
    return (await connector.fetch(FetchRequest(bsn, TX, session))).gegevens


def events_of(zaak: FinancieleZaak, kind: str) -> list[Gebeurtenis]:
    return [g for g in zaak.gebeurtenissen if g.gebeurtenis_type == kind]


def sign_as_gemeente(pki: DevPki, payload: bytes) -> bytes:
    """Sign like the municipality does, for payloads the sandbox would never send."""
    identity = pki.identity("gemeente-sign")
    key = load_pem_private_key(identity.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    header = {"kid": certificate_key_id(load_certificate(identity.cert)), "typ": "JOSE"}
    return sign_es256(payload, key, header, detached=False).encode()


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve on a free port, with a short shutdown timeout so a hanging handler cannot stall."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def fixed_answer(body: bytes, content_type: str) -> web.Application:
    """An app that answers every POST with the same bytes, e.g. a recorded answer."""

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    app = web.Application()
    app.router.add_post("/{tail:.*}", answer)
    return app


@pytest.mark.parametrize("citizen", CITIZENS, ids=lambda c: c.naam)
async def test_every_citizen_is_signed_mapped_and_reverifiable(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession, citizen: Burger
) -> None:
    data = await connector.fetch(FetchRequest(citizen.bsn, TX, session))

    assert data.gegevens.is_empty == ("gemeente" not in citizen.holders)
    raw = base64.b64decode(data.herkomst.inhoud)
    assert hashlib.sha256(raw).hexdigest() == data.herkomst.sha256
    assert (data.herkomst.media_type, data.herkomst.handtekening) == ("application/jose", "jws")
    cert = load_certificate(pki.identity("gemeente-sign").cert)
    assert data.herkomst.sleutel_id == certificate_key_id(cert)
    assert connector.verify(raw) == data.gegevens
    # The transaction id we sent comes back inside the signed answer.
    assert orjson.loads(verify_source_jws(raw, cert))["transactieId"] == TX
    kenmerken = [
        g.gebeurtenis_kenmerk for z in data.gegevens.financiele_zaken for g in z.gebeurtenissen
    ]
    assert len(kenmerken) == len(set(kenmerken))
    assert all(k.startswith("gm0363-") for k in kenmerken)
    for zaak in data.gegevens.financiele_zaken:
        assert zaak.verplichtingtype.startswith("gm_")
        assert zaak == build_zaak(
            zaakkenmerk=zaak.zaakkenmerk,
            omschrijving=zaak.omschrijving,
            verplichtingtype=zaak.verplichtingtype,
            juridische_grondslag=zaak.juridische_grondslag,
            gebeurtenissen=zaak.gebeurtenissen,
        )


async def test_citlali_pays_her_combined_tax_bill_in_ten_terms(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    (zaak,) = (await gegevens_of(connector, session, CITLALI)).financiele_zaken

    assert zaak.verplichtingtype == "gm_gemeentelijke_belastingen"
    assert "Gemeentewet art. 220" in zaak.juridische_grondslag
    opgelegd = events_of(zaak, "FinancieleVerplichtingOpgelegd")
    assert [g.bedrag for g in opgelegd] == [17757, 21234, 45780]
    assert opgelegd[0].omschrijving.startswith("Onroerendezaakbelasting")
    assert opgelegd[0].datumtijd == "2024-02-29T00:00:00+01:00"
    termijnen = events_of(zaak, "BetalingsverplichtingOpgelegd")
    assert len(termijnen) == 10
    assert {t.aanschrijvingstype for t in termijnen} == {"Aanschrijving"}
    assert termijnen[3].vervaldatum == "2024-06-30"
    assert len(events_of(zaak, "BetalingVerwerkt")) == 10
    assert (zaak.totaal_financieel_verplicht, zaak.totaal_financieel_vereffend) == (84771, 84771)
    assert zaak.saldo == 0


async def test_daan_has_reminders_demands_a_writ_and_a_recovery(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    zaken = {
        z.verplichtingtype: z
        for z in (await gegevens_of(connector, session, DAAN)).financiele_zaken
    }

    assert set(zaken) == {
        "gm_afvalstoffenheffing",
        "gm_parkeerbelasting",
        "gm_terugvordering_bijstand",
    }
    afval = zaken["gm_afvalstoffenheffing"]
    demands = [g.aanschrijvingstype for g in events_of(afval, "BetalingsverplichtingOpgelegd")]
    assert demands == ["Aanschrijving", "Herinnering", "Aanmaning", "Aanmaning"]
    dwangbevel = events_of(afval, "BetalingsverplichtingOpgelegd")[-1]
    assert dwangbevel.omschrijving.startswith("Dwangbevel")
    assert "Invorderingswet 1990" in dwangbevel.omschrijving
    # Tax 343.20, demand costs 8.00 and writ costs 49.00 are owed; 50.00 was paid.
    assert (afval.totaal_financieel_verplicht, afval.saldo) == (40020, 35020)
    assert zaken["gm_parkeerbelasting"].saldo == 8989
    terugvordering = zaken["gm_terugvordering_bijstand"]
    assert terugvordering.juridische_grondslag == "Participatiewet art. 58 lid 1"
    assert (terugvordering.totaal_financieel_vereffend, terugvordering.saldo) == (30000, 544820)


async def test_esra_repays_under_an_active_payment_arrangement(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    gegevens = await gegevens_of(connector, session, ESRA)

    (zaak,) = gegevens.financiele_zaken
    assert zaak.verplichtingtype == "gm_terugvordering_bijstand"
    assert len(events_of(zaak, "BetalingVerwerkt")) == 29
    assert (zaak.totaal_financieel_vereffend, zaak.saldo) == (205000, 284572)
    regelingen = {r.status: r for r in gegevens.betalingsregelingen}
    assert set(regelingen) == {"actief", "afgebroken"}
    actief = regelingen["actief"]
    assert (actief.termijnbedrag, actief.frequentie, actief.einddatum) == (7500, "maand", None)
    assert actief.startdatum == "2024-01-01"
    assert actief.zaakkenmerken == (zaak.zaakkenmerk,)


async def test_fleur_has_a_correction_after_bezwaar_and_a_withdrawn_demand(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    (zaak,) = (await gegevens_of(connector, session, FLEUR)).financiele_zaken
    by_kenmerk = {g.gebeurtenis_kenmerk: g for g in zaak.gebeurtenissen}

    correcties = events_of(zaak, "FinancieleVerplichtingGecorrigeerd")
    ozb = next(c for c in correcties if c.bedrag == 21076)
    assert ozb.verwijst_naar is not None
    assert by_kenmerk[ozb.verwijst_naar].bedrag == 23188
    assert "bezwaar" in ozb.omschrijving
    (ingetrokken,) = events_of(zaak, "BetalingsverplichtingIngetrokken")
    assert ingetrokken.verwijst_naar is not None
    assert by_kenmerk[ingetrokken.verwijst_naar].aanschrijvingstype == "Aanmaning"
    # The withdrawn demand's costs are corrected to zero, so only the reduced taxes are owed.
    assert (zaak.totaal_financieel_verplicht, zaak.totaal_financieel_vereffend) == (76630, 76630)
    assert zaak.saldo == 0


async def test_iris_receives_bijstand_and_remission_of_her_taxes(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    gegevens = await gegevens_of(connector, session, IRIS)

    assert {(i.soort, i.inkomenstype, i.frequentie) for i in gegevens.inkomsten} == {
        ("bijstand", "gm_bijstand", "maand")
    }
    laatste = gegevens.inkomsten[-1]
    assert (laatste.bedrag_bruto, laatste.bedrag_netto, laatste.periode_eind) == (
        154270,
        133281,
        None,
    )
    assert laatste.verstrekker == "Gemeente Amsterdam"
    assert len(gegevens.financiele_zaken) == 2
    for zaak in gegevens.financiele_zaken:
        assert len(events_of(zaak, "FinancieleVerplichtingKwijtgescholden")) == 1
        assert zaak.totaal_financieel_kwijtgescholden == zaak.totaal_financieel_verplicht > 0
        assert zaak.saldo == 0


async def test_unknown_valid_bsn_gets_a_signed_empty_answer(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    data = await connector.fetch(FetchRequest("999990111", TX, session))

    assert data.gegevens == Gegevens()
    assert connector.verify(base64.b64decode(data.herkomst.inhoud)) == Gegevens()


@pytest.mark.parametrize("bsn", ["123456789", "99999002", "99999002x"])
async def test_invalid_bsn_is_refused_with_problem_details(
    connector: Connector, sandbox: RunningSandbox, session: aiohttp.ClientSession, bsn: str
) -> None:
    with pytest.raises(SourceInvalid, match=r"HTTP 400.*paramsValidation") as caught:
        await connector.fetch(FetchRequest(bsn, TX, session))
    assert bsn not in str(caught.value)

    body = {"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": bsn}
    url = f"{sandbox.url}/haalcentraal/api/v1/overzicht"
    async with session.post(url, json=body, headers={"X-Transactie-Id": TX}) as response:
        assert response.status == 400
        assert response.content_type == "application/problem+json"
        assert bsn not in await response.text()


async def test_missing_transaction_id_is_refused(
    sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    body = {"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": CITLALI}
    async with session.post(f"{sandbox.url}/haalcentraal/api/v1/overzicht", json=body) as response:
        assert response.status == 400
        problem = await response.json(content_type="application/problem+json")
    assert problem["invalidParams"][0]["name"] == "X-Transactie-Id"


async def test_wrong_gemeentecode_is_not_found(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    rotterdam = create(
        settings_for(pki, sandbox.url, organisatie=ROTTERDAM, options={"gemeentecode": "0599"})
    )
    with pytest.raises(SourceInvalid, match=r"gemeentecode 0599.*HTTP 404"):
        await rotterdam.fetch(FetchRequest(CITLALI, TX, session))


async def test_another_municipality_has_its_own_sandbox_and_contact_options(
    pki: DevPki, session: aiohttp.ClientSession
) -> None:
    options = {"gemeentecode": "0599", "contact_telefoon": "14 010"}
    async with serving(create_app(pki, gemeentecode="0599")) as url:
        rotterdam = create(settings_for(pki, url, organisatie=ROTTERDAM, options=options))
        data = await rotterdam.fetch(FetchRequest(CITLALI, TX, session))

    assert data.gegevens == Gegevens()
    assert [(c.contactvorm, c.waarde) for c in rotterdam.contactopties] == [("telefoon", "14 010")]


def test_amsterdam_has_its_contact_options(connector: Connector) -> None:
    assert connector.organisatie == ORGANISATIE
    assert connector.contactopties == CONTACTOPTIES
    assert {c.contactvorm for c in CONTACTOPTIES} >= {"telefoon", "website", "post"}


@pytest.mark.parametrize(
    ("organisatie", "options", "message"),
    [
        (ORGANISATIE, {}, "needs options.gemeentecode"),
        (ORGANISATIE, {"gemeentecode": "363"}, "4-digit"),
        (ORGANISATIE, {"gemeentecode": "03a3"}, "4-digit"),
        (ORGANISATIE, {"gemeentecode": "0599"}, "does not match"),
        (ROTTERDAM, {"gemeentecode": "0363"}, "does not match"),
    ],
)
def test_create_refuses_inconsistent_settings(
    pki: DevPki, organisatie: Organisatie, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        create(settings_for(pki, "http://127.0.0.1:1", organisatie=organisatie, options=options))


async def test_a_single_collection_can_be_asked_for(
    connector: Connector, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    body = {"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": IRIS}
    url = f"{sandbox.url}/haalcentraal/api/v1/bijstand"
    async with session.post(
        url, json=body | {"gemeentecode": "0363"}, headers={"X-Transactie-Id": TX}
    ) as response:
        raw = await response.read()

    gegevens = connector.verify(raw)
    assert len(gegevens.inkomsten) == 3
    assert gegevens.financiele_zaken == ()


@pytest.mark.parametrize(
    ("knobs", "changes", "error"),
    [
        ({"latency_ms": 800}, {"read_timeout": 0.3}, SourceTimeout),
        ({"hang": True}, {"read_timeout": 0.3}, SourceTimeout),
        ({"error_rate": 1.0}, {}, SourceUnreachable),
        ({"malformed": True}, {}, SourceInvalid),
        (
            {"oversized": True, "oversized_bytes": 2 << 20},
            {"max_body_bytes": 64 << 10},
            SourceInvalid,
        ),
        ({"wrong_signature": True}, {}, SourceInvalid),
    ],
    ids=["latency", "hang", "error_rate", "malformed", "oversized", "wrong_signature"],
)
async def test_fault_knobs_map_to_source_errors(
    pki: DevPki,
    session: aiohttp.ClientSession,
    knobs: dict[str, object],
    changes: dict[str, float],
    error: type[SourceError],
) -> None:
    # Not `start_sandbox`: its runner waits 60 s at shutdown for the `hang` handler to finish.
    async with serving(create_app(pki)) as url:
        async with session.put(f"{url}/_sandbox/faults", json=knobs) as response:
            assert response.status == 200
        connector = create(settings_for(pki, url, **changes))

        with pytest.raises(error):
            await connector.fetch(FetchRequest(CITLALI, TX, session))


async def test_connection_refused_is_unreachable(
    pki: DevPki, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector = create(settings_for(pki, f"http://127.0.0.1:{port}"))

    with pytest.raises(SourceUnreachable):
        await connector.fetch(FetchRequest(CITLALI, TX, session))


async def test_tampered_amount_fails_offline_verification(
    connector: Connector, session: aiohttp.ClientSession
) -> None:
    data = await connector.fetch(FetchRequest(CITLALI, TX, session))
    header, payload, signature = base64.b64decode(data.herkomst.inhoud).decode().split(".")
    tampered_payload = b64url_decode(payload).replace(
        b'"bedragInCenten":17757', b'"bedragInCenten":1775'
    )
    assert tampered_payload != b64url_decode(payload)
    tampered = f"{header}.{b64url(tampered_payload)}.{signature}".encode()

    with pytest.raises(SourceInvalid, match="signature"):
        connector.verify(tampered)


def _unsigned(document: object) -> bytes:
    header = b64url(orjson.dumps({"alg": "none", "typ": "JOSE"}))
    return f"{header}.{b64url(orjson.dumps(document))}.".encode()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(orjson.dumps({"gemeentecode": "0363"}), id="plain-json"),
        pytest.param(_unsigned({"gemeentecode": "0363"}), id="alg-none"),
    ],
)
def test_unsigned_answers_are_invalid(connector: Connector, raw: bytes) -> None:
    with pytest.raises(SourceInvalid, match="signature check failed"):
        connector.verify(raw)


def _overzicht(**embedded: object) -> dict[str, object]:
    return {"gemeentecode": "0363", "transactieId": TX, "_embedded": embedded}


def _aanslag(heffing: dict[str, object] | None = None, **changes: object) -> dict[str, object]:
    """A small valid aanslag with one heffing; the arguments break it in one place."""
    regel = {
        "regelnummer": 1,
        "belastingsoort": "afvalstoffenheffing",
        "omschrijving": "Afvalstoffenheffing eenpersoonshuishouden",
        "bedragInCenten": 34320,
    }
    return {
        "aanslagbiljetnummer": "20249999999",
        "omschrijving": "Aanslag gemeentelijke belastingen 2024",
        "belastingjaar": 2024,
        "dagtekening": "2024-02-29",
        "heffingen": [regel | (heffing or {})],
    } | changes


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (_overzicht(aanslagen=[_aanslag()]) | {"gemeentecode": "0599"}, "gemeente '0599'"),
        (_overzicht(aanslagen=[_aanslag(heffing={"bedragInCenten": 343.2})]), "must be an integer"),
        (
            _overzicht(aanslagen=[_aanslag(heffing={"bedragInCenten": "34320"})]),
            "must be an integer",
        ),
        (
            _overzicht(aanslagen=[_aanslag(heffing={"belastingsoort": "windbelasting"})]),
            "unknown value",
        ),
        (_overzicht(aanslagen=[_aanslag(dagtekening="29-02-2024")]), "YYYY-MM-DD"),
        (_overzicht(aanslagen=[_aanslag(dagtekening="2024-02-30")]), "not a valid date"),
        (
            _overzicht(aanslagen=[{"omschrijving": "zonder nummer"}]),
            "aanslagbiljetnummer is missing",
        ),
        (_overzicht(aanslagen={"niet": "een lijst"}), "must be a list"),
        (
            _overzicht(
                aanslagen=[
                    _aanslag(
                        verminderingen=[
                            {
                                "kenmerk": "VRM-1",
                                "regelnummer": 7,
                                "datum": "2024-07-01",
                                "reden": "bezwaar",
                                "nieuwBedragInCenten": 100,
                            }
                        ]
                    )
                ]
            ),
            "unknown obligation",
        ),
        ({"gemeentecode": "0363", "transactieId": TX}, "_embedded is missing"),
        ([1, 2, 3], "must be a JSON object"),
    ],
)
def test_signed_but_unexpected_answers_are_invalid(
    pki: DevPki, connector: Connector, document: object, message: str
) -> None:
    with pytest.raises(SourceInvalid, match=message):
        connector.verify(sign_as_gemeente(pki, orjson.dumps(document)))


def test_signed_answer_that_is_not_json_is_invalid(pki: DevPki, connector: Connector) -> None:
    with pytest.raises(SourceInvalid, match="cannot be read"):
        connector.verify(sign_as_gemeente(pki, b"\x00 geen json"))


@pytest.mark.parametrize("content_type", ["application/jose", "application/json"])
async def test_replayed_or_mislabelled_answers_are_invalid(
    pki: DevPki, connector: Connector, session: aiohttp.ClientSession, content_type: str
) -> None:
    recorded = await connector.fetch(FetchRequest(CITLALI, "tx-earlier", session))
    replay = fixed_answer(base64.b64decode(recorded.herkomst.inhoud), content_type)
    async with serving(replay) as url:
        replaying = create(settings_for(pki, url))
        with pytest.raises(SourceInvalid, match=r"another transaction|not a signed"):
            await replaying.fetch(FetchRequest(CITLALI, TX, session))
