"""The bundle as XML (schema `bundel-v1.xsd`), sealed with an enveloped XAdES signature.

The XML is the JSON bundle written out element by element: names are the JSON member names,
an array is a wrapper element with one child per item (`bronnen/bron`), and a JSON null is an
absent element. The mapping is driven by the typed models in `gateway.models`, so the XML and
the JSON cannot drift apart: `bundel_from_xml(bundel_to_xml(d)) == d` for every valid bundle.

The seal is an enveloped XML-DSig (ECDSA P-256, SHA-256, exclusive c14n) in the XAdES
baseline B profile (signxml's XAdESSigner: SigningTime and SigningCertificateV2 as signed
properties), made with the same seal key and certificate chain as the JWS.

Verification parses strictly: no DTD, no entities, no network, a size limit, then the XSD.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml import SignatureMethod  # type: ignore[attr-defined]
from signxml.xades import (  # type: ignore[attr-defined]
    XAdESDataObjectFormat,
    XAdESSigner,
    XAdESVerifier,
)

from gateway.connector import xml_deeper_than
from gateway.errors import SchemaViolation, VerificationError
from gateway.models import Bundel

NS = "urn:blauweknop:xml:bundel:1"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XADES_NS = "http://uri.etsi.org/01903/v1.3.2#"
XSD_FILE = "bundel-v1.xsd"
MEDIA_TYPE = "application/xml"
MAX_XML_BYTES = 64 * 1024 * 1024
# The sealed bundle nests about twelve deep with its XAdES signature; `[documents]
# max_xml_depth` can lower or raise this bound on what verification parses.
DEFAULT_MAX_DEPTH = 32

# Array member -> the element name of one item.
ITEM_NAMES: Mapping[str, str] = {
    "bronnen": "bron",
    "contactopties": "contactoptie",
    "financiele_zaken": "financiele_zaak",
    "gebeurtenissen": "gebeurtenis",
    "inkomsten": "inkomen",
    "betalingsregelingen": "betalingsregeling",
    "zaakkenmerken": "zaakkenmerk",
}


@cache
def xsd_bytes() -> bytes:
    return resources.files(__package__).joinpath(XSD_FILE).read_bytes()


@cache
def _xsd() -> etree.XMLSchema:
    return etree.XMLSchema(etree.fromstring(xsd_bytes(), _strict_parser()))


def _strict_parser() -> etree.XMLParser:
    """No DTD, no entity expansion, no network, no huge trees, no comments or PIs kept."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def parse_strict(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> etree._Element:
    """Parse untrusted XML; refuse DTDs and entities instead of guessing what they mean."""
    if len(data) > MAX_XML_BYTES:
        raise VerificationError(f"the XML document is larger than {MAX_XML_BYTES} bytes")
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise VerificationError("the XML document has a DTD or entities; they are not allowed")
    try:
        root = etree.fromstring(data, _strict_parser())
    except etree.XMLSyntaxError as exc:
        raise VerificationError(f"not well-formed XML: {exc}") from exc
    tree = root.getroottree()
    docinfo: Any = tree.docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise VerificationError("the XML document has a DTD; it is not allowed")
    for _ in root.iter(etree.Entity):
        raise VerificationError("the XML document uses entities; they are not allowed")
    if xml_deeper_than(root, max_depth):
        raise VerificationError(f"the XML document nests deeper than {max_depth} elements")
    return root


def validate_xml(root: etree._Element) -> None:
    """Check against bundel-v1.xsd; raises SchemaViolation naming the first problems."""
    schema = _xsd()
    if schema.validate(root):
        return
    log: Any = schema.error_log
    problems = [f"line {e.line}: {e.message}" for e in list(log)[:5]]
    raise SchemaViolation("XML bundle does not match bundel-v1.xsd: " + "; ".join(problems))


# --- mapping, driven by the dataclasses in gateway.models ---------------------------------


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


@cache
def _fields(cls: type) -> tuple[tuple[str, Any], ...]:
    hints = typing.get_type_hints(cls)
    return tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def _scalar_kind(hint: Any) -> type:
    if hint is int:
        return int
    return str  # str and Literal[...] of strings


def _write(parent: etree._Element, name: str, hint: Any, value: Any) -> None:
    hint, _ = _unwrap_optional(hint)
    if value is None:
        return
    element = etree.SubElement(parent, _q(name))
    if dataclasses.is_dataclass(hint):
        assert isinstance(hint, type)
        for field_name, field_hint in _fields(hint):
            _write(element, field_name, field_hint, value[field_name])
    elif typing.get_origin(hint) is tuple:
        item_hint = typing.get_args(hint)[0]
        for item in value:
            _write(element, ITEM_NAMES[name], item_hint, item)
    elif isinstance(value, bool) or not isinstance(value, int | str):
        raise SchemaViolation(f"{name}: unexpected value type {type(value).__name__}")
    else:
        element.text = str(value)


