"""The archive sink: sealed daily files chained by digest, resumable, and verifiable.

The Kafka tests run a real broker and read the topics through the shared stream reader; the
file tests feed the writer records directly and then damage the files the way an attacker or a
crash would.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit.archive_files import (
    ArchiveFileError,
    ArchiveFinding,
    ArchiveWriter,
    file_name,
    read_archive,
    run_archiver,
    verify_archive,
)
from gateway.audit.broker import EmbeddedBroker
from gateway.audit.kafka import client_options
from gateway.audit.stream import StreamRecord, read_topic

DAY = dt.date(2026, 3, 1)


def _ms(day: dt.date, hour: int = 12) -> int:
    return int(dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC).timestamp() * 1000)


def _records(topic: str, start: int, days: list[dt.date]) -> list[StreamRecord]:
    return [
        StreamRecord(topic, 0, start + i, f"tx-{start + i}".encode(), _value(start + i), _ms(d))
        for i, d in enumerate(days)
    ]


def _value(n: int) -> bytes:
    return orjson.dumps({"id": f"event-{n}", "type": "nl.blauweknop.audit.test.v1", "n": n})


def errors(findings: list[ArchiveFinding]) -> list[str]:
    return [str(f) for f in findings if f.severity == "error"]


@pytest.fixture
def key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _write(directory: Path, key: ed25519.Ed25519PrivateKey, records: list[StreamRecord]) -> None:
    writer = ArchiveWriter(directory, key)
    writer.resume()
    writer.write_batch(records)
    writer.close()


@pytest.fixture
def three_days(tmp_path: Path, key: ed25519.Ed25519PrivateKey) -> Path:
    """Three sealed days and an open fourth: events on each day, a checkpoint on two."""
    directory = tmp_path / "archive"
    d = [DAY + dt.timedelta(days=i) for i in range(4)]
    events = _records(EVENTS_TOPIC, 0, [d[0]] * 3 + [d[1]] * 2 + [d[2]] * 4 + [d[3]])
    checkpoints = _records(CHECKPOINTS_TOPIC, 0, [d[0], d[2]])
    ordered = sorted(events + checkpoints, key=lambda r: (r.timestamp_ms, r.topic, r.offset))
    _write(directory, key, ordered)
    return directory


def test_daily_files_chain_and_verify(three_days: Path, key: ed25519.Ed25519PrivateKey) -> None:
    names = sorted(p.name for p in three_days.iterdir())
    assert names == [
        "audit-2026-03-01.jsonl",
        "audit-2026-03-02.jsonl",
        "audit-2026-03-03.jsonl",
        "audit-2026-03-04.jsonl.open",
    ]
    findings = verify_archive(three_days, [key.public_key()])
    assert errors(findings) == []
    assert "3 sealed file(s), 1 open, 12 record(s)" in str(findings)
    lines = (three_days / "audit-2026-03-02.jsonl").read_bytes().splitlines()
    header, seal = orjson.loads(lines[0]), orjson.loads(lines[-1])
    assert header["previous"]["file"] == "audit-2026-03-01.jsonl"
    assert seal["records"] == 2
    assert seal["ranges"] == {f"{EVENTS_TOPIC}/0": {"first": 3, "last": 4, "count": 2}}
    # Every record comes back byte for byte.
    assert [r.value for r in read_archive(three_days)] == [_value(n) for n in range(10)]


def test_a_wrong_pinned_key_is_reported(three_days: Path) -> None:
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    found = errors(verify_archive(three_days, [other]))
    assert len(found) == 3
    assert all("not the pinned archiver key" in e for e in found)


def test_an_altered_record_is_found(three_days: Path) -> None:
    path = three_days / "audit-2026-03-02.jsonl"
    data = path.read_bytes()
    lines = data.split(b"\n")
    record = orjson.loads(lines[1])
    record["timestamp"] += 1
    lines[1] = orjson.dumps(record)
    path.write_bytes(b"\n".join(lines))
    found = errors(verify_archive(three_days))
    assert any("audit-2026-03-02.jsonl: content altered" in e for e in found), found
    assert any("audit-2026-03-03.jsonl:1: chain broken" in e and "altered" in e for e in found)


def test_a_removed_file_is_found(three_days: Path) -> None:
    (three_days / "audit-2026-03-02.jsonl").unlink()
    found = errors(verify_archive(three_days))
    assert any("chain broken" in e and "audit-2026-03-02.jsonl" in e for e in found), found
    assert any("offset 5 where 3 was expected (records missing)" in e for e in found), found


def test_a_removed_first_file_is_found(three_days: Path) -> None:
    (three_days / "audit-2026-03-01.jsonl").unlink()
    found = errors(verify_archive(three_days))
    assert any("chained to audit-2026-03-01.jsonl, which is missing" in e for e in found), found


def test_reordered_records_are_found(three_days: Path) -> None:
    path = three_days / "audit-2026-03-03.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[2], lines[3] = lines[3], lines[2]  # two events (line 1 is a checkpoint)
    path.write_bytes(b"\n".join(lines))
    found = errors(verify_archive(three_days))
    assert any("out of order" in e for e in found), found
    assert any("content altered" in e for e in found), found


def test_swapped_files_are_found(three_days: Path) -> None:
    a, b = three_days / "audit-2026-03-01.jsonl", three_days / "audit-2026-03-02.jsonl"
    tmp = three_days / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    found = errors(verify_archive(three_days))
    assert any("header says day 2026-03-02, the file name 2026-03-01" in e for e in found), found


def test_a_removed_seal_is_found(three_days: Path) -> None:
    path = three_days / "audit-2026-03-03.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    found = errors(verify_archive(three_days))
    assert any("audit-2026-03-03.jsonl: no seal" in e for e in found), found


def test_hostile_lines_are_refused(three_days: Path) -> None:
    path = three_days / "audit-2026-03-03.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    record = orjson.loads(lines[1])
    record["value"] = "%%% not base64"
    lines[1] = orjson.dumps(record) + b"\n"
    path.write_bytes(b"".join(lines))
    found = errors(verify_archive(three_days))
    assert any("value is not base64" in e for e in found), found


def test_resume_after_a_torn_write_loses_and_doubles_nothing(
    three_days: Path, key: ed25519.Ed25519PrivateKey
) -> None:
    open_file = three_days / "audit-2026-03-04.jsonl.open"
    # A crash mid-line: half a record at the end of the open file.
    with open_file.open("ab") as f:
        f.write(b'{"type":"record","topic":"blauweknop.au')
    writer = ArchiveWriter(three_days, key)
    writer.resume()
    assert writer.start_offset(EVENTS_TOPIC) == 10
    assert writer.start_offset(CHECKPOINTS_TOPIC) == 2
    later = DAY + dt.timedelta(days=3)
    # Kafka redelivers from an earlier offset (at least once): those are skipped by offset.
    writer.write_batch(_records(EVENTS_TOPIC, 8, [later] * 5))
    writer.seal()
    writer.close()
    assert writer.skipped == 2
    assert errors(verify_archive(three_days, [key.public_key()])) == []
    assert [orjson.loads(r.value)["n"] for r in read_archive(three_days)] == list(range(13))


def test_a_file_sealed_but_not_renamed_is_finished_on_resume(
    three_days: Path, key: ed25519.Ed25519PrivateKey
) -> None:
    writer = ArchiveWriter(three_days, key)
    writer.resume()
    current = writer.current
    assert current is not None
    writer.seal()
    sealed = three_days / file_name(current.day)
    sealed.rename(three_days / file_name(current.day, open_=True))  # as if the rename was lost
    again = ArchiveWriter(three_days, key)
    again.resume()
    assert again.current is None
    assert sealed.exists()
    assert errors(verify_archive(three_days)) == []


def test_two_open_files_refuse_to_resume(three_days: Path, key: ed25519.Ed25519PrivateKey) -> None:
    shutil.copy(
        three_days / "audit-2026-03-04.jsonl.open", three_days / "audit-2026-03-05.jsonl.open"
    )
    with pytest.raises(ArchiveFileError, match="2 open files"):
        ArchiveWriter(three_days, key).resume()
    assert any("not the newest" in e for e in errors(verify_archive(three_days)))


# --- Against a real broker -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def _producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(**client_options(broker.kafka_config()), acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def _produce(broker: EmbeddedBroker, topic: str, records: list[tuple[int, bytes]]) -> None:
    async with _producer(broker) as producer:
        for timestamp, value in records:
            await producer.send_and_wait(topic, value, key=b"tx", timestamp_ms=timestamp)


async def _topic(broker: EmbeddedBroker, topic: str) -> list[StreamRecord]:
    async with contextlib.aclosing(read_topic(broker.kafka_config(), topic)) as records:
        return [r async for r in records]


async def test_the_archiver_consumes_both_topics_and_resumes(
    broker: EmbeddedBroker, tmp_path: Path, key: ed25519.Ed25519PrivateKey
) -> None:
    directory = tmp_path / "archive"
    today = dt.datetime.now(dt.UTC).date()
    old, older = today - dt.timedelta(days=2), today - dt.timedelta(days=3)
    await _produce(
        broker,
        EVENTS_TOPIC,
        [(_ms(older), _value(0)), (_ms(older), _value(1)), (_ms(old), _value(2))],
    )
    await _produce(broker, CHECKPOINTS_TOPIC, [(_ms(old), b"checkpoint 1\n")])
    first = await run_archiver(broker.kafka_config(), directory, key, follow=False)
    assert first.written == 4
    assert first.sealed == (file_name(older), file_name(old)), "past days are sealed"
    assert first.open_file is None

    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    await _produce(broker, EVENTS_TOPIC, [(now, _value(3)), (now, _value(4))])
    second = await run_archiver(broker.kafka_config(), directory, key, follow=False)
    assert second.written == 2, "resumed after what the files hold"
    assert second.open_file == file_name(today, open_=True), "today is still being written"

    third = await run_archiver(broker.kafka_config(), directory, key, follow=False)
    assert third.written == 0

    assert errors(verify_archive(directory, [key.public_key()])) == []
    on_kafka = await _topic(broker, EVENTS_TOPIC)
    archived = list(read_archive(directory))
    assert [(r.offset, r.key, r.value, r.timestamp_ms) for r in archived] == [
        (r.offset, r.key, r.value, r.timestamp_ms) for r in on_kafka
    ]
    checkpoints = list(read_archive(directory, CHECKPOINTS_TOPIC))
    assert [r.value for r in checkpoints] == [b"checkpoint 1\n"]


async def test_the_archiver_follows_new_records_until_stopped(
    broker: EmbeddedBroker, tmp_path: Path, key: ed25519.Ed25519PrivateKey
) -> None:
    directory = tmp_path / "archive"
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_archiver(
            broker.kafka_config(), directory, key, follow=True, stop=stop, idle_seconds=0.1
        )
    )
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    await _produce(broker, EVENTS_TOPIC, [(now, _value(n)) for n in range(5)])
    deadline = asyncio.get_running_loop().time() + 20
    while asyncio.get_running_loop().time() < deadline:
        if directory.exists() and len(list(read_archive(directory))) == 5:
            break
        await asyncio.sleep(0.05)
    stop.set()
    run = await asyncio.wait_for(task, 10)
    assert run.written == 5
    assert [orjson.loads(r.value)["n"] for r in read_archive(directory)] == list(range(5))


def test_offsets_the_broker_skipped_are_recorded_not_reported(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey
) -> None:
    # Tansu may skip an offset after a failed produce; Kafka with retention starts late.
    directory = tmp_path / "archive"
    records = _records(EVENTS_TOPIC, 0, [DAY] * 3)
    records = [records[0], records[1], *_records(EVENTS_TOPIC, 5, [DAY] * 2)]
    _write(directory, key, records)
    findings = verify_archive(directory)
    assert errors(findings) == []
    assert any("no record at offset(s) 2..4" in str(f) for f in findings), findings
    # A resumed writer continues after the gap, not before it.
    writer = ArchiveWriter(directory, key)
    writer.resume()
    assert writer.start_offset(EVENTS_TOPIC) == 7
    writer.close()
    # Removing the gap line is tampering: the offsets no longer follow on.
    path = directory / file_name(DAY, open_=True)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(line for line in lines if b'"type":"gap"' not in line))
    assert any("offset 5 where 2 was expected" in e for e in errors(verify_archive(directory)))


async def test_a_backlog_is_merged_by_time_into_the_files_of_its_days(
    broker: EmbeddedBroker, tmp_path: Path, key: ed25519.Ed25519PrivateKey
) -> None:
    """Both topics hold days of backlog; small batches make the two readers race."""
    today = dt.datetime.now(dt.UTC).date()
    days = [today - dt.timedelta(days=n) for n in (4, 3, 2)]
    async with _producer(broker) as producer:
        sends = [
            await producer.send(EVENTS_TOPIC, _value(n), key=b"tx", timestamp_ms=_ms(d, n % 24))
            for d in days
            for n in range(60)
        ]
        sends += [
            await producer.send(CHECKPOINTS_TOPIC, b"cp", timestamp_ms=_ms(d, 23)) for d in days
        ]
        await asyncio.gather(*sends)
    directory = tmp_path / "archive"
    run = await asyncio.wait_for(
        run_archiver(broker.kafka_config(), directory, key, follow=False, batch=7), 60
    )
    assert run.written == 183
    assert run.sealed == tuple(file_name(d) for d in days)
    assert errors(verify_archive(directory, [key.public_key()])) == []
    for day in days:
        lines = (directory / file_name(day)).read_bytes().splitlines()[1:-1]
        kinds = [orjson.loads(line)["topic"] for line in lines]
        assert kinds.count(EVENTS_TOPIC) == 60, day
        assert kinds.count(CHECKPOINTS_TOPIC) == 1, day


async def test_audit_verify_checks_the_archive_too(
    broker: EmbeddedBroker,
    three_days: Path,
    key: ed25519.Ed25519PrivateKey,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from gateway.cli import main

    pinned = tmp_path / "archiver.pub"
    pinned.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    monkeypatch.setenv("BLAUWEKNOP_STATE_DIR", str(tmp_path / "state"))

    def verify() -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            code = main(
                [
                    "audit",
                    "--bootstrap-server",
                    broker.bootstrap,
                    "verify",
                    "--archive",
                    str(three_days),
                    "--archive-key",
                    str(pinned),
                ]
            )
        return code, out.getvalue()

    code, out = await asyncio.to_thread(verify)
    assert code == 0, out
    assert "archive info" in out
    assert "3 sealed file(s), 1 open" in out
    (three_days / "audit-2026-03-02.jsonl").unlink()
    code, out = await asyncio.to_thread(verify)
    assert code == 1
    assert "archive error: audit-2026-03-03.jsonl:1: chain broken" in out, out


def test_a_producer_clock_far_ahead_does_not_hold_a_future_file_open(
    tmp_path: Path, key: ed25519.Ed25519PrivateKey
) -> None:
    directory = tmp_path / "archive"
    writer = ArchiveWriter(directory, key)
    writer.resume()
    future = _records(EVENTS_TOPIC, 0, [dt.date(2099, 1, 1)])
    writer.write_batch(future, today=DAY)
    later = DAY + dt.timedelta(days=2)
    writer.write_batch(_records(EVENTS_TOPIC, 1, [later]), today=later)
    writer.close()
    assert sorted(p.name for p in directory.iterdir()) == [
        "audit-2026-03-02.jsonl",
        "audit-2026-03-03.jsonl.open",
    ], "the 2099 record went into tomorrow's file"
    findings = verify_archive(directory)
    assert errors(findings) == []
    assert any("broker timestamp of 2099-01-01, after the file's day" in str(f) for f in findings)
