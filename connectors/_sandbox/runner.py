"""Start sandbox services on real sockets, for the demo stack, tests and benchmarks."""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.pki import DevPki

ORGS = ("duo", "uwv", "cak", "gemeente")


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """How to run one organisation's sandbox; each `connectors/<org>/sandbox.py` has `SANDBOX`."""

    org: str
    create_app: Callable[[DevPki], web.Application]
    server_tls: Callable[[DevPki], ssl.SSLContext] | None = None
    scheme: str = "http"


def spec(org: str) -> SandboxSpec:
    module = importlib.import_module(f"connectors.{org}.sandbox")
    result = module.SANDBOX
    assert isinstance(result, SandboxSpec)
    return result


@dataclass(frozen=True, slots=True)
class RunningSandbox:
    org: str
    url: str
    runner: web.AppRunner
    app: web.Application


async def serve_app(
    app: web.Application,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    shutdown_timeout: float = 0.5,
) -> tuple[web.AppRunner, int]:
    """Serve an app on a real socket; port 0 picks a free one. Returns the runner and port."""
    # Short by default: the `hang` fault keeps responses open that nobody will finish.
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    server = site._server  # aiohttp keeps the bound socket here; no public accessor
    assert server is not None
    bound_port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, bound_port


async def start_sandbox(
    org: str, pki: DevPki, *, host: str = "127.0.0.1", port: int = 0
) -> RunningSandbox:
    """Start one organisation's sandbox; port 0 picks a free one."""
    s = spec(org)
    app = s.create_app(pki)
    runner, bound = await serve_app(
        app,
        host=host,
        port=port,
        ssl_context=s.server_tls(pki) if s.server_tls else None,
    )
    return RunningSandbox(org, f"{s.scheme}://{host}:{bound}", runner, app)
