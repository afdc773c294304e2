"""What a connector is, and the few shared tools every connector needs.

A connector speaks one organisation's protocol. `fetch` does the transport; `verify` checks the
organisation's own signature on the raw response against the pinned certificate and maps it to
the common schema. Because `verify` needs no network, the same code re-checks a bundle's
provenance offline, years later.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from gateway import jws
from gateway.errors import (
    ConfigError,
    SourceInvalid,
    SourceTimeout,
    SourceUnreachable,
    VerificationError,
)
from gateway.models import Contactoptie, Gegevens, Handtekeningvorm, Herkomst, Organisatie

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
# The organisations' XML nests six (DUO) to eight (UWV, a SOAP envelope) elements deep;
# recursive code further on (canonicalisation, mapping) must never meet thousands.
DEFAULT_MAX_XML_DEPTH = 32


@dataclass(frozen=True, slots=True)
class ConnectorSettings:
    """Where an organisation lives and how far to trust it; `options` are protocol-specific."""

    organisatie: Organisatie
    base_url: str
    trust_cert: Path
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_xml_depth: int = DEFAULT_MAX_XML_DEPTH
    client_cert: Path | None = None
    client_key: Path | None = None
    ca_cert: Path | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    # Set up only to check signatures (an auditor re-verifying sources): no credentials such as
    # client keys or secrets are needed or loaded, and `fetch` is refused.
    verify_only: bool = False


@dataclass(frozen=True, slots=True)
class FetchRequest:
    bsn: str
    transactie_id: str
    session: aiohttp.ClientSession


@dataclass(frozen=True, slots=True)
class SourceData:
    gegevens: Gegevens
    herkomst: Herkomst


class Connector(Protocol):
    organisatie: Organisatie
    contactopties: tuple[Contactoptie, ...]

    async def fetch(self, request: FetchRequest) -> SourceData:
        """Retrieve, verify and map; raise a `SourceError` subclass when that fails."""
        ...

    def verify(self, raw: bytes) -> Gegevens:
        """Check the signature on a raw response and map it; raise `SourceInvalid` if bad."""
        ...


ConnectorFactory = Callable[[ConnectorSettings], Connector]


def verify_only_error(organisatie: Organisatie) -> ConfigError:
    """What a connector set up with `verify_only` raises when it is asked to fetch anyway."""
    return ConfigError(
        f"the {organisatie.naam} connector is set up to verify signatures only (no credentials "
        "loaded); it cannot fetch"
    )


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def certificate_key_id(cert: x509.Certificate) -> str:
    """The certificate's SHA-256 thumbprint, base64url, as in a JOSE `x5t#S256` header."""
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_herkomst(
    raw: bytes, *, media_type: str, handtekening: Handtekeningvorm, sleutel_id: str
) -> Herkomst:
    return Herkomst(
        media_type=media_type,
        handtekening=handtekening,
        sleutel_id=sleutel_id,
        sha256=hashlib.sha256(raw).hexdigest(),
        inhoud=base64.b64encode(raw).decode(),
    )


def client_timeout(settings: ConnectorSettings) -> aiohttp.ClientTimeout:
    # The fan-out deadline bounds the total; these bound each phase so a stalled peer is noticed.
    return aiohttp.ClientTimeout(
        total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
    )


def client_tls(settings: ConnectorSettings) -> ssl.SSLContext | None:
    """A TLS context presenting our client certificate, for two-sided TLS (Digikoppeling)."""
    if settings.client_cert is None:
        return None
    context = ssl.create_default_context(cafile=str(settings.ca_cert) if settings.ca_cert else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.client_cert), str(settings.client_key))
    return context


async def read_limited(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """Read a body but stop, and refuse it, as soon as it grows past `max_bytes`."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise SourceInvalid(f"response of {declared} bytes exceeds the limit of {max_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise SourceInvalid(f"response exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@contextmanager
def transport_errors(organisatie: Organisatie) -> Iterator[None]:
    """Translate transport failures into the source statuses the bundle records."""
    name = organisatie.naam
    try:
        yield
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise SourceTimeout(f"{name} did not answer in time") from exc
    except aiohttp.ClientPayloadError as exc:
        raise SourceInvalid(f"{name} sent a broken response body") from exc
    except aiohttp.ClientResponseError as exc:
        raise SourceUnreachable(f"{name} answered HTTP {exc.status}") from exc
    except (aiohttp.ClientError, ssl.SSLError, OSError) as exc:
        raise SourceUnreachable(f"{name} could not be reached: {type(exc).__name__}") from exc


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        # Signatures (exclusive c14n) never cover comments, so a comment must not be able to
        # split a signed text node in two; without them adjacent text is read as one.
        remove_comments=True,
    )


def xml_deeper_than(root: etree._Element, max_depth: int) -> bool:
    """Whether elements nest more than `max_depth` deep (the root is depth 1).

    One XPath step per level, evaluated by libxml2: linear in the document, no Python loop.
    """
    return bool(root.xpath("boolean(" + "/*" * (max_depth + 1) + ")"))


def parse_xml(data: bytes, max_depth: int = DEFAULT_MAX_XML_DEPTH) -> etree._Element:
    """Parse outside XML strictly: no DTD (so no entity expansion, no network), no comments.

    libxml2 itself stops at 256 levels (`huge_tree` off); `max_depth` is the tighter bound.
    """
    try:
        tree = etree.fromstring(data, parser=_safe_parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise SourceInvalid(f"malformed XML: {exc.msg}") from exc
    # Any DOCTYPE, internal or external, shows up as an internal DTD object here.
    if tree.docinfo.internalDTD is not None:
        raise SourceInvalid("XML with a DOCTYPE is refused")
    root = tree.getroot()
    if xml_deeper_than(root, max_depth):
        raise SourceInvalid(f"XML nested deeper than {max_depth} elements is refused")
    return root


def verify_source_jws(raw: bytes, cert: x509.Certificate) -> bytes:
    """Verify an organisation's ES256 compact JWS against its pinned certificate."""
    try:
        return jws.verify_es256(raw, cert.public_key()).payload
    except VerificationError as exc:
        raise SourceInvalid(f"signature check failed: {exc}") from exc


def check_answers_request(
    organisatie: Organisatie, request: FetchRequest, *, transactie_id: str, bsn: str | None
) -> None:
    """A signed answer must name the request it answers: this refuses replays and mix-ups."""
    if transactie_id != request.transactie_id:
        raise SourceInvalid(
            f"{organisatie.naam} answered for another transaction (a replayed answer?)"
        )
    if bsn is not None and bsn != request.bsn:
        raise SourceInvalid(f"{organisatie.naam} answered about another citizen")
