"""Reading the audit topics: from an offset to the current end, or following new records.

The one reader every audit command uses (tail, find, verify, archive, reproduce). It assigns the
partition itself (no consumer group, nothing committed), so any number of auditors can read at
once without disturbing each other.

    async with contextlib.aclosing(read_topic(config, EVENTS_TOPIC)) as records:
        async for record in records:
            ...
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from gateway.audit.kafka import client_options
from gateway.config import KafkaConfig
from gateway.errors import AuditStreamError

Start = int | Literal["beginning", "end"]
_MAX_FETCHES_PAST_END = 16


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One record as Kafka holds it: the value is the producer's bytes, unchanged."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC)


@dataclass(frozen=True, slots=True)
class Offsets:
    """The first offset still held (retention may have removed older ones) and the next one.

    Caution with the embedded broker: Tansu may report `end` below the true end (it reports
    the last record batch's base offset + 1), and may leave gaps between offsets after a failed
    produce. `read_topic` copes with both; to know the true end, read to it. Offsets are
    increasing, not necessarily consecutive: order by offset, never count with it.
    """

    beginning: int
    end: int


async def topic_offsets(
    config: KafkaConfig, topic: str, *, partition: int = 0, within: float = 15.0
) -> Offsets:
    async with _consumer(config, topic, partition, within) as (consumer, tp):
        return await _offsets(consumer, tp, within)


async def read_topic(
    config: KafkaConfig,
    topic: str,
    *,
    start: Start = "beginning",
    stop: int | None = None,
    follow: bool = False,
    partition: int = 0,
    stall_timeout: float = 30.0,
    max_records: int = 2000,
) -> AsyncGenerator[StreamRecord, None]:
    """Records of one partition from `start`: up to `stop` (exclusive), or to the end.

    Without `stop` or `follow`, reads to the end as it was when called (a few records that
    arrived since may come along). With `follow`, keeps waiting for new records until the
    caller stops iterating. Raises AuditStreamError if the broker delivers nothing for
    `stall_timeout` seconds before the end. Offsets that retention removed are skipped: look at
    the first record's offset.
    """
    async with _consumer(config, topic, partition, stall_timeout) as (consumer, tp):
        offsets = await _offsets(consumer, tp, stall_timeout)
        if start == "beginning":
            position = offsets.beginning
        elif start == "end":
            position = offsets.end
        else:
            position = max(start, offsets.beginning)
        # Tansu may report an end below the true one (see Offsets): past it, read on while
        # records keep coming at once, for a bounded number of fetches.
        end = None if follow or stop is not None else offsets.end
        extra_fetches = 0
        consumer.seek(tp, position)
        if start == "end":
            # The reported end may lie inside the last batch (Tansu): skip what is there now.
            position = await _skip_present(consumer, tp, position)
        progress = time.monotonic()
        while True:
            if stop is not None and position >= stop:
                return
            past_end = end is not None and position >= end
            if past_end:
                extra_fetches += 1
                if extra_fetches > _MAX_FETCHES_PAST_END:
                    return
            wait_ms = 100 if past_end else 500
            try:
                batch = await consumer.getmany(tp, timeout_ms=wait_ms, max_records=max_records)
            except KafkaError as exc:
                raise AuditStreamError(
                    f"reading {topic} at offset {position} failed: {exc}"
                ) from exc
            messages = batch.get(tp, [])
            if not messages:
                if past_end:
                    return
                if not follow and time.monotonic() - progress > stall_timeout:
                    raise AuditStreamError(
                        f"{topic}: no records for {stall_timeout:.0f} s at offset {position} "
                        f"before the end ({stop or end}); is the broker answering?"
                    )
                continue
            progress = time.monotonic()
            for message in messages:
                if stop is not None and message.offset >= stop:
                    return
                yield StreamRecord(
                    topic=topic,
                    partition=partition,
                    offset=message.offset,
                    key=message.key,
                    value=message.value if message.value is not None else b"",
                    timestamp_ms=message.timestamp,
                )
            position = messages[-1].offset + 1


async def _skip_present(consumer: Any, tp: TopicPartition, position: int) -> int:
    """Read past the records already in the partition; returns the offset after them."""
    for _ in range(_MAX_FETCHES_PAST_END):
        try:
            batch = await consumer.getmany(tp, timeout_ms=300, max_records=10_000)
        except KafkaError as exc:
            raise AuditStreamError(f"reading {tp.topic} failed: {exc}") from exc
        messages = batch.get(tp, [])
        if not messages:
            break
        position = messages[-1].offset + 1
    return position


async def _offsets(consumer: Any, tp: TopicPartition, within: float) -> Offsets:
    try:
        beginning = await asyncio.wait_for(consumer.beginning_offsets([tp]), within)
        end = await asyncio.wait_for(consumer.end_offsets([tp]), within)
    except (KafkaError, TimeoutError) as exc:
        raise AuditStreamError(f"the offsets of {tp.topic} could not be read: {exc!r}") from exc
    return Offsets(int(beginning[tp]), int(end[tp]))


@contextlib.asynccontextmanager
async def _consumer(
    config: KafkaConfig, topic: str, partition: int, within: float
) -> AsyncIterator[tuple[Any, TopicPartition]]:
    # Room for the largest message the relay may publish, plus batch overhead.
    fetch_bytes = config.max_message_bytes + 64 * 1024
    consumer = AIOKafkaConsumer(
        **client_options(config),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=fetch_bytes,
        fetch_max_bytes=max(fetch_bytes, 16 * 1024 * 1024),
    )
    tp = TopicPartition(topic, partition)
    try:
        try:
            await asyncio.wait_for(consumer.start(), within)
            partitions = await asyncio.wait_for(_partitions(consumer, topic), within)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise AuditStreamError(
                f"Kafka at {config.bootstrap} could not be reached: {exc!r}; is it running, "
                "and is [kafka] bootstrap_servers (or --bootstrap-server) right?"
            ) from exc
        if partition not in partitions:
            raise AuditStreamError(
                f"topic {topic} (partition {partition}) does not exist at {config.bootstrap}"
            )
        consumer.assign([tp])
        yield consumer, tp
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)


async def _partitions(consumer: Any, topic: str) -> set[int]:
    if topic not in await consumer.topics():
        return set()
    found = consumer.partitions_for_topic(topic)
    return set(found) if found else set()
