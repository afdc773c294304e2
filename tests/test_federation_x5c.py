"""Generic providers' x5c chains end in the organisation's registered X.509 anchor.

Real sockets: the SVB sandbox signs with an x5c certificate chain; the generic connector asks
it and checks the chain against the anchors the registry holds for the SVB.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from connectors._sandbox.runner import serve_app
from connectors.generic.connector import GenericConnector, create_generic
from connectors.svb.sandbox import ORGANISATIE, jwks
from connectors.svb.sandbox import create_app as create_svb
from gateway.connector import ConnectorSettings, FetchRequest, SourceData
from gateway.errors import SourceInvalid
from gateway.pki import DevPki
from tests.conftest import fresh_state
from tests.federation_pki import Issued, issue, root

SVB_OIN = ORGANISATIE.oin
OTHER_OIN = "00000001002000000000"
EVERYWHERE = "999990020"


@pytest.fixture(scope="module")
def hierarchy() -> dict[str, Issued]:
    """The federation's root, the SVB's own CA under it, and a foreign root."""
    federation = root()
    return {
        "root": federation,
        "svb-ca": issue("SVB CA", federation, use="ca"),
        "foreign": root("Another test root"),
    }


def connector(pki: DevPki, tmp_path: Path, url: str, anchors: str | None) -> GenericConnector:
    jwks_file = tmp_path / "svb.jwks.json"
    jwks_file.write_bytes(orjson.dumps(jwks(pki)))
    options = {"allow_private": "true", "categorieen": "financiele-zaken inkomen"}
    if anchors is not None:
        (tmp_path / "anchors.pem").write_text(anchors)
        options["x509"] = str(tmp_path / "anchors.pem")
    settings = ConnectorSettings(
        organisatie=ORGANISATIE, base_url=url, trust_cert=jwks_file, options=options
    )
    return create_generic(settings)


@asynccontextmanager
async def svb_signing_with(pki: DevPki, leaf: Issued, *chain: Issued) -> AsyncIterator[str]:
    app = create_svb(pki, certified=(leaf.key, [leaf.cert, *(c.cert for c in chain)]))
    runner, port = await serve_app(app)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def fetch(
    pki: DevPki, tmp_path: Path, anchors: str | None, leaf: Issued, *chain: Issued
) -> SourceData:
    async with svb_signing_with(pki, leaf, *chain) as url, aiohttp.ClientSession() as session:
        generic = connector(pki, tmp_path, url, anchors)
        try:
            return await generic.fetch(FetchRequest(EVERYWHERE, "tx-x5c-test", session))
        finally:
            await generic.aclose()


async def test_a_chain_to_the_registered_anchor_is_accepted_and_the_leaf_key_signs(
    pki: DevPki, tmp_path: Path, hierarchy: dict[str, Issued]
) -> None:
    leaf = issue("SVB seal", hierarchy["svb-ca"], use="sign", oin=SVB_OIN)
    # Anchored at the federation root, through the SVB's CA as an intermediate in x5c.
    data = await fetch(pki, tmp_path, hierarchy["root"].pem, leaf, hierarchy["svb-ca"])
    assert data.gegevens.financiele_zaken
    assert data.herkomst.sleutel_id.startswith("x5t#S256:")
    # Anchored at the SVB's own CA; the stored answer verifies again later.
    data = await fetch(pki, tmp_path, hierarchy["svb-ca"].pem, leaf)
    again = connector(pki, tmp_path, "http://127.0.0.1:9", hierarchy["svb-ca"].pem)
    assert again.verify(base64.b64decode(data.herkomst.inhoud)) == data.gegevens


async def test_a_foreign_chain_is_refused(
    pki: DevPki, tmp_path: Path, hierarchy: dict[str, Issued]
) -> None:
    foreign_ca = issue("Foreign CA", hierarchy["foreign"], use="ca")
    leaf = issue("SVB seal?", foreign_ca, use="sign", oin=SVB_OIN)
    with pytest.raises(SourceInvalid, match="does not chain to a registered anchor"):
        await fetch(pki, tmp_path, hierarchy["svb-ca"].pem, leaf, foreign_ca)


async def test_a_leaf_for_another_oin_under_the_same_anchor_is_refused(
    pki: DevPki, tmp_path: Path, hierarchy: dict[str, Issued]
) -> None:
    leaf = issue("Someone else", hierarchy["svb-ca"], use="sign", oin=OTHER_OIN)
    with pytest.raises(SourceInvalid, match=f"for OIN {OTHER_OIN}, not {SVB_OIN}"):
        await fetch(pki, tmp_path, hierarchy["root"].pem, leaf, hierarchy["svb-ca"])


async def test_an_expired_leaf_is_refused(
    pki: DevPki, tmp_path: Path, hierarchy: dict[str, Issued]
) -> None:
    now = dt.datetime.now(dt.UTC)
    leaf = issue(
        "SVB seal (expired)",
        hierarchy["svb-ca"],
        use="sign",
        oin=SVB_OIN,
        valid_from=now - dt.timedelta(days=30),
        valid_until=now - dt.timedelta(minutes=1),
    )
    with pytest.raises(SourceInvalid, match="valid at"):
        await fetch(pki, tmp_path, hierarchy["svb-ca"].pem, leaf)


async def test_x5c_without_registered_anchors_and_a_leaf_that_did_not_sign_are_refused(
    pki: DevPki, tmp_path: Path, hierarchy: dict[str, Issued]
) -> None:
    leaf = issue("SVB seal", hierarchy["svb-ca"], use="sign", oin=SVB_OIN)
    with pytest.raises(SourceInvalid, match=r"registered no X\.509 anchor"):
        await fetch(pki, tmp_path, None, leaf)
    # The chain is good, but the answer is signed with another key than the leaf's.
    impostor = Issued(leaf.cert, issue("x", None, use="sign").key)
    with pytest.raises(SourceInvalid, match="signature check failed"):
        await fetch(pki, tmp_path, hierarchy["svb-ca"].pem, impostor)
    # A certificate whose key usage does not allow signing does not certify answers.
    agreement = issue("SVB DH", hierarchy["svb-ca"], use="key-agreement", oin=SVB_OIN)
    with pytest.raises(SourceInvalid, match="key usage"):
        await fetch(pki, tmp_path, hierarchy["svb-ca"].pem, agreement)


async def test_a_registered_anchor_reaches_the_running_gateway(
    pki: DevPki, tmp_path: Path, hierarchy: dict[str, Issued]
) -> None:
    """End to end: the registry's x509 anchors are what the generic connector checks."""
    from connectors.svb.sandbox import signing_key
    from tests.conftest import start_stack
    from tests.test_federation import eventually, register_and_approve, svb_entry

    state = fresh_state(tmp_path, pki)
    stack, runners = await start_stack(state, pki, federation={"poll_seconds": 0.1})
    leaf = issue("SVB seal", hierarchy["svb-ca"], use="sign", oin=SVB_OIN)
    try:
        async with svb_signing_with(pki, leaf, hierarchy["svb-ca"]) as url:
            entry = svb_entry(url, pki, x509=hierarchy["root"].pem)
            await register_and_approve(stack, state, signing_key(pki), entry)

            async def certified() -> bool:
                bundle = await stack.bundle(EVERYWHERE)
                bron = [b for b in bundle["bundel"]["bronnen"] if b["organisatie"]["code"] == "svb"]
                return bool(bron) and bron[0]["status"] == "ok"

            await eventually(certified)
            bundle = await stack.bundle(EVERYWHERE)
            bron = next(b for b in bundle["bundel"]["bronnen"] if b["organisatie"]["code"] == "svb")
            assert bron["herkomst"]["sleutel_id"].startswith("x5t#S256:")
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()


