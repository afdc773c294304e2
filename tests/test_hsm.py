"""The seal key in an HSM: SoftHSM2 over PKCS#11 signs the JWS, the XML and the PDF; the key
is generated on the token, marked sensitive and non-extractable, and never leaves it."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pkcs11
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters

from gateway.documents.service import document_trust
from gateway.documents.verify import verify_file
from gateway.pki import DevPki
from gateway.sign import jwk_thumbprint
from tests.conftest import Stack, start_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "blauweknop-test"
LABEL = "seal"
PIN = "246810"


def certify(pki: DevPki, public_key: ec.EllipticCurvePublicKey, directory: Path) -> Path:
    """The development root certifies the token's public key (as a CA would from a CSR)."""
    root_key = serialization.load_pem_private_key(
        (pki.directory / "root-ca.key.pem").read_bytes(), password=None
    )
    assert isinstance(root_key, ec.EllipticCurvePrivateKey)
    root = x509.load_pem_x509_certificate(pki.root_cert.read_bytes())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COUNTRY_NAME, "NL"),
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Blauwe Knop sandbox"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "gateway-seal-hsm"),
                ]
            )
        )
        .issuer_name(root.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    chain = directory / "hsm-seal.chain.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + pki.root_cert.read_bytes())
    return chain


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[dict[str, Any]]:
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    # This process and the document workers it spawns find the token through this.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    made = subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            "13579111",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    session = pkcs11.lib(MODULE).get_token(token_label=TOKEN).open(rw=True, user_pin=PIN)
    parameters = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True
    )
    public, private = parameters.generate_keypair(
        store=True,
        label=LABEL,
        private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )
    public_key = serialization.load_der_public_key(encode_ec_public_key(public))
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    pin_file = directory / "pin"
    pin_file.write_text(PIN)
    yield {
        "session": session,
        "private": private,
        "public_key": public_key,
        "chain": certify(pki, public_key, directory),
        "pin_file": pin_file,
    }
    session.close()
    if previous is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = previous


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hsm_stack(state_dir: Path, pki: DevPki, token: dict[str, Any]) -> AsyncIterator[Stack]:
    made, runners = await start_stack(
        state_dir,
        pki,
        signing={
            "pkcs11_module": MODULE,
            "pkcs11_token": TOKEN,
            "pkcs11_key_label": LABEL,
            "pkcs11_pin_file": str(token["pin_file"]),
            "chain": str(token["chain"]),
        },
        documents={"workers": 1},
    )
    yield made
    await made.session.close()
    for runner in runners:
        await runner.cleanup()


async def test_the_key_stays_on_the_token(token: dict[str, Any]) -> None:
    private = token["private"]
    assert private[Attribute.SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False
    with pytest.raises(pkcs11.PKCS11Error):
        _ = private[Attribute.VALUE]
    keys = list(token["session"].get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY}))
    assert len(keys) == 1


async def test_jws_xml_and_pdf_are_sealed_by_the_hsm_key(
    hsm_stack: Stack, token: dict[str, Any]
) -> None:
    kid = jwk_thumbprint(token["public_key"])
    async with hsm_stack.session.get(f"{hsm_stack.url}/.well-known/jwks.json") as response:
        assert kid in [k["kid"] for k in orjson.loads(await response.read())["keys"]]
    trust = document_trust(hsm_stack.settings)
    for accept in ("application/json", "application/jose", "application/xml", "application/pdf"):
        async with hsm_stack.session.post(
            f"{hsm_stack.url}/v1/sandbox/bundel",
            json={"bsn": "999990020"},
            headers={"Accept": accept},
        ) as response:
            assert response.status == 200, await response.text()
            body = await response.read()
        verdict = await asyncio.to_thread(verify_file, body, trust)
        assert verdict.ok, (accept, verdict.problems)
        assert "gateway-seal-hsm" in (verdict.signer or ""), accept
        if accept == "application/json":
            header = orjson.loads(
                base64.urlsafe_b64decode(orjson.loads(body)["jws"].split(".")[0] + "==")
            )
            assert header["kid"] == kid
