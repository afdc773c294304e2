"""Property-based fuzzing of every connector's response parsing, from real signed answers.

The sandboxes answer for one citizen over real sockets (tests/fuzz_world.py); each answer is
then mutated (tests/fuzz_mutations.py) and handed to the connector's `verify`, the code that
checks and maps an organisation's answer both when the gateway fetches it and when a bundle is
re-verified. Two kinds of input per connector:

* the signed bytes damaged as they are (the signature check must refuse them cleanly);
* the answer mutated and then signed again with the organisation's real key, so that the
  mapping code behind the signature check sees hostile content.

The property: `verify` gives `Gegevens` that fit the common schema, or raises `SourceInvalid`;
never another exception (a 500, or a bundle the gateway's own verifier would refuse), and never
slowly. The BRP answer (which municipality to ask) is fuzzed the same way.
"""

from __future__ import annotations

import copy
import re
import time
import uuid
from dataclasses import dataclass

import orjson
import pytest
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import given, note
from hypothesis import strategies as st
from lxml import etree

from connectors.duo.protocol import SIGNATURE_SHAPE as DUO_SHAPE
from connectors.generic.connector import GenericConnector
from connectors.svb.sandbox import jwks as svb_jwks
from connectors.uwv.soap import NS as UWV_NS
from connectors.uwv.soap import SIGNATURE_SHAPE as UWV_SHAPE
from connectors.uwv.soap import WSU_ID
from gateway import jws
from gateway.connector import Connector, ConnectorSettings, load_certificate, make_herkomst
from gateway.errors import SourceInvalid
from gateway.federation.registry import public_keys
from gateway.federation.runtime import brp_gemeentecode
from gateway.models import Bron, Bundel, Gegevens, Organisatie
from gateway.pki import DevPki
from gateway.schema import validate_bundel
from gateway.xmldsig import DS_NS, sign, signing_key, x509_key_info
from tests.fuzz_mutations import byte_damage, json_mutation, tree_ops
from tests.fuzz_world import JSON, TRANSACTIE_ID, SignedWorld, encode_json, fuzz, signed_world

__all__ = ["signed_world"]

SLOW = 5.0  # seconds: one answer of a few KiB takes milliseconds; more means a pathology


def check_verdict(connector: Connector, data: bytes) -> None:
    """The property: clean refusal, or data that fit the common schema; and quickly."""
    started = time.perf_counter()
    try:
        gegevens = connector.verify(data)
    except SourceInvalid:
        gegevens = None
    elapsed = time.perf_counter() - started
    assert elapsed < SLOW, f"verify took {elapsed:.1f} s"
    if gegevens is not None:
        assert isinstance(gegevens, Gegevens)
        fits_the_schema(connector.organisatie, gegevens, data)


def fits_the_schema(organisatie: Organisatie, gegevens: Gegevens, raw: bytes) -> None:
    """What the gateway would issue with these data passes its own verifier's schema."""
    herkomst = make_herkomst(raw, media_type="application/xml", handtekening="jws", sleutel_id="k")
    bron = Bron(
        organisatie=organisatie,
        status="geen_gegevens" if gegevens.is_empty else "ok",
        toelichting=None,
        opgehaald_op="2026-11-01T12:00:00+01:00",
        duur_ms=1,
        herkomst=herkomst,
        contactopties=(),
        gegevens=gegevens,
    )
    bundel = Bundel(
        bundel_id=str(uuid.uuid4()),
        transactie_id=TRANSACTIE_ID,
        uitgegeven_op="2026-11-01T12:00:00+01:00",
        uitgever=organisatie,
        bsn="999990020",
        bronnen=(bron,),
    )
    validate_bundel(orjson.loads(orjson.dumps(bundel)))


# --- XML: DUO (enveloped XML-DSig) and UWV (WS-Security) -----------------------------------


@dataclass(frozen=True)
class XmlSigner:
    key: xmlsec.Key
    cert: x509.Certificate


def xml_signer(pki: DevPki, name: str) -> XmlSigner:
    identity = pki.identity(name)
    key = load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return XmlSigner(signing_key(key), load_certificate(identity.cert))


def _resign_duo(root: etree._Element, signer: XmlSigner) -> None:
    sign(root, signer.key, DUO_SHAPE, key_info=x509_key_info(signer.cert))


def _resign_uwv(root: etree._Element, signer: XmlSigner) -> None:
    security = root.find("soap:Header/wsse:Security", UWV_NS)
    if security is None:
        raise xmlsec.Error("no wsse:Security to sign into")
    parts = [e for e in root.iter() if e.get(WSU_ID) not in (None, "id-x509")]
    sign(security, signer.key, UWV_SHAPE, signed=parts, key_info=x509_key_info(signer.cert))


