"""The DUO connector: XML over HTTP, answers signed with an enveloped XML-DSig."""

from __future__ import annotations

from typing import Final

from lxml import etree
from signxml.exceptions import SignXMLException
from signxml.verifier import SignatureConfiguration, VerifyResult, XMLVerifier

from connectors.duo.mapping import Antwoord, map_antwoord
from connectors.duo.protocol import (
    DIGEST_ALGORITHM,
    MEDIA_TYPE,
    PATH,
    SIGNATURE_METHOD,
    request_body,
)
from gateway.connector import (
    ConnectorSettings,
    FetchRequest,
    SourceData,
    certificate_key_id,
    check_answers_request,
    client_timeout,
    load_certificate,
    make_herkomst,
    parse_xml,
    read_limited,
    transport_errors,
)
from gateway.errors import SourceInvalid, SourceUnreachable
from gateway.models import Contactoptie, Gegevens

CONTACTOPTIES: Final[tuple[Contactoptie, ...]] = (
    Contactoptie(
        contactvorm="website",
        waarde="https://duo.nl/particulier/studieschuld-terugbetalen/",
        omschrijving="Uw studieschuld, betalingen en betalingsregelingen in Mijn DUO "
        "(inloggen met DigiD)",
    ),
    Contactoptie(
        contactvorm="telefoon",
        waarde="050 599 77 55",
        omschrijving="Informatielijn DUO, maandag tot en met vrijdag van 9.00 tot 17.00 uur",
    ),
    Contactoptie(
        contactvorm="post",
        waarde="DUO, Postbus 50061, 9702 EB Groningen",
        omschrijving="Brieven, bezwaar en beroep",
    ),
)

# The signature must sit directly under the root, with one reference: the whole document.
_EXPECTED_SIGNATURE: Final = SignatureConfiguration(
    require_x509=True,
    location="./",
    expect_references=1,
    signature_methods=frozenset({SIGNATURE_METHOD}),
    digest_algorithms=frozenset({DIGEST_ALGORITHM}),
)


class _StrictVerifier(XMLVerifier):
    """signxml re-parses XML several times with its own lenient parser; use the strict one."""

    def _fromstring(self, xml_string: bytes, **kwargs: object) -> etree._Element:
        return parse_xml(xml_string)


class DuoConnector:
    def __init__(self, settings: ConnectorSettings) -> None:
        self.organisatie = settings.organisatie
        self.contactopties = CONTACTOPTIES
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + PATH
        self._cert = load_certificate(settings.trust_cert)
        self._key_id = certificate_key_id(self._cert)

    async def fetch(self, request: FetchRequest) -> SourceData:
        naam = self.organisatie.naam
        with transport_errors(self.organisatie):
            async with request.session.post(
                self._url,
                data=request_body(request.bsn, request.transactie_id),
                headers={"Content-Type": MEDIA_TYPE, "Accept": MEDIA_TYPE},
                timeout=client_timeout(self._settings),
                # A redirect would resend the BSN to wherever it points.
                allow_redirects=False,
            ) as response:
                if response.status != 200:
                    raise SourceUnreachable(f"{naam} answered HTTP {response.status}")
                raw = await read_limited(response, self._settings.max_body_bytes)
        antwoord = self._verify(raw)
        # Binding the signed answer to this request stops replays and mix-ups.
        check_answers_request(
            self.organisatie, request, transactie_id=antwoord.transactie_id, bsn=antwoord.bsn
        )
        return SourceData(
            antwoord.gegevens,
            make_herkomst(
                raw, media_type=MEDIA_TYPE, handtekening="xmldsig", sleutel_id=self._key_id
            ),
        )

    def verify(self, raw: bytes) -> Gegevens:
        return self._verify(raw).gegevens

    def _verify(self, raw: bytes) -> Antwoord:
        naam = self.organisatie.naam
        document = parse_xml(raw)
        try:
            result = _StrictVerifier().verify(
                document, x509_cert=self._cert, expect_config=_EXPECTED_SIGNATURE
            )
        # signxml also fails with plain ValueError/TypeError on some malformed signatures.
        except (SignXMLException, etree.LxmlError, ValueError, TypeError) as exc:
            raise SourceInvalid(f"{naam} signature check failed: {exc}") from exc
        # Only what the signature covers is read, never the tree it came in (signature wrapping).
        if not isinstance(result, VerifyResult) or result.signed_xml is None:
            raise SourceInvalid(f"{naam} signed something other than one XML document")
        try:
            return map_antwoord(result.signed_xml)
        except ValueError as exc:
            raise SourceInvalid(f"{naam} sent an answer that cannot be used: {exc}") from exc
