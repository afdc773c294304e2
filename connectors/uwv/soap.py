"""UWV's wire protocol: SOAP 1.1 in the Digikoppeling WUS style, answers signed with WS-Security.

The request carries WS-Addressing headers and our transaction id. The answer's `wsse:Security`
header holds an XML-DSig signature (exclusive c14n, RSA-SHA256) over the Body, the Timestamp,
the addressing headers and the echoed transaction id; the verifier trusts only what it covers.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway.connector import parse_xml
from gateway.errors import SourceInvalid
from gateway.xmldsig import C14N, SignatureShape, XmlSignatureVerifier, sign

NS: Final = {
    "soap": "http://schemas.xmlsoap.org/soap/envelope/",
    "wsa": "http://www.w3.org/2005/08/addressing",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "uwv": "http://schemas.uwv.nl/blauweknop/inkomensenvorderingen/v1",
}
SERVICE_PATH: Final = "/services/BlauweKnop/InkomensEnVorderingen/v1"
ACTION_VRAAG: Final = NS["uwv"] + "/VraagInkomensEnVorderingen"
ACTION_ANTWOORD: Final = ACTION_VRAAG + "Response"
MEDIA_TYPE: Final = "text/xml"
ANONYMOUS: Final = "http://www.w3.org/2005/08/addressing/anonymous"

_WSS: Final = "http://docs.oasis-open.org/wss/2004/01/"
_X509V3: Final = _WSS + "oasis-200401-wss-x509-token-profile-1.0#X509v3"
_BASE64: Final = _WSS + "oasis-200401-wss-soap-message-security-1.0#Base64Binary"
_TIMESTAMP_TTL: Final = timedelta(minutes=5)


def q(prefix: str, name: str) -> str:
    """The Clark-notation tag of `prefix:name`."""
    return f"{{{NS[prefix]}}}{name}"


WSU_ID: Final = q("wsu", "Id")
VRAAG: Final = q("uwv", "VraagInkomensEnVorderingen")
ANTWOORD: Final = q("uwv", "VraagInkomensEnVorderingenResponse")

# Every part the signature must cover, each exactly once, with the wsu:Id the signer gives it.
_SIGNED_PARTS: Final = {
    q("soap", "Body"): "id-body",
    q("wsu", "Timestamp"): "id-timestamp",
    q("wsa", "Action"): "id-action",
    q("wsa", "MessageID"): "id-messageid",
    q("wsa", "RelatesTo"): "id-relatesto",
    q("uwv", "TransactieId"): "id-transactie",
}
# One signature in the wsse:Security header, one reference per signed part, each by its wsu:Id.
SIGNATURE_SHAPE: Final = SignatureShape(
    parent="soap:Header/wsse:Security",
    references=len(_SIGNED_PARTS),
    transforms=(C14N,),
    id_attribute=WSU_ID,
    namespaces=NS,
)


@dataclass(frozen=True, slots=True)
class Vraag:
    """What a request asks, as the service reads it."""

    message_id: str
    transactie_id: str
    bsn: str


@dataclass(frozen=True, slots=True)
class SignedAnswer:
    """The signed parts of an answer; nothing here comes from outside the signature."""

    antwoord: etree._Element
    bsn: str
    relates_to: str
    transactie_id: str


def _element(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    child = etree.SubElement(parent, tag)
    child.text = text
    return child


def _envelope() -> tuple[etree._Element, etree._Element, etree._Element]:
    envelope = etree.Element(q("soap", "Envelope"), nsmap=NS)
    return envelope, _element(envelope, q("soap", "Header")), etree.Element(q("soap", "Body"))


def _serialise(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def build_request(*, to: str, message_id: str, transactie_id: str, bsn: str) -> bytes:
    """The request envelope; the BSN travels only here, in the POST body."""
    envelope, header, body = _envelope()
    _element(header, q("wsa", "To"), to)
    _element(header, q("wsa", "Action"), ACTION_VRAAG)
    _element(header, q("wsa", "MessageID"), message_id)
    _element(_element(header, q("wsa", "ReplyTo")), q("wsa", "Address"), ANONYMOUS)
    _element(header, q("uwv", "TransactieId"), transactie_id)
    envelope.append(body)
    _element(_element(body, VRAAG), q("uwv", "Burgerservicenummer"), bsn)
    return _serialise(envelope)


def _required_text(parent: etree._Element, path: str) -> str:
    found = parent.find(path, NS)
    if found is None or not found.text or not found.text.strip():
        raise ValueError(f"{path} is missing or empty")
    return found.text.strip()


def parse_request(raw: bytes) -> Vraag:
    """Read a request as the service does; raises ValueError saying what is wrong with it."""
    try:
        envelope = parse_xml(raw)
    except SourceInvalid as exc:
        raise ValueError(str(exc)) from exc
    if envelope.tag != q("soap", "Envelope"):
        raise ValueError("not a SOAP 1.1 envelope")
    if _required_text(envelope, "soap:Header/wsa:Action") != ACTION_VRAAG:
        raise ValueError("unknown wsa:Action")
    return Vraag(
        message_id=_required_text(envelope, "soap:Header/wsa:MessageID"),
        transactie_id=_required_text(envelope, "soap:Header/uwv:TransactieId"),
        bsn=_required_text(
            envelope, "soap:Body/uwv:VraagInkomensEnVorderingen/uwv:Burgerservicenummer"
        ),
    )


def build_fault(code: str, text: str) -> bytes:
    """A SOAP 1.1 Fault; `code` is `Client` (the request is wrong) or `Server`."""
    envelope, _, body = _envelope()
    envelope.append(body)
    fault = _element(body, q("soap", "Fault"))
    _element(fault, "faultcode", f"soap:{code}")
    _element(fault, "faultstring", text)
    return _serialise(envelope)


def describe_fault(raw: bytes) -> str:
    """A short description of an (unsigned, so merely informative) SOAP Fault."""
    try:
        fault = parse_xml(raw).find("soap:Body/soap:Fault", NS)
    except SourceInvalid:
        fault = None
    if fault is None:
        return "no SOAP Fault in the answer"
    return f"{fault.findtext('faultcode', '?')}: {fault.findtext('faultstring', '?')}"


def sign_response(
    antwoord: etree._Element,
    *,
    relates_to: str,
    transactie_id: str,
    message_id: str,
    key: xmlsec.Key,
    cert: x509.Certificate,
    now: datetime,
) -> bytes:
    """The answer envelope, signed with a WS-Security X.509 token signature."""
    envelope, header, body = _envelope()
    parts = {
        q("wsa", "Action"): ACTION_ANTWOORD,
        q("wsa", "MessageID"): message_id,
        q("wsa", "RelatesTo"): relates_to,
        q("uwv", "TransactieId"): transactie_id,
    }
    signed = [body]
    for tag, text in parts.items():
        signed.append(_element(header, tag, text))
    security = _element(header, q("wsse", "Security"))
    security.set(q("soap", "mustUnderstand"), "1")
    token = _element(
        security,
        q("wsse", "BinarySecurityToken"),
        base64.b64encode(cert.public_bytes(Encoding.DER)).decode(),
    )
    token.attrib.update({"EncodingType": _BASE64, "ValueType": _X509V3, WSU_ID: "id-x509"})
    timestamp = _element(security, q("wsu", "Timestamp"))
    signed.append(timestamp)
    _element(timestamp, q("wsu", "Created"), _wsu_time(now))
    _element(timestamp, q("wsu", "Expires"), _wsu_time(now + _TIMESTAMP_TTL))
    for part in signed:
        part.set(WSU_ID, _SIGNED_PARTS[part.tag])
    body.append(antwoord)
    envelope.append(body)

    # WSS X.509 token profile: KeyInfo points at the BinarySecurityToken instead of repeating it.
    token_reference = etree.Element(q("wsse", "SecurityTokenReference"), nsmap=NS)
    reference = _element(token_reference, q("wsse", "Reference"))
    reference.attrib.update({"URI": "#id-x509", "ValueType": _X509V3})
    sign(security, key, SIGNATURE_SHAPE, signed=signed, key_info=token_reference)
    return _serialise(envelope)


def _wsu_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def verify_response(raw: bytes, verifier: XmlSignatureVerifier) -> SignedAnswer:
    """Check the WS-Security signature against the pinned certificate; return the signed parts."""
    document = verifier.verify(raw)
    envelope = document.root
    if envelope.tag != q("soap", "Envelope"):
        raise SourceInvalid("the answer is not a SOAP 1.1 envelope")
    signed = {element.tag: element for element in document.signed}
    if set(signed) != set(_SIGNED_PARTS):
        raise SourceInvalid("the signature does not cover exactly the Body, Timestamp and headers")
    # Only the signed Body is used; a different visible Body means the message was rewrapped.
    if envelope.find("soap:Body", NS) is not signed[q("soap", "Body")]:
        raise SourceInvalid("the signed Body is not the envelope's Body")
    try:
        # The certificate must have been valid when the answer was signed, not necessarily
        # today, so that a bundle can be re-verified years later.
        verifier.check_valid_at(_signing_time(signed[q("wsu", "Timestamp")]))
        if _signed_text(signed, "wsa", "Action") != ACTION_ANTWOORD:
            raise SourceInvalid("the answer has an unexpected wsa:Action")
        antwoord = signed[q("soap", "Body")].find("uwv:VraagInkomensEnVorderingenResponse", NS)
        if antwoord is None:
            raise SourceInvalid("the signed Body holds no VraagInkomensEnVorderingenResponse")
        return SignedAnswer(
            antwoord=antwoord,
            bsn=_required_text(antwoord, "uwv:Burgerservicenummer"),
            relates_to=_signed_text(signed, "wsa", "RelatesTo"),
            transactie_id=_signed_text(signed, "uwv", "TransactieId"),
        )
    except ValueError as exc:
        raise SourceInvalid(f"the signed answer is incomplete: {exc}") from exc


def _signing_time(timestamp: etree._Element) -> datetime:
    created = _required_text(timestamp, "wsu:Created")
    try:
        moment = datetime.fromisoformat(created)
    except ValueError as exc:
        raise SourceInvalid(f"wsu:Created {created!r} is not a date-time") from exc
    if moment.tzinfo is None:
        raise SourceInvalid("wsu:Created has no time zone")
    return moment


def _signed_text(
    signed: dict[str, etree._Element], prefix: str, name: str, child: str | None = None
) -> str:
    return _required_text(signed[q(prefix, name)], child or ".")
