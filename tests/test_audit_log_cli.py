"""The auditor's Merkle-log commands, run as commands against a real journey.

The gateway serves bundles, its relay publishes the audit events to a real broker, the
`blauweknop audit checkpointer` command checkpoints them with the development TSA over HTTP,
and `audit verify`, `prove` and `verify-proof` check the result, as an auditor would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
from pathlib import Path

import orjson

from connectors._sandbox import CITIZENS
from gateway.app import AUDIT
from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit.broker import EmbeddedBroker, create_topics
from gateway.audit.checkpoint import CheckpointRecord
from gateway.pki import DevPki
from gateway.tsa.server import start_dev_tsa
from tests.test_audit_cli import BLAUWEKNOP, run
from tests.test_audit_kafka import eventually, relayed_stack, topic_records
from tests.test_audit_verify import produce


async def test_checkpointer_verify_prove_as_commands(
    broker: EmbeddedBroker, tmp_path: Path, pki: DevPki
) -> None:
    tsa, tsa_url = await start_dev_tsa(pki)
    env = {
        "BLAUWEKNOP_STATE_DIR": str(tmp_path / "state"),
        "BLAUWEKNOP_AUDIT__TSA_URL": tsa_url,
        "BLAUWEKNOP_AUDIT__CHECKPOINT_EVERY_SECONDS": "0.3",
    }
    audit = ("audit", "--bootstrap-server", broker.bootstrap)
    config = broker.kafka_config()
    try:
        transactions: list[str] = []
        async with relayed_stack(tmp_path, pki, broker) as stack:
            for citizen in (CITIZENS[2], CITIZENS[3]):
                async with stack.session.post(
                    f"{stack.url}/v1/sandbox/bundel", json={"bsn": citizen.bsn}
                ) as response:
                    assert response.status == 200
                    transactions.append(response.headers["X-Transactie-Id"])
            store = stack.app[AUDIT].store

            async def relayed() -> bool:
                return await store.backlog() == 0

            await eventually(relayed, 15, "the relay published everything")
        events = len(await topic_records(config))
        assert events >= 10

        checkpointer = await asyncio.create_subprocess_exec(
            BLAUWEKNOP,
            *audit,
            "checkpointer",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
        )
        try:

            async def covered() -> bool:
                records = await topic_records(config, CHECKPOINTS_TOPIC)
                last = CheckpointRecord.parse(records[-1].value) if records else None
                return last is not None and last.first_leaf + len(last.leaf_hashes) // 32 == events

            await eventually(covered, 30, "the checkpointer covered every event")
        finally:
            checkpointer.send_signal(signal.SIGTERM)
            _, stopped = await asyncio.wait_for(checkpointer.communicate(), 20)
        assert checkpointer.returncode == 0, stopped.decode()

        code, out, err = await run(*audit, "verify", "--json", env=env)
        assert code == 0, out + err
        report = orjson.loads(out)
        assert report["ok"]
        assert report["covered"] == events
        kept = tmp_path / "kept-checkpoint.txt"
        kept.write_text(report["newest_checkpoint"])

        proof = tmp_path / "proof.json"
        code, out, err = await run(*audit, "prove", transactions[0], "-o", str(proof), env=env)
        assert code == 0, out + err
        document = orjson.loads(proof.read_bytes())
        assert document["events"]
        assert not document["not_yet_checkpointed"]
        assert all(
            orjson.loads(base64.b64decode(e["event"]))["transactieid"] == transactions[0]
            for e in document["events"]
        )
        code, out, err = await run(*audit, "verify-proof", str(proof), env=env)
        assert code == 0, out + err
        assert "proof verifies" in out
        # Offline, with nothing but the log's key and the TSA's CA (no configuration at all).
        code, out, err = await run(
            "audit",
            "verify-proof",
            str(proof),
            "--verifier-key",
            document["log"]["verifier_key"],
            "--tsa-ca",
            str(pki.root_cert),
            env={"BLAUWEKNOP_STATE_DIR": str(tmp_path / "elsewhere")},
        )
        assert code == 0, out + err
        document["events"][0]["inclusion_proof"].reverse()
        proof.write_bytes(orjson.dumps(document))
        code, out, _ = await run(*audit, "verify-proof", str(proof), env=env)
        assert code == 1
        assert "does NOT verify" in out

        # More events, and the kept checkpoint is consistent with the newer log.
        await produce(broker, EVENTS_TOPIC, [orjson.dumps({"id": "extra", "n": 1})])
        code, out, err = await run(*audit, "verify", "--since", str(kept), env=env)
        assert code == 0, out + err
        assert "consistency proof from your checkpoint" in out
        assert "not yet covered" in out

        # One altered event on a copy of the topics: named with its offset, exit code 1.
        values = [r.value for r in await topic_records(config)][:events]
        values[3] = values[3].replace(b'"status"', b'"Status"')
        await create_topics(config, ("copy.events", "copy.checkpoints"))
        await produce(broker, "copy.events", values)
        await produce(
            broker,
            "copy.checkpoints",
            [r.value for r in await topic_records(config, CHECKPOINTS_TOPIC)],
        )
        code, out, err = await run(
            *audit,
            "verify",
            "--events-topic",
            "copy.events",
            "--checkpoints-topic",
            "copy.checkpoints",
            env=env,
        )
        assert code == 1, out + err
        assert "altered      copy.events@3" in out, out
    finally:
        with contextlib.suppress(Exception):
            await tsa.cleanup()
