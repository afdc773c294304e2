"""The CAK connector against its sandbox over real sockets: OAuth, JWS, mapping and faults."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors._sandbox import CITIZENS
from connectors._sandbox.citizens import TestCitizen as Citizen
from connectors._sandbox.runner import RunningSandbox, start_sandbox
from connectors.cak import CONTACTOPTIES, ORGANISATIE, create
from connectors.cak.sandbox import CLIENT_ID, OAUTH2_ENDPOINT, TOKENS
from gateway.connector import (
    Connector,
    ConnectorSettings,
    FetchRequest,
    SourceData,
    certificate_key_id,
    load_certificate,
)
from gateway.errors import ConfigError, SourceError, SourceInvalid, SourceTimeout, SourceUnreachable
from gateway.jws import b64url, b64url_decode, parse, sign_es256
from gateway.models import Bron, Bundel, FinancieleZaak, Gegevens
from gateway.pki import DevPki
from gateway.schema import validate_bundel
from gateway.zaak import build_zaak

TX = "tx-test-1"
API = "/api/v1/overzicht"

Fetch = Callable[..., Awaitable[SourceData]]


@pytest.fixture
async def sandbox(pki: DevPki) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox("cak", pki, port=0)
    yield running
    await running.runner.cleanup()


def make_settings(pki: DevPki, url: str, **overrides: Any) -> ConnectorSettings:
    options = {
        "token_url": f"{url}{OAUTH2_ENDPOINT}",
        "client_id": CLIENT_ID,
        "client_secret_file": str(pki.secret("cak-client-secret")),
        **overrides.pop("options", {}),
    }
    return ConnectorSettings(
        organisatie=ORGANISATIE,
        base_url=url,
        trust_cert=pki.identity("cak-sign").cert,
        read_timeout=0.5,
        options=options,
        **overrides,
    )


@pytest.fixture
def connector(pki: DevPki, sandbox: RunningSandbox) -> Connector:
    return create(make_settings(pki, sandbox.url))


@pytest.fixture
def fetch(connector: Connector, session: aiohttp.ClientSession) -> Fetch:
    async def run(bsn: str) -> SourceData:
        return await connector.fetch(FetchRequest(bsn, TX, session))

    return run


def raw_of(data: SourceData) -> bytes:
    return base64.b64decode(data.herkomst.inhoud)


def zaak_of(gegevens: Gegevens, verplichtingtype: str) -> FinancieleZaak:
    (zaak,) = [z for z in gegevens.financiele_zaken if z.verplichtingtype == verplichtingtype]
    return zaak


def totals(zaak: FinancieleZaak) -> tuple[int, int, int, int]:
    return (
        zaak.totaal_financieel_verplicht,
        zaak.totaal_financieel_vereffend,
        zaak.totaal_financieel_kwijtgescholden,
        zaak.saldo,
    )


async def set_faults(session: aiohttp.ClientSession, url: str, **knobs: object) -> None:
    async with session.put(f"{url}/_sandbox/faults", json=knobs) as response:
        assert response.status == 200, await response.text()


# --- every test citizen -------------------------------------------------------------------


@pytest.mark.parametrize("citizen", CITIZENS, ids=lambda c: c.naam)
async def test_every_citizen_maps_verifies_and_fits_the_schema(
    citizen: Citizen, connector: Connector, fetch: Fetch, pki: DevPki
) -> None:
    data = await fetch(citizen.bsn)

    assert data.gegevens.is_empty == ("cak" not in citizen.holders)
    raw = raw_of(data)
    assert connector.verify(raw) == data.gegevens  # offline re-verification
    assert data.herkomst.media_type == "application/jose"
    assert data.herkomst.handtekening == "jws"
    assert data.herkomst.sha256 == hashlib.sha256(raw).hexdigest()
    assert data.herkomst.sleutel_id == certificate_key_id(
        load_certificate(pki.identity("cak-sign").cert)
    )
    # The transaction id reached CAK: the signed answer names it.
    assert orjson.loads(parse(raw)[0].payload)["transactieId"] == TX
    for zaak in data.gegevens.financiele_zaken:
        assert zaak == build_zaak(
            zaakkenmerk=zaak.zaakkenmerk,
            omschrijving=zaak.omschrijving,
            verplichtingtype=zaak.verplichtingtype,
            juridische_grondslag=zaak.juridische_grondslag,
            gebeurtenissen=zaak.gebeurtenissen,
        )
    bron = Bron(
        organisatie=ORGANISATIE,
        status="geen_gegevens" if data.gegevens.is_empty else "ok",
        toelichting=None,
        opgehaald_op="2026-11-29T20:00:00+01:00",
        duur_ms=12,
        herkomst=data.herkomst,
        contactopties=CONTACTOPTIES,
        gegevens=data.gegevens,
    )
    bundel = Bundel(
        str(uuid.uuid4()), TX, "2026-11-29T20:00:00+01:00", ORGANISATIE, citizen.bsn, (bron,)
    )
    validate_bundel(orjson.loads(orjson.dumps(bundel)))


# --- scenarios ----------------------------------------------------------------------------


async def test_citlali_bakker_monthly_wmo_invoices_and_payments(fetch: Fetch) -> None:
    gegevens = (await fetch("999990020")).gegevens
    zaak = zaak_of(gegevens, "cak_eigen_bijdrage_wmo")
    assert zaak.zaakkenmerk == "cak-WMO-2026-0041187"
    assert zaak.juridische_grondslag.startswith("Wet maatschappelijke ondersteuning 2015")
    assert totals(zaak) == (4 * 2180, 3 * 2180, 0, 2180)
    first = zaak.gebeurtenissen[0]
    assert (first.gebeurtenis_type, first.bedrag) == ("FinancieleVerplichtingOpgelegd", 2180)
    assert first.datumtijd == "2026-08-05T00:00:00+02:00"
    invoices = [g for g in zaak.gebeurtenissen if g.aanschrijvingstype == "Aanschrijving"]
    assert [g.vervaldatum for g in invoices][-1] == "2026-12-05"
    assert invoices[0].verwijst_naar == "cak-WMO-2026-0041187-1"


async def test_daan_visser_arrears_with_reminders_and_demands(fetch: Fetch) -> None:
    gegevens = (await fetch("999990032")).gegevens
    premie = zaak_of(gegevens, "cak_bestuursrechtelijke_premie")
    wlz = zaak_of(gegevens, "cak_eigen_bijdrage_wlz")
    assert premie.juridische_grondslag == "Zorgverzekeringswet, art. 18d"
    assert totals(premie) == (4 * 18674, 18674 + 5000, 0, 3 * 18674 - 5000)
    assert totals(wlz) == (3 * 29310, 29310, 0, 2 * 29310)
    for zaak in (premie, wlz):
        kinds = [g.aanschrijvingstype for g in zaak.gebeurtenissen if g.aanschrijvingstype]
        assert {"Herinnering", "Aanmaning"} <= set(kinds)
    (aanmaning,) = [g for g in premie.gebeurtenissen if g.aanschrijvingstype == "Aanmaning"]
    assert (aanmaning.bedrag, aanmaning.vervaldatum) == (37348, "2026-08-27")


async def test_esra_yilmaz_payment_arrangement(fetch: Fetch) -> None:
    gegevens = (await fetch("999990044")).gegevens
    zaak = zaak_of(gegevens, "cak_bestuursrechtelijke_premie")
    assert totals(zaak) == (4 * 18247, 8 * 7500, 0, 4 * 18247 - 8 * 7500)
    (regeling,) = gegevens.betalingsregelingen
    assert regeling.kenmerk == "cak-BR-2026-003318"
    assert regeling.zaakkenmerken == (zaak.zaakkenmerk,)
    assert (regeling.termijnbedrag, regeling.frequentie, regeling.status) == (
        7500,
        "maand",
        "actief",
    )
    assert (regeling.startdatum, regeling.einddatum) == ("2026-03-01", "2026-12-31")


async def test_fleur_smit_recalculation_and_withdrawn_invoices(fetch: Fetch) -> None:
    zaak = zaak_of((await fetch("999990056")).gegevens, "cak_eigen_bijdrage_wlz")
    prefix = "cak-WLZ-2025-0117604-"
    corrected = {
        g.verwijst_naar: g.bedrag
        for g in zaak.gebeurtenissen
        if g.gebeurtenis_type == "FinancieleVerplichtingGecorrigeerd"
    }
    withdrawn = [
        g.verwijst_naar
        for g in zaak.gebeurtenissen
        if g.gebeurtenis_type == "BetalingsverplichtingIngetrokken"
    ]
    assert corrected == {f"{prefix}4": 24115, f"{prefix}6": 0}
    assert withdrawn == [f"{prefix}5", f"{prefix}7"]
    # October as imposed, November recalculated, December cancelled: all of it paid.
    assert totals(zaak) == (28740 + 24115, 28740 + 24115, 0, 0)
    assert zaak.gebeurtenissen[-1].datumtijd == "2026-01-28T00:00:00+01:00"


async def test_gerrit_mulder_long_history_is_deterministic(fetch: Fetch) -> None:
    first = (await fetch("999990068")).gegevens
    again = (await fetch("999990068")).gegevens
    assert first == again
    zaak = zaak_of(first, "cak_eigen_bijdrage_wlz")
    events = zaak.gebeurtenissen
    assert len(events) >= 300
    assert len({g.gebeurtenis_kenmerk for g in events}) == len(events)
    assert events[0].datumtijd.startswith("2015-02-05")
    assert sum(g.aanschrijvingstype == "Herinnering" for g in events) == 6
    # Everything is paid except October 2026, which is not due yet.
    assert zaak.saldo == 109_417 + 11 * 2_473
    assert zaak.totaal_financieel_verplicht - zaak.totaal_financieel_vereffend == zaak.saldo


# --- faults -------------------------------------------------------------------------------

FAULT_CASES = [
    pytest.param({"latency_ms": 2000}, SourceTimeout, id="latency"),
    pytest.param({"hang": True}, SourceTimeout, id="hang"),
    pytest.param({"error_rate": 1.0}, SourceUnreachable, id="error_rate"),
    pytest.param({"malformed": True}, SourceInvalid, id="malformed"),
    pytest.param({"oversized": True, "oversized_bytes": 4 * 1024 * 1024}, SourceInvalid, id="big"),
    pytest.param({"wrong_signature": True}, SourceInvalid, id="wrong_signature"),
]


@pytest.mark.parametrize(("knobs", "error"), FAULT_CASES)
@pytest.mark.parametrize("token_cached", [False, True], ids=["cold", "warm"])
async def test_fault_knobs_map_to_source_errors(
    knobs: dict[str, object],
    error: type[SourceError],
    token_cached: bool,
    pki: DevPki,
    sandbox: RunningSandbox,
    session: aiohttp.ClientSession,
) -> None:
    # Small enough for `oversized`, large enough for `hang`, which declares 1 MiB up front.
    connector = create(make_settings(pki, sandbox.url, max_body_bytes=1536 * 1024))
    request = FetchRequest("999990020", TX, session)
    if token_cached:  # then the fault hits the API call, not the token request
        await connector.fetch(request)
    await set_faults(session, sandbox.url, **knobs)
    with pytest.raises(error):
        await connector.fetch(request)


async def test_tampered_amount_is_refused(connector: Connector, fetch: Fetch) -> None:
    header, payload, signature = raw_of(await fetch("999990020")).split(b".")
    original = b64url_decode(payload.decode())
    assert b'"21.80"' in original
    forged = b64url(original.replace(b'"21.80"', b'"21.81"', 1)).encode()
    with pytest.raises(SourceInvalid, match="signature"):
        connector.verify(b".".join((header, forged, signature)))


async def test_unsigned_answer_is_refused(connector: Connector, fetch: Fetch) -> None:
    _, payload, _ = raw_of(await fetch("999990020")).split(b".")
    unsigned = b64url(orjson.dumps({"alg": "none"})).encode() + b"." + payload + b"."
    with pytest.raises(SourceInvalid):
        connector.verify(unsigned)


async def test_connection_refused_is_unreachable(
    pki: DevPki, session: aiohttp.ClientSession
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector = create(make_settings(pki, f"http://127.0.0.1:{port}"))
    with pytest.raises(SourceUnreachable, match="could not be reached"):
        await connector.fetch(FetchRequest("999990020", TX, session))


# --- signed but wrong content -------------------------------------------------------------


def native(**changes: Any) -> dict[str, Any]:
    """A small valid CAK overview; `dossiers__0__regeling="X"` sets one nested field."""
    mutaties = [
        {"volgnummer": 1, "soort": "VASTSTELLING", "boekdatum": "2026-02-05",
         "omschrijving": "Eigen bijdrage Wmo januari 2026 vastgesteld", "bedrag": "21.80"},
        {"volgnummer": 2, "soort": "FACTUUR", "boekdatum": "2026-02-05",
         "omschrijving": "Factuur", "bedrag": "21.80", "vervaldatum": "2026-03-07",
         "betreftVolgnummer": 1},
        {"volgnummer": 3, "soort": "KWIJTSCHELDING", "boekdatum": "2026-03-20",
         "omschrijving": "Buiten invordering gesteld", "bedrag": "21.80"},
    ]  # fmt: skip
    document: dict[str, Any] = {
        "berichtsoort": "CAK_FINANCIEEL_OVERZICHT",
        "versie": "1.0",
        "transactieId": TX,
        "bsn": "999990020",
        "dossiers": [
            {
                "dossiernummer": "WMO-1",
                "regeling": "WMO",
                "omschrijving": "Wmo",
                "mutaties": mutaties,
            }
        ],
        "betalingsregelingen": [],
    }
    for path, value in changes.items():
        target: Any = document
        *steps, last = path.split("__")
        for step in steps:
            target = target[int(step) if step.isdigit() else step]
        target[int(last) if last.isdigit() else last] = value
    return document


def signed_by_cak(pki: DevPki, payload: bytes) -> bytes:
    key = serialization.load_pem_private_key(
        pki.identity("cak-sign").key.read_bytes(), password=None
    )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return sign_es256(payload, key, {"typ": "JOSE"}, detached=False).encode()


def test_signed_native_document_maps_remission(pki: DevPki, connector: Connector) -> None:
    gegevens = connector.verify(signed_by_cak(pki, orjson.dumps(native())))
    (zaak,) = gegevens.financiele_zaken
    assert totals(zaak) == (2180, 0, 2180, 0)
    assert zaak.gebeurtenissen[-1].gebeurtenis_type == "FinancieleVerplichtingKwijtgescholden"


def bad(name: str, message: str, **changes: Any) -> Any:
    return pytest.param(orjson.dumps(native(**changes)), message, id=name)


FIRST = "dossiers__0__mutaties__0__"
UNKNOWN_DOSSIER = {
    "regelingnummer": "BR-1",
    "omschrijving": "Regeling",
    "dossiernummers": ["WMO-2"],
    "termijnbedrag": "10.00",
    "termijnfrequentie": "MAAND",
    "ingangsdatum": "2026-03-01",
    "status": "LOPEND",
}
BAD_CONTENT = [
    pytest.param(b"not json", "not JSON", id="not-json"),
    pytest.param(orjson.dumps([1, 2]), "JSON object", id="array"),
    bad("berichtsoort", "berichtsoort", berichtsoort="ANDERS"),
    bad("version", "versie", versie="2.0"),
    bad("dossiers-not-a-list", "dossiers", dossiers={}),
    bad("regeling", "regeling", dossiers__0__regeling="AWBZ"),
    bad("float", "bedrag", **{f"{FIRST}bedrag": 21.8}),
    bad("half-cent", "cents", **{f"{FIRST}bedrag": "21.805"}),
    bad("negative", "euro amount", **{f"{FIRST}bedrag": "-5.00"}),
    bad("date", "YYYY-MM-DD", **{f"{FIRST}boekdatum": "05-02-2026"}),
    bad("bool-volgnummer", "int", **{f"{FIRST}volgnummer": True}),
    bad("unknown-soort", "soort", **{f"{FIRST}soort": "STORNO"}),
    bad("duplicate", "twice", dossiers__0__mutaties__1__volgnummer=1),
    bad("dangling-reference", "unknown mutatie", dossiers__0__mutaties__1__betreftVolgnummer=9),
    bad(
        "correction-without-reference",
        "betreftVolgnummer",
        dossiers__0__mutaties__2__soort="HERBEREKENING",
    ),
    bad(
        "correction-of-an-invoice",
        "unknown obligation",
        dossiers__0__mutaties__2__soort="HERBEREKENING",
        dossiers__0__mutaties__2__betreftVolgnummer=2,
    ),
    bad(
        "arrangement-for-unknown-dossier",
        "not in the overview",
        betalingsregelingen=[UNKNOWN_DOSSIER],
    ),
]


@pytest.mark.parametrize(("payload", "message"), BAD_CONTENT)
def test_signed_but_unexpected_content_is_refused(
    payload: bytes, message: str, pki: DevPki, connector: Connector
) -> None:
    with pytest.raises(SourceInvalid, match=message):
        connector.verify(signed_by_cak(pki, payload))


# --- OAuth 2.0 client credentials ---------------------------------------------------------


async def test_concurrent_fetches_share_one_token(
    connector: Connector, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    bsns = [c.bsn for c in CITIZENS] * 3
    results = await asyncio.gather(*(connector.fetch(FetchRequest(b, TX, session)) for b in bsns))
    assert len(results) == len(bsns)
    assert len(sandbox.app[TOKENS]) == 1


@pytest.mark.parametrize("how", ["revoked", "expired"])
async def test_refused_token_is_renewed_once(
    how: str, connector: Connector, fetch: Fetch, sandbox: RunningSandbox
) -> None:
    await fetch("999990020")
    tokens = sandbox.app[TOKENS]
    (old,) = tokens
    if how == "revoked":
        tokens.clear()
    else:
        tokens[old] = 0.0
    assert not (await fetch("999990020")).gegevens.is_empty
    assert old not in tokens
    assert len(tokens) == 1


async def test_wrong_client_secret_is_unreachable_with_a_clear_message(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not-the-secret\n")
    connector = create(make_settings(pki, sandbox.url, options={"client_secret_file": str(secret)}))
    with pytest.raises(SourceUnreachable, match=r"invalid_client.*client_secret_file"):
        await connector.fetch(FetchRequest("999990020", TX, session))


async def test_token_endpoint_error_is_unreachable(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(pki, sandbox.url, options={"token_url": f"{sandbox.url}/elders"})
    with pytest.raises(SourceUnreachable, match="token endpoint answered HTTP 404"):
        await create(settings).fetch(FetchRequest("999990020", TX, session))


@pytest.mark.parametrize(
    "options",
    [{"client_id": ""}, {"token_url": "/oauth2/token"}, {"client_secret_file": "/nonexistent"}],
)
def test_bad_options_are_config_errors(options: dict[str, str], pki: DevPki) -> None:
    with pytest.raises(ConfigError):
        create(make_settings(pki, "http://127.0.0.1:9103", options=options))


# --- the sandbox protocol itself ----------------------------------------------------------


async def token_response(
    session: aiohttp.ClientSession, url: str, secret: str, grant: str = "client_credentials"
) -> aiohttp.ClientResponse:
    return await session.post(
        f"{url}{OAUTH2_ENDPOINT}",
        data={"grant_type": grant},
        headers={"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, secret)},
    )


async def test_sandbox_speaks_oauth_and_rfc_6750(
    pki: DevPki, sandbox: RunningSandbox, session: aiohttp.ClientSession
) -> None:
    secret = pki.secret("cak-client-secret").read_text().strip()
    async with await token_response(session, sandbox.url, "wrong") as refused:
        assert refused.status == 401
        assert await refused.json() == {"error": "invalid_client"}
    async with await token_response(session, sandbox.url, secret, "password") as unsupported:
        assert unsupported.status == 400
        assert await unsupported.json() == {"error": "unsupported_grant_type"}
    async with await token_response(session, sandbox.url, secret) as issued:
        assert issued.status == 200
        assert issued.headers["Cache-Control"] == "no-store"
        body = await issued.json()
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 300)

    async with session.post(f"{sandbox.url}{API}", json={"bsn": "999990020"}) as anonymous:
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="CAK"'
    bearer = {"Authorization": f"Bearer {body['access_token']}", "X-Transactie-Id": TX}
    for bad in ("123456789", "99999002", "abcdefghi"):
        async with session.post(f"{sandbox.url}{API}", json={"bsn": bad}, headers=bearer) as r:
            assert r.status == 400
            assert (await r.json())["code"] == "ONGELDIG_BSN"
    async with session.post(
        f"{sandbox.url}{API}", json={"bsn": "999990020"}, headers={"Authorization": "Bearer x"}
    ) as unknown:
        assert unknown.status == 401
        assert 'error="invalid_token"' in unknown.headers["WWW-Authenticate"]
    # A valid BSN nobody knows gets a signed, empty answer.
    async with session.post(f"{sandbox.url}{API}", json={"bsn": "111222333"}, headers=bearer) as r:
        assert r.status == 200
        assert r.content_type == "application/jose"
        assert orjson.loads(parse(await r.read())[0].payload)["dossiers"] == []
