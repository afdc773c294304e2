"""Connector for a municipality (gemeente): taxes, bijstand and its recovery, over a HAL API.

One connector class serves every municipality: `settings.organisatie` says which one, and
`settings.options["gemeentecode"]` must be its CBS code. Municipalities other than Amsterdam
give their contact options as options `contact_telefoon`, `contact_website`, `contact_email`
and `contact_post`.
"""

from __future__ import annotations

import re
from typing import Final

from connectors.gemeente.connector import GemeenteConnector
from gateway.connector import Connector, ConnectorSettings
from gateway.models import Contactoptie, Contactvorm, Organisatie

__all__ = ["CONTACTOPTIES", "ORGANISATIE", "create"]

ORGANISATIE: Final = Organisatie(
    oin="00000099000000363000", code="gm0363", naam="Gemeente Amsterdam"
)

CONTACTOPTIES: Final = (
    Contactoptie(
        "telefoon",
        "14 020",
        "Gemeente Amsterdam, maandag tot en met vrijdag van 08.00 tot 18.00 uur",
    ),
    Contactoptie(
        "website",
        "https://www.amsterdam.nl/belastingen/",
        "Gemeentelijke belastingen: aanslag, betalen, bezwaar en kwijtschelding",
    ),
    Contactoptie(
        "website",
        "https://www.amsterdam.nl/werk-en-inkomen/",
        "Werk en Inkomen: bijstand, terugvordering en betalingsregeling",
    ),
    Contactoptie(
        "post",
        "Gemeente Amsterdam, Postbus 202, 1000 AE Amsterdam",
        "Brief over uw aanslag, bezwaar of betalingsregeling",
    ),
)

_CONTACTVORMEN: Final[tuple[Contactvorm, ...]] = ("telefoon", "email", "website", "post")


def create(settings: ConnectorSettings) -> Connector:
    """Build the connector; raises ValueError when gemeentecode and organisation disagree."""
    gemeentecode = settings.options.get("gemeentecode", "")
    if not re.fullmatch(r"[0-9]{4}", gemeentecode):
        raise ValueError(
            "the gemeente connector needs options.gemeentecode, the 4-digit CBS code of the "
            f"municipality; got {gemeentecode!r}"
        )
    if settings.organisatie.code != f"gm{gemeentecode}":
        raise ValueError(
            f"organisatie.code {settings.organisatie.code!r} does not match gemeentecode "
            f"{gemeentecode!r}: a municipality's code is 'gm' + its CBS code"
        )
    return GemeenteConnector(settings, gemeentecode, _contactopties(settings))


def _contactopties(settings: ConnectorSettings) -> tuple[Contactoptie, ...]:
    configured = tuple(
        Contactoptie(vorm, waarde, f"{settings.organisatie.naam} ({vorm})")
        for vorm in _CONTACTVORMEN
        if (waarde := settings.options.get(f"contact_{vorm}"))
    )
    if configured or settings.organisatie.code != ORGANISATIE.code:
        return configured
    return CONTACTOPTIES
