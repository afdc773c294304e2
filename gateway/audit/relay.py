"""The relay: publishes the audit outbox to Kafka, in order, at least once.

It runs inside the gateway process as a background task and never holds up a request: requests
only append to the outbox (synced to disk); the relay reads the oldest unsent records, publishes
them as one record batch with `acks=all`, and marks them sent only after the broker acknowledged
the batch. The events topic has one partition, and the relay has one batch in flight at a time
and never a second one queued behind it, so nothing overtakes anything.

When the broker hangs, dies, or is replaced by a fresh one, the relay drops its producer, waits
(backing off up to `_MAX_BACKOFF` seconds), connects again and starts over from the oldest
record not yet acknowledged. Records that did reach the old broker may so arrive twice; a
duplicate carries the same event id and the same bytes. The first copy of every event is always
in outbox order.

What the relay publishes it normally takes from memory: the store hands it every batch it
commits (`Store.follow_appends`), and while those records continue the outbox's sequence
exactly where the last published batch ended, reading them back would only cost time. At any gap
(an append by another process, a record of before the start, a handed batch dropped because
Kafka was away too long) the relay reads the outbox again, from the oldest unsent record.

Sent records stay in the outbox for `keep_sent_seconds` (a window in which an operator can still
replay them should a Kafka cluster lose acknowledged data), then the relay deletes them, so the
outbox holds a bounded amount however long the gateway runs.

One relay publishes at a time across all replicas on one store: each relay competes for the
store's leadership role `audit-relay` (a PostgreSQL advisory lock; with SQLite the one process
leads). The others stand by, report the backlog, and take over within a few seconds when the
leader stops or dies. The leader confirms its role with the store before every batch, so a
leader cut off from the store stops publishing; a batch it had already sent may then arrive
again from the new leader, with the same ids and bytes (at least once, as above). Only the
leader prunes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.protocol.metadata import MetadataRequest

from gateway.audit import EVENTS_TOPIC
from gateway.audit.kafka import producer_options
from gateway.config import KafkaConfig
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.store import Leadership, OutboxRecord, Store, StoreUnavailable

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.2
_MAX_BACKOFF = 5.0
# Seconds between batches while the relay keeps up: the evidence is durable in the outbox
# already, so publishing a few tenths of a second later costs nothing, and each batch (a read,
# a metadata request, a send, a mark) costs the same CPU however few events it carries.
_LINGER = 0.2
_BACKLOG_EVERY = 1.0  # seconds between backlog gauge updates
_PRUNE_EVERY = 60.0  # seconds between deletions of sent records, at most
_STOP_PRODUCER = 3.0  # seconds a producer may take to close before it is torn down
_UNKNOWN_TOPIC = 3  # Kafka error code UNKNOWN_TOPIC_OR_PARTITION
_RECORD_OVERHEAD = 128  # record batch header and one record's framing, generously
# Handed records kept while Kafka is away; beyond this they are dropped (the outbox has them).
_HANDED_MAX_BYTES = 64 * 1024 * 1024
ROLE = "audit-relay"  # the store's leadership role: one publishing relay across replicas


class Relay:
    def __init__(
        self,
        store: Store,
        config: KafkaConfig,
        metrics: Metrics | None = None,
        *,
        topic: str = EVENTS_TOPIC,
        idle_seconds: float = 0.1,
        keep_sent_seconds: float = 3600.0,
        leader_retry_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics or Metrics()
        self.topic = topic
        self.idle_seconds = idle_seconds
        self.keep_sent_seconds = keep_sent_seconds
        # A short window is pruned more often, so the outbox never holds much more than it.
        self._prune_every = min(_PRUNE_EVERY, max(keep_sent_seconds, 1.0))
        self._pruned_at = time.monotonic()
        self.leader_retry_seconds = leader_retry_seconds
        self._leading = False
        self._producer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._wake = asyncio.Event()
        self._backlog_at = 0.0
        # How many records to read at once: `relay_batch`, or fewer while the events are so
        # large (archived documents) that fewer fit in one batch of `max_message_bytes`.
        self._read_limit = config.relay_batch
        # Records the store handed over after committing them, and the seq that the next
        # published record must have for them to be used (None: read the outbox first).
        self._handed: deque[OutboxRecord] = deque()
        self._handed_bytes = 0
        self._next_seq: int | None = None
        store.follow_appends(self._hand_over)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._draining = False
            self._task = asyncio.create_task(self.run(), name="audit-relay")

    def wake(self) -> None:
        """Look for records now instead of at the next poll (the store's hand-over, a stop)."""
        self._wake.set()

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Publish what is waiting for at most `drain_seconds`, then stop.

        Whatever is still unsent stays in the outbox for the next start: nothing is lost.
        """
        task, self._task = self._task, None
        if task is not None and not task.done():
            self._draining = True
            self.wake()
            try:
                await asyncio.wait_for(asyncio.shield(task), drain_seconds)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._drop_producer()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def leading(self) -> bool:
        """Whether this relay is the one that publishes (else it stands by)."""
        return self._leading

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        async with self.store.leadership(ROLE, retry_seconds=self.leader_retry_seconds) as lead:
            try:
                await self._relay(lead)
            finally:
                self._set_leading(False)

    def _hand_over(self, records: Sequence[OutboxRecord]) -> None:
        """The store committed these records: keep them for publishing, and wake up."""
        if self._leading:
            self._handed.extend(records)
            self._handed_bytes += sum(len(r.payload) for r in records)
            if self._handed_bytes > _HANDED_MAX_BYTES:
                self._forget_handed()  # Kafka is away: the outbox keeps them meanwhile
        self.wake()

    def _forget_handed(self) -> None:
        self._handed.clear()
        self._handed_bytes = 0

    def _take_handed(self, limit: int) -> list[OutboxRecord]:
        """The handed records that continue from the last published one, up to `limit`."""
        if self._next_seq is None:
            return []
        handed = self._handed
        while handed and handed[0].seq < self._next_seq:  # published by way of the outbox
            self._handed_bytes -= len(handed.popleft().payload)
        records: list[OutboxRecord] = []
        for record in handed:
            if record.seq != self._next_seq + len(records) or len(records) == limit:
                break
            records.append(record)
        return records

    async def _next_records(self) -> Sequence[OutboxRecord]:
        return self._take_handed(self._read_limit) or await self.store.unsent(self._read_limit)

    def _set_leading(self, leading: bool) -> None:
        if not leading:  # another replica may publish meanwhile: start over from the outbox
            self._next_seq = None
            self._forget_handed()
        if leading != self._leading:
            log.info(
                "audit relay %s",
                "leads: this replica publishes the outbox"
                if leading
                else "stands by: another replica publishes the outbox",
            )
        self._leading = leading
        self.metrics.audit_relay_leader.set(1 if leading else 0)

    async def _stand_by(self, lead: Leadership) -> None:
        """Not the leader: no producer, the backlog still reported, wait for the role."""
        self._set_leading(False)
        await self._drop_producer()
        self.metrics.audit_backlog.set(await self.store.backlog())
        await lead.wait(self.leader_retry_seconds)

    async def _relay(self, lead: Leadership) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            try:
                if not lead.held:
                    if self._draining:
                        return
                    await self._stand_by(lead)
                    continue
                self._set_leading(True)
                await self._prune()  # the leader only: one replica deletes, as one publishes
                records = await self._next_records()
                await self._update_backlog(len(records))
                if not records:
                    if self._draining:
                        return
                    await self._idle()
                    continue
                if not await lead.confirm():  # lost since the last check: publish nothing
                    continue
                self._next_seq = None  # until this batch is published and marked
                count = await self._publish(records)
                await self.store.mark_sent([r.seq for r in records[:count]])
                self._next_seq = records[count - 1].seq + 1
                self.metrics.audit_published.inc(count)
                if count < len(records):  # read no more than fits: memory, and store time
                    self._read_limit = count
                else:
                    self._read_limit = min(self.config.relay_batch, self._read_limit * 2)
                if len(records) < self._read_limit and not self._draining:
                    # Caught up: let a few more events gather first. Fewer, larger batches mean
                    # fewer synced `mark_sent` commits competing with the requests' appends.
                    await asyncio.sleep(_LINGER)
                backoff = _FIRST_BACKOFF
            except StoreUnavailable:
                if not self.store.is_open:
                    log.info("audit relay stops: the outbox is closed")
                    return
                log.exception("audit relay could not read or mark the outbox; retrying")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
            except Exception as exc:  # the relay must outlive whatever goes wrong
                self.metrics.audit_publish_failures.inc()
                if isinstance(exc, _EXPECTED):
                    log.warning(
                        "audit events not acknowledged by Kafka at %s (%s); retrying in %.1f s",
                        self.config.bootstrap,
                        type(exc).__name__ if isinstance(exc, TimeoutError) else exc,
                        backoff,
                    )
                else:
                    log.exception("audit relay failed unexpectedly; retrying in %.1f s", backoff)
                await self._drop_producer()
                if self._draining:
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < self._prune_every:
            return
        self._pruned_at = time.monotonic()
        pruned = await self.store.prune_sent(self.keep_sent_seconds)
        if pruned:
            log.debug("deleted %d sent outbox records", pruned)

    async def _idle(self) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), self.idle_seconds)

    async def _publish(self, records: Sequence[OutboxRecord]) -> int:
        """Send the oldest records as one record batch; wait until the broker acknowledged it.

        One batch per request, and one request at a time: a batch that fails cannot be
        overtaken by a later one, so the first copy of every event stays in outbox order.
        Returns how many records went into the batch (as many as fit), or raises.
        """
        producer = await self._connected()
        batch = producer.create_batch()
        count = 0
        first = records[0]
        # The batch builder takes a first record of any size; the broker would refuse it.
        if len(first.payload) + len(first.key) + _RECORD_OVERHEAD <= self.config.max_message_bytes:
            for record in records:
                key = record.key.encode("utf-8")
                if batch.append(key=key, value=record.payload, timestamp=None):
                    count += 1
                else:
                    break
        if count == 0:
            log.error(
                "audit event %s (%d bytes) is larger than [kafka] max_message_bytes (%d); "
                "raise the limit here and on the topic (deploy/kafka/) to publish it",
                records[0].event_id,
                len(records[0].payload),
                self.config.max_message_bytes,
            )
            raise _TooLarge(records[0].event_id)
        batch.close()
        started = time.perf_counter()

        async def send() -> Any:
            # Asked before every batch, on the same connection: a broker replaced since the
            # last batch must have the topic before anything is produced to it (Tansu would
            # create it on the spot with its defaults, and lose records when it is created
            # properly a moment later).
            await _existing_partitions(producer, self.topic)
            delivered = await producer.send_batch(batch, self.topic, partition=0)
            return await delivered

        metadata = await asyncio.wait_for(send(), self.config.send_timeout_seconds)
        self.metrics.audit_publish_seconds.observe(time.perf_counter() - started)
        log.debug(
            "published outbox %d..%d at offset %s",
            records[0].seq,
            records[count - 1].seq,
            getattr(metadata, "offset", "?"),
        )
        return count

    async def _connected(self) -> Any:
        if self._producer is not None:
            return self._producer
        producer = AIOKafkaProducer(**producer_options(self.config))
        self._producer = producer  # so that a failed start is torn down too
        await asyncio.wait_for(producer.start(), self.config.send_timeout_seconds)
        partitions = await asyncio.wait_for(
            _existing_partitions(producer, self.topic), self.config.send_timeout_seconds
        )
        if len(partitions) != 1:
            log.error(
                "topic %s has %d partitions; the Merkle log needs exactly one: the relay "
                "publishes to partition 0 only (see deploy/kafka/)",
                self.topic,
                len(partitions),
            )
        self.metrics.audit_relay_connected.set(1)
        log.info("audit relay connected to Kafka at %s", self.config.bootstrap)
        return producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.metrics.audit_relay_connected.set(0)
        if producer is None:
            return
        try:
            await asyncio.wait_for(producer.stop(), _STOP_PRODUCER)
        except Exception:  # a hung broker: tear the producer down without its flush
            await _tear_down(producer)

    async def _update_backlog(self, seen: int) -> None:
        if seen < self._read_limit:  # all of the backlog was in this read
            self.metrics.audit_backlog.set(seen)
            return
        now = time.monotonic()
        if now - self._backlog_at >= _BACKLOG_EVERY:
            self._backlog_at = now
            self.metrics.audit_backlog.set(await self.store.backlog())


class _TooLarge(Exception):
    """One event does not fit in a record batch of `max_message_bytes`."""


class _TopicMissing(Exception):
    """The events topic does not exist; the relay never creates it."""


_EXPECTED = (KafkaError, OSError, TimeoutError, ConfigError, _TooLarge, _TopicMissing)


async def _existing_partitions(producer: Any, topic: str) -> list[int]:
    """The topic's partitions, asked without letting the broker create the topic.

    A producer's own metadata requests allow auto-creation, and an auto-created topic gets the
    cluster's defaults (partitions, retention, cleanup policy): wrong for evidence. So the relay
    publishes only to a topic that the operator (deploy/kafka/) or `start_broker` created.
    """
    client = producer.client
    request = MetadataRequest([topic], allow_auto_topic_creation=False)
    response = await client.send(client.get_random_node(), request)
    for entry in response.topics:
        error_code, name, partitions = entry[0], entry[1], entry[-1]
        if name != topic:
            continue
        if error_code == _UNKNOWN_TOPIC:
            log.error(
                "topic %s does not exist at %s: create it with the settings in deploy/kafka/; "
                "the relay retries meanwhile",
                topic,
                ",".join(f"{h}:{p}" for h, p, _ in client.hosts),
            )
            raise _TopicMissing(topic)
        if error_code != 0:
            raise _TopicMissing(f"{topic}: metadata error {error_code}")
        return sorted(int(p[1]) for p in partitions)
    raise _TopicMissing(topic)


async def _tear_down(producer: Any) -> None:
    """Stop a producer whose flush cannot finish: its sender task and its connections."""
    sender = getattr(producer, "_sender", None)
    task = getattr(sender, "sender_task", None)
    if task is not None and not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, _STOP_PRODUCER)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.client.close(), _STOP_PRODUCER)
