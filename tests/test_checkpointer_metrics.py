"""The checkpointer's /metrics: `blauweknop audit checkpointer` as a process of its own.

A real broker (Tansu), the development TSA over HTTP, the checkpointer's metrics scraped over a
real socket: the age and size of the newest checkpoint, events waiting, TSA failures, and after
a restart the age of the newest checkpoint on the topic (not of the process).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.audit import EVENTS_TOPIC
from gateway.audit.broker import EmbeddedBroker, free_port
from gateway.pki import DevPki
from gateway.tsa.server import start_dev_tsa
from tests.replicas import spawn, toml
from tests.test_audit_kafka import eventually
from tests.test_audit_verify import event, produce

_METRICS_AT = re.compile(rb"checkpointer metrics at (http://\S+)/metrics")


@contextlib.asynccontextmanager
async def checkpointer(config: Path, log: Path) -> AsyncIterator[str]:
    """Run `blauweknop audit checkpointer`; yields the base URL of its metrics."""
    process = await spawn(config, log, "audit", "checkpointer", stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, f"the checkpointer exited; its log: {log}"
            if found := _METRICS_AT.search(line):
                url = found.group(1).decode()
        assert url, "the checkpointer says where its metrics are"
        yield url
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(f"{url}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


@pytest.mark.slow
async def test_checkpointer_exports_age_size_pending_and_failures(
    broker: EmbeddedBroker, pki: DevPki, state_dir: Path, tmp_path: Path
) -> None:
    tsa_port = free_port()
    tsa, tsa_url = await start_dev_tsa(pki, port=tsa_port)
    config = tmp_path / "checkpointer.toml"
    config.write_text(
        toml(
            {
                "mode": "sandbox",
                "state_dir": str(state_dir),
                "kafka": {"bootstrap_servers": broker.bootstrap, "idempotence": False},
                "audit": {
                    "tsa_url": tsa_url,
                    "tsa_ca_file": str(pki.root_cert),
                    "checkpoint_every_events": 5,
                    "checkpoint_every_seconds": 0.3,
                    "checkpointer_group": f"checkpointer-{uuid.uuid4()}",
                    "checkpointer_metrics_port": 0,
                },
            }
        )
    )
    log = tmp_path / "checkpointer.log"
    await produce(broker, EVENTS_TOPIC, [event(i) for i in range(10)])
    try:
        async with aiohttp.ClientSession() as session:
            async with checkpointer(config, log) as url:

                async def size_is(size: int) -> bool:
                    return (await scrape(session, url)).get(
                        "blauweknop_audit_checkpoint_tree_size"
                    ) == float(size)

                await eventually(lambda: size_is(10), 40, "checkpoint of 10 events", step=0.2)
                first = await scrape(session, url)
                assert (
                    abs(time.time() - first["blauweknop_audit_checkpoint_last_timestamp_seconds"])
                    < 60
                )
                assert first["blauweknop_audit_checkpoints_published_total"] >= 1
                assert first["blauweknop_audit_checkpointer_active"] == 1
                assert first["blauweknop_audit_checkpoint_pending_events"] == 0
                assert first["blauweknop_audit_tsa_certificate_not_after_seconds"] > time.time()
                assert first['blauweknop_audit_checkpoint_failures_total{stage="timestamp"}'] == 0
                async with session.get(f"{url}/healthz") as response:
                    assert response.status == 200

                # The TSA goes away: events wait, failures count, the age stays put.
                await tsa.cleanup()
                await produce(broker, EVENTS_TOPIC, [event(i) for i in range(10, 13)])

                async def waiting() -> bool:
                    now = await scrape(session, url)
                    return (
                        now["blauweknop_audit_checkpoint_pending_events"] == 3
                        and now['blauweknop_audit_checkpoint_failures_total{stage="timestamp"}'] > 0
                    )

                await eventually(waiting, 20, "events wait for the TSA", step=0.2)
                stale = await scrape(session, url)
                assert stale["blauweknop_audit_checkpoint_tree_size"] == 10
                assert (
                    stale["blauweknop_audit_checkpoint_last_timestamp_seconds"]
                    == first["blauweknop_audit_checkpoint_last_timestamp_seconds"]
                )
                tsa, _ = await start_dev_tsa(pki, port=tsa_port)
                await eventually(lambda: size_is(13), 40, "checkpoint once the TSA is back")
                newest = (await scrape(session, url))[
                    "blauweknop_audit_checkpoint_last_timestamp_seconds"
                ]

            # A restarted checkpointer reports the newest checkpoint on the topic at once.
            async with checkpointer(config, log) as url:
                await eventually(lambda: size_is(13), 40, "the topic's newest checkpoint")
                again = await scrape(session, url)
                assert again["blauweknop_audit_checkpoint_last_timestamp_seconds"] == newest
                assert again["blauweknop_audit_checkpoints_published_total"] == 0
    finally:
        await tsa.cleanup()
