"""The municipality connector: a Haal Centraal style HAL API whose answers are ES256 JWS.

The BSN travels in a POST body, as in Haal Centraal "BRP Personen bevragen" v2, never in a URL.
The municipality signs its whole HAL answer, including the transaction id we sent, so the
answer can be re-verified offline and cannot be replayed into another transaction.
"""

from __future__ import annotations

import contextlib

import orjson

from connectors.gemeente.mapping import Overzicht, map_overzicht
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
    verify_source_jws,
)
from gateway.errors import SourceInvalid, SourceUnreachable
from gateway.models import Contactoptie, Gegevens

OVERZICHT_PATH = "/haalcentraal/api/v1/overzicht"
MEDIA_TYPE = "application/jose"
PROBLEM_MEDIA_TYPE = "application/problem+json"
VRAAGTYPE = "RaadpleegMetBurgerservicenummer"


class GemeenteConnector:
    """Fetches one municipality's overview of a citizen and checks its signature."""

    def __init__(
        self,
        settings: ConnectorSettings,
        gemeentecode: str,
        contactopties: tuple[Contactoptie, ...],
    ) -> None:
        self.organisatie = settings.organisatie
        self.contactopties = contactopties
        self._settings = settings
        self._gemeentecode = gemeentecode
        self._url = settings.base_url.rstrip("/") + OVERZICHT_PATH
        self._cert = load_certificate(settings.trust_cert)
        self._sleutel_id = certificate_key_id(self._cert)
        # FSC peers use two-sided TLS; without a client certificate aiohttp's defaults apply.
        self._ssl = client_tls(settings) or True

    async def fetch(self, request: FetchRequest) -> SourceData:
        body = orjson.dumps(
            {
                "type": VRAAGTYPE,
                "burgerservicenummer": request.bsn,
                "gemeentecode": self._gemeentecode,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "Accept": f"{MEDIA_TYPE}, {PROBLEM_MEDIA_TYPE}",
            "X-Transactie-Id": request.transactie_id,
        }
        naam = self.organisatie.naam
        with transport_errors(self.organisatie):
            async with request.session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=client_timeout(self._settings),
                ssl=self._ssl,
            ) as response:
                if response.status >= 500:
                    raise SourceUnreachable(f"{naam} answered HTTP {response.status}")
                raw = await read_limited(response, self._settings.max_body_bytes)
                status, content_type = response.status, response.content_type
        if status != 200:
            raise SourceInvalid(self._refusal(status, content_type, raw))
        if content_type != MEDIA_TYPE:
            raise SourceInvalid(f"{naam} answered {content_type!r}, not a signed {MEDIA_TYPE}")
        overzicht = self._open(raw)
        check_answers_request(
            self.organisatie, request, transactie_id=overzicht.transactie_id, bsn=None
        )
        herkomst = make_herkomst(
            raw, media_type=MEDIA_TYPE, handtekening="jws", sleutel_id=self._sleutel_id
        )
        return SourceData(overzicht.gegevens, herkomst)

    def verify(self, raw: bytes) -> Gegevens:
        return self._open(raw).gegevens

    def _open(self, raw: bytes) -> Overzicht:
        """Verify against the pinned certificate, then map; the one path for fetch and verify."""
        naam = self.organisatie.naam
        payload = verify_source_jws(raw, self._cert)
        try:
            overzicht = map_overzicht(payload, self.organisatie)
        except ValueError as exc:
            raise SourceInvalid(f"{naam} sent an overview that cannot be read: {exc}") from exc
        if overzicht.gemeentecode != self._gemeentecode:
            raise SourceInvalid(
                f"{naam} sent an overview of gemeente {overzicht.gemeentecode!r}, "
                f"expected {self._gemeentecode}"
            )
        return overzicht

    def _refusal(self, status: int, content_type: str, raw: bytes) -> str:
        """Describe a refused request from its problem details, without echoing the request."""
        message = (
            f"{self.organisatie.naam} (gemeentecode {self._gemeentecode}) refused the request "
            f"with HTTP {status}"
        )
        problem: object = None
        if content_type == PROBLEM_MEDIA_TYPE:
            with contextlib.suppress(orjson.JSONDecodeError):
                problem = orjson.loads(raw)
        if not isinstance(problem, dict):
            return message
        # Title and code are fixed texts per kind of error; `detail` may quote the BSN asked for.
        fixed = [problem[key] for key in ("title", "code") if isinstance(problem.get(key), str)]
        return "; ".join([message, *fixed])
