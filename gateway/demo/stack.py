"""A whole demo stack in this process, on free ports: for `blauweknop demo --start`.

The four organisation sandboxes, the stand-in DigiD, the gateway and the demo portal, each on a
real socket of its own, wired to each other as `blauweknop up` wires them on fixed ports.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.app import create_app
from gateway.config import sandbox_organisation_table, settings_from_mapping
from gateway.demo.digid import gateway_client, start_digid
from gateway.demo.portal.app import PortalConfig, create_portal_app
from gateway.demo.portal.keys import ensure_client_key
from gateway.limits import serve_gateway
from gateway.pki import DevPki


@dataclass
class RunningStack:
    gateway_url: str
    portal_url: str
    digid_url: str
    runners: list[web.AppRunner] = field(default_factory=list)

    async def stop(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


async def start_demo_stack(state_dir: Path, **overrides: Any) -> RunningStack:
    """Start everything on free loopback ports; `overrides` go into the gateway's settings."""
    from gateway.serve import start_sandboxes

    base = settings_from_mapping({"state_dir": str(state_dir)})
    pki = DevPki(state_dir / "pki")
    running = RunningStack("", "", "")
    try:
        sandboxes = await start_sandboxes(base, any_port=True)
        running.runners.extend(s.runner for s in sandboxes)
        digid = await start_digid()
        running.runners.append(digid.runner)
        running.digid_url = digid.url
        # The portal's address must be known before the gateway loads its registration.
        portal_socket = socket.socket()
        portal_socket.bind(("127.0.0.1", 0))
        portal_port = portal_socket.getsockname()[1]
        settings = settings_from_mapping(
            {
                "state_dir": str(state_dir),
                "organisations": sandbox_organisation_table(pki, {s.org: s.url for s in sandboxes}),
                "oidc": {"issuer": digid.url},
                "demo_portal_port": portal_port,
                **overrides,
            }
        )
        runner, port = await serve_gateway(create_app(settings), settings.limits)
        running.runners.append(runner)
        running.gateway_url = f"http://127.0.0.1:{port}"
        registration = gateway_client(settings.oidc.client_id, [running.gateway_url])
        digid.provider.clients[registration.client_id] = registration
        running.portal_url = f"http://127.0.0.1:{portal_port}"
        config = PortalConfig(
            gateway_url=running.gateway_url,
            public_url=running.portal_url,
            key=ensure_client_key(state_dir),
        )
        portal = web.AppRunner(create_portal_app(config), access_log=None, shutdown_timeout=0.5)
        await portal.setup()
        await web.SockSite(portal, portal_socket).start()
        running.runners.append(portal)
    except BaseException:
        await running.stop()
        raise
    return running
