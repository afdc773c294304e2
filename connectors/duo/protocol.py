"""DUO's Blauwe Knop interface: who DUO is, where to ask, and the message contract."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from lxml import etree

from gateway.models import Organisatie
from gateway.xmldsig import C14N, ENVELOPED, SignatureShape

ORGANISATIE: Final = Organisatie(
    oin="00000099000000001000", code="duo", naam="Dienst Uitvoering Onderwijs (DUO)"
)

PATH: Final = "/duo/blauweknop/v1/overzicht"
MEDIA_TYPE: Final = "application/xml"
NS: Final = "urn:nl:duo:blauweknop:1"
NSMAP: Final = {"d": NS}

# How DUO signs its answers: one enveloped signature directly under the root, over the whole
# document; the verifier accepts exactly this and nothing weaker.
SIGNATURE_SHAPE: Final = SignatureShape(parent=".", references=1, transforms=(ENVELOPED, C14N))

_SCHEMA: Final = etree.XMLSchema(etree.parse(str(Path(__file__).with_name("koppelvlak.xsd"))))


def qname(name: str) -> str:
    return f"{{{NS}}}{name}"


def new_message(name: str) -> etree._Element:
    """An empty message element with DUO's namespace as the default namespace."""
    # lxml takes None as the default-namespace prefix; its type stubs do not know that.
    return etree.Element(qname(name), nsmap={None: NS})  # type: ignore[dict-item]


def check_message(message: etree._Element, name: str) -> None:
    """Raise ValueError unless `message` is a `name` message that obeys koppelvlak.xsd."""
    if message.tag != qname(name):
        raise ValueError(f"expected {name}, got {message.tag!r}")
    try:
        _SCHEMA.assertValid(message)
    except etree.DocumentInvalid as exc:
        raise ValueError(f"{name} breaks the interface schema: {exc}") from exc


def request_body(bsn: str, transactie_id: str) -> bytes:
    """The OverzichtVerzoek; the BSN travels in the body, never in a URL."""
    verzoek = new_message("OverzichtVerzoek")
    etree.SubElement(verzoek, qname("Burgerservicenummer")).text = bsn
    etree.SubElement(verzoek, qname("TransactieId")).text = transactie_id
    return etree.tostring(verzoek, xml_declaration=True, encoding="UTF-8")
