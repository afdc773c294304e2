"""A stand-in for DUO's back-end: answers overview requests for the test citizens, signed.

The data per BSN is in testdata.json, in the shape of the native answer, except for the very
long history, which history.py generates. Answers are rendered once per BSN but signed afresh
for each request, because each carries the caller's transaction id.
"""

from __future__ import annotations

import copy
import datetime as dt
from functools import cache
from pathlib import Path

import orjson
import xmlsec
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree

from connectors._sandbox.faults import FAULTS, install_faults, rogue_identity
from connectors._sandbox.runner import SandboxSpec
from connectors.duo.history import Native, long_history
from connectors.duo.protocol import (
    MEDIA_TYPE,
    NSMAP,
    PATH,
    SIGNATURE_SHAPE,
    check_message,
    new_message,
    qname,
)
from gateway.bsn import is_bsn
from gateway.connector import load_certificate, parse_xml
from gateway.errors import SourceInvalid
from gateway.pki import DevPki
from gateway.xmldsig import sign, signing_key, x509_key_info

LONG_HISTORY_BSN = "999990068"

_SIGNER = web.AppKey("duo_signer", tuple[xmlsec.Key, x509.Certificate])


def create_app(pki: DevPki) -> web.Application:
    identity = pki.identity("duo-sign")
    key = load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    app = web.Application()
    app[_SIGNER] = (signing_key(key), load_certificate(identity.cert))
    install_faults(app)
    app.router.add_post(PATH, _overzicht)
    return app


SANDBOX = SandboxSpec(org="duo", create_app=create_app)


async def _overzicht(request: web.Request) -> web.Response:
    try:
        verzoek = parse_xml(await request.read())
        check_message(verzoek, "OverzichtVerzoek")
    except (SourceInvalid, ValueError):
        return _fout("DUO-400-VERZOEK", "Het verzoek voldoet niet aan het koppelvlak")
    bsn = verzoek.findtext("d:Burgerservicenummer", namespaces=NSMAP) or ""
    transactie_id = verzoek.findtext("d:TransactieId", namespaces=NSMAP) or ""
    if not is_bsn(bsn):
        return _fout("DUO-400-BSN", "Het burgerservicenummer voldoet niet aan de elfproef")

    # A citizen DUO knows nothing about gets the same answer, signed, with no data in it.
    antwoord = copy.deepcopy(_answers().get(bsn, _EMPTY))
    kop = (
        ("TransactieId", transactie_id),
        ("Burgerservicenummer", bsn),
        ("Aanmaakmoment", dt.datetime.now(dt.UTC).isoformat(timespec="seconds")),
    )
    for position, (name, text) in enumerate(kop):
        element = etree.Element(qname(name))
        element.text = text
        antwoord.insert(position, element)

    key, cert = _signer(request.app)
    sign(antwoord, key, SIGNATURE_SHAPE, key_info=x509_key_info(cert))
    return web.Response(
        body=etree.tostring(antwoord, xml_declaration=True, encoding="UTF-8"),
        content_type=MEDIA_TYPE,
    )


def _signer(app: web.Application) -> tuple[xmlsec.Key, x509.Certificate]:
    if not app[FAULTS].wrong_signature:
        return app[_SIGNER]
    key, cert = rogue_identity("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    return signing_key(key), cert


def _fout(code: str, omschrijving: str) -> web.Response:
    fout = new_message("Foutbericht")
    etree.SubElement(fout, qname("Foutcode")).text = code
    etree.SubElement(fout, qname("Omschrijving")).text = omschrijving
    return web.Response(
        status=400,
        body=etree.tostring(fout, xml_declaration=True, encoding="UTF-8"),
        content_type=MEDIA_TYPE,
    )


def _answer(native: dict[str, Native]) -> etree._Element:
    """An answer without its header: the data elements only."""
    antwoord = new_message("OverzichtAntwoord")
    antwoord.set("versie", "1.0")
    for name, value in native.items():
        _render(antwoord, name, value)
    return antwoord


_EMPTY = _answer({})


@cache
def _answers() -> dict[str, etree._Element]:
    """Every test citizen's answer with data, rendered once and copied per request."""
    data: dict[str, dict[str, Native]] = orjson.loads(
        Path(__file__).with_name("testdata.json").read_bytes()
    )
    data[LONG_HISTORY_BSN] = long_history()
    return {bsn: _answer(native) for bsn, native in data.items()}


def _render(parent: etree._Element, name: str, value: Native) -> None:
    """Native data to XML: text, an element with children, or the element repeated."""
    if isinstance(value, list):
        for item in value:
            _render(parent, name, item)
        return
    element = etree.SubElement(parent, qname(name))
    if isinstance(value, str):
        element.text = value
    else:
        for child_name, child in value.items():
            _render(element, child_name, child)
