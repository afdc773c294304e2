"""Certified documents: what a PDF costs next to the signed JSON, and whether it stalls others.

Runs the four sandboxes in one process and the gateway (with its document process pool and the
development TSA) in another, every organisation at 50 ms added latency, and drives load from
this process, all in one run for one citizen:

* latency: one client, JSON and PDF requests alternating; certified-PDF p50 / signed-JSON p50
  (target <= 2);
* size: the PDF for the citizen with the very long history (target < 2 MB);
* isolation: JSON p99 at an open-loop 20 requests/s, alone and while 2 clients fetch PDFs back
  to back (target: with PDFs <= 1.5 x alone).

    .venv/bin/python -m bench.documents [--quick]
    .venv/bin/python -m bench.documents --cpu   # CPU per PDF and per verification only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.fanout import percentile, wait_for
from gateway.config import load_settings
from gateway.connector import client_tls

CITIZEN = "999990020"  # data everywhere
LONG_HISTORY = "999990068"
GATEWAY_PORT = 18280
SANDBOX_BASE_PORT = 19301
RATE = 20.0  # JSON requests per second, open loop


@contextlib.asynccontextmanager
async def services(env: dict[str, str]) -> AsyncIterator[None]:
    """The sandboxes and the gateway as two processes; both stopped whatever happens."""
    blauweknop = str(Path(sys.executable).with_name("blauweknop"))
    procs = [
        await asyncio.create_subprocess_exec(blauweknop, *args, env=env, stdout=subprocess.DEVNULL)
        for args in (("sandbox", "serve"), ("serve",))
    ]
    try:
        yield
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
        for proc in procs:
            await proc.wait()


async def run(quick: bool) -> dict[str, Any]:
    state = tempfile.mkdtemp(prefix="bk-bench-documents-")
    env = {
        **os.environ,
        "BLAUWEKNOP_STATE_DIR": state,
        "BLAUWEKNOP_PORT": str(GATEWAY_PORT),
        "BLAUWEKNOP_SANDBOX_BASE_PORT": str(SANDBOX_BASE_PORT),
        "BLAUWEKNOP_LOG_LEVEL": "WARNING",
        "BLAUWEKNOP_DOCUMENTS__WARM_UP": "true",
    }
    settings = load_settings(None, env)
    settings.dev_pki.ensure()  # before the services race to make it
    gateway = f"http://127.0.0.1:{GATEWAY_PORT}"
    sandboxes = [o.settings for o in settings.organisations]
    report: dict[str, Any] = {"citizen": CITIZEN, "workers": settings.documents.workers}
    async with services(env), aiohttp.ClientSession() as session:
        for org in sandboxes:
            await wait_for(f"{org.base_url}/_sandbox/health", session, client_tls(org))
        await wait_for(f"{gateway}/healthz", session)
        for org in sandboxes:
            async with session.put(
                f"{org.base_url}/_sandbox/faults",
                json={"latency_ms": 50},
                ssl=client_tls(org) or True,
            ) as response:
                response.raise_for_status()

        async def fetch(accept: str, bsn: str = CITIZEN) -> tuple[float, int]:
            started = time.perf_counter()
            async with session.post(
                f"{gateway}/v1/sandbox/bundel", json={"bsn": bsn}, headers={"Accept": accept}
            ) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{accept}: HTTP {response.status}: {body[:300]!r}")
            return time.perf_counter() - started, len(body)

        for _ in range(5):  # warm up both paths
            await fetch("application/json")
            await fetch("application/pdf")

        # 1. One client, alternating, same citizen.
        rounds = 40 if quick else 150
        json_latency: list[float] = []
        pdf_latency: list[float] = []
        pdf_size = 0
        for _ in range(rounds):
            json_latency.append((await fetch("application/json"))[0])
            seconds, pdf_size = await fetch("application/pdf")
            pdf_latency.append(seconds)
        json_p50, pdf_p50 = statistics.median(json_latency), statistics.median(pdf_latency)
        report["latency"] = {
            "requests_each": rounds,
            "json_p50_ms": round(json_p50 * 1000, 1),
            "pdf_p50_ms": round(pdf_p50 * 1000, 1),
            "pdf_p99_ms": round(percentile(pdf_latency, 99) * 1000, 1),
            "ratio_p50": round(pdf_p50 / json_p50, 3),
            "target": "<= 2",
            "pdf_bytes": pdf_size,
        }

        # 2. The very long history.
        _, long_size = await fetch("application/pdf", LONG_HISTORY)
        report["long_history_pdf"] = {
            "citizen": LONG_HISTORY,
            "bytes": long_size,
            "target": "< 2097152",
        }

        # 3. JSON p99 at an open-loop rate, alone and next to 2 back-to-back PDF clients.
        seconds = 15 if quick else 60

        async def open_loop() -> list[float]:
            latencies: list[float] = []
            tasks = []

            async def one() -> None:
                latencies.append((await fetch("application/json"))[0])

            start = time.perf_counter()
            for i in range(int(seconds * RATE)):
                delay = start + i / RATE - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one()))
            await asyncio.gather(*tasks)
            return latencies

        alone = await open_loop()
        stop = asyncio.Event()
        pdfs = 0

        async def pdf_client() -> None:
            nonlocal pdfs
            while not stop.is_set():
                await fetch("application/pdf")
                pdfs += 1

        clients = [asyncio.create_task(pdf_client()) for _ in range(2)]
        await asyncio.sleep(1)
        loaded = await open_loop()
        stop.set()
        await asyncio.gather(*clients)
        alone_p99, loaded_p99 = percentile(alone, 99), percentile(loaded, 99)
        report["isolation"] = {
            "rate_per_s": RATE,
            "seconds": seconds,
            "json_p50_alone_ms": round(statistics.median(alone) * 1000, 1),
            "json_p99_alone_ms": round(alone_p99 * 1000, 1),
            "json_p50_with_pdfs_ms": round(statistics.median(loaded) * 1000, 1),
            "json_p99_with_pdfs_ms": round(loaded_p99 * 1000, 1),
            "pdfs_during_run": pdfs,
            "ratio_p99": round(loaded_p99 / alone_p99, 3),
            "target": "<= 1.5",
        }
    return report


async def _one_bundle(settings: Any) -> bytes:
    """A real signed bundle from the sandboxes and a gateway, all in this process."""
    from dataclasses import replace

    from connectors._sandbox.runner import serve_app
    from gateway.app import create_app
    from gateway.config import sandbox_organisation_table
    from gateway.serve import start_sandboxes

    sandboxes = await start_sandboxes(settings, any_port=True)
    urls = {s.org: s.url for s in sandboxes}
    organisations = sandbox_organisation_table(settings.dev_pki, urls)
    from gateway.config import settings_from_mapping

    with_orgs = settings_from_mapping(
        {"state_dir": str(settings.state_dir), "organisations": organisations}
    )
    runner, port = await serve_app(create_app(replace(with_orgs, documents=settings.documents)))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/v1/sandbox/bundel", json={"bsn": CITIZEN}
            ) as response,
        ):
            response.raise_for_status()
            return await response.read()
    finally:
        await runner.cleanup()
        for sandbox in sandboxes:
            await sandbox.runner.cleanup()


def cpu_per_document(count: int = 12) -> dict[str, Any]:
    """CPU of one certified PDF and of verifying it, in this process (load-independent)."""
    import threading
    from dataclasses import replace

    from gateway.config import settings_from_mapping
    from gateway.documents import service
    from gateway.documents.verify import verify_file
    from gateway.tsa.server import start_dev_tsa

    state = Path(tempfile.mkdtemp(prefix="bk-bench-cpu-"))
    settings = settings_from_mapping({"state_dir": str(state)})
    settings = replace(settings, documents=replace(settings.documents, niceness=0))
    settings.dev_pki.ensure()
    ready: dict[str, str] = {}

    def tsa() -> None:
        async def serve() -> None:
            _, ready["url"] = await start_dev_tsa(settings.dev_pki)
            await asyncio.Event().wait()

        asyncio.run(serve())

    threading.Thread(target=tsa, daemon=True).start()
    while "url" not in ready:
        time.sleep(0.05)
    service._init_worker(service.WorkerSpec(settings, ready["url"], "http://x/verifieer"))
    download = asyncio.run(_one_bundle(settings))
    document = orjson.loads(download)["bundel"]
    pdf = b""
    for _ in range(3):
        pdf = service._certify_pdf(document, download, "0" * 64, ready["url"])
    started = time.process_time()
    for _ in range(count):
        pdf = service._certify_pdf(document, download, "0" * 64, ready["url"])
    make = (time.process_time() - started) / count
    trust = service.document_trust(settings)
    started = time.process_time()
    for _ in range(3):
        verdict = verify_file(pdf, trust)
    check = (time.process_time() - started) / 3
    return {
        "citizen": CITIZEN,
        "pdf_cpu_ms_incl_tsa_token": round(make * 1000, 1),
        "verify_pdf_cpu_ms": round(check * 1000, 1),
        "verified": verdict.ok,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument(
        "--cpu", action="store_true", help="only the CPU per PDF and per verification, in-process"
    )
    args = parser.parse_args()
    if args.cpu:
        sys.stdout.write(orjson.dumps(cpu_per_document(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    report = asyncio.run(run(args.quick))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
