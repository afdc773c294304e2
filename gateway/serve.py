"""Running the gateway, alone or as the demo stack with the four organisation sandboxes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from dataclasses import replace

from aiohttp import web

from connectors._sandbox import CITIZENS
from connectors._sandbox.runner import RunningSandbox, serve_app, start_sandbox
from gateway.app import LIFECYCLE, create_app
from gateway.audit.archive import development_key_path
from gateway.audit.broker import EmbeddedBroker, start_broker
from gateway.audit.checkpointer import demo_checkpointing
from gateway.audit.cli import demo_address_file
from gateway.config import SANDBOX_ORGS, Settings
from gateway.limits import serve_gateway


async def wait_for_stop() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def start_sandboxes(
    settings: Settings, orgs: Sequence[str] = SANDBOX_ORGS, *, any_port: bool = False
) -> list[RunningSandbox]:
    """Start sandboxes on the configured ports, or on free ones (tests)."""
    settings.dev_pki.ensure()
    return [
        await start_sandbox(
            org,
            settings.dev_pki,
            host=settings.sandbox_host,
            port=0 if any_port else settings.sandbox_port(org),
        )
        for org in orgs
    ]


async def run_sandboxes(
    settings: Settings, orgs: Sequence[str], digid_for: Sequence[str] = ()
) -> None:
    """The sandboxes; with `digid_for` also the stand-in DigiD, for gateways at those URLs."""
    running = await start_sandboxes(settings, orgs)
    runners = [s.runner for s in running]
    for sandbox in running:
        print(f"sandbox {sandbox.org:9} {sandbox.url}", flush=True)
    if digid_for:
        from gateway.demo.digid import gateway_client, start_digid

        client = gateway_client(settings.oidc.client_id, list(digid_for))
        digid = await start_digid(
            host=settings.sandbox_host,
            port=settings.digid_port,
            mode=settings.mode,
            clients=[client],
        )
        runners.append(digid.runner)
        print(f"stand-in DigiD (not for production) {digid.url}", flush=True)
    try:
        await wait_for_stop()
    finally:
        for runner in runners:
            await runner.cleanup()


async def run_gateway(settings: Settings, *, with_sandboxes: bool) -> None:
    runners: list[web.AppRunner] = []
    broker: EmbeddedBroker | None = None
    if with_sandboxes and settings.kafka is None:
        # The demo's audit stream: an embedded broker, its address where `blauweknop audit`
        # looks for it, and the gateway's relay pointed at it.
        broker = await start_broker()
        address = demo_address_file(settings)
        address.parent.mkdir(parents=True, exist_ok=True)
        address.write_text(broker.bootstrap + "\n")
        settings = replace(settings, kafka=broker.kafka_config())
    checkpointing = contextlib.AsyncExitStack()
    if with_sandboxes:
        sandboxes = await start_sandboxes(settings)
        runners.extend(s.runner for s in sandboxes)
        digid = await start_stand_in_digid(settings)
        if digid is not None:
            runners.append(digid)
        if settings.kafka is not None:
            # The Merkle log: the development TSA and a checkpointer (docs/audit.md).
            await checkpointing.enter_async_context(demo_checkpointing(settings, settings.kafka))
    # Graceful shutdown (SIGTERM, SIGINT): /readyz turns 503 at once so load balancers move
    # traffic away (for shutdown_drain_seconds); then the listener closes, in-flight requests get
    # up to shutdown_grace_seconds to finish, and the app's cleanup flushes the outbox and closes
    # the store. In-flight bundles are bounded by the fan-out deadline.
    gateway_app = create_app(settings)
    runner, port = await serve_gateway(
        gateway_app,
        settings.limits,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=max(settings.shutdown_grace_seconds, settings.deadline_seconds + 1),
    )
    runners.append(runner)
    base = f"http://{settings.host}:{port}"
    if with_sandboxes:
        runners.append(await start_demo_portal(settings, base))
    print(_banner(settings, base, with_sandboxes), flush=True)
    try:
        await wait_for_stop()
        gateway_app[LIFECYCLE].draining = True
        print("stopping: draining, then finishing in-flight requests", flush=True)
        await asyncio.sleep(settings.shutdown_drain_seconds)
    finally:
        for r in reversed(runners):
            await r.cleanup()
        await checkpointing.aclose()
        if broker is not None:
            demo_address_file(settings).unlink(missing_ok=True)
            await broker.stop()
    print("stopped", flush=True)


async def start_demo_portal(settings: Settings, gateway_url: str) -> web.AppRunner:
    """The demo portal (a municipal MijnOmgeving) on its own port, with its own client key."""
    from gateway.demo.portal.app import PortalConfig, create_portal_app
    from gateway.demo.portal.keys import ensure_client_key

    config = PortalConfig(
        gateway_url=gateway_url,
        public_url=demo_portal_url(settings),
        key=ensure_client_key(settings.state_dir),
    )
    runner, _ = await serve_app(
        create_portal_app(config), host=settings.host, port=settings.demo_portal_port
    )
    return runner


def stand_in_digid_url(settings: Settings) -> str:
    return f"http://{settings.sandbox_host}:{settings.digid_port}"


async def start_stand_in_digid(settings: Settings) -> web.AppRunner | None:
    """The stand-in DigiD (not for production), when `[oidc] issuer` points at it."""
    from gateway.demo.digid import gateway_client, start_digid

    if settings.oidc.issuer != stand_in_digid_url(settings):
        return None  # the gateway is configured for another provider: leave it to that one
    bases = [settings.public_url] if settings.public_url else []
    bases += [f"http://{h}:{settings.port}" for h in (settings.host, "localhost", "127.0.0.1")]
    client = gateway_client(settings.oidc.client_id, list(dict.fromkeys(bases)))
    digid = await start_digid(
        host=settings.sandbox_host, port=settings.digid_port, mode=settings.mode, clients=[client]
    )
    return digid.runner


def demo_portal_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.demo_portal_port}"


def _banner(settings: Settings, base: str, with_sandboxes: bool) -> str:
    lines = [f"Blauwe Knop gateway ({settings.mode} mode) listening on {base}"]
    if with_sandboxes:
        lines += [f"  sandbox organisations: {', '.join(SANDBOX_ORGS)}"]
        if settings.oidc.issuer == stand_in_digid_url(settings):
            lines += [
                f"  stand-in DigiD (not for production): {stand_in_digid_url(settings)}",
                f"  log in as a test citizen: {base}/login?return_to=/login/sessie",
            ]
        lines += [
            f"  demo portal (debt-help intake): {demo_portal_url(settings)}/schuldhulp",
            "  scripted journey: blauweknop demo --citizen 999990020 --format json -o bundel.json",
        ]
    if settings.mode == "sandbox":
        example = CITIZENS[2].bsn
        lines += [
            f"  open {base}/ to download a signed bundle for a test citizen",
            f"  or:  curl -s -X POST {base}/v1/sandbox/bundel -H 'Content-Type: application/json' "
            f'-d \'{{"bsn": "{example}"}}\'',
            "  test citizens: blauweknop sandbox citizens",
        ]
    if settings.kafka is not None:
        lines += [f"  audit stream: Kafka at {settings.kafka.bootstrap}; blauweknop audit tail"]
        if with_sandboxes:
            lines += [
                f"  Merkle log: checkpoints time-stamped by the development TSA on port "
                f"{settings.dev_tsa_port}; blauweknop audit verify"
            ]
        if settings.mode == "sandbox" and settings.archive_public_key_file is None:
            key = development_key_path(settings.state_dir)
            lines += [
                f"  archived documents: blauweknop audit reproduce <X-Transactie-Id> --key {key}"
            ]
    lines += [
        f"  keys: {base}/.well-known/jwks.json   metrics: {base}/metrics",
        "Stop with Ctrl-C.",
    ]
    return "\n".join(lines)