def _read(element: etree._Element | None, name: str, hint: Any) -> Any:
    hint, optional = _unwrap_optional(hint)
    if element is None:
        if optional:
            return None
        raise SchemaViolation(f"missing element {name}")
    if dataclasses.is_dataclass(hint):
        assert isinstance(hint, type)
        children = {etree.QName(c).localname: c for c in element if isinstance(c.tag, str)}
        return {fname: _read(children.get(fname), fname, fhint) for fname, fhint in _fields(hint)}
    if typing.get_origin(hint) is tuple:
        item_hint = typing.get_args(hint)[0]
        return [_read(child, ITEM_NAMES[name], item_hint) for child in element]
    text = element.text or ""
    return int(text) if _scalar_kind(hint) is int else text


def bundel_to_xml(document: Mapping[str, Any]) -> etree._Element:
    """The schema-valid JSON bundle (a dict) as an unsigned `<bundel>` element."""
    nsmap: Any = {None: NS}
    root = etree.Element(_q("bundel"), nsmap=nsmap)
    for name, hint in _fields(Bundel):
        _write(root, name, hint, document[name])
    return root


def bundel_from_xml(root: etree._Element) -> dict[str, Any]:
    """The JSON bundle from a schema-valid `<bundel>` element (the signature is ignored)."""
    if root.tag != _q("bundel"):
        raise SchemaViolation(f"the root element must be {{{NS}}}bundel")
    children = {
        etree.QName(c).localname: c
        for c in root
        if isinstance(c.tag, str) and etree.QName(c).namespace == NS
    }
    return {name: _read(children.get(name), name, hint) for name, hint in _fields(Bundel)}


# --- seal ---------------------------------------------------------------------------------


def sign_xml(
    document: Mapping[str, Any],
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
) -> bytes:
    """The sealed XML download: `<bundel>` with an enveloped XAdES-B-B signature."""
    root = bundel_to_xml(document)
    signer = XAdESSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm="sha256",
        data_object_format=XAdESDataObjectFormat(
            Description="Blauwe Knop bundel v1", MimeType=MEDIA_TYPE
        ),
    )
    signed = signer.sign(root, key=key, cert=list(chain), always_add_key_value=False)
    body: bytes = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
    return body


@dataclasses.dataclass(frozen=True, slots=True)
class XmlSeal:
    """What a verified XML seal says: the signed bundle, the certificates and the claimed time."""

    document: dict[str, Any]
    chain: tuple[x509.Certificate, ...]
    signing_time: dt.datetime | None


def certificates_in_signature(root: etree._Element) -> tuple[x509.Certificate, ...]:
    """The X509Certificate elements of the enveloped signature, signer first."""
    signature = root.find(f"{{{DS_NS}}}Signature")
    if signature is None:
        raise VerificationError("the XML bundle carries no enveloped ds:Signature")
    certs: list[x509.Certificate] = []
    for element in signature.iterfind(f".//{{{DS_NS}}}X509Certificate"):
        try:
            certs.append(x509.load_der_x509_certificate(_b64(element.text or "")))
        except ValueError as exc:
            raise VerificationError(f"a certificate in the signature is malformed: {exc}") from exc
    if not certs:
        raise VerificationError("the XML signature names no X.509 certificate")
    return tuple(certs)


def verify_xml_seal(
    data: bytes, signer_cert: x509.Certificate | None = None, max_depth: int = DEFAULT_MAX_DEPTH
) -> XmlSeal:
    """Check the XML seal's mathematics against the signature's own certificate.

    Whether that certificate is trusted is the caller's question (see gateway.documents.verify).
    """
    root = parse_strict(data, max_depth)
    validate_xml(root)
    chain = certificates_in_signature(root)
    cert = signer_cert or chain[0]
    try:
        results = XAdESVerifier().verify(
            root, x509_cert=cert, expect_references=3, parser=_strict_parser()
        )
    except Exception as exc:  # signxml raises several unrelated types for a bad signature
        raise VerificationError(f"the XML seal does not verify: {exc}") from exc
    signed_root = None
    signing_time = None
    for result in results:
        if result.signed_xml is not None and result.signed_xml.tag == _q("bundel"):
            signed_root = result.signed_xml
        properties = getattr(result, "signed_properties", None)
        if properties is not None:
            when = properties.find(f"{{{XADES_NS}}}SigningTime")
            if when is not None and when.text:
                signing_time = dt.datetime.fromisoformat(when.text)
    if signed_root is None:
        raise VerificationError("the XML seal does not cover the whole <bundel> element")
    return XmlSeal(bundel_from_xml(signed_root), chain, signing_time)


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise VerificationError("invalid base64 in the XML signature") from exc
