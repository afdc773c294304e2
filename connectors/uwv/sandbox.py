"""A stand-in for UWV's Digikoppeling WUS service: two-sided TLS, SOAP 1.1, WS-Security signed.

The records live in `testdata.json` as UWV's back-end holds them (element names as on the
wire); every answer is rendered from there, signed with the dev PKI's "uwv-sign" key, and
echoes the request's wsa:MessageID (as wsa:RelatesTo) and transaction id.
"""

from __future__ import annotations

import json
import ssl
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import xmlsec
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree

from connectors._sandbox import CITIZENS, FAULTS, install_faults, rogue_identity
from connectors._sandbox.runner import SandboxSpec
from connectors.uwv.soap import (
    ACTION_VRAAG,
    ANTWOORD,
    MEDIA_TYPE,
    NS,
    SERVICE_PATH,
    build_fault,
    parse_request,
    q,
    sign_response,
)
from gateway.bsn import is_bsn
from gateway.connector import load_certificate
from gateway.pki import DevPki
from gateway.xmldsig import signing_key

TESTDATA: Final = Path(__file__).with_name("testdata.json")

_SIGNER = web.AppKey("uwv_signer", tuple[xmlsec.Key, x509.Certificate])
_ANTWOORDEN = web.AppKey("uwv_antwoorden", dict[str, bytes])


def _append(parent: etree._Element, name: str, value: Any) -> None:
    """Render a back-end record: objects become elements, lists repeat their element."""
    if value is None:
        return
    if isinstance(value, list):
        for item in value:
            _append(parent, name, item)
        return
    element = etree.SubElement(parent, q("uwv", name))
    if isinstance(value, dict):
        for child_name, child in value.items():
            _append(element, child_name, child)
    else:
        element.text = str(value)


def render_antwoord(bsn: str, records: dict[str, Any]) -> bytes:
    """The Body content for one citizen; no records gives the (signed) empty answer."""
    antwoord = etree.Element(ANTWOORD, nsmap={"uwv": NS["uwv"]})
    _append(antwoord, "Burgerservicenummer", bsn)
    for name, value in records.items():
        _append(antwoord, name, value)
    return etree.tostring(antwoord)


def _fault(code: str, text: str) -> web.Response:
    # SOAP 1.1 sends every Fault with HTTP 500, also when the client is at fault.
    return web.Response(
        status=500, body=build_fault(code, text), content_type=MEDIA_TYPE, charset="utf-8"
    )


async def _vraag(request: web.Request) -> web.Response:
    if request.headers.get("SOAPAction", "").strip('"') != ACTION_VRAAG:
        return _fault("Client", "Onbekende SOAPAction")
    try:
        vraag = parse_request(await request.read())
    except ValueError as exc:
        return _fault("Client", f"Ongeldig verzoek: {exc}")
    if not is_bsn(vraag.bsn):
        return _fault("Client", "Burgerservicenummer voldoet niet aan de elfproef")
    app = request.app
    antwoord = app[_ANTWOORDEN].get(vraag.bsn) or render_antwoord(vraag.bsn, {})
    key, cert = app[_SIGNER]
    if app[FAULTS].wrong_signature:
        rogue_key, cert = rogue_identity("rsa")
        assert isinstance(rogue_key, rsa.RSAPrivateKey)
        key = signing_key(rogue_key)
    # The signature covers wsa:RelatesTo and a fresh Timestamp, so it is made per request;
    # only the rendered Body content is cached per BSN.
    body = sign_response(
        etree.fromstring(antwoord),
        relates_to=vraag.message_id,
        transactie_id=vraag.transactie_id,
        message_id=f"urn:uuid:{uuid.uuid4()}",
        key=key,
        cert=cert,
        now=datetime.now(UTC),
    )
    return web.Response(body=body, content_type=MEDIA_TYPE, charset="utf-8")


def create_app(pki: DevPki) -> web.Application:
    identity = pki.identity("uwv-sign")
    key = load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    records: dict[str, dict[str, Any]] = json.loads(TESTDATA.read_text(encoding="utf-8"))
    app = web.Application(client_max_size=64 * 1024)
    cert = load_certificate(identity.cert)
    app[_SIGNER] = (signing_key(key), cert)
    app[_ANTWOORDEN] = {
        c.bsn: render_antwoord(c.bsn, records[c.bsn]) for c in CITIZENS if "uwv" in c.holders
    }
    install_faults(app)
    app.router.add_post(SERVICE_PATH, _vraag)
    return app


def server_tls(pki: DevPki) -> ssl.SSLContext:
    """Digikoppeling two-sided TLS: only clients with a certificate from the dev root CA."""
    identity = pki.identity("uwv-server")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.root_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(identity.chain), str(identity.key))
    return context


SANDBOX = SandboxSpec(org="uwv", create_app=create_app, server_tls=server_tls, scheme="https")