async def test_provider_check_reads_x5c_answers_against_the_given_anchors(
    pki: DevPki, hierarchy: dict[str, Issued]
) -> None:
    from gateway.federation.conformance import check_provider

    leaf = issue("SVB seal", hierarchy["svb-ca"], use="sign", oin=SVB_OIN)
    async with svb_signing_with(pki, leaf) as url, aiohttp.ClientSession() as session:
        good = await check_provider(url, session, anchors=(hierarchy["svb-ca"].cert,))
        unchecked = await check_provider(url, session)
        foreign = await check_provider(url, session, anchors=(hierarchy["foreign"].cert,))
    assert good.conforms, good.text()
    assert unchecked.conforms, unchecked.text()
    assert "chain not checked" in unchecked.text()
    assert not foreign.conforms
    assert "does not chain to a registered anchor" in foreign.text()


def test_the_oin_is_read_from_serial_number_or_organization_identifier() -> None:
    from cryptography.x509.oid import NameOID

    from gateway.federation.certs import certificate_oin

    def named(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.Certificate:
        made = issue("x", None, use="sign")
        subject = x509.Name([x509.NameAttribute(oid, value) for oid, value in attributes])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(made.key.public_key())
            .serial_number(1)
            .not_valid_before(made.cert.not_valid_before_utc)
            .not_valid_after(made.cert.not_valid_after_utc)
        )
        return builder.sign(made.key, hashes.SHA256())

    serial, org_id = NameOID.SERIAL_NUMBER, NameOID.ORGANIZATION_IDENTIFIER
    assert certificate_oin(named((serial, SVB_OIN))) == SVB_OIN
    assert certificate_oin(named((org_id, f"OINNL-{SVB_OIN}"))) == SVB_OIN
    assert certificate_oin(named((org_id, "NTRNL-12345678"))) == "00000003123456780000"
    assert certificate_oin(named((serial, SVB_OIN), (org_id, f"OINNL-{OTHER_OIN}"))) is None
    assert certificate_oin(named((serial, "12345"))) is None
