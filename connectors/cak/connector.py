"""The CAK connector: JSON REST behind OAuth 2.0 client credentials, answers signed as JWS."""

from __future__ import annotations

import orjson

from connectors.cak.mapping import Overzicht, read_overzicht
from connectors.cak.oauth import ClientCredentials
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
    verify_only_error,
    verify_source_jws,
)
from gateway.errors import SourceUnreachable
from gateway.models import Contactoptie, Gegevens

MEDIA_TYPE = "application/jose"
OVERZICHT_PATH = "/api/v1/overzicht"


class CakConnector:
    """Asks CAK for one citizen's overview and checks CAK's ES256 signature on it."""

    def __init__(
        self, settings: ConnectorSettings, contactopties: tuple[Contactoptie, ...]
    ) -> None:
        self.organisatie = settings.organisatie
        self.contactopties = contactopties
        self._settings = settings
        self._url = settings.base_url.rstrip("/") + OVERZICHT_PATH
        self._cert = load_certificate(settings.trust_cert)
        self._sleutel_id = certificate_key_id(self._cert)
        self._credentials = None if settings.verify_only else ClientCredentials(settings)

    async def fetch(self, request: FetchRequest) -> SourceData:
        with transport_errors(self.organisatie):
            raw = await self._retrieve(request)
        overzicht = self._read(raw)
        # The signed answer names the request it answers, so a replayed answer is refused.
        check_answers_request(
            self.organisatie, request, transactie_id=overzicht.transactie_id, bsn=overzicht.bsn
        )
        return SourceData(
            overzicht.gegevens,
            make_herkomst(
                raw, media_type=MEDIA_TYPE, handtekening="jws", sleutel_id=self._sleutel_id
            ),
        )

    def verify(self, raw: bytes) -> Gegevens:
        return self._read(raw).gegevens

    def _read(self, raw: bytes) -> Overzicht:
        return read_overzicht(verify_source_jws(raw, self._cert))

    async def _retrieve(self, request: FetchRequest) -> bytes:
        if self._credentials is None:
            raise verify_only_error(self.organisatie)
        token = await self._credentials.bearer(request.session)
        raw = await self._post(request, token)
        if raw is None:
            # The token may have been revoked or CAK restarted: one fresh token, one retry.
            token = await self._credentials.bearer(request.session, rejected=token)
            raw = await self._post(request, token)
        if raw is None:
            raise SourceUnreachable(
                f"{self.organisatie.naam} refused a freshly issued access token (HTTP 401)"
            )
        return raw

    async def _post(self, request: FetchRequest, token: str) -> bytes | None:
        """The signed overview, or None when CAK refuses the token."""
        async with request.session.post(
            self._url,
            # The BSN travels only in the body: URLs end up in access logs.
            data=orjson.dumps({"bsn": request.bsn}),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": MEDIA_TYPE,
                "X-Transactie-Id": request.transactie_id,
            },
            timeout=client_timeout(self._settings),
        ) as response:
            if response.status == 401:
                return None
            response.raise_for_status()
            return await read_limited(response, self._settings.max_body_bytes)
