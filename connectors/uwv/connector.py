"""The UWV connector: a WUS request over two-sided TLS, a WS-Security signed SOAP answer."""

from __future__ import annotations

import asyncio
import uuid

from connectors.uwv.mapping import map_antwoord
from connectors.uwv.soap import (
    ACTION_VRAAG,
    MEDIA_TYPE,
    SERVICE_PATH,
    SIGNATURE_SHAPE,
    SignedAnswer,
    build_request,
    describe_fault,
    verify_response,
)
from gateway.connector import (
    ConnectorSettings,
    FetchRequest,
    SourceData,
    certificate_key_id,
    check_answers_request,
    client_timeout,
    client_tls,
    load_certificate,
    make_herkomst,
    read_limited,
    transport_errors,
    verify_only_error,
)
from gateway.errors import ConfigError, SourceInvalid, SourceUnreachable
from gateway.models import Contactoptie, Gegevens
from gateway.xmldsig import XmlSignatureVerifier


class UwvConnector:
    """Asks UWV's VraagInkomensEnVorderingen service about one citizen."""

    def __init__(self, settings: ConnectorSettings, contactopties: tuple[Contactoptie, ...]):
        tls = None if settings.verify_only else client_tls(settings)
        if not settings.verify_only and (tls is None or settings.client_key is None):
            raise ConfigError(
                "UWV needs two-sided TLS (Digikoppeling): set client_cert and client_key"
            )
        if not settings.base_url.startswith("https://"):
            raise ConfigError("UWV is reached over https only (Digikoppeling two-sided TLS)")
        self.organisatie = settings.organisatie
        self.contactopties = contactopties
        self._settings = settings
        self._tls = tls
        self._endpoint = settings.base_url.rstrip("/") + SERVICE_PATH
        trusted = load_certificate(settings.trust_cert)
        self._sleutel_id = certificate_key_id(trusted)
        self._verifier = XmlSignatureVerifier(trusted, SIGNATURE_SHAPE, settings.max_xml_depth)

    async def fetch(self, request: FetchRequest) -> SourceData:
        if self._tls is None:
            raise verify_only_error(self.organisatie)
        message_id = f"urn:uuid:{uuid.uuid4()}"
        envelope = build_request(
            to=self._endpoint,
            message_id=message_id,
            transactie_id=request.transactie_id,
            bsn=request.bsn,
        )
        headers = {
            "Content-Type": f"{MEDIA_TYPE}; charset=utf-8",
            "SOAPAction": f'"{ACTION_VRAAG}"',
            "X-Transactie-Id": request.transactie_id,
        }
        with transport_errors(self.organisatie):
            async with request.session.post(
                self._endpoint,
                data=envelope,
                headers=headers,
                timeout=client_timeout(self._settings),
                ssl=self._tls,
            ) as response:
                raw = await read_limited(response, self._settings.max_body_bytes)
                status = response.status
        if status >= 500:
            raise SourceUnreachable(f"UWV answered HTTP {status} ({describe_fault(raw)})")
        if status != 200:
            raise SourceInvalid(f"UWV answered with unexpected HTTP status {status}")
        # As for DUO: on a worker thread, libxmlsec1 verifies beside the event loop.
        # Only strings of the signed answer are read back here, never its tree.
        answer, gegevens = await asyncio.to_thread(self._verify, raw)
        self._check_belongs_to(answer, request, message_id)
        return SourceData(
            gegevens,
            make_herkomst(
                raw, media_type=MEDIA_TYPE, handtekening="wss-xmldsig", sleutel_id=self._sleutel_id
            ),
        )

    def verify(self, raw: bytes) -> Gegevens:
        return self._verify(raw)[1]

    def _verify(self, raw: bytes) -> tuple[SignedAnswer, Gegevens]:
        answer = verify_response(raw, self._verifier)
        return answer, map_antwoord(answer.antwoord)

    def _check_belongs_to(
        self, answer: SignedAnswer, request: FetchRequest, message_id: str
    ) -> None:
        # A validly signed answer to another request (a replay, or a mix-up) must not be used.
        if answer.relates_to != message_id:
            raise SourceInvalid("UWV's answer relates to another request (wsa:RelatesTo)")
        check_answers_request(
            self.organisatie, request, transactie_id=answer.transactie_id, bsn=answer.bsn
        )
