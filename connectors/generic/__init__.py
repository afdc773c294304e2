"""The generic connector for organisations that implement the provider API (docs/provider-api.yaml).

Registered through the `blauweknop.connectors` entry point as `generic`. It has no built-in
organisation: every one comes from the registry (gateway.federation), with its own JWKS.
"""

from __future__ import annotations

from typing import Final

from connectors.generic.connector import GenericConnector, create_generic
from gateway.connector import Connector, ConnectorSettings
from gateway.models import Contactoptie, Organisatie

__all__ = ["CONTACTOPTIES", "ORGANISATIE", "GenericConnector", "create"]

# Placeholders for `gateway.config.connector_defaults`; registry entries always name their own.
ORGANISATIE: Final = Organisatie(oin="00000000000000000000", code="xx", naam="(generic provider)")
CONTACTOPTIES: Final[tuple[Contactoptie, ...]] = ()


def create(settings: ConnectorSettings) -> Connector:
    return create_generic(settings)
