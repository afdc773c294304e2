"""Fan-out overhead with 25 registered organisations, each at 50 ms added latency.

Organisations: DUO, UWV, CAK and Amsterdam configured statically; the SVB (generic provider
API) and 20 more municipalities registered and approved through the registry API; the BRP
sandbox says where the citizen lives. A citizen's request goes to the organisations the
routing allows (DUO, UWV, CAK, SVB and their own municipality); the other 20 municipalities
are registered, in the directory and the policy entities, but not asked.

The 25 sandboxes and the BRP run in a child process (one event loop); the gateway and the
load generator share this one, as in bench/fanout.py's spirit of keeping the organisations'
own work off the gateway's loop. Reports gateway p50 / slowest organisation p50 (as the
gateway measured each organisation).

    .venv/bin/python -m bench.federation [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from connectors._sandbox import FAULTS
from connectors._sandbox.runner import serve_app, start_sandbox
from connectors.brp.sandbox import create_app as create_brp
from connectors.gemeente.sandbox import create_app as create_gemeente
from connectors.svb.sandbox import jwks as svb_jwks
from connectors.svb.sandbox import signing_key
from gateway.app import create_app
from gateway.config import sandbox_organisation_table, settings_from_mapping
from gateway.federation.client import approval_request, jwks_for, organisation_request, send
from gateway.federation.keys import development_admin_key
from gateway.pki import DevPki
from gateway.serve import start_sandboxes

CITIZEN = "999990020"
LATENCY_MS = 50
CODES = [
    "0599",
    "0344",
    "0518",
    "0014",
    "0034",
    "0772",
    "0855",
    "0758",
    "0193",
    "0200",
    "0268",
    "0392",
    "0402",
    "0439",
    "0453",
    "0505",
    "0546",
    "0603",
    "0637",
    "0935",
]


def serve_organisations(state: str, conn: Connection) -> None:
    """Child process: every sandbox at LATENCY_MS, then report the URLs and serve until killed."""

    async def run() -> None:
        pki = DevPki(Path(state) / "pki")
        base = settings_from_mapping({"state_dir": state})
        sandboxes = {s.org: s for s in await start_sandboxes(base, any_port=True)}
        apps = [s.app for s in sandboxes.values()]
        brp = create_brp(pki)
        _, brp_port = await serve_app(brp)
        svb = await start_sandbox("svb", pki)
        apps.append(svb.app)
        gemeenten = {}
        for code in CODES:
            app = create_gemeente(pki, gemeentecode=code)
            apps.append(app)
            _, port = await serve_app(app)
            gemeenten[code] = f"http://127.0.0.1:{port}"
        for app in apps:
            app[FAULTS].latency_ms = LATENCY_MS
        conn.send(
            {
                "static": {o: s.url for o, s in sandboxes.items()},
                "brp": f"http://127.0.0.1:{brp_port}",
                "svb": svb.url,
                "gemeenten": gemeenten,
            }
        )
        await asyncio.Event().wait()

    asyncio.run(run())


async def register(
    session: aiohttp.ClientSession, url: str, state: Path, key: Any, entry: dict[str, Any]
) -> None:
    status, body = await send(session, url, organisation_request(key, "aanmelden", entry))
    assert status == 200, body
    admin, _ = development_admin_key(state)
    status, body = await send(session, url, approval_request(admin, entry["oin"], body["versie"]))
    assert status == 200, body


async def measure(state: Path, urls: dict[str, Any], requests: int) -> None:
    pki = DevPki(state / "pki")
    settings = settings_from_mapping(
        {
            "state_dir": str(state),
            "deadline_seconds": 5.0,
            "log_level": "WARNING",
            "organisations": sandbox_organisation_table(pki, urls["static"]),
            "federation": {
                "poll_seconds": 0.2,
                "brp_url": urls["brp"],
                "rate_citizen_per_minute": 1_000_000,
            },
        }
    )
    gateway, port = await serve_app(create_app(settings))
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        await register(
            session,
            url,
            state,
            signing_key(pki),
            {
                "oin": "00000001001000000000",
                "code": "svb",
                "naam": "Sociale Verzekeringsbank",
                "url": urls["svb"],
                "jwks": svb_jwks(pki),
                "categorieen": ["financiele-zaken", "inkomen"],
            },
        )
        cert = pki.identity("gemeente-sign").cert.read_text()
        for i, (code, gemeente_url) in enumerate(urls["gemeenten"].items()):
            key = ec.generate_private_key(ec.SECP256R1())
            await register(
                session,
                url,
                state,
                key,
                {
                    "oin": f"00000001{code}{i:04d}0000",
                    "code": f"gm{code}",
                    "gemeentecode": code,
                    "naam": f"Gemeente {code}",
                    "connector": "gemeente",
                    "url": gemeente_url,
                    "jwks": jwks_for(key),
                    "x509": cert,
                    "categorieen": ["financiele-zaken"],
                },
            )
        deadline = time.monotonic() + 10
        while True:
            async with session.get(url + "/v1/federatie/organisaties") as r:
                active = len((await r.json())["actief"])
            if active >= 25 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        gateway_ms: list[float] = []
        per_org: dict[str, list[float]] = {}
        for i in range(requests + 10):
            started = time.perf_counter()
            async with session.post(url + "/v1/sandbox/bundel", json={"bsn": CITIZEN}) as response:
                body = orjson.loads(await response.read())
            elapsed = (time.perf_counter() - started) * 1000
            if i < 10:
                continue  # warm-up: connections, caches
            gateway_ms.append(elapsed)
            for bron in body["bundel"]["bronnen"]:
                assert bron["status"] == "ok", bron
                per_org.setdefault(bron["organisatie"]["code"], []).append(bron["duur_ms"])
    await gateway.cleanup()
    gateway_p50 = statistics.median(gateway_ms)
    slowest_code, slowest = max(
        ((c, statistics.median(v)) for c, v in per_org.items()), key=lambda x: x[1]
    )
    print(f"organisations registered and active: {active} (asked per request: {len(per_org)})")
    print(f"requests: {requests} sequential, {LATENCY_MS} ms added latency at every sandbox")
    print(f"gateway p50: {gateway_p50:.1f} ms")
    print(f"slowest organisation p50: {slowest:.1f} ms ({slowest_code})")
    print(f"ratio: {gateway_p50 / slowest:.3f} (target <= 1.15)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    requests = parser.parse_args().requests
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        DevPki(state / "pki").ensure()
        signing_key(DevPki(state / "pki"))  # made once, before the child reads it
        parent, child = multiprocessing.Pipe()
        process = multiprocessing.get_context("spawn").Process(
            target=serve_organisations, args=(str(state), child), daemon=True
        )
        process.start()
        try:
            urls = parent.recv()
            asyncio.run(measure(state, urls, requests))
        finally:
            process.terminate()
            process.join(5)


if __name__ == "__main__":
    main()
