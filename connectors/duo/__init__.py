"""DUO (student finance): XML over HTTP with an enveloped XML-DSig on every answer."""

from connectors.duo.connector import CONTACTOPTIES, DuoConnector
from connectors.duo.protocol import ORGANISATIE
from gateway.connector import Connector, ConnectorSettings


def create(settings: ConnectorSettings) -> Connector:
    return DuoConnector(settings)


__all__ = ["CONTACTOPTIES", "ORGANISATIE", "create"]
