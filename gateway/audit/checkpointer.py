"""The checkpointer: builds the Merkle tree of the events topic and publishes signed checkpoints.

Leaf i is the value of the i-th record of the one-partition events topic, byte for byte (with
Apache Kafka that is the record at offset i; the embedded Tansu broker may skip an offset after
a failed produce, so the order, not the offset number, defines the leaf).
After `every_events` new events or `every_seconds` since the first unpublished one, whichever
comes first, it signs a checkpoint (C2SP signed note), has an RFC 3161 time-stamp put on its
text, and publishes both with the leaf hashes of the range it adds to the checkpoints topic
(acks=all). It never publishes a checkpoint for an unchanged tree.

One active at a time: every checkpointer joins the Kafka consumer group `[audit]
checkpointer_group` on the events topic. The topic has one partition, so the group gives it
to exactly one member; the others wait as hot standbys and take over within the session
timeout when the active one stops or dies. Before each publication the active one checks it
still holds the partition. Whoever gets the partition rebuilds the tree from offset 0 (the
tree is a pure function of the topic), checks that it reproduces the root of the last
published checkpoint, and continues after it. A topic that no longer matches its own last
checkpoint is a tampered topic: it stops with an error rather than sign a rewritten history.

Metrics (`CheckpointerMetrics`): `blauweknop audit checkpointer` serves them at /metrics on
`[audit] checkpointer_metrics_port`, with /healthz for a liveness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors._sandbox.runner import serve_app
from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit._internal.merkle import CompactRange, leaf_hash
from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointRecord,
    NoteSigner,
    checkpoint_signer,
    log_origin,
    tsa_trust,
    tsa_url,
    verify_checkpoint_note,
)
from gateway.audit.kafka import client_options, producer_options
from gateway.audit.stream import read_topic, topic_offsets
from gateway.config import KafkaConfig, Settings
from gateway.errors import AuditStreamError, BlauweKnopError, ConfigError
from gateway.metrics import CheckpointerMetrics
from gateway.tsa import Timestamp, TimestampError, TsaTrust, TsaUnavailable, request_timestamp
from gateway.tsa.client import verify_timestamp

log = logging.getLogger(__name__)


class CheckpointerError(BlauweKnopError):
    """The checkpointer cannot continue without signing something untrue."""


@dataclass(frozen=True, slots=True)
class CheckpointerSettings:
    kafka: KafkaConfig
    origin: str
    signer: NoteSigner
    tsa_url: str
    tsa_trust: TsaTrust
    every_events: int = 1000
    every_seconds: float = 10.0
    group_id: str = "blauweknop-checkpointer"
    events_topic: str = EVENTS_TOPIC
    checkpoints_topic: str = CHECKPOINTS_TOPIC
    session_timeout_seconds: float = 10.0
    tsa_timeout_seconds: float = 10.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None  # None: no /metrics listener (tests, the demo stack)

    @classmethod
    def from_settings(cls, settings: Settings) -> CheckpointerSettings:
        if settings.kafka is None:
            raise ConfigError("the checkpointer needs [kafka] bootstrap_servers")
        c = settings.checkpoints
        return cls(
            kafka=settings.kafka,
            origin=log_origin(settings),
            signer=checkpoint_signer(settings),
            tsa_url=tsa_url(settings),
            tsa_trust=tsa_trust(settings),
            every_events=c.every_events,
            every_seconds=c.every_seconds,
            group_id=c.group_id,
            metrics_host=settings.host,
            metrics_port=c.metrics_port,
        )


class _Assignments(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.changed = False

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.changed = True

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.changed = True


@dataclass
class _Log:
    """The tree as rebuilt from the topic, and what has been published of it."""

    tree: CompactRange
    published_size: int
    published_root: bytes | None
    pending: bytearray  # leaf hashes of [published_size, tree.size)
    pending_since: float | None = None
    last_offset: int = -1


class Checkpointer:
    def __init__(
        self, settings: CheckpointerSettings, metrics: CheckpointerMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or CheckpointerMetrics()
        self.published: list[Checkpoint] = []
        self._log: _Log | None = None

    @property
    def active(self) -> bool:
        """Whether this instance holds the events partition (is the one that publishes)."""
        return self._log is not None

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; raises CheckpointerError / AuditStreamError on failure."""
        s = self.settings
        tp = TopicPartition(s.events_topic, 0)
        listener = _Assignments()
        async with (
            self._producer() as producer,
            self._consumer() as consumer,
            aiohttp.ClientSession() as session,
        ):
            consumer.subscribe([s.events_topic], listener=listener)
            log.info("checkpointer for %s started; verifier key %s", s.origin, s.signer.verifier)
            while not stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=self._wait_ms(), max_records=5000)
                except KafkaError as exc:
                    self.metrics.failures.labels("read").inc()
                    raise AuditStreamError(f"reading {s.events_topic} failed: {exc}") from exc
                if listener.changed:
                    listener.changed = False
                    if tp in consumer.assignment():
                        await self._resync(consumer, tp)
                    else:
                        self._set_inactive()
                    continue  # the batch may predate the seek: read again from the new position
                state = self._log
                if state is None:
                    continue
                for message in batch.get(tp, ()):
                    # Leaf i is the i-th record; offsets only increase (Tansu may skip some).
                    if message.offset <= state.last_offset:
                        continue
                    state.last_offset = message.offset
                    self._append(state, message.value or b"")
                    if len(state.pending) // 32 >= s.every_events:
                        await self._publish(state, consumer, tp, producer, session, stop)
                self.metrics.pending.set(len(state.pending) // 32)
                if state.pending_since is not None and (
                    time.monotonic() - state.pending_since >= s.every_seconds
                ):
                    await self._publish(state, consumer, tp, producer, session, stop)

    def _set_inactive(self) -> None:
        self._log = None
        self.metrics.active.set(0)
        self.metrics.pending.set(0)

    def _observe(self, checkpoint: Checkpoint, stamp: Timestamp) -> None:
        """The newest signed checkpoint, for the age and size metrics."""
        self.metrics.last_timestamp.set(stamp.time.timestamp())
        self.metrics.tree_size.set(checkpoint.size)
        if stamp.tsa_not_after is not None:
            self.metrics.tsa_not_after.set(stamp.tsa_not_after.timestamp())

    def _wait_ms(self) -> int:
        state = self._log
        if state is None or state.pending_since is None:
            return 500
        left = self.settings.every_seconds - (time.monotonic() - state.pending_since)
        return max(0, min(500, int(left * 1000)))

    def _append(self, state: _Log, value: bytes) -> None:
        hashed = leaf_hash(value)
        state.tree.append_hash(hashed)
        if state.tree.size > state.published_size:
            state.pending += hashed
            if state.pending_since is None:
                state.pending_since = time.monotonic()
        elif (
            state.tree.size == state.published_size
            and state.published_root is not None
            and state.tree.root() != state.published_root
        ):
            raise CheckpointerError(
                f"{self.settings.events_topic} no longer matches the last published "
                f"checkpoint (tree size {state.published_size}): its events were altered, "
                "removed or reordered. Refusing to sign a rewritten history; run "
                "`blauweknop audit verify` to find which"
            )

    async def _resync(self, consumer: Any, tp: TopicPartition) -> None:
        """Find the last published checkpoint and rebuild the tree from offset 0."""
        s = self.settings
        last: Checkpoint | None = None
        last_stamp = b""
        verifier = s.signer.verifier
        async with contextlib.aclosing(read_topic(s.kafka, s.checkpoints_topic)) as records:
            async for record in records:
                try:
                    parsed = CheckpointRecord.parse(record.value)
                    checkpoint = verify_checkpoint_note(parsed.note, verifier, s.origin)
                except CheckpointError as exc:
                    log.warning("checkpoint record at offset %d ignored: %s", record.offset, exc)
                    continue
                if last is None or checkpoint.size >= last.size:
                    last, last_stamp = checkpoint, parsed.timestamp
        # The partition's offsets from a plain (group-less) reader: Tansu answers a group
        # member's ListOffsets with stale values right after a rebalance.
        beginning = (await topic_offsets(s.kafka, s.events_topic)).beginning
        if beginning != 0:
            raise CheckpointerError(
                f"{s.events_topic} starts at offset {beginning}, not 0: retention removed "
                "events, so the tree cannot be rebuilt. The topic's retention must cover the "
                "whole log (deploy/kafka/)"
            )
        size = last.size if last else 0
        self._log = _Log(CompactRange(), size, last.root if last else None, bytearray())
        self.metrics.active.set(1)
        if last is not None:
            # The age metric counts from the newest checkpoint on the topic, not from our start:
            # a checkpointer restarting in a loop must not look fresh.
            try:
                self._observe(last, verify_timestamp(last_stamp, last.text().encode(), s.tsa_trust))
            except TimestampError as exc:
                log.warning("the newest checkpoint's time-stamp does not verify: %s", exc)
        consumer.seek(tp, 0)
        log.info("checkpointer active: rebuilding from offset 0, last checkpoint size %d", size)

    async def _publish(
        self,
        state: _Log,
        consumer: Any,
        tp: TopicPartition,
        producer: Any,
        session: aiohttp.ClientSession,
        stop: asyncio.Event,
    ) -> None:
        s = self.settings
        checkpoint = Checkpoint(s.origin, state.tree.size, state.tree.root())
        text = checkpoint.text()
        note = s.signer.sign(text)
        delay = 0.2
        while True:
            try:
                stamp = await request_timestamp(
                    session,
                    s.tsa_url,
                    text.encode(),
                    s.tsa_trust,
                    timeout_seconds=s.tsa_timeout_seconds,
                )
                break
            except (TsaUnavailable, TimestampError) as exc:
                # No checkpoint without a time-stamp; the events wait (bounded ranges).
                self.metrics.failures.labels("timestamp").inc()
                log.error("checkpoint %d not time-stamped, retrying: %s", checkpoint.size, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
                delay = min(delay * 2, 10.0)
        if tp not in consumer.assignment():
            self._set_inactive()
            return  # another checkpointer took over meanwhile; it publishes from now on
        record = CheckpointRecord(note, stamp.response, state.published_size, bytes(state.pending))
        try:
            await producer.send_and_wait(
                s.checkpoints_topic, record.to_json(), key=str(checkpoint.size).encode()
            )
        except KafkaError as exc:
            self.metrics.failures.labels("publish").inc()
            raise AuditStreamError(
                f"checkpoint {checkpoint.size} could not be published to "
                f"{s.checkpoints_topic}: {exc}"
            ) from exc
        state.published_size = checkpoint.size
        state.published_root = checkpoint.root
        state.pending = bytearray()
        state.pending_since = None
        self.published.append(checkpoint)
        self.metrics.published.inc()
        self.metrics.pending.set(0)
        self._observe(checkpoint, stamp)
        log.info(
            "checkpoint published: size %d, time-stamped %s",
            checkpoint.size,
            stamp.time.isoformat(),
        )

    @contextlib.asynccontextmanager
    async def _producer(self) -> AsyncIterator[Any]:
        k = self.settings.kafka
        producer = AIOKafkaProducer(**producer_options(k))
        try:
            await asyncio.wait_for(producer.start(), k.request_timeout_seconds * 2)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise AuditStreamError(f"Kafka at {k.bootstrap} could not be reached: {exc!r}") from exc
        try:
            yield producer
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 5)

    @contextlib.asynccontextmanager
    async def _consumer(self) -> AsyncIterator[Any]:
        s = self.settings
        fetch = s.kafka.max_message_bytes + 64 * 1024
        session_ms = int(s.session_timeout_seconds * 1000)
        options = client_options(s.kafka)
        # A broker may hold JoinGroup up to the session timeout (Tansu does): wait longer.
        options["request_timeout_ms"] = max(options["request_timeout_ms"], session_ms + 5000)
        consumer = AIOKafkaConsumer(
            **options,
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
            # Waiting for a slow TSA must not count as a dead member.
            max_poll_interval_ms=max(300_000, int(s.tsa_timeout_seconds * 60_000)),
            max_partition_fetch_bytes=fetch,
            fetch_max_bytes=max(fetch, 16 * 1024 * 1024),
        )
        try:
            await asyncio.wait_for(consumer.start(), s.kafka.request_timeout_seconds * 2)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise AuditStreamError(
                f"Kafka at {s.kafka.bootstrap} could not be reached: {exc!r}"
            ) from exc
        try:
            yield consumer
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)


