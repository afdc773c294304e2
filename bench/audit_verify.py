"""`audit verify` speed: events per second, over a real broker, from offset 0 to the end.

Starts the embedded Tansu broker and the development TSA, produces N realistic audit events
(CloudEvents of ~600 bytes: pseudonyms, hashes), lets the real checkpointer cover them, then
times `verify_log` (read both topics, recompute the tree, check every checkpoint signature and
time-stamp, compare every leaf). Also times the verification core alone (no Kafka).

    .venv/bin/python -m bench.audit_verify [--events 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit import EVENTS_TOPIC
from gateway.audit.broker import start_broker
from gateway.audit.checkpoint import NoteSigner
from gateway.audit.checkpointer import Checkpointer, CheckpointerSettings
from gateway.audit.kafka import producer_options
from gateway.audit.verify import LogVerifier, verify_log
from gateway.pki import DevPki
from gateway.tsa import TsaTrust
from gateway.tsa.server import start_dev_tsa

ORIGIN = "00000099000000099000/blauweknop/audit"


def make_event(i: int) -> bytes:
    tx = str(uuid.UUID(int=i // 5))
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "urn:oin:00000099000000099000:blauweknop-gateway",
            "type": "nl.blauweknop.audit.organisatie.bevraagd.v1",
            "time": "2026-11-29T20:00:00.000+00:00",
            "datacontenttype": "application/json",
            "transactieid": tx,
            "pseudonymkeyid": "0123456789abcdef",
            "data": {
                "burger": hashlib.sha256(str(i % 997).encode()).hexdigest(),
                "organisatie": {"oin": "00000001003214345000", "code": "duo"},
                "status": "ok",
                "duur_ms": i % 300,
                "antwoord_sha256": hashlib.sha256(str(i).encode()).hexdigest(),
            },
        }
    )


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pki = DevPki(Path(tmp) / "pki")
        pki.ensure()
        broker = await start_broker()
        runner, url = await start_dev_tsa(pki)
        try:
            config = broker.kafka_config()
            values = [make_event(i) for i in range(n)]
            producer = AIOKafkaProducer(**producer_options(config))
            await producer.start()
            started = time.perf_counter()
            for i, value in enumerate(values):
                await producer.send(EVENTS_TOPIC, value=value, key=str(i // 5).encode())
            await producer.flush()
            await producer.stop()
            print(f"produced {n} events in {time.perf_counter() - started:.1f} s")

            signer = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
            trust = TsaTrust.from_files(pki.root_cert)
            settings = CheckpointerSettings(
                kafka=config,
                origin=ORIGIN,
                signer=signer,
                tsa_url=url,
                tsa_trust=trust,
                every_events=10_000,
                every_seconds=0.5,
                group_id=f"bench-{uuid.uuid4()}",
            )
            checkpointer = Checkpointer(settings)
            stop = asyncio.Event()
            task = asyncio.create_task(checkpointer.run(stop))
            started = time.perf_counter()
            while not checkpointer.published or checkpointer.published[-1].size < n:
                if time.perf_counter() - started > 300:
                    raise SystemExit("the checkpointer did not cover the events in 5 minutes")
                await asyncio.sleep(0.05)
            print(
                f"checkpointer covered {n} events with {len(checkpointer.published)} "
                f"checkpoints in {time.perf_counter() - started:.1f} s (incl. group join)"
            )
            stop.set()
            await task

            for _ in range(2):
                report = await verify_log(
                    config, origin=ORIGIN, verifier=signer.verifier, trust=trust
                )
                assert report.ok, report.problems
                print(
                    f"audit verify over Kafka: {report.events} events in {report.seconds:.2f} s "
                    f"= {report.events / report.seconds:,.0f} events/s"
                )

            core = LogVerifier(ORIGIN, signer.verifier, trust)
            started = time.perf_counter()
            for offset, value in enumerate(values):
                core.add_event(offset, value)
            core.finish()
            elapsed = time.perf_counter() - started
            print(f"verification core alone (no Kafka): {n / elapsed:,.0f} events/s")
        finally:
            await runner.cleanup()
            await broker.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    asyncio.run(main(parser.parse_args().events))
