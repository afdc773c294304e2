"""Signatures checked by tools that share no code with ours: xmlsec1 and pyjwt."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.pki import DevPki
from tests.conftest import Stack

MANY_DEBTS = "999990032"  # data at all four organisations
XMLSEC1 = "/usr/bin/xmlsec1"

# WS-Security signs elements by their wsu:Id; xmlsec1 must be told which attributes are ids.
_UWV_ID_ELEMENTS = (
    "http://schemas.xmlsoap.org/soap/envelope/:Body",
    "http://www.w3.org/2005/08/addressing:Action",
    "http://www.w3.org/2005/08/addressing:MessageID",
    "http://www.w3.org/2005/08/addressing:RelatesTo",
    "http://schemas.uwv.nl/blauweknop/inkomensenvorderingen/v1:TransactieId",
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd:Timestamp",
)


def sources(outer: dict[str, object]) -> dict[str, bytes]:
    bundel = outer["bundel"]
    assert isinstance(bundel, dict)
    return {
        b["organisatie"]["code"]: base64.b64decode(b["herkomst"]["inhoud"])
        for b in bundel["bronnen"]
    }


def xmlsec1(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [XMLSEC1, "--verify", *args, str(path)], capture_output=True, text=True, check=False
    )


def tamper_first_amount(raw: bytes) -> bytes:
    """Change one digit inside the first euro amount (`123.45`) of an XML answer."""
    text = raw.decode()
    match = re.search(r">(\d+)\.(\d{2})<", text)
    assert match, "no amount found to tamper with"
    digit = match.start(1)
    changed = "1" if text[digit] != "1" else "2"
    return (text[:digit] + changed + text[digit + 1 :]).encode()


async def test_duo_xml_signature_verifies_with_xmlsec1(
    stack: Stack, pki: DevPki, tmp_path: Path
) -> None:
    raw = sources(await stack.bundle(MANY_DEBTS))["duo"]
    original, tampered = tmp_path / "duo.xml", tmp_path / "duo-tampered.xml"
    original.write_bytes(raw)
    tampered.write_bytes(tamper_first_amount(raw))
    ok = xmlsec1(original, "--trusted-pem", str(pki.root_cert))
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout + ok.stderr
    bad = xmlsec1(tampered, "--trusted-pem", str(pki.root_cert))
    assert bad.returncode != 0


async def test_uwv_ws_security_signature_verifies_with_xmlsec1(
    stack: Stack, pki: DevPki, tmp_path: Path
) -> None:
    raw = sources(await stack.bundle(MANY_DEBTS))["uwv"]
    ids = [arg for element in _UWV_ID_ELEMENTS for arg in ("--id-attr:Id", element)]
    key = ["--pubkey-cert-pem", str(pki.identity("uwv-sign").cert)]
    original, tampered = tmp_path / "uwv.xml", tmp_path / "uwv-tampered.xml"
    original.write_bytes(raw)
    tampered.write_bytes(tamper_first_amount(raw))
    ok = xmlsec1(original, *key, *ids)
    assert ok.returncode == 0, ok.stderr
    assert "SignedInfo References (ok/all): 6/6" in ok.stdout + ok.stderr
    assert xmlsec1(tampered, *key, *ids).returncode != 0


@pytest.mark.parametrize(("code", "identity"), [("cak", "cak-sign"), ("gm0363", "gemeente-sign")])
async def test_organisation_jws_verifies_with_pyjwt(
    stack: Stack, pki: DevPki, code: str, identity: str
) -> None:
    raw = sources(await stack.bundle(MANY_DEBTS))[code]
    cert = x509.load_pem_x509_certificate(pki.identity(identity).cert.read_bytes())
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    decoded = jwt.api_jws.decode_complete(raw, public, algorithms=["ES256"])
    assert decoded["payload"]
    stranger = "gemeente-sign" if code == "cak" else "cak-sign"
    other = x509.load_pem_x509_certificate(pki.identity(stranger).cert.read_bytes())
    other_key = other.public_key()
    assert isinstance(other_key, ec.EllipticCurvePublicKey)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.api_jws.decode_complete(raw, other_key, algorithms=["ES256"])


async def test_gateway_seal_verifies_with_pyjwt(stack: Stack) -> None:
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel",
        json={"bsn": MANY_DEBTS},
        headers={"Accept": "application/jose"},
    ) as response:
        token = await response.text()
    async with stack.session.get(f"{stack.url}/.well-known/jwks.json") as response:
        jwks = jwt.PyJWKSet.from_json(await response.text())
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(k for k in jwks.keys if k.key_id == kid)
    decoded = jwt.api_jws.decode_complete(token, key.key, algorithms=["ES256"])
    assert MANY_DEBTS.encode() in decoded["payload"]
