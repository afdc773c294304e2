"""The generic connector: any organisation implementing docs/provider-api.yaml joins with no code.

It posts the request to `<url>/blauweknop/v1/gegevens`, refuses redirects, bounds the answer's
size and time, verifies the ES256 JWS against the organisation's registered JWKS (by `kid`),
checks that the document answers this transaction about this citizen (so an answer cannot be
replayed into another request), and maps it strictly. Calls go through a resolver that refuses
non-public addresses outside sandbox mode, checked at every connection (DNS rebinding).

When the organisation registered X.509 trust anchors, an answer may instead carry an `x5c`
chain: it must end in one of those anchors, name the organisation's OIN, allow signing, and be
valid when signed (now, for a live answer; the document's `aangemaakt_op` when a stored answer
is checked again later); its leaf key is the one that must verify. An `x5c` from an
organisation without anchors is refused, not ignored.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.generic.mapping import Document, bsn_hash, parse_document
from gateway import jws
from gateway.connector import (
    ConnectorSettings,
    FetchRequest,
    SourceData,
    client_timeout,
    make_herkomst,
    read_limited,
    transport_errors,
)
from gateway.errors import SourceInvalid, SourceUnreachable, VerificationError
from gateway.federation.certs import CertificateRefused, load_anchors, parse_x5c, thumbprint
from gateway.federation.certs import verify_chain as verify_x509_chain
from gateway.federation.registry import public_keys
from gateway.federation.safety import check_url, connector_kwargs
from gateway.models import Contactoptie, Gegevens

GEGEVENS_PATH = "/blauweknop/v1/gegevens"
JWKS_PATH = "/blauweknop/v1/jwks.json"
MEDIA_TYPE = "application/jose"


class GenericConnector:
    def __init__(
        self,
        settings: ConnectorSettings,
        keys: Mapping[str, ec.EllipticCurvePublicKey],
        contactopties: tuple[Contactoptie, ...],
        categorieen: tuple[str, ...],
        *,
        allow_private: bool,
        anchors: tuple[x509.Certificate, ...] = (),
    ) -> None:
        self.organisatie = settings.organisatie
        self.contactopties = contactopties
        self._settings = settings
        self._keys = dict(keys)
        self._anchors = anchors
        self._categorieen = categorieen
        self._allow_private = allow_private
        self._url = check_url(settings.base_url, sandbox=allow_private) + GEGEVENS_PATH
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit_per_host=64, **connector_kwargs(allow_private=self._allow_private)
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def fetch(self, request: FetchRequest) -> SourceData:
        naam = self.organisatie.naam
        body = orjson.dumps(
            {
                "transactie_id": request.transactie_id,
                "burgerservicenummer": request.bsn,
                "categorieen": list(self._categorieen),
            }
        )
        headers = {
            "Content-Type": "application/json",
            "Accept": MEDIA_TYPE,
            "X-Transactie-Id": request.transactie_id,
        }
        with transport_errors(self.organisatie):
            async with self._client().post(
                self._url,
                data=body,
                headers=headers,
                timeout=client_timeout(self._settings),
                allow_redirects=False,
            ) as response:
                if response.status >= 500:
                    raise SourceUnreachable(f"{naam} answered HTTP {response.status}")
                raw = await read_limited(response, self._settings.max_body_bytes)
                status, content_type = response.status, response.content_type
        if status != 200:
            raise SourceInvalid(f"{naam} refused the request with HTTP {status}")
        if content_type != MEDIA_TYPE:
            raise SourceInvalid(f"{naam} answered {content_type!r}, not a signed {MEDIA_TYPE}")
        document, kid = self._open(raw, at=dt.datetime.now(dt.UTC))
        if document.transactie_id != request.transactie_id:
            raise SourceInvalid(f"{naam} answered for another transaction (a replayed answer?)")
        expected = bsn_hash(request.transactie_id, request.bsn)
        if not hmac.compare_digest(document.bsn_sha256, expected):
            raise SourceInvalid(f"{naam} answered about another citizen")
        herkomst = make_herkomst(raw, media_type=MEDIA_TYPE, handtekening="jws", sleutel_id=kid)
        return SourceData(document.gegevens, herkomst)

    def verify(self, raw: bytes) -> Gegevens:
        """Check a stored answer again; a certificate chain counts at its signing time."""
        return self._open(raw, at=None)[0].gegevens

    def _open(self, raw: bytes, *, at: dt.datetime | None) -> tuple[Document, str]:
        naam = self.organisatie.naam
        try:
            parsed, _, _ = jws.parse(raw)
        except VerificationError as exc:
            raise SourceInvalid(f"{naam} sent no valid compact JWS: {exc}") from exc
        if "x5c" in parsed.header:
            key, kid = self._certified_key(parsed.header["x5c"], parsed.payload, at)
        else:
            named = parsed.header.get("kid")
            if not isinstance(named, str) or named not in self._keys:
                raise SourceInvalid(f"{naam} signed with key {named!r}, which is not registered")
            key, kid = self._keys[named], named
        try:
            payload = jws.verify_es256(raw, key).payload
            document = parse_document(orjson.loads(payload), self.organisatie)
        except VerificationError as exc:
            raise SourceInvalid(f"signature check failed: {exc}") from exc
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise SourceInvalid(f"{naam} sent a document that does not conform: {exc}") from exc
        return document, kid

    def _certified_key(
        self, x5c: object, payload: bytes, at: dt.datetime | None
    ) -> tuple[ec.EllipticCurvePublicKey, str]:
        """The leaf key of an `x5c` chain that ends in a registered anchor, and its id."""
        naam = self.organisatie.naam
        if not self._anchors:
            raise SourceInvalid(
                f"{naam} sent an x5c certificate chain but registered no X.509 anchor to check "
                "it against (register x509, or sign with a key from the registered JWKS)"
            )
        if at is None:
            # A stored answer: its chain must have been valid when it was signed. The time is
            # the document's own, and is trusted only once the leaf's signature verifies.
            at = _signed_at(payload)
            if at is None:
                raise SourceInvalid(f"{naam}: the document has no valid aangemaakt_op")
        try:
            chain = parse_x5c(x5c)
            verify_x509_chain(
                chain[0],
                chain[1:],
                self._anchors,
                oin=self.organisatie.oin,
                at=at,
                purpose="signing",
            )
        except CertificateRefused as exc:
            raise SourceInvalid(f"{naam}'s x5c certificate is refused: {exc}") from exc
        key = chain[0].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise SourceInvalid(f"{naam}'s x5c leaf has no EC P-256 key, so it cannot sign ES256")
        return key, f"x5t#S256:{thumbprint(chain[0])}"


def _signed_at(payload: bytes) -> dt.datetime | None:
    try:
        value = orjson.loads(payload).get("aangemaakt_op")
        when = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return None
    return when if when is not None and when.tzinfo is not None else None


def create_generic(settings: ConnectorSettings) -> GenericConnector:
    """`trust_cert` is the organisation's JWKS file; options: `contactopties` (JSON list),
    `categorieen` (space-separated), `allow_private` ("true" only in sandbox mode), `x509` (a
    PEM file of the organisation's X.509 trust anchors, for answers that carry `x5c`)."""
    try:
        keys = public_keys(orjson.loads(settings.trust_cert.read_bytes()))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{settings.trust_cert}: not a usable JWKS: {exc}") from exc
    anchors: tuple[x509.Certificate, ...] = ()
    if anchor_file := settings.options.get("x509"):
        try:
            anchors = load_anchors(Path(anchor_file).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{anchor_file}: not usable X.509 trust anchors: {exc}") from exc
    contact = orjson.loads(settings.options.get("contactopties", "[]"))
    return GenericConnector(
        settings,
        keys,
        tuple(Contactoptie(c["contactvorm"], c["waarde"], c["omschrijving"]) for c in contact),
        tuple(settings.options.get("categorieen", "").split()),
        allow_private=settings.options.get("allow_private") == "true",
        anchors=anchors,
    )
