"""Two gateway processes on one PostgreSQL outbox and one Kafka broker: one relay publishes.

Both replicas serve bundles and append to the shared outbox; only the relay that holds the
store's `audit-relay` role publishes. When that replica is killed with SIGKILL under load, the
other takes over within seconds, and every event of the outbox reaches the topic, in outbox
order per transaction (key); a duplicate, if any, has the same id and bytes. Real processes,
a real PostgreSQL, a real Kafka-protocol broker (Tansu), real sockets.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest

from gateway.app import RELAY
from gateway.audit.broker import EmbeddedBroker
from gateway.config import settings_from_mapping
from gateway.pki import DevPki
from gateway.serve import start_sandboxes
from tests.postgres import PostgresServer
from tests.replicas import Replica, replica_config, start_replica
from tests.test_audit_kafka import (
    eventually,
    first_copies,
    kafka_table,
    load,
    relayed_stack,
    topic_records,
)


@dataclass
class Pair:
    replicas: dict[str, Replica]
    postgres: PostgresServer
    database: str

    def outbox(self) -> list[tuple[int, str, str, bytes, bool]]:
        """(seq, event id, key, payload, sent) in seq order, read with a connection of our own."""
        with psycopg.connect(
            self.postgres.url(self.database), password=self.postgres.password, autocommit=True
        ) as conn:
            rows = conn.execute(
                "SELECT seq, event_id, key, payload, sent FROM blauweknop_outbox ORDER BY seq"
            ).fetchall()
        return [(int(r[0]), r[1], r[2], bytes(r[3]), bool(r[4])) for r in rows]


@pytest.fixture
async def pair(
    state_dir: Path, pki: DevPki, postgres: PostgresServer, broker: EmbeddedBroker, tmp_path: Path
) -> AsyncIterator[Pair]:
    base = settings_from_mapping({"state_dir": str(state_dir)})
    sandboxes = await start_sandboxes(base, any_port=True)
    database = postgres.create_database()
    config = replica_config(
        state_dir, pki, postgres, database, {s.org: s.url for s in sandboxes}
    ) | {"kafka": kafka_table(broker)}
    a, b = await asyncio.gather(
        start_replica("a", config, tmp_path), start_replica("b", config, tmp_path)
    )
    yield Pair({"a": a, "b": b}, postgres, database)
    a.stop()
    b.stop()
    for sandbox in sandboxes:
        await sandbox.runner.cleanup()


async def metric(session: aiohttp.ClientSession, replica: Replica, name: str) -> float:
    async with session.get(f"{replica.url}/metrics") as response:
        text = await response.text()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found, f"{name} not exported"
    return float(found.group(1))


async def leaders(session: aiohttp.ClientSession, replicas: list[Replica]) -> list[str]:
    values = [await metric(session, r, "blauweknop_audit_relay_leader") for r in replicas]
    return [r.name for r, value in zip(replicas, values, strict=True) if value == 1]


@pytest.mark.slow
async def test_one_replica_publishes_and_the_other_takes_over_after_sigkill(
    pair: Pair, broker: EmbeddedBroker
) -> None:
    replicas = list(pair.replicas.values())
    async with aiohttp.ClientSession() as session:

        async def one_leader() -> bool:
            return len(await leaders(session, replicas)) == 1

        await eventually(one_leader, 15, "one relay leads", step=0.2)
        (leader_name,) = await leaders(session, replicas)
        leader = pair.replicas[leader_name]
        standby = next(r for r in replicas if r is not leader)
        async with session.get(f"{standby.url}/readyz") as response:
            body = await response.json()
            assert response.status == 200, body
            assert body["checks"]["audit_relay"] == "ok", "a standby replica is ready"

        async with load(leader.url, clients=2) as on_leader, load(standby.url, clients=2) as on_b:
            await eventually(
                lambda: _done(on_leader.ok >= 20 and on_b.ok >= 20), 60, "both serve", step=0.2
            )
            published = {
                r.name: await metric(session, r, "blauweknop_audit_events_published_total")
                for r in replicas
            }
            assert published[leader.name] > 0
            assert published[standby.name] == 0, "the standby's relay publishes nothing"
            assert await leaders(session, replicas) == [leader.name], "still one leader"
            before_kill = await topic_records(broker.kafka_config())
            ids = [orjson.loads(r.value)["id"] for r in before_kill]
            assert len(ids) == len(set(ids)), "one publisher: every event once"

            await asyncio.to_thread(leader.kill)
            killed = time.monotonic()
            await eventually(
                lambda: _is_leader(session, standby), 15, "the standby takes over", step=0.2
            )
            took_over = time.monotonic() - killed
            served = on_b.ok
            await eventually(lambda: _done(on_b.ok >= served + 20), 60, "serving on", step=0.2)

        async def drained() -> bool:
            return all(sent for *_, sent in await asyncio.to_thread(pair.outbox))

        await eventually(drained, 30, "the new leader published the whole outbox", step=0.2)
        assert await metric(session, standby, "blauweknop_audit_events_published_total") > 0

    assert took_over < 10, f"took over after {took_over:.1f} s"
    rows = await asyncio.to_thread(pair.outbox)
    records = await topic_records(broker.kafka_config())
    order = first_copies(records)  # also: any duplicate has the same bytes as the first copy
    assert set(order) == {event_id for _, event_id, *_ in rows}, "every event on the topic"
    payloads = {event_id: payload for _, event_id, _, payload, _ in rows}
    for record in records:
        event = orjson.loads(record.value)
        assert record.value == payloads[event["id"]]
        assert record.key == event["transactieid"].encode()
    # Per key (transaction), the first copies are in outbox order.
    position = {event_id: i for i, event_id in enumerate(order)}
    per_key: dict[str, list[int]] = {}
    for _, event_id, key, _, _ in rows:
        per_key.setdefault(key, []).append(position[event_id])
    for key, positions in per_key.items():
        assert positions == sorted(positions), f"transaction {key} out of order on the topic"
    assert len(per_key) >= 60, "many transactions from both replicas"


async def _done(condition: bool) -> bool:
    return condition


async def _is_leader(session: aiohttp.ClientSession, replica: Replica) -> bool:
    return await metric(session, replica, "blauweknop_audit_relay_leader") == 1


async def test_readyz_says_when_the_relay_has_stopped(
    tmp_path: Path, pki: DevPki, broker: EmbeddedBroker
) -> None:
    async with relayed_stack(tmp_path, pki, broker) as stack:

        async def readyz() -> tuple[int, dict[str, Any]]:
            async with stack.session.get(f"{stack.url}/readyz") as response:
                return response.status, await response.json()

        await eventually(lambda: _is_ready(readyz), 10, "ready with its relay")
        assert stack.app[RELAY].leading, "with SQLite the one process leads"
        await stack.app[RELAY].stop()
        status, body = await readyz()
        assert status == 503
        assert body["checks"]["audit_relay"] == "the audit relay has stopped"


async def _is_ready(readyz: Callable[[], Awaitable[tuple[int, dict[str, Any]]]]) -> bool:
    status, body = await readyz()
    return status == 200 and body["checks"].get("audit_relay") == "ok"
