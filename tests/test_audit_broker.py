"""The embedded broker and the shared stream reader, against a real Tansu process."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaProducer

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit.broker import EmbeddedBroker, create_topics, start_broker
from gateway.audit.kafka import producer_options
from gateway.audit.stream import Offsets, StreamRecord, read_topic, topic_offsets
from gateway.errors import AuditStreamError


async def produce(broker: EmbeddedBroker, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(**producer_options(broker.kafka_config()))
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value=value, key=f"tx-{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def collect(broker: EmbeddedBroker, topic: str, **kwargs: object) -> list[StreamRecord]:
    async with contextlib.aclosing(read_topic(broker.kafka_config(), topic, **kwargs)) as records:  # type: ignore[arg-type]
        return [r async for r in records]


async def test_broker_creates_one_partition_topics_and_the_reader_reads_to_the_end(
    broker: EmbeddedBroker,
) -> None:
    config = broker.kafka_config()
    assert await topic_offsets(config, EVENTS_TOPIC) == Offsets(0, 0)
    await create_topics(config)  # a second time is fine
    values = [f"event {i}".encode() for i in range(250)] + [b"x" * (4 * 1024 * 1024)]
    await produce(broker, EVENTS_TOPIC, values)

    records = await collect(broker, EVENTS_TOPIC)
    assert [r.offset for r in records] == list(range(251))
    assert [r.value for r in records] == values, "bytes unchanged, order kept, 4 MiB fits"
    assert records[7].key == b"tx-7"
    assert records[0].topic == EVENTS_TOPIC
    assert records[0].partition == 0
    assert records[0].time.year >= 2024

    middle = await collect(broker, EVENTS_TOPIC, start=100, stop=110)
    assert [r.offset for r in middle] == list(range(100, 110))
    assert await collect(broker, CHECKPOINTS_TOPIC) == []


async def test_follow_sees_records_as_they_arrive(broker: EmbeddedBroker) -> None:
    seen: list[bytes] = []
    caught_up = asyncio.Event()

    async def follow() -> None:
        async with contextlib.aclosing(
            read_topic(broker.kafka_config(), EVENTS_TOPIC, start=0, follow=True)
        ) as records:
            async for record in records:
                seen.append(record.value)
                if len(seen) == 2:
                    caught_up.set()
                if len(seen) == 3:
                    return

    task = asyncio.create_task(follow())
    await produce(broker, EVENTS_TOPIC, [b"a", b"b"])
    await asyncio.wait_for(caught_up.wait(), 15)
    assert seen == [b"a", b"b"]
    assert not task.done(), "caught up, still following"
    await produce(broker, EVENTS_TOPIC, [b"c"])
    await asyncio.wait_for(task, 15)
    assert seen == [b"a", b"b", b"c"]
    assert await collect(broker, EVENTS_TOPIC, start="end") == []


async def test_clear_errors_for_a_missing_topic_or_broker(broker: EmbeddedBroker) -> None:
    with pytest.raises(AuditStreamError, match="does not exist"):
        await collect(broker, "no.such.topic")
    await broker.stop()
    with pytest.raises(AuditStreamError, match="could not be reached"):
        await collect(broker, EVENTS_TOPIC, stall_timeout=2.0)


async def test_a_second_broker_gets_its_own_port() -> None:
    first = await start_broker()
    second = await start_broker()
    try:
        assert first.port != second.port
        assert first.running
        assert second.running
    finally:
        await first.stop()
        await second.stop()
    assert not first.running
    assert not second.running


async def test_following_from_the_end_shows_only_new_records(broker: EmbeddedBroker) -> None:
    # Two batches of ten: Tansu reports the end inside the last batch; none of it is new.
    await produce(broker, EVENTS_TOPIC, [f"old {i}".encode() for i in range(10)])
    await produce(broker, EVENTS_TOPIC, [f"old {i}".encode() for i in range(10, 20)])
    first: list[StreamRecord] = []

    async def follow() -> None:
        async with contextlib.aclosing(
            read_topic(broker.kafka_config(), EVENTS_TOPIC, start="end", follow=True)
        ) as records:
            async for record in records:
                first.append(record)
                return

    task = asyncio.create_task(follow())
    for n in range(100):  # new records until the follower, wherever it started, sees one
        await produce(broker, EVENTS_TOPIC, [f"new {n}".encode()])
        done, _ = await asyncio.wait([task], timeout=0.2)
        if done:
            break
    await asyncio.wait_for(task, 15)
    assert first[0].value.startswith(b"new "), first[0].value
