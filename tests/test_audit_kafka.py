"""The relay publishes the outbox to a real Kafka-protocol broker: every event, in order.

Each test starts its own Tansu broker (in memory) on a real socket, and runs the gateway either
in this process or, where it must die by SIGKILL, as a `blauweknop serve` subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from connectors._sandbox import CITIZENS
from gateway.app import AUDIT, METRICS
from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC, AuditTrail, PseudonymKey
from gateway.audit.broker import EmbeddedBroker, start_broker
from gateway.audit.relay import Relay
from gateway.audit.stream import StreamRecord, read_topic
from gateway.config import (
    KafkaConfig,
    load_settings,
    sandbox_organisation_table,
    settings_from_mapping,
)
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.models import Organisatie
from gateway.pki import DevPki
from gateway.serve import start_sandboxes
from gateway.store import OutboxRecord, Store
from gateway.store.sqlite import SqliteStore
from tests.conftest import Stack, fresh_state, start_stack
from tests.production import production_config
from tests.replicas import spawn
from tests.test_audit_verify import checkpoint_and_verify

UITGEVER = Organisatie("00000099000000099000", "bkgw", "test")


# -- helpers ------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float, what: str, step: float = 0.05
) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(step)
    raise AssertionError(f"not within {within} s: {what}")


async def topic_records(config: KafkaConfig, topic: str = EVENTS_TOPIC) -> list[StreamRecord]:
    async with contextlib.aclosing(read_topic(config, topic, stall_timeout=15)) as records:
        return [r async for r in records]


def outbox_rows(db: Path) -> list[tuple[int, str, bytes, int]]:
    """(seq, event id, payload, sent) in append order, read with a connection of our own."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT seq, event_id, payload, sent FROM outbox ORDER BY seq")
        return [(r[0], r[1], bytes(r[2]), r[3]) for r in rows]


async def outbox(db: Path) -> list[tuple[int, str, bytes, int]]:
    return await asyncio.to_thread(outbox_rows, db)


def first_copies(records: list[StreamRecord]) -> list[str]:
    """Event ids in order of their first copy on the topic; later copies must be identical."""
    seen: dict[str, bytes] = {}
    order: list[str] = []
    for record in records:
        event_id = orjson.loads(record.value)["id"]
        if event_id in seen:
            assert seen[event_id] == record.value, f"redelivery of {event_id} differs"
            continue
        seen[event_id] = record.value
        order.append(event_id)
    return order


async def assert_topic_holds_outbox(db: Path, config: KafkaConfig) -> list[StreamRecord]:
    """Every event of the outbox is on the topic with its exact bytes, first copies in order."""
    rows = await outbox(db)
    records = await topic_records(config)
    assert all(sent == 1 for *_, sent in rows), "everything marked sent"
    assert first_copies(records) == [event_id for _, event_id, _, _ in rows]
    payloads = {event_id: payload for _, event_id, payload, _ in rows}
    for record in records:
        event = orjson.loads(record.value)
        assert record.value == payloads[event["id"]], "the CloudEvent bytes, unchanged"
        assert record.key == event["transactieid"].encode(), "keyed by transaction id"
    return records


def kafka_table(broker: EmbeddedBroker) -> dict[str, Any]:
    # Short timeouts: a hung broker is noticed in seconds, and the relay backs off ≤ 5 s.
    return {
        "bootstrap_servers": broker.bootstrap,
        "idempotence": False,
        "request_timeout_seconds": 2.0,
        "send_timeout_seconds": 4.0,
    }


@dataclass
class Load:
    """Clients asking for bundles back to back until stopped; counts what they got."""

    ok: int = 0
    failed: int = 0
    transactions: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def load(url: str, clients: int = 4) -> AsyncIterator[Load]:
    counts = Load()
    stop = asyncio.Event()

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        i = n
        while not stop.is_set():
            citizen = CITIZENS[i % len(CITIZENS)]
            i += clients
            try:
                async with session.post(
                    f"{url}/v1/sandbox/bundel",
                    json={"bsn": citizen.bsn},
                    timeout=aiohttp.ClientTimeout(total=10),
                ) as response:
                    await response.read()
                    if response.status == 200:
                        counts.ok += 1
                        counts.transactions.append(response.headers["X-Transactie-Id"])
                    else:
                        counts.failed += 1
            except (aiohttp.ClientError, TimeoutError):
                counts.failed += 1
                await asyncio.sleep(0.05)

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(client(n, session)) for n in range(clients)]
        try:
            yield counts
        finally:
            stop.set()
            await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def relayed_stack(
    tmp_path: Path, pki: DevPki, broker: EmbeddedBroker
) -> AsyncIterator[Stack]:
    made, runners = await start_stack(fresh_state(tmp_path, pki), pki, kafka=kafka_table(broker))
    try:
        yield made
    finally:
        await made.session.close()
        for runner in runners:
            await runner.cleanup()


