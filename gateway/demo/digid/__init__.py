"""A stand-in DigiD (OpenID Connect provider) for the demo stack and tests. Not for production."""

from gateway.demo.digid.app import (
    NOT_FOR_PRODUCTION,
    PROVIDER,
    RunningDigid,
    create_digid_app,
    gateway_client,
    start_digid,
)
from gateway.demo.digid.knobs import IdTokenKnobs
from gateway.demo.digid.provider import Provider, RegisteredClient

__all__ = [
    "NOT_FOR_PRODUCTION",
    "PROVIDER",
    "IdTokenKnobs",
    "Provider",
    "RegisteredClient",
    "RunningDigid",
    "create_digid_app",
    "gateway_client",
    "start_digid",
]
