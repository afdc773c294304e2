"""The audit writer process (`[audit] writer = "process"`): the same evidence, out of process.

Real parts throughout: the gateway on a real socket with the four sandboxes, the writer as the
separate process the gateway starts, a real Kafka-protocol broker, and the real command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import struct
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.app import AUDIT_WRITER
from gateway.audit import EVENTS_TOPIC, writer
from gateway.audit.archive import ArchivistPrivateKey, SealedDocument, open_document
from gateway.audit.broker import EmbeddedBroker
from gateway.audit.stream import read_topic
from gateway.audit.writer import WriterProtocolError, _bundel, _read_frame
from gateway.config import _audit_writer, settings_from_mapping
from gateway.errors import ConfigError
from gateway.pki import DevPki
from tests.conftest import Stack, fresh_state, start_stack
from tests.test_demo import BLAUWEKNOP, free_ports

CITIZEN = "999990020"  # data at all four organisations


@pytest.fixture
async def writer_stack(broker: EmbeddedBroker, tmp_path: Path, pki: DevPki) -> AsyncIterator[Stack]:
    stack, runners = await start_stack(
        fresh_state(tmp_path, pki),
        pki,
        kafka={"bootstrap_servers": broker.bootstrap, "idempotence": False},
        audit={"writer": "process"},
    )
    try:
        yield stack
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()


async def _bundle(stack: Stack, accept: str = "application/json") -> tuple[int, str, bytes]:
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel", json={"bsn": CITIZEN}, headers={"Accept": accept}
    ) as response:
        return response.status, response.headers["X-Transactie-Id"], await response.read()


async def _events(broker: EmbeddedBroker, transactions: set[str]) -> list[dict[str, Any]]:
    """The events of these transactions once all of them are on the topic (within 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        async with contextlib.aclosing(read_topic(broker.kafka_config(), EVENTS_TOPIC)) as records:
            events = [orjson.loads(r.value) async for r in records]
        mine = [e for e in events if e["transactieid"] in transactions]
        done = {e["transactieid"] for e in mine if e["type"].endswith("bundel.uitgegeven.v1")}
        if done == transactions or time.monotonic() > deadline:
            assert done == transactions, f"not published: {transactions - done}"
            return mine
        await asyncio.sleep(0.2)


async def test_bundles_are_recorded_by_the_writer_process_and_published(
    writer_stack: Stack, broker: EmbeddedBroker
) -> None:
    writer_pid = writer_stack.app[AUDIT_WRITER].pid
    assert writer_pid is not None
    assert writer_pid != os.getpid()
    issued = {}
    for accept in ("application/json", "application/jose", "application/json"):
        status, tx, body = await _bundle(writer_stack, accept)
        assert status == 200
        issued[tx] = body
    events = await _events(broker, set(issued))
    assert len(events) == 6 * len(issued), "four calls, the archived document, the bundle"
    assert len({e["id"] for e in events}) == len(events)
    key = ArchivistPrivateKey.from_file(
        writer_stack.settings.state_dir / "archivist" / "archivist-DEVELOPMENT-ONLY.key"
    )
    for event in events:
        assert CITIZEN not in orjson.dumps(event).decode()
        if event["type"].endswith("document.gearchiveerd.v1"):
            sealed = SealedDocument.from_event_data(event["data"])
            tx = event["transactieid"]
            assert open_document(sealed, tx, key) == issued[tx], "the exact bytes handed out"

    # The relay runs in the writer; the gateway's /metrics carries its metrics, once each.
    async with writer_stack.session.get(f"{writer_stack.url}/metrics") as response:
        text = await response.text()
    published = [
        line for line in text.splitlines() if line.startswith("blauweknop_audit_events_published")
    ]
    assert len([line for line in published if line.split()[0].endswith("_total")]) == 1
    assert any(float(line.split()[1]) >= len(events) for line in published)
    assert text.count("# TYPE blauweknop_audit_outbox_backlog gauge") == 1
    async with writer_stack.session.get(f"{writer_stack.url}/readyz") as response:
        assert response.status == 200, await response.text()


async def test_no_data_while_the_writer_is_down_and_service_when_it_is_back(
    writer_stack: Stack, broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "_FIRST_BACKOFF", 3.0)  # a window in which it is surely down
    audit_writer = writer_stack.app[AUDIT_WRITER]
    first = audit_writer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    while True:  # the gateway notices at once: the socket closes
        async with writer_stack.session.get(f"{writer_stack.url}/readyz") as response:
            if response.status == 503:
                assert "audit writer" in await response.text()
                break
        await asyncio.sleep(0.02)
    status, _, body = await _bundle(writer_stack)
    assert status == 503
    assert b"financiele_zaken" not in body
    assert CITIZEN.encode() not in body

    deadline = time.monotonic() + 30
    while audit_writer.pid in (None, first) or (await _bundle(writer_stack))[0] != 200:
        assert time.monotonic() < deadline, "the writer was not restarted"
        await asyncio.sleep(0.2)
    assert audit_writer.pid != first
    status, tx, _ = await _bundle(writer_stack)
    assert status == 200
    assert len(await _events(broker, {tx})) == 6


async def test_a_sigterm_to_the_writer_waits_for_its_gateway(
    writer_stack: Stack, broker: EmbeddedBroker
) -> None:
    """A signal for the whole process group (Ctrl-C, an init) must not cut the gateway short."""
    pid = writer_stack.app[AUDIT_WRITER].pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    await asyncio.sleep(1.5)  # three times the writer's own check
    status, tx, _ = await _bundle(writer_stack)
    assert status == 200
    assert writer_stack.app[AUDIT_WRITER].pid == pid, "the same writer still serves"
    assert len(await _events(broker, {tx})) == 6


def test_the_writer_exits_with_a_killed_gateway(tmp_path: Path, pki: DevPki) -> None:
    port = free_ports(1)
    env = {
        **os.environ,
        "BLAUWEKNOP_STATE_DIR": str(fresh_state(tmp_path, pki)),
        "BLAUWEKNOP_PORT": str(port),
        "BLAUWEKNOP_AUDIT__WRITER": "process",
        "BLAUWEKNOP_LOG_LEVEL": "WARNING",
    }
    gateway = subprocess.Popen(
        [BLAUWEKNOP, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        children: list[int] = []
        while not children:
            assert time.monotonic() < deadline, "no audit writer started"
            assert gateway.poll() is None, "the gateway did not start"
            children = _children(gateway.pid)
            time.sleep(0.1)
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in children):
            assert time.monotonic() < deadline, "the audit writer outlived its gateway"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            gateway.kill()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_malformed_frames_are_refused() -> None:
    async def frame(data: bytes) -> tuple[dict[str, Any], bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await _read_frame(reader, 1024)

    with pytest.raises(WriterProtocolError, match="too large"):
        await frame(struct.pack("!II", 10, 4096))
    with pytest.raises(WriterProtocolError, match="not JSON"):
        await frame(struct.pack("!II", 3, 0) + b"{x}")
    with pytest.raises(WriterProtocolError, match="not a JSON object"):
        await frame(struct.pack("!II", 2, 0) + b"[]")
    with pytest.raises(asyncio.IncompleteReadError):
        await frame(struct.pack("!II", 2, 5) + b"{}ab")

    good = {
        "transactie_id": "tx-1",
        "burger": "ab" * 32,
        "bundel_id": "b-1",
        "canonical_sha256": "0" * 64,
        "documenten": [{"formaat": "json", "mediatype": "application/json", "grootte": 2}],
        "bevragingen": [["00000001234567890000", "duo", "ok", 12, None]],
    }
    assert _bundel(good, b"{}")["documents"][0].content == b"{}"
    for change, body in (
        (
            {"documenten": [{"formaat": "json", "mediatype": "application/json", "grootte": 3}]},
            b"{}",
        ),
        ({}, b"{}extra"),
        ({"burger": 7}, b"{}"),
        ({"bevragingen": [["oin", "duo", "ok", "12 ms", None]]}, b"{}"),
        ({"bevragingen": [{"oin": "x"}]}, b"{}"),
    ):
        with pytest.raises(WriterProtocolError):
            _bundel({**good, **change}, body)


def test_the_writer_setting() -> None:
    assert settings_from_mapping({}).audit_writer == "inline"
    assert settings_from_mapping({"audit": {"writer": "process"}}).audit_writer == "process"
    assert _audit_writer({}, "production") == "process"
    with pytest.raises(ConfigError, match='"inline" or "process"'):
        settings_from_mapping({"audit": {"writer": "thread"}})
