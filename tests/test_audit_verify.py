"""The Merkle log end to end: a real broker, the real checkpointer, the development TSA over HTTP.

Tampering is done the way an attacker with broker access would: a copy of the topics on the
same broker, produced again with one event altered, removed, duplicated or reordered, and
`audit verify` pointed at the copy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit.broker import EmbeddedBroker, create_topics, free_port
from gateway.audit.checkpoint import CheckpointRecord, NoteSigner
from gateway.audit.checkpointer import Checkpointer, CheckpointerError, CheckpointerSettings
from gateway.audit.kafka import producer_options
from gateway.audit.prove import check_proof_document, prove_transaction
from gateway.audit.stream import read_topic
from gateway.audit.verify import VerifyReport, verify_log
from gateway.pki import DevPki
from gateway.tsa import TsaTrust
from gateway.tsa.server import start_dev_tsa

ORIGIN = "00000099000000099000/blauweknop/audit"


def event(i: int, tx: str | None = None) -> bytes:
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "urn:oin:00000099000000099000:blauweknop-gateway",
            "type": "nl.blauweknop.audit.test.v1",
            "transactieid": tx or f"tx-{i // 3}",
            "data": {"n": i},
        }
    )


async def produce(broker: EmbeddedBroker, topic: str, values: Sequence[bytes]) -> None:
    producer = AIOKafkaProducer(**producer_options(broker.kafka_config()))
    await producer.start()
    try:
        for value in values:
            tx = orjson.loads(value).get("transactieid", "x") if value[:1] == b"{" else "x"
            await producer.send(topic, value=value, key=str(tx).encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(broker: EmbeddedBroker, topic: str) -> list[bytes]:
    async with contextlib.aclosing(read_topic(broker.kafka_config(), topic)) as records:
        return [r.value async for r in records]


async def eventually(check: Callable[[], bool], within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@dataclass
class Log:
    broker: EmbeddedBroker
    signer: NoteSigner
    trust: TsaTrust
    tsa_url: str
    pki: DevPki

    def settings(self, **overrides: object) -> CheckpointerSettings:
        base: dict[str, object] = {
            "kafka": self.broker.kafka_config(),
            "origin": ORIGIN,
            "signer": self.signer,
            "tsa_url": self.tsa_url,
            "tsa_trust": self.trust,
            "every_events": 40,
            "every_seconds": 0.3,
            "session_timeout_seconds": 2.0,
            # A group of its own per run: Tansu is slow to let a stopped member go, and a
            # restart does not depend on the group (test_one_checkpointer_at_a_time does).
            "group_id": f"checkpointer-{uuid.uuid4()}",
        }
        base.update(overrides)
        return CheckpointerSettings(**base)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def checkpointer(self, **overrides: object) -> AsyncIterator[Checkpointer]:
        made = Checkpointer(self.settings(**overrides))
        stop = asyncio.Event()
        task = asyncio.create_task(made.run(stop))
        try:
            yield made
        finally:
            stop.set()
            await asyncio.wait_for(task, 15)

    async def checkpoint_all(self, **overrides: object) -> list[int]:
        """Run a checkpointer until the whole events topic is covered; the published sizes."""
        total = len(await read_all(self.broker, overrides.get("events_topic", EVENTS_TOPIC)))  # type: ignore[arg-type]
        async with self.checkpointer(**overrides) as made:
            await eventually(lambda: bool(made.published) and made.published[-1].size == total)
        return [c.size for c in made.published]

    async def verify(self, **kwargs: object) -> VerifyReport:
        return await verify_log(
            self.broker.kafka_config(),
            origin=ORIGIN,
            verifier=self.signer.verifier,
            trust=self.trust,
            **kwargs,  # type: ignore[arg-type]
        )

    async def copy(self, name: str, edit: Callable[[list[bytes]], list[bytes]]) -> dict[str, str]:
        """Copies of both topics on the same broker, the events passed through `edit`."""
        topics = {"events_topic": f"{name}.events", "checkpoints_topic": f"{name}.checkpoints"}
        await create_topics(self.broker.kafka_config(), tuple(topics.values()))
        await produce(
            self.broker, topics["events_topic"], edit(await read_all(self.broker, EVENTS_TOPIC))
        )
        await produce(
            self.broker, topics["checkpoints_topic"], await read_all(self.broker, CHECKPOINTS_TOPIC)
        )
        return topics


@pytest.fixture
async def log(broker: EmbeddedBroker, pki: DevPki) -> AsyncIterator[Log]:
    runner, url = await start_dev_tsa(pki)
    signer = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    yield Log(broker, signer, TsaTrust.from_files(pki.root_cert), url, pki)
    await runner.cleanup()


async def checkpoint_and_verify(broker: EmbeddedBroker, pki: DevPki) -> VerifyReport:
    """Checkpoint the whole events topic (fresh key, development TSA), then `audit verify` it.

    For the relay's resilience tests: after a frozen or replaced broker, the log must verify.
    """
    runner, url = await start_dev_tsa(pki)
    try:
        signer = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
        made = Log(broker, signer, TsaTrust.from_files(pki.root_cert), url, pki)
        await made.checkpoint_all(every_events=5000)
        return await made.verify()
    finally:
        await runner.cleanup()


def kinds(report: VerifyReport) -> set[tuple[str, int | None]]:
    return {(f.kind, f.offset) for f in report.problems}


async def test_checkpoints_cover_the_log_and_verify_passes(log: Log) -> None:
    values = [event(i) for i in range(100)]
    await produce(log.broker, EVENTS_TOPIC, values)
    async with log.checkpointer() as made:
        await eventually(lambda: bool(made.published) and made.published[-1].size == 100)
        assert [c.size for c in made.published] == [40, 80, 100]
        # An identical redelivery (at-least-once relay) and new events are covered next.
        await produce(log.broker, EVENTS_TOPIC, [values[5], event(100)])
        await eventually(lambda: made.published[-1].size == 102)
        count = len(made.published)
        await asyncio.sleep(0.8)  # > every_seconds: still no checkpoint for an unchanged tree
        assert len(made.published) == count
    records = [CheckpointRecord.parse(v) for v in await read_all(log.broker, CHECKPOINTS_TOPIC)]
    assert [(r.first_leaf, len(r.leaf_hashes) // 32) for r in records] == [
        (0, 40),
        (40, 40),
        (80, 20),
        (100, 2),
    ]
    report = await log.verify()
    assert report.ok, report.problems
    assert report.covered == 102
    assert [(f.kind, f.offset) for f in report.findings] == [("redelivery", 100)]

    # A restarted checkpointer rebuilds from offset 0 and continues after the last checkpoint.
    await produce(log.broker, EVENTS_TOPIC, [event(i) for i in range(102, 110)])
    assert await log.checkpoint_all() == [110]
    assert (await log.verify()).ok


async def test_verify_names_each_kind_of_tampering(log: Log) -> None:
    await produce(log.broker, EVENTS_TOPIC, [event(i) for i in range(90)])
    await log.checkpoint_all()
    assert (await log.verify()).ok

    def altered(v: list[bytes]) -> list[bytes]:
        return [*v[:17], v[17].replace(b'"n":17', b'"n":71'), *v[18:]]

    def removed(v: list[bytes]) -> list[bytes]:
        return v[:17] + v[18:]

    def duplicated(v: list[bytes]) -> list[bytes]:
        return [*v[:18], v[17], *v[18:]]

    def reordered(v: list[bytes]) -> list[bytes]:
        return [*v[:17], v[18], v[17], *v[19:]]

    expected = {
        "altered": {("altered", 17)},
        "removed": {("removed", 17)},
        "duplicated": {("duplicated", 18)},
        "reordered": {("reordered", 17)},
    }
    for edit in (altered, removed, duplicated, reordered):
        topics = await log.copy(edit.__name__, edit)
        report = await log.verify(**topics)
        assert not report.ok, edit.__name__
        assert kinds(report) == expected[edit.__name__], (edit.__name__, report.problems)

    # The untouched copy passes: the checks above are about the edits, not the copying.
    untouched = await log.copy("untouched", lambda v: v)
    assert (await log.verify(**untouched)).ok


async def test_bad_checkpoints_and_conflicting_ids_fail(log: Log, tmp_path: object) -> None:
    values = [event(i) for i in range(30)]
    await produce(log.broker, EVENTS_TOPIC, values)
    await log.checkpoint_all(every_events=10)
    good = await read_all(log.broker, CHECKPOINTS_TOPIC)

    # A checkpoint signed by another key.
    forger = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    record = CheckpointRecord.parse(good[1])
    forged = CheckpointRecord(forger.sign(record.text), record.timestamp, 10, record.leaf_hashes)
    topics = await log.copy("badsig", lambda v: v)
    await produce(log.broker, topics["checkpoints_topic"], [forged.to_json()])
    report = await log.verify(**topics)
    assert ("signature", 3) in kinds(report)

    # A correctly signed checkpoint whose time-stamp is for other bytes.
    other = CheckpointRecord.parse(good[0])
    swapped = CheckpointRecord(record.note, other.timestamp, 10, record.leaf_hashes)
    topics = await log.copy("badtime", lambda v: v)
    await produce(log.broker, topics["checkpoints_topic"], [swapped.to_json()])
    report = await log.verify(**topics)
    assert ("timestamp", 3) in kinds(report)

    # A time-stamp by a TSA that does not chain to the configured CA.
    stranger = DevPki(log.pki.directory.parent / "stranger-pki")
    runner, url = await start_dev_tsa(stranger)
    try:
        async with log.checkpointer(
            tsa_url=url,
            tsa_trust=TsaTrust.from_files(stranger.root_cert),
            checkpoints_topic="strangers.checkpoints",
            every_events=30,
        ) as made:
            await create_topics(log.broker.kafka_config(), ("strangers.checkpoints",))
            await eventually(lambda: bool(made.published))
    finally:
        await runner.cleanup()
    report = await log.verify(checkpoints_topic="strangers.checkpoints")
    assert ("timestamp", 0) in kinds(report)

    # The same event id with different bytes.
    await produce(log.broker, EVENTS_TOPIC, [values[3].replace(b'"n":3', b'"n":4')])
    await log.checkpoint_all(every_events=10)
    report = await log.verify()
    assert kinds(report) == {("conflict", 30)}


async def test_prove_and_consistency_with_a_kept_checkpoint(log: Log) -> None:
    await produce(log.broker, EVENTS_TOPIC, [event(i) for i in range(50)])
    await log.checkpoint_all(every_events=20)
    kept = CheckpointRecord.parse((await read_all(log.broker, CHECKPOINTS_TOPIC))[0]).note
    await produce(log.broker, EVENTS_TOPIC, [event(i) for i in range(50, 80)])
    assert await log.checkpoint_all() == [80]

    doc = await prove_transaction(
        log.broker.kafka_config(),
        "tx-5",
        origin=ORIGIN,
        verifier=log.signer.verifier,
        trust=log.trust,
        old_note=kept,
    )
    assert [e["offset"] for e in doc["events"]] == [15, 16, 17]
    raw = orjson.dumps(doc)
    check = check_proof_document(raw, log.signer.verifier, log.trust)
    assert check.ok, check.problems
    assert any("consistent with the old checkpoint of tree size 20" in line for line in check.lines)

    def mutated(change: Callable[[dict[str, Any]], None]) -> bytes:
        copy = orjson.loads(raw)
        change(copy)
        return orjson.dumps(copy)

    def flip_first_proof_hash(d: dict[str, Any]) -> None:
        h = bytearray(base64.b64decode(d["events"][0]["inclusion_proof"][0]))
        h[0] ^= 1
        d["events"][0]["inclusion_proof"][0] = base64.b64encode(h).decode()

    def other_event(d: dict[str, Any]) -> None:
        d["events"][1]["event"] = d["events"][0]["event"]

    def wrong_offset(d: dict[str, Any]) -> None:
        d["events"][0]["leaf_index"] = 14

    def bad_consistency(d: dict[str, Any]) -> None:
        d["consistency"]["proof"] = d["consistency"]["proof"][1:]

    def other_timestamp(d: dict[str, Any]) -> None:
        d["timestamp"] = base64.b64encode(b"\x30\x03\x02\x01\x00").decode()

    for change in (
        flip_first_proof_hash,
        other_event,
        wrong_offset,
        bad_consistency,
        other_timestamp,
    ):
        assert not check_proof_document(mutated(change), log.signer.verifier, log.trust).ok, change
    stranger = NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate()).verifier
    assert not check_proof_document(raw, stranger, log.trust).ok

    # The auditor's kept checkpoint is consistent with the log...
    report = await log.verify(since_note=kept)
    assert report.ok, report.problems
    assert any(f.kind == "consistency" for f in report.findings)

    # --since reads on from the kept checkpoint, but checks the record at its boundary first.
    boundary = await log.copy("boundary", lambda v: [*v[:19], v[19] + b" ", *v[20:]])
    report = await log.verify(since_note=kept, **boundary)
    assert kinds(report) == {("altered", 19)}

    # The checkpointer refuses to continue a log whose events no longer match its checkpoints.
    tampered = await log.copy("tampered", lambda v: [v[0].replace(b'"n":0', b'"n":9'), *v[1:]])
    refusing = Checkpointer(log.settings(**tampered))
    with pytest.raises(CheckpointerError, match="no longer matches"):
        await asyncio.wait_for(refusing.run(asyncio.Event()), 20)

    # An operator who rewrites history and signs it again from scratch with the same key gets
    # a log that verifies on its own, but not against the auditor's kept checkpoint.
    rewritten = {**tampered, "checkpoints_topic": "rewritten.checkpoints"}
    await create_topics(log.broker.kafka_config(), ("rewritten.checkpoints",))
    await log.checkpoint_all(every_events=100, **rewritten)
    assert (await log.verify(**rewritten)).ok
    report = await log.verify(since_note=kept, **rewritten)
    assert kinds(report) == {("consistency", None)}


async def test_one_checkpointer_at_a_time_and_takeover(log: Log) -> None:
    group = f"checkpointer-{uuid.uuid4()}"
    await produce(log.broker, EVENTS_TOPIC, [event(i) for i in range(30)])
    first = Checkpointer(log.settings(group_id=group, every_events=1000))
    second = Checkpointer(log.settings(group_id=group, every_events=1000))
    stops = {first: asyncio.Event(), second: asyncio.Event()}
    tasks = {c: asyncio.create_task(c.run(stops[c])) for c in (first, second)}
    both_active = False

    def covered(size: int) -> Callable[[], bool]:
        def check() -> bool:
            nonlocal both_active
            both_active = both_active or (first.active and second.active)
            return any(c.published and c.published[-1].size == size for c in (first, second))

        return check

    try:
        await eventually(covered(30), within=40)
        active = first if first.active else second
        standby = second if active is first else first
        assert not both_active, "the consumer group keeps one checkpointer active"
        # The active one stops; the standby takes over and continues after its checkpoint.
        stops[active].set()
        await asyncio.wait_for(tasks[active], 15)
        await produce(log.broker, EVENTS_TOPIC, [event(i) for i in range(30, 45)])
        await eventually(lambda: bool(standby.published) and standby.published[-1].size == 45, 40)
    finally:
        for c in (first, second):
            stops[c].set()
        await asyncio.wait_for(asyncio.gather(*tasks.values(), return_exceptions=True), 20)
    records = [CheckpointRecord.parse(v) for v in await read_all(log.broker, CHECKPOINTS_TOPIC)]
    ends = [r.first_leaf + len(r.leaf_hashes) // 32 for r in records]
    assert ends[-1] == 45
    assert all(r.first_leaf <= prev for r, prev in zip(records[1:], ends, strict=False))
    report = await log.verify()
    assert report.ok, report.problems


async def test_no_checkpoint_without_a_time_stamp(log: Log) -> None:
    port = free_port()
    await produce(log.broker, EVENTS_TOPIC, [event(i) for i in range(5)])
    async with log.checkpointer(tsa_url=f"http://127.0.0.1:{port}/") as made:
        await eventually(lambda: made.active)
        await asyncio.sleep(1.0)  # several retries against a TSA that is not there
        assert made.published == []
        assert await read_all(log.broker, CHECKPOINTS_TOPIC) == []
        runner, _ = await start_dev_tsa(log.pki, port=port)
        try:
            await eventually(lambda: bool(made.published))
        finally:
            await runner.cleanup()
    assert [c.size for c in made.published] == [5]
    assert (await log.verify()).ok