@contextlib.asynccontextmanager
async def serve_metrics(metrics: CheckpointerMetrics, host: str, port: int) -> AsyncIterator[str]:
    """The checkpointer's /metrics (Prometheus) and /healthz (liveness); yields the base URL."""

    async def scrape(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    app.router.add_get("/healthz", healthz)
    runner, bound = await serve_app(app, host=host, port=port)
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def demo_checkpointing(settings: Settings, kafka: KafkaConfig) -> AsyncIterator[str]:
    """For the sandbox demo stack: the development TSA on its port and a checkpointer task.

    Yields the TSA's URL. A checkpointer that fails is logged; the demo keeps serving.
    """
    from gateway.tsa.server import start_dev_tsa

    if settings.mode != "sandbox":
        raise ConfigError("the development TSA and checkpointer run in sandbox mode only")
    try:
        runner, url = await start_dev_tsa(
            settings.dev_pki, host=settings.sandbox_host, port=settings.dev_tsa_port
        )
    except OSError as exc:  # the port is taken: any free one will do for the demo's own use
        log.warning("development TSA port %d unavailable (%s)", settings.dev_tsa_port, exc)
        runner, url = await start_dev_tsa(settings.dev_pki, host=settings.sandbox_host)
    config = CheckpointerSettings.from_settings(replace(settings, kafka=kafka))
    # A demo user runs `audit verify` right after a download: checkpoint within seconds.
    config = replace(config, every_seconds=min(config.every_seconds, 2.0))
    if settings.checkpoints.tsa_url is None:
        config = replace(config, tsa_url=url)
    stop = asyncio.Event()

    async def run() -> None:
        try:
            await Checkpointer(config).run(stop)
        except BlauweKnopError as exc:
            log.error("the demo checkpointer stopped: %s", exc)

    task = asyncio.create_task(run())
    try:
        yield url
    finally:
        stop.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(task, 10)
        await runner.cleanup()