@st.composite
def xml_inputs(draw: st.DrawFn, raw: bytes, org: str, signer: XmlSigner) -> bytes:
    """A real answer, changed in its tree and/or bytes, and maybe signed again afterwards."""
    root = etree.fromstring(raw)
    ops = draw(st.lists(tree_ops(), max_size=3))
    resign = bool(ops) and draw(st.booleans())
    if resign:
        for signature in list(root.iter(f"{{{DS_NS}}}Signature")):
            parent = signature.getparent()
            assert parent is not None
            parent.remove(signature)
    for description, op in ops:
        note(description)
        op(root)
    if resign:
        try:
            (_resign_duo if org == "duo" else _resign_uwv)(root, signer)
            note("signed again with the organisation's real key")
        except xmlsec.Error:
            note("could not be signed again; sent with no signature")
    data: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    if draw(st.integers(0, 2)) == 0:
        description, data = draw(byte_damage(data))
        note(description)
    return data


@pytest.mark.parametrize(("org", "identity"), [("duo", "duo-sign"), ("uwv", "uwv-sign")])
@fuzz(50)
@given(data=st.data())
def test_xml_answers_give_data_or_source_invalid(
    signed_world: SignedWorld, pki: DevPki, org: str, identity: str, data: st.DataObject
) -> None:
    raw = signed_world.sources[org]
    mutated = data.draw(xml_inputs(raw, org, xml_signer(pki, identity)))
    check_verdict(signed_world.connectors[org], mutated)


# --- JWS JSON: CAK and the municipality ----------------------------------------------------


def ec_key(pki: DevPki, name: str) -> ec.EllipticCurvePrivateKey:
    key = load_pem_private_key(pki.identity(name).key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@st.composite
def jws_inputs(draw: st.DrawFn, raw: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The signed answer damaged, or its JSON mutated and signed again with the real key."""
    if draw(st.integers(0, 3)) == 0:
        description, damaged = draw(byte_damage(raw))
        note(description)
        return damaged
    parsed, _, _ = jws.parse(raw)
    document = orjson.loads(parsed.payload)
    for _ in range(draw(st.integers(1, 3))):
        description, document = draw(json_mutation(document))
        note(description)
    header = copy.deepcopy(parsed.header)
    if draw(st.integers(0, 9)) == 0:
        value = st.none() | st.booleans() | st.text() | st.integers(-(2**63), 2**63 - 1)
        header = {**header, **draw(st.dictionaries(st.sampled_from(["typ", "kid", "cty"]), value))}
    return jws.sign_es256(encode_json(document), key, header, detached=False).encode("ascii")


@pytest.mark.parametrize(("org", "identity"), [("cak", "cak-sign"), ("gm0363", "gemeente-sign")])
@fuzz(100)
@given(data=st.data())
def test_jws_answers_give_data_or_source_invalid(
    signed_world: SignedWorld, pki: DevPki, org: str, identity: str, data: st.DataObject
) -> None:
    mutated = data.draw(jws_inputs(signed_world.sources[org], ec_key(pki, identity)))
    check_verdict(signed_world.connectors[org], mutated)


# --- the generic provider API (the SVB sandbox's document) ---------------------------------


def generic_connector(pki: DevPki) -> GenericConnector:
    settings = ConnectorSettings(
        organisatie=Organisatie(
            oin="00000099000000002000", code="svb", naam="Sociale Verzekeringsbank (SVB)"
        ),
        base_url="http://127.0.0.1:9",
        trust_cert=pki.directory / "unused",
    )
    return GenericConnector(settings, public_keys(svb_jwks(pki)), (), (), allow_private=True)


@fuzz(100)
@given(data=st.data())
def test_provider_documents_give_data_or_source_invalid(
    signed_world: SignedWorld, pki: DevPki, data: st.DataObject
) -> None:
    from connectors.svb.sandbox import signing_key as svb_key

    connector = generic_connector(pki)
    mutated = data.draw(jws_inputs(signed_world.provider, svb_key(pki)))
    check_verdict(connector, mutated)


# --- the BRP: which municipality to ask ----------------------------------------------------

BRP_ANSWER = orjson.dumps(
    {
        "type": "RaadpleegMetBurgerservicenummer",
        "personen": [
            {
                "gemeenteVanInschrijving": {"code": "0363", "omschrijving": "Amsterdam"},
                "verblijfplaats": {"type": "Adres", "verblijfadres": {"woonplaats": "Amsterdam"}},
            }
        ],
    }
)


@fuzz(500)
@given(
    data=st.data(),
    arbitrary=st.binary() | JSON.map(encode_json),
)
def test_brp_answers_give_a_code_or_nothing(data: st.DataObject, arbitrary: bytes) -> None:
    if data.draw(st.booleans()):
        raw = arbitrary
    else:
        description, document = data.draw(json_mutation(orjson.loads(BRP_ANSWER)))
        note(description)
        raw = encode_json(document)
    code = brp_gemeentecode(raw)
    assert code == "" or re.fullmatch("[0-9]{4}", code), code


@pytest.mark.parametrize("code", ["٠٣٦٣", "²³⁴⁵", "0363 ", 363])
def test_a_brp_code_is_four_ascii_digits(code: object) -> None:
    """Found by the property above: str.isdigit also takes Arabic-Indic and superscript digits."""
    answer = {"personen": [{"gemeenteVanInschrijving": {"code": code}}]}
    assert brp_gemeentecode(encode_json(answer)) == ""
    answer["personen"][0]["gemeenteVanInschrijving"]["code"] = "0363"
    assert brp_gemeentecode(encode_json(answer)) == "0363"
