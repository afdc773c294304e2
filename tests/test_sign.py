"""Sealing bundles: JWS over the canonical bundle, JWKS, rotation and tampering."""

from __future__ import annotations

import base64
import copy
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import jws
from gateway.canonical import canonicalize
from gateway.connector import make_herkomst
from gateway.errors import SchemaViolation, VerificationError
from gateway.models import Bron, Bundel, Gebeurtenis, Gegevens, Organisatie
from gateway.pki import DevPki
from gateway.sign import KeyRing, sign_bundel
from gateway.verify import Trust, verify_compact, verify_download
from gateway.zaak import build_zaak

DUO = Organisatie("00000099000000001000", "duo", "DUO")
GATEWAY = Organisatie("00000099000000099000", "bkgw", "Gateway")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_b64url_is_rfc_7515_base64url(data: bytes) -> None:
    encoded = jws.b64url(data)
    assert encoded == base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    assert jws.b64url_decode(encoded) == data


def bundel(bsn: str = "999990020", amount: int = 150000) -> Bundel:
    zaak = build_zaak(
        zaakkenmerk="Z1",
        omschrijving="Studielening",
        verplichtingtype="duo_studielening",
        juridische_grondslag="Wet studiefinanciering 2000",
        gebeurtenissen=[
            Gebeurtenis(
                "FinancieleVerplichtingOpgelegd",
                "duo-1",
                "2020-01-01T00:00:00+01:00",
                "Lening",
                bedrag=amount,
            ),
            Gebeurtenis(
                "BetalingVerwerkt", "duo-2", "2021-01-01T00:00:00+01:00", "Aflossing", bedrag=5000
            ),
        ],
    )
    bron = Bron(
        organisatie=DUO,
        status="ok",
        toelichting=None,
        opgehaald_op="2026-11-29T10:00:00+00:00",
        duur_ms=12,
        herkomst=make_herkomst(
            b"<signed/>", media_type="application/xml", handtekening="xmldsig", sleutel_id="k"
        ),
        gegevens=Gegevens(financiele_zaken=(zaak,)),
    )
    return Bundel(
        bundel_id="0b6e8f3c-8e0b-4c51-9a37-0a3a8f7b8c11",
        transactie_id="tx-12345678",
        uitgegeven_op="2026-11-29T10:00:01+00:00",
        uitgever=GATEWAY,
        bsn=bsn,
        bronnen=(bron,),
    )


@pytest.fixture
def ring(tmp_path: Path) -> tuple[DevPki, KeyRing]:
    pki = DevPki(tmp_path / "pki")
    return pki, KeyRing.from_dev_pki(pki)


def test_json_download_and_compact_jws_verify(ring: tuple[DevPki, KeyRing]) -> None:
    _, keys = ring
    signed = sign_bundel(bundel(), keys)
    trust = Trust.from_jwks(keys.jwks())
    verdict = verify_download(signed.download_json(), trust)
    assert verdict.kid == keys.active.kid
    assert verdict.document["bronnen"][0]["gegevens"]["financiele_zaken"][0]["saldo"] == 145000
    assert verdict.sources[0].provenance == "not checked"
    assert verify_compact(signed.compact_jws, trust).document == verdict.document
    header = orjson.loads(jws.b64url_decode(signed.detached_jws.split(".")[0]))
    assert header["alg"] == "ES256"
    assert header["kid"] == keys.active.kid
    assert len(header["x5c"]) == 2, "seal certificate and root"
    assert signed.detached_jws.split(".")[1] == "", "the JSON download carries a detached JWS"


def test_tampering_is_caught(ring: tuple[DevPki, KeyRing]) -> None:
    _, keys = ring
    signed = sign_bundel(bundel(), keys)
    trust = Trust.from_jwks(keys.jwks())
    outer = orjson.loads(signed.download_json())

    changed_amount = copy.deepcopy(outer)
    changed_amount["bundel"]["bronnen"][0]["gegevens"]["financiele_zaken"][0]["saldo"] = 1
    removed_source = copy.deepcopy(outer)
    removed_source["bundel"]["bronnen"].pop()
    other_bsn = copy.deepcopy(outer)
    other_bsn["bundel"]["bsn"] = "999990019"
    for tampered in (changed_amount, removed_source, other_bsn):
        with pytest.raises(VerificationError, match="does not verify"):
            verify_download(orjson.dumps(tampered), trust)


def test_provenance_digest_mismatch_is_caught(ring: tuple[DevPki, KeyRing]) -> None:
    _, keys = ring
    document = orjson.loads(sign_bundel(bundel(), keys).download_json())["bundel"]
    document["bronnen"][0]["herkomst"]["inhoud"] = "PG90aGVyLz4="  # <other/>
    resigned = sign_bundel_document(document, keys)
    with pytest.raises(VerificationError, match="SHA-256"):
        verify_download(resigned, Trust.from_jwks(keys.jwks()))


def sign_bundel_document(document: dict[str, object], keys: KeyRing) -> bytes:
    """Seal an arbitrary document the way the gateway would, to test the checks after the seal."""
    assert keys.active.private_key is not None
    token = jws.sign_es256(
        canonicalize(document), keys.active.private_key, {"kid": keys.active.kid}, detached=True
    )
    return orjson.dumps({"bundel": document, "jws": token})


def test_unknown_key_is_refused(ring: tuple[DevPki, KeyRing], tmp_path: Path) -> None:
    _, keys = ring
    stranger = KeyRing.from_dev_pki(DevPki(tmp_path / "other-pki"))
    signed = sign_bundel(bundel(), stranger)
    with pytest.raises(VerificationError, match="unknown key"):
        verify_download(signed.download_json(), Trust.from_jwks(keys.jwks()))


def test_rotation_new_key_signs_old_bundles_still_verify(ring: tuple[DevPki, KeyRing]) -> None:
    pki, first = ring
    old = sign_bundel(bundel(), first)
    pki.rotate_seal()
    second = KeyRing.from_dev_pki(pki)
    assert second.active.kid != first.active.kid
    assert [k.kid for k in second.retired] == [first.active.kid]
    new = sign_bundel(bundel(), second)
    trust = Trust.from_jwks(second.jwks())
    assert verify_download(old.download_json(), trust).kid == first.active.kid
    assert verify_download(new.download_json(), trust).kid == second.active.kid


def test_invalid_bundle_is_never_signed(ring: tuple[DevPki, KeyRing]) -> None:
    _, keys = ring
    with pytest.raises(SchemaViolation):
        sign_bundel(bundel(bsn="12345"), keys)
