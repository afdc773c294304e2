"""Verifying an organisation's XML-DSig signature through libxmlsec1, strictly.

libxmlsec1 (through the `xmlsec` binding) does the cryptography and canonicalisation in C, with
the GIL released: 1.7 to 3 times less CPU per answer than signxml (docs/performance.md). What it
does not decide for us is what a valid signature *means*, so this module does that first, from
the document itself:

* exactly one `ds:Signature`, in the place the protocol puts it;
* exclusive c14n, RSA-SHA256 and SHA-256 only, and each reference with exactly the transforms
  the protocol uses; libxmlsec1 is also told to allow nothing else;
* references only to the whole document (`URI=""`, enveloped) or to elements by one named id
  attribute (`#id`); an id must name one element only, so what libxmlsec1 digests is the element
  we then read (no signature wrapping), and no reference can point outside the document;
* only the pinned certificate's key: libxmlsec1 gets that key and no keys manager, so whatever
  `ds:KeyInfo` says is never used to find a key.

Comments are removed while parsing (`parse_xml`): exclusive c14n leaves them out of the digest,
so they could otherwise split a text node we read without breaking the signature. What a caller
reads from the returned elements is therefore exactly what was signed.

`sign` makes signatures of the same shapes; the sandboxes that play DUO and UWV use it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, TypeAlias

import xmlsec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from lxml import etree

from gateway.connector import DEFAULT_MAX_XML_DEPTH, parse_xml
from gateway.errors import SourceInvalid

# The binding's stubs give the type of its transform constants only a private name.
Transform: TypeAlias = "xmlsec.constants.__Transform"

DS_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
C14N: Final = xmlsec.constants.TransformExclC14N
SIGNATURE_METHOD: Final = xmlsec.constants.TransformRsaSha256
DIGEST_METHOD: Final = xmlsec.constants.TransformSha256
ENVELOPED: Final = xmlsec.constants.TransformEnveloped

_NS: Final = {"ds": DS_NS}
_SIGNATURE: Final = f"{{{DS_NS}}}Signature"


@dataclass(frozen=True, slots=True)
class SignatureShape:
    """What one protocol's signature looks like; anything else is refused.

    `id_attribute` (Clark notation) names the attribute by which references point at elements;
    None means the one reference is `URI=""`: the whole document, with the signature enveloped.
    """

    parent: str
    references: int
    transforms: tuple[Transform, ...]
    id_attribute: str | None = None
    namespaces: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """A verified document: its root and the signed elements, in reference order.

    With an enveloped signature the `ds:Signature` element is removed from the tree, so the
    root then holds only what the signature covers.
    """

    root: etree._Element
    signed: tuple[etree._Element, ...]


class XmlSignatureVerifier:
    """Checks one protocol's XML-DSig signatures against one pinned certificate."""

    def __init__(
        self, cert: x509.Certificate, shape: SignatureShape, max_depth: int = DEFAULT_MAX_XML_DEPTH
    ) -> None:
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise ValueError("the pinned certificate must carry an RSA key (RSA-SHA256)")
        if shape.id_attribute is None and (
            shape.references != 1 or ENVELOPED not in shape.transforms
        ):
            raise ValueError("a whole-document signature is enveloped, with one reference")
        self._cert = cert
        self._public_key = public_key
        # The bare public key: libxmlsec1 copies the key into every context, and copying a
        # certificate along with it costs more than the whole RSA verification.
        self._key = xmlsec.Key.from_memory(
            public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
            xmlsec.constants.KeyDataFormatPem,
        )
        self._shape = shape
        self._max_depth = max_depth
        self._transforms = [t.href for t in shape.transforms]

    def verify(self, raw: bytes) -> SignedDocument:
        """Parse `raw` strictly and verify its signature; raise SourceInvalid if anything is off."""
        root = parse_xml(raw, self._max_depth)
        signature = self._signature(root)
        context = xmlsec.SignatureContext()
        context.key = self._key
        for transform in (C14N, SIGNATURE_METHOD):
            context.enable_signature_transform(transform)
        for transform in (*self._shape.transforms, DIGEST_METHOD):
            context.enable_reference_transform(transform)
        signed = self._resolve(root, self._reference_uris(signature), context)
        try:
            context.verify(signature)
        except xmlsec.VerificationError as exc:
            raise _invalid(self._why_invalid(signature)) from exc
        except xmlsec.Error as exc:
            raise _invalid(f"libxmlsec1 refused it: {exc}") from exc
        if self._shape.id_attribute is None:
            _remove_keeping_tail(signature)
        return SignedDocument(root, signed)

    def check_valid_at(self, moment: datetime) -> None:
        """The pinned certificate must have been valid at `moment` (when it signed)."""
        at = moment.astimezone(UTC)
        if not self._cert.not_valid_before_utc <= at <= self._cert.not_valid_after_utc:
            raise _invalid(
                f"the signing certificate was not valid at {at.isoformat()} (valid "
                f"{self._cert.not_valid_before_utc.isoformat()} to "
                f"{self._cert.not_valid_after_utc.isoformat()})"
            )

    def _signature(self, root: etree._Element) -> etree._Element:
        signatures = list(root.iter(_SIGNATURE))
        if len(signatures) != 1:
            raise _invalid(f"expected one signature, found {len(signatures)}")
        (signature,) = signatures
        parent = root.find(self._shape.parent, self._shape.namespaces)
        if parent is None or signature.getparent() is not parent:
            raise _invalid("the signature is not where the protocol puts it")
        return signature

    def _reference_uris(self, signature: etree._Element) -> list[str]:
        """Check the algorithms and the shape of every reference; return their URIs."""
        signed_info = signature.find("ds:SignedInfo", _NS)
        if signed_info is None:
            raise _invalid("the signature has no SignedInfo")
        for path, expected in (
            ("ds:CanonicalizationMethod", C14N),
            ("ds:SignatureMethod", SIGNATURE_METHOD),
        ):
            _require_algorithm(signed_info.find(path, _NS), expected)
        references = signed_info.findall("ds:Reference", _NS)
        if len(references) != self._shape.references:
            raise _invalid(
                f"expected {self._shape.references} signed references, found {len(references)}"
            )
        uris = []
        for reference in references:
            transforms = [
                t.get("Algorithm") for t in reference.iterfind("ds:Transforms/ds:Transform", _NS)
            ]
            if transforms != self._transforms:
                raise _invalid(f"reference transforms {transforms} are not allowed")
            _require_algorithm(reference.find("ds:DigestMethod", _NS), DIGEST_METHOD)
            uri = reference.get("URI")
            if uri is None:
                raise _invalid("a signed reference has no URI")
            uris.append(uri)
        return uris

    def _resolve(
        self, root: etree._Element, uris: list[str], context: xmlsec.SignatureContext
    ) -> tuple[etree._Element, ...]:
        """The element each URI names, registered so libxmlsec1 digests that same element."""
        attribute = self._shape.id_attribute
        if attribute is None:
            if uris != [""]:
                raise _invalid('an enveloped signature must cover the whole document (URI="")')
            return (root,)
        by_id: dict[str, etree._Element] = {}
        repeated: set[str] = set()
        for element in root.iter():
            value = element.get(attribute)
            if value is not None:
                if value in by_id:
                    repeated.add(value)
                by_id[value] = element
        signed = []
        for uri in uris:
            ident = uri[1:]
            if not uri.startswith("#") or ident not in by_id:
                raise _invalid(f"signed reference {uri!r} names no element of this document")
            if ident in repeated:
                raise _invalid(f"the id {ident!r} names more than one element")
            element = by_id[ident]
            try:
                _register_id(context, element, attribute)
            except xmlsec.Error as exc:  # an xml:id with the same value
                raise _invalid(f"the id {ident!r} names more than one element") from exc
            signed.append(element)
        if len({id(e) for e in signed}) != len(signed):
            raise _invalid("the signature covers one element twice")
        return tuple(signed)

    def _why_invalid(self, signature: etree._Element) -> str:
        """Tell a changed document from a signature by another key (e.g. a rotated key)."""
        signed_info = signature.find("ds:SignedInfo", _NS)
        assert signed_info is not None  # checked before libxmlsec1 ran
        try:
            value = base64.b64decode(signature.findtext("ds:SignatureValue", "", _NS))
            self._public_key.verify(
                value,
                etree.tostring(signed_info, method="c14n", exclusive=True, with_comments=False),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (InvalidSignature, binascii.Error):
            return "Signature verification failed: not signed by the pinned certificate's key"
        return "Digest mismatch: the signed content was changed"


def _invalid(reason: str) -> SourceInvalid:
    return SourceInvalid(f"XML signature check failed: {reason}")


def _require_algorithm(element: etree._Element | None, expected: Transform) -> None:
    algorithm = None if element is None else element.get("Algorithm")
    if algorithm != expected.href:
        raise _invalid(f"algorithm {algorithm!r} is not allowed")


def _register_id(context: xmlsec.SignatureContext, element: etree._Element, attribute: str) -> None:
    """Tell libxmlsec1 that `attribute` (Clark notation) of `element` is an id."""
    name = etree.QName(attribute)
    context.register_id(element, name.localname, name.namespace)


def _remove_keeping_tail(element: etree._Element) -> None:
    """Remove an element but not the text after it, as the enveloped transform does."""
    parent = element.getparent()
    assert parent is not None
    if element.tail:
        previous = element.getprevious()
        if previous is None:
            parent.text = (parent.text or "") + element.tail
        else:
            previous.tail = (previous.tail or "") + element.tail
    parent.remove(element)


def signing_key(key: rsa.RSAPrivateKey) -> xmlsec.Key:
    """An organisation's private key in libxmlsec1's form.

    Without its certificate: libxmlsec1 copies the key into every signing context, and a
    certificate would be copied along each time; `x509_key_info` names the certificate instead.
    """
    return xmlsec.Key.from_memory(
        key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
        xmlsec.constants.KeyDataFormatPem,
    )


def x509_key_info(cert: x509.Certificate) -> etree._Element:
    """`ds:X509Data` carrying the signing certificate, for `ds:KeyInfo`."""
    data = etree.Element(f"{{{DS_NS}}}X509Data", nsmap={None: DS_NS})  # type: ignore[dict-item]
    etree.SubElement(data, f"{{{DS_NS}}}X509Certificate").text = base64.b64encode(
        cert.public_bytes(Encoding.DER)
    ).decode()
    return data


def sign(
    parent: etree._Element,
    key: xmlsec.Key,
    shape: SignatureShape,
    *,
    key_info: etree._Element,
    signed: Sequence[etree._Element] = (),
) -> None:
    """Append a signature of `shape` to `parent` and sign it.

    With an id attribute in `shape`, the signature covers the `signed` elements by their ids;
    without, it covers the whole document (enveloped). `key_info` becomes the content of
    `ds:KeyInfo`, which the signature does not cover.
    """
    signature = xmlsec.template.create(parent, C14N, SIGNATURE_METHOD)
    parent.append(signature)
    context = xmlsec.SignatureContext()
    context.key = key
    attribute = shape.id_attribute
    if attribute is None:
        uris = [""]
    else:
        uris = [f"#{element.get(attribute)}" for element in signed]
        for element in signed:
            _register_id(context, element, attribute)
    for uri in uris:
        reference = xmlsec.template.add_reference(signature, DIGEST_METHOD, uri=uri)
        for transform in shape.transforms:
            xmlsec.template.add_transform(reference, transform)
    xmlsec.template.ensure_key_info(signature).append(key_info)
    context.sign(signature)
