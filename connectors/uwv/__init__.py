"""UWV: wages from the polisadministratie, benefits (WW, ZW, ...) and UWV's own claims."""

from __future__ import annotations

from connectors.uwv.connector import UwvConnector
from gateway.connector import Connector, ConnectorSettings
from gateway.models import Contactoptie, Organisatie

__all__ = ["CONTACTOPTIES", "ORGANISATIE", "create"]

ORGANISATIE = Organisatie(oin="00000099000000002000", code="uwv", naam="UWV")

CONTACTOPTIES: tuple[Contactoptie, ...] = (
    Contactoptie(
        "telefoon",
        "088 - 898 92 94",
        "UWV Klantenservice, maandag tot en met vrijdag van 8.00 tot 17.00 uur",
    ),
    Contactoptie(
        "website",
        "https://www.uwv.nl/particulieren",
        "Mijn UWV: uitkering, betalingen en terugvorderingen bekijken",
    ),
    Contactoptie("post", "UWV, Postbus 58285, 1040 HG Amsterdam", "Schriftelijk contact met UWV"),
)


def create(settings: ConnectorSettings) -> Connector:
    return UwvConnector(settings, CONTACTOPTIES)
