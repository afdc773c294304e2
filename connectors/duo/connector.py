"""The DUO connector: XML over HTTP, answers signed with an enveloped XML-DSig."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Final

from connectors.duo.mapping import Antwoord, map_antwoord
from connectors.duo.protocol import MEDIA_TYPE, PATH, SIGNATURE_SHAPE, request_body
from gateway.connector import (
    ConnectorSettings,
    FetchRequest,
    SourceData,
    certificate_key_id,
    check_answers_request,
    client_timeout,
    load_certificate,
    make_herkomst,
    read_limited,
    transport_errors,
)
from gateway.errors import SourceInvalid, SourceUnreachable
from gateway.models import Contactoptie, Gegevens
from gateway.xmldsig import XmlSignatureVerifier

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


class DuoConnector:
    def __init__(self, settings: ConnectorSettings) -> None:
        self.organisatie = settings.organisatie
        self.contactopties = CONTACTOPTIES
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + PATH
        cert = load_certificate(settings.trust_cert)
        self._key_id = certificate_key_id(cert)
        self._verifier = XmlSignatureVerifier(cert, SIGNATURE_SHAPE, settings.max_xml_depth)

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
        # libxmlsec1 and lxml release the GIL while they parse, verify and validate, so on a
        # worker thread that work runs beside the event loop, on the other core. Mapping goes
        # along, so the parsed tree never leaves the thread that made it (docs/performance.md).
        antwoord = await asyncio.to_thread(self._verify, raw)
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
        # The signature covers the whole document, and the verifier takes the signature out of
        # the tree: what is mapped is exactly what DUO signed.
        document = self._verifier.verify(raw)
        self._verifier.check_valid_at(datetime.now(UTC))
        try:
            return map_antwoord(document.root)
        except ValueError as exc:
            raise SourceInvalid(
                f"{self.organisatie.naam} sent an answer that cannot be used: {exc}"
            ) from exc