# -- the relay on its own --------------------------------------------------------------------


async def test_relay_delivers_every_event_in_order_and_marks_them_sent(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    store = await SqliteStore.open(db)
    trail = AuditTrail(store, PseudonymKey("k1", b"s" * 32), UITGEVER)
    events = [
        trail.event("organisatie.bevraagd", f"tx-{i // 5}", {"n": i, "burger": "p"})
        for i in range(1200)
    ]
    await store.append(events[:700])
    metrics = Metrics()
    relay = Relay(store, broker.kafka_config(), metrics)
    relay.start()
    try:
        await store.append(events[700:])  # more arrive while the relay runs
        await eventually(
            lambda: _backlog_is(store, 0), 15, "the relay emptied the outbox", step=0.1
        )
    finally:
        await relay.stop()
    records = await assert_topic_holds_outbox(db, broker.kafka_config())
    assert [r.offset for r in records] == list(range(1200)), "each event once, no gaps"
    assert [orjson.loads(r.value)["id"] for r in records] == [e.event_id for e in events]
    assert metrics.audit_published._value.get() == 1200
    assert metrics.audit_backlog._value.get() == 0

    # A crash between the broker's acknowledgement and `mark_sent` loses the marks: an outbox
    # restored from before the sending publishes everything again. Same ids, same bytes.
    await store.close()
    copy = tmp_path / "outbox-before-marks.db"
    await asyncio.to_thread(_restore_unsent, db, copy)
    store = await SqliteStore.open(copy)
    relay = Relay(store, broker.kafka_config())
    relay.start()
    try:
        await eventually(lambda: _backlog_is(store, 0), 15, "the second relay emptied the copy")
    finally:
        await relay.stop()
        await store.close()
    records = await topic_records(broker.kafka_config())
    assert len(records) == 2400
    ids = [orjson.loads(r.value)["id"] for r in records]
    assert ids[1200:] == ids[:1200], "the redelivery carries the same event ids"
    assert [r.value for r in records[1200:]] == [r.value for r in records[:1200]]
    assert first_copies(records) == [e.event_id for e in events]


class CountingStore(SqliteStore):
    """The real SQLite store, counting the relay's reads of the outbox that found records."""

    reads_with_records = 0

    async def unsent(self, limit: int) -> Sequence[OutboxRecord]:
        records = await super().unsent(limit)
        self.reads_with_records += bool(records)
        return records


def published_batches(metrics: Metrics) -> float:
    [count] = [
        sample.value
        for family in metrics.audit_publish_seconds.collect()
        for sample in family.samples
        if sample.name.endswith("_count")
    ]
    return count


@pytest.mark.parametrize("handed_max_bytes", [64 * 1024 * 1024, 2_000])
async def test_relay_publishes_what_it_is_handed_and_reads_the_outbox_at_every_gap(
    broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handed_max_bytes: int
) -> None:
    # The relay's store hands it each committed batch. A second store on the same file stands
    # in for another process appending too: its records are gaps in what the relay was handed.
    # With a tiny memory (2,000 bytes) handed records are dropped again and again.
    monkeypatch.setattr("gateway.audit.relay._HANDED_MAX_BYTES", handed_max_bytes)
    db = tmp_path / "outbox.db"
    store = await CountingStore.open(db)
    other = await SqliteStore.open(db)
    trail = AuditTrail(store, PseudonymKey("k1", b"s" * 32), UITGEVER)
    await store.append([trail.event("login.geslaagd", "tx-before", {"n": i}) for i in range(10)])
    metrics = Metrics()
    relay = Relay(store, broker.kafka_config(), metrics)
    relay.start()
    gaps = 0
    try:
        for i in range(60):
            events = [trail.event("organisatie.bevraagd", f"tx-{i}", {"n": n}) for n in range(5)]
            await store.append(events)
            if i % 10 == 9:
                await other.append([trail.event("consent.gegeven", f"tx-other-{i}", {"n": i})])
                gaps += 1
            await asyncio.sleep(0.05)
        await eventually(lambda: _backlog_is(store, 0), 15, "the relay emptied the outbox")
    finally:
        await relay.stop()
        await other.close()
        await store.close()
    records = await assert_topic_holds_outbox(db, broker.kafka_config())
    assert [r.offset for r in records] == list(range(10 + 60 * 5 + gaps)), "each event once"
    batches = published_batches(metrics)
    if handed_max_bytes > 2_000:
        # Read back: the backlog from before the start, and once after each gap.
        assert store.reads_with_records <= 1 + gaps
        assert batches >= store.reads_with_records + 5, "most batches came from memory"
    else:
        assert store.reads_with_records >= gaps


async def test_relay_deletes_sent_events_after_the_window_and_never_unsent_ones(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    store = await SqliteStore.open(db)
    trail = AuditTrail(store, PseudonymKey("k1", b"s" * 32), UITGEVER)
    events = [trail.event("organisatie.bevraagd", f"tx-{i}", {"n": i}) for i in range(50)]
    await store.append(events)
    relay = Relay(store, broker.kafka_config(), keep_sent_seconds=0)
    relay.start()
    try:
        await eventually(lambda: _outbox_is_empty(db), 10, "sent events deleted", step=0.1)
        await broker.stop()  # what is appended now cannot be acknowledged, so it stays
        late = trail.event("organisatie.bevraagd", "tx-late", {"n": 50})
        await store.append([late])
        await asyncio.sleep(2.5)  # more than one pruning round at this window
        assert [event_id for _, event_id, _, _ in await outbox(db)] == [late.event_id]
    finally:
        await relay.stop(drain_seconds=0.1)
        await store.close()


async def _backlog_is(store: Store, count: int) -> bool:
    return await store.backlog() == count


def _restore_unsent(db: Path, copy: Path) -> None:
    shutil.copy(db, copy)
    with contextlib.closing(sqlite3.connect(copy)) as conn:
        conn.execute("UPDATE outbox SET sent = 0")
        conn.commit()


async def test_relay_without_a_broker_keeps_everything_and_counts_failures(
    tmp_path: Path,
) -> None:
    store = await SqliteStore.open(tmp_path / "outbox.db")
    trail = AuditTrail(store, PseudonymKey("k1", b"s" * 32), UITGEVER)
    await store.append([trail.event("x", "tx", {"n": i}) for i in range(10)])
    metrics = Metrics()
    nobody = KafkaConfig(
        bootstrap_servers=("127.0.0.1:1",),
        idempotence=False,
        request_timeout_seconds=0.5,
        send_timeout_seconds=1.0,
    )
    relay = Relay(store, nobody, metrics)
    relay.start()
    try:
        await eventually(
            lambda: _at_least(metrics.audit_publish_failures._value.get(), 2), 15, "retries"
        )
        assert relay.running
        assert metrics.audit_relay_connected._value.get() == 0
        assert metrics.audit_backlog._value.get() == 10
    finally:
        started = time.monotonic()
        await relay.stop(drain_seconds=1.0)
        assert time.monotonic() - started < 8, "stopping is bounded"
    assert await store.backlog() == 10, "nothing is marked sent without an acknowledgement"
    await store.close()


async def _at_least(value: float, minimum: float) -> bool:
    return value >= minimum


async def test_large_events_go_in_batches_that_fit_and_an_oversized_one_blocks_in_place(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    db = tmp_path / "outbox.db"
    store = await SqliteStore.open(db)
    trail = AuditTrail(store, PseudonymKey("k1", b"s" * 32), UITGEVER)
    big = [trail.event("document.gearchiveerd", f"tx-{i}", {"b": "x" * 30_000}) for i in range(9)]
    await store.append(big)
    small_batches = broker.kafka_config(max_message_bytes=64 * 1024)
    relay = Relay(store, small_batches)
    relay.start()
    try:
        await eventually(lambda: _backlog_is(store, 0), 15, "all nine published")
        records = await topic_records(broker.kafka_config())
        assert [orjson.loads(r.value)["id"] for r in records] == [e.event_id for e in big]

        # One event larger than a whole batch: it stays in the outbox, and so does everything
        # after it (order is kept); the relay keeps trying and counts failures.
        too_big = trail.event("document.gearchiveerd", "tx-big", {"b": "x" * 100_000})
        after = trail.event("bundel.uitgegeven", "tx-big", {"n": 1})
        await store.append([too_big, after])
        await eventually(
            lambda: _at_least(relay.metrics.audit_publish_failures._value.get(), 2), 15, "fails"
        )
        assert relay.running
        assert await store.backlog() == 2
    finally:
        await relay.stop(drain_seconds=0.5)
        await store.close()
    assert len(await topic_records(broker.kafka_config())) == 9


# -- the gateway with its relay, under load ------------------------------------------------


@pytest.mark.slow
async def test_broker_frozen_30_seconds_under_load_loses_nothing(
    broker: EmbeddedBroker, tmp_path: Path, pki: DevPki
) -> None:
    async with relayed_stack(tmp_path, pki, broker) as stack:
        async with load(stack.url) as traffic:
            await eventually(lambda: _at_least(traffic.ok, 20), 30, "bundles flow")
            broker.freeze()
            frozen_at, ok_before = time.monotonic(), traffic.ok
            try:
                await asyncio.sleep(30)  # the required 30 s freeze; the load goes on meanwhile
                served_while_frozen = traffic.ok - ok_before
                metrics = stack.app[METRICS]
                assert metrics.audit_publish_failures._value.get() >= 1
                assert metrics.audit_backlog._value.get() > 0
            finally:
                broker.thaw()
            assert served_while_frozen > 0, "a hung broker never holds up requests"
            assert time.monotonic() - frozen_at >= 30
            ok_at_thaw = traffic.ok
            await eventually(lambda: _at_least(traffic.ok, ok_at_thaw + 20), 30, "bundles flow on")
        # Thirty seconds of backlog take a while on a busy machine: the relay catches up
        # while the gateway runs, not within shutdown's few seconds of draining.
        store = stack.app[AUDIT].store
        await eventually(lambda: _backlog_is(store, 0), 90, "the relay caught up", step=0.2)
    db = stack.settings.store_path
    await eventually(lambda: _all_sent(db), 5, "everything sent by shutdown")
    records = await assert_topic_holds_outbox(db, broker.kafka_config())
    issued = {
        orjson.loads(r.value)["transactieid"]
        for r in records
        if orjson.loads(r.value)["type"].endswith("bundel.uitgegeven.v1")
    }
    assert set(traffic.transactions) <= issued, "every bundle handed out is on the topic"
    report = await checkpoint_and_verify(broker, pki)  # tests/test_audit_verify.py
    assert report.ok, report.problems


async def _outbox_is_empty(db: Path) -> bool:
    return not await outbox(db)


async def _all_sent(db: Path) -> bool:
    rows = await outbox(db)
    return bool(rows) and all(sent == 1 for *_, sent in rows)


async def test_broker_replaced_by_a_fresh_one_gets_everything_not_acknowledged(
    broker: EmbeddedBroker, tmp_path: Path, pki: DevPki
) -> None:
    async with relayed_stack(tmp_path, pki, broker) as stack:
        db = stack.settings.store_path
        async with load(stack.url) as traffic:
            await eventually(lambda: _at_least(traffic.ok, 20), 30, "bundles flow")
            old = await topic_records(broker.kafka_config())
            await broker.kill()  # in memory: everything the old broker held is gone
            await asyncio.sleep(1.5)  # the relay notices; requests go on; marks in flight land
            acknowledged = {event_id for _, event_id, _, sent in await outbox(db) if sent}
            assert {orjson.loads(r.value)["id"] for r in old} <= acknowledged
            fresh = await start_broker(port=broker.port)
            ok_at_restart = traffic.ok
            await eventually(lambda: _at_least(traffic.ok, ok_at_restart + 10), 30, "more")
        try:
            await eventually(lambda: _backlog_zero(stack), 30, "the relay caught up")
            rows = await outbox(db)
            records = await topic_records(fresh.kafka_config())
        finally:
            await fresh.stop()
    on_fresh = first_copies(records)
    not_acknowledged = [event_id for _, event_id, _, _ in rows if event_id not in acknowledged]
    assert not_acknowledged, "events waited while there was no broker"
    assert set(not_acknowledged) <= set(on_fresh), "every unacknowledged event was resent"
    order = {event_id: i for i, (_, event_id, _, _) in enumerate(rows)}
    assert on_fresh == sorted(on_fresh, key=order.__getitem__), "in outbox order"


async def _backlog_zero(stack: Stack) -> bool:
    return await stack.app[AUDIT].store.backlog() == 0


# -- the gateway as a process of its own ---------------------------------------------------


@dataclass
class GatewayProcess:
    process: asyncio.subprocess.Process
    url: str
    stderr: Path


async def start_gateway(config: Path, port: int, stderr: Path) -> GatewayProcess:
    process = await spawn(config, stderr, "serve")
    url = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        if process.returncode is not None:
            raise AssertionError((await asyncio.to_thread(stderr.read_text))[-2000:])
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{url}/readyz") as response,
            ):
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await eventually(ready, 30, "the gateway process answers", step=0.1)
    return GatewayProcess(process, url, stderr)


@contextlib.asynccontextmanager
async def gateway_config(
    tmp_path: Path, pki: DevPki, broker: EmbeddedBroker, log_level: str = "INFO"
) -> AsyncIterator[tuple[Path, int]]:
    """Sandboxes in this process; a TOML file for a `blauweknop serve` that uses them."""
    state = fresh_state(tmp_path, pki)
    base = settings_from_mapping({"state_dir": str(state)})
    sandboxes = await start_sandboxes(base, any_port=True)
    port = _free_port()
    organisations = sandbox_organisation_table(pki, {s.org: s.url for s in sandboxes})
    lines = [
        f'state_dir = "{state}"',
        f"port = {port}",
        f'log_level = "{log_level}"',
        "deadline_seconds = 3.0",
        "[kafka]",
        *(f"{k} = {_toml(v)}" for k, v in kafka_table(broker).items()),
    ]
    for org, table in organisations.items():
        lines.append(f"[organisations.{org}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items() if k != "options"]
        if "options" in table:
            lines.append(f"[organisations.{org}.options]")
            lines += [f"{k} = {_toml(v)}" for k, v in table["options"].items()]
    config = tmp_path / "gateway.toml"
    await asyncio.to_thread(config.write_text, "\n".join(lines) + "\n")
    try:
        yield config, port
    finally:
        for sandbox in sandboxes:
            await sandbox.runner.cleanup()


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
async def test_gateway_killed_under_load_publishes_its_outbox_after_restart(
    broker: EmbeddedBroker, tmp_path: Path, pki: DevPki
) -> None:
    async with gateway_config(tmp_path, pki, broker) as (config, port):
        log = tmp_path / "gateway.log"
        first = await start_gateway(config, port, log)
        async with load(first.url) as traffic:
            await eventually(lambda: _at_least(traffic.ok, 30), 30, "bundles flow")
            broker.freeze()  # so that the outbox has a backlog when the gateway dies
            ok_at_freeze = traffic.ok
            await eventually(lambda: _at_least(traffic.ok, ok_at_freeze + 30), 30, "more")
            first.process.kill()
            assert await first.process.wait() == -signal.SIGKILL
        broker.thaw()
        db = tmp_path / "state" / "gateway.db"
        assert any(not sent for *_, sent in await outbox(db)), "a backlog died with it"
        second = await start_gateway(config, port, log)
        try:
            await eventually(lambda: _all_sent(db), 30, "the restarted relay caught up")
        finally:
            second.process.terminate()
            assert await second.process.wait() == 0
    records = await assert_topic_holds_outbox(db, broker.kafka_config())
    issued = {
        orjson.loads(r.value)["transactieid"]
        for r in records
        if orjson.loads(r.value)["type"].endswith("bundel.uitgegeven.v1")
    }
    assert set(traffic.transactions) <= issued, "every bundle a client received is evidenced"
    report = await checkpoint_and_verify(broker, pki)  # redeliveries are information only
    assert report.ok, report.problems


async def test_no_test_citizen_in_kafka_logs_or_metrics(
    broker: EmbeddedBroker, tmp_path: Path, pki: DevPki
) -> None:
    async with gateway_config(tmp_path, pki, broker, log_level="DEBUG") as (config, port):
        log = tmp_path / "gateway.log"
        gateway = await start_gateway(config, port, log)
        try:
            async with aiohttp.ClientSession() as session:
                for citizen in CITIZENS:
                    for formaat in ("json", "jws"):
                        async with session.post(
                            f"{gateway.url}/v1/sandbox/bundel",
                            json={"bsn": citizen.bsn, "formaat": formaat},
                        ) as response:
                            body = await response.read()
                            assert response.status == 200, body[:500]
                            if formaat == "json":  # the download itself does hold the BSN
                                assert citizen.bsn.encode() in body
                async with session.get(f"{gateway.url}/metrics") as response:
                    metrics = await response.read()
            db = tmp_path / "state" / "gateway.db"
            await eventually(lambda: _all_sent(db), 15, "everything published")
        finally:
            gateway.process.terminate()
            assert await gateway.process.wait() == 0
    assert (await checkpoint_and_verify(broker, pki)).ok  # checkpoints are scanned too
    written = [
        *await topic_records(broker.kafka_config(), EVENTS_TOPIC),
        *await topic_records(broker.kafka_config(), CHECKPOINTS_TOPIC),
    ]
    kafka = b"".join((r.key or b"") + r.value for r in written)
    assert len(kafka) > 0
    assert b"nl.blauweknop.audit.bundel.uitgegeven.v1" in kafka
    assert b"blauweknop_audit_events_published" in metrics
    logs = log.read_bytes()
    assert b"audit relay connected" in logs, "the logs were captured"
    for citizen in CITIZENS:
        for where, data in (("Kafka", kafka), ("the logs", logs), ("/metrics", metrics)):
            assert citizen.bsn.encode() not in data, f"BSN of {citizen.naam} in {where}"
            assert citizen.naam.encode() not in data, f"{citizen.naam} in {where}"


# -- configuration -------------------------------------------------------------------------


def test_kafka_settings_from_file_and_environment(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[kafka]\nbootstrap_servers = ["a:9093", "b:9093"]\nrelay_batch = 100\n')
    settings = load_settings(
        config,
        {"BLAUWEKNOP_KAFKA__IDEMPOTENCE": "false", "BLAUWEKNOP_STATE_DIR": str(tmp_path)},
    )
    assert settings.kafka is not None
    assert settings.kafka.bootstrap_servers == ("a:9093", "b:9093")
    assert settings.kafka.idempotence is False
    assert settings.kafka.relay_batch == 100
    from_env = load_settings(None, {"BLAUWEKNOP_KAFKA__BOOTSTRAP_SERVERS": "x:1, y:2"})
    assert from_env.kafka is not None
    assert from_env.kafka.bootstrap_servers == ("x:1", "y:2")
    assert from_env.kafka.idempotence is True, "on by default, for real Kafka"
    assert load_settings(None, {}).kafka is None, "no relay without Kafka"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"idempotence": "maybe"}, "true or false"),
        ({"security_protocol": "TLS"}, "security_protocol must be one of"),
        ({"security_protocol": "SASL_SSL"}, "sasl_password_file"),
        ({"cert_file": "/c.pem"}, "cert_file and key_file go together"),
        ({"relay_batch": 0}, "relay_batch"),
        ({"request_timeout_seconds": 60, "send_timeout_seconds": 30}, "at most send_timeout"),
    ],
)
def test_kafka_settings_errors_say_what_to_fix(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping({"kafka": {"bootstrap_servers": "k:9093", **table}})


def test_production_needs_kafka_over_tls_and_never_turns_auditing_off(
    pki: DevPki, tmp_path: Path
) -> None:
    base = {k: v for k, v in production_config(pki, tmp_path).items() if k != "kafka"}
    with pytest.raises(ConfigError, match=r"\[kafka\] bootstrap_servers"):
        settings_from_mapping(base)
    with pytest.raises(ConfigError, match="SSL or SASL_SSL"):
        settings_from_mapping({**base, "kafka": {"bootstrap_servers": "k:9092"}})
    tls = {"bootstrap_servers": "k:9093", "security_protocol": "SSL"}
    assert settings_from_mapping({**base, "kafka": tls}).kafka is not None
    with pytest.raises(ConfigError, match="disabled_for_benchmark"):
        settings_from_mapping(
            {**base, "kafka": tls, "audit": {**base["audit"], "disabled_for_benchmark": True}}
        )
    sandbox = settings_from_mapping({"audit": {"disabled_for_benchmark": True}})
    assert sandbox.audit_disabled_for_benchmark
