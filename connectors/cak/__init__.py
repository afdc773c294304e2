"""CAK: eigen bijdrage Wmo and Wlz, and the bestuursrechtelijke premie Zvw."""

from __future__ import annotations

from connectors.cak.connector import CakConnector
from gateway.connector import Connector, ConnectorSettings
from gateway.models import Contactoptie, Organisatie

ORGANISATIE = Organisatie(oin="00000099000000003000", code="cak", naam="CAK")

CONTACTOPTIES = (
    Contactoptie(
        "telefoon",
        "0800-1925",
        "Klantenservice CAK (gratis), voor vragen over uw eigen bijdrage of een betalingsregeling",
    ),
    Contactoptie(
        "website",
        "https://www.hetcak.nl",
        "Bekijk uw facturen en betalingen of vraag een betalingsregeling aan via Mijn CAK",
    ),
    Contactoptie("post", "CAK, Postbus 84030, 2508 AA Den Haag", "Schriftelijke vragen en bezwaar"),
)


def create(settings: ConnectorSettings) -> Connector:
    return CakConnector(settings, CONTACTOPTIES)


__all__ = ["CONTACTOPTIES", "ORGANISATIE", "create"]
