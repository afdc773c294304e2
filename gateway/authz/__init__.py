"""The gateway as OAuth 2.0 authorization server for portals (PAR, PKCE, private_key_jwt, DPoP).

`setup(app)` loads the registered portals and purposes from the policies directory and adds the
routes; docs/portals.md tells a portal how to integrate.
"""

from __future__ import annotations

from aiohttp import web

from gateway.app import SETTINGS
from gateway.authz.registry import Registry
from gateway.authz.server import add_routes


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    variables = {"state_dir": str(settings.state_dir.resolve())}
    sandbox = settings.mode == "sandbox"
    if sandbox:
        from gateway.demo.portal.keys import ensure_client_key

        ensure_client_key(settings.state_dir)
        variables["demo_portal_url"] = f"http://{settings.host}:{settings.demo_portal_port}"
    add_routes(app, Registry.load(settings.policies_dir, variables, sandbox=sandbox))


__all__ = ["Registry", "setup"]
