"""The archive sink: the audit topics in sealed daily files, each chained to the one before.

Retention must not rest on Kafka alone. `blauweknop audit archive --dir DIR` reads both audit
topics and writes every record, byte for byte, into one file per UTC day:

    audit-2026-11-29.jsonl.open   the day being written (at most one, always the newest)
    audit-2026-11-29.jsonl        sealed: complete, never written again

A file is JSON Lines. Its first line is a header holding the SHA-256 of the previous sealed file
(as X-Road chains its message-log archives); then one line per Kafka record (topic, partition,
offset, broker timestamp, key and value in base64); the last line is the seal: record counts,
the first and last offset per topic, the SHA-256 of every byte before the seal line, and an
Ed25519 signature by the archiver's own key over the seal. The exact format is in
docs/audit.md.

Resuming: the files are the archiver's only state. On start it reads where each topic's last
archived offset is, drops a torn last line of the open file, and reads on from the next offset;
records it already holds (Kafka delivers at least once) are skipped by offset. So no record is
lost or doubled across restarts.

`verify_archive` checks the chain, every seal and signature, and that the offsets of each topic
run on without a gap or repeat from file to file.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import os
import re
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Literal

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit.stream import StreamRecord, read_topic, topic_offsets
from gateway.canonical import canonicalize
from gateway.config import KafkaConfig
from gateway.errors import BlauweKnopError

FORMAT: Final = "blauweknop-audit-archive/1"
SEAL_LABEL: Final = b"blauweknop-audit-archive/1 seal\n"
TOPICS: Final = (EVENTS_TOPIC, CHECKPOINTS_TOPIC)
# One line holds one Kafka record in base64; Kafka messages are at most a few tens of MB.
MAX_LINE_BYTES: Final = 192 * 1024 * 1024
MAX_VALUE_BYTES: Final = 128 * 1024 * 1024
FSYNC_EVERY: Final = 2000  # records; the open file is also synced whenever the reader idles

_NAME = re.compile(r"audit-(\d{4}-\d{2}-\d{2})\.jsonl(\.open)?")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_DEV_SIGNING_KEY = "archiver-signing-DEVELOPMENT-ONLY.key"

Severity = Literal["error", "info"]


class ArchiveFileError(BlauweKnopError):
    """An archive file cannot be read, resumed or written."""


@dataclass(frozen=True, slots=True)
class ArchiveFinding:
    severity: Severity
    file: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{self.severity}: {where}: {self.message}"


def file_name(day: dt.date, *, open_: bool = False) -> str:
    return f"audit-{day.isoformat()}.jsonl" + (".open" if open_ else "")


def signer_key_id(public_key: ed25519.Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The archiver's own Ed25519 key (PEM PKCS#8): `openssl genpkey -algorithm ED25519`."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ArchiveFileError(f"cannot load the archiver's signing key {path}: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ArchiveFileError(f"{path}: the archiver's signing key must be an Ed25519 key")
    return key


def load_trusted_key(path: Path) -> ed25519.Ed25519PublicKey:
    """The archiver's public key (PEM), pinned by whoever verifies the archive."""
    try:
        data = path.read_bytes()
        key: Any = (
            load_pem_private_key(data, password=None).public_key()
            if b"PRIVATE KEY" in data
            else load_pem_public_key(data)
        )
    except (OSError, ValueError, TypeError) as exc:
        raise ArchiveFileError(f"cannot load the archiver's public key {path}: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ArchiveFileError(f"{path}: the archiver's key must be an Ed25519 key")
    return key


def development_signing_key(state_dir: Path) -> Path:
    """Sandbox only: the archiver's signing key, made on first use (0600)."""
    folder = state_dir / "archiver"
    path = folder / _DEV_SIGNING_KEY
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    return path


# --- Lines ---------------------------------------------------------------------------------


def _header_line(day: dt.date, previous: tuple[str, str] | None) -> bytes:
    header = {
        "type": "header",
        "format": FORMAT,
        "day": day.isoformat(),
        "previous": {"file": previous[0], "sha256": previous[1]} if previous else None,
    }
    return orjson.dumps(header) + b"\n"


def _record_line(record: StreamRecord) -> bytes:
    line = {
        "type": "record",
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": record.timestamp_ms,
        "key": base64.b64encode(record.key).decode("ascii") if record.key is not None else None,
        "value": base64.b64encode(record.value).decode("ascii"),
    }
    return orjson.dumps(line) + b"\n"


def _gap_line(topic: str, partition: int, first: int, last: int) -> bytes:
    """Offsets the broker never delivered (Tansu may skip one after a failed produce)."""
    line = {"type": "gap", "topic": topic, "partition": partition, "first": first, "last": last}
    return orjson.dumps(line) + b"\n"


def _parse_gap(line: dict[str, Any]) -> tuple[str, int, int, int]:
    if set(line) != {"type", "topic", "partition", "first", "last"}:
        raise _LineError("gap line has missing or unknown fields")
    topic, partition, first, last = (line[k] for k in ("topic", "partition", "first", "last"))
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise _LineError("malformed topic")
    for number in (partition, first, last):
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < 2**63:
            raise _LineError("malformed gap")
    if last < first:
        raise _LineError("malformed gap")
    return topic, partition, first, last


@dataclass
class _Range:
    first: int
    last: int
    count: int

    def as_json(self) -> dict[str, int]:
        return {"first": self.first, "last": self.last, "count": self.count}


def _range_key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def _seal_body(day: dt.date, ranges: dict[str, _Range], digest: str) -> dict[str, Any]:
    return {
        "type": "seal",
        "day": day.isoformat(),
        "records": sum(r.count for r in ranges.values()),
        "ranges": {k: ranges[k].as_json() for k in sorted(ranges)},
        "sha256": digest,
    }


def _signed_bytes(body: dict[str, Any]) -> bytes:
    """What the archiver signs: a label, then RFC 8785 canonical JSON of the seal's fields."""
    return SEAL_LABEL + canonicalize({k: v for k, v in body.items() if k != "signature"})


def _seal_line(
    day: dt.date, ranges: dict[str, _Range], digest: str, key: ed25519.Ed25519PrivateKey
) -> bytes:
    public = key.public_key()
    body = _seal_body(day, ranges, digest)
    body["signer"] = {
        "alg": "Ed25519",
        "key_id": signer_key_id(public),
        "public_key": base64.b64encode(
            public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        ).decode(),
    }
    body["signature"] = base64.b64encode(key.sign(_signed_bytes(body))).decode()
    return orjson.dumps(body) + b"\n"


class _LineError(Exception):
    pass


def _parse(line: bytes) -> dict[str, Any]:
    if not line.endswith(b"\n"):
        raise _LineError("line is not terminated (torn write?)")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise _LineError("line is not JSON") from exc
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _LineError("line is not a JSON object with a type")
    return value


def _parse_record(line: dict[str, Any]) -> StreamRecord:
    if set(line) != {"type", "topic", "partition", "offset", "timestamp", "key", "value"}:
        raise _LineError("record line has missing or unknown fields")
    topic, partition, offset, ts = (line[k] for k in ("topic", "partition", "offset", "timestamp"))
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
        raise _LineError("malformed topic")
    # Kafka's timestamp is -1 for a record without one.
    for name, number, low in (
        ("partition", partition, 0),
        ("offset", offset, 0),
        ("timestamp", ts, -1),
    ):
        if not isinstance(number, int) or isinstance(number, bool) or not low <= number < 2**63:
            raise _LineError(f"malformed {name}")
    key = None if line["key"] is None else _b64(line["key"], "key")
    value = _b64(line["value"], "value")
    return StreamRecord(topic, partition, offset, key, value, ts)


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_VALUE_BYTES // 3 * 4 + 4:
        raise _LineError(f"malformed or oversized {name}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _LineError(f"{name} is not base64") from exc


_EPOCH = dt.date(1970, 1, 1)


def record_day(record: StreamRecord) -> dt.date:
    """The UTC day of the broker timestamp (no timestamp: 1970-01-01)."""
    try:
        return max(_EPOCH, dt.datetime.fromtimestamp(record.timestamp_ms / 1000, dt.UTC).date())
    except (OverflowError, ValueError, OSError):
        return dt.date.max if record.timestamp_ms > 0 else _EPOCH


def _lines(f: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    number = 0
    while True:
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_BYTES:
            raise _LineError(f"line {number} is longer than {MAX_LINE_BYTES} bytes")
        yield number, line


def _archive_files(
    directory: Path,
) -> tuple[list[tuple[dt.date, Path]], list[tuple[dt.date, Path]]]:
    """Sealed and open archive files, each in day order; other files are ignored."""
    sealed: list[tuple[dt.date, Path]] = []
    opened: list[tuple[dt.date, Path]] = []
    for path in directory.iterdir():
        match = _NAME.fullmatch(path.name)
        if not match:
            continue
        try:
            day = dt.date.fromisoformat(match.group(1))
        except ValueError:
            continue
        (opened if match.group(2) else sealed).append((day, path))
    return sorted(sealed), sorted(opened)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- Writing -------------------------------------------------------------------------------


@dataclass
class _OpenFile:
    day: dt.date
    path: Path
    handle: IO[bytes]
    digest: Any  # hashlib sha256 over every byte written so far
    ranges: dict[str, _Range] = field(default_factory=dict)
    unsynced: int = 0


class ArchiveWriter:
    """Writes records into daily files; the directory is its whole state (see module doc)."""

    def __init__(self, directory: Path, signing_key: ed25519.Ed25519PrivateKey) -> None:
        self.directory = directory
        self.signing_key = signing_key
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.last_sealed: tuple[dt.date, str, str] | None = None  # day, file name, sha256
        self.current: _OpenFile | None = None
        self.written = 0
        self.skipped = 0
        self.sealed_now: list[str] = []  # files sealed by this writer
        self.current_name: str | None = None  # the open file left behind, after close()

    def resume(self) -> None:
        """Find where every topic stopped; reopen (and repair a torn end of) the open file."""
        self.directory.mkdir(parents=True, exist_ok=True)
        sealed, opened = _archive_files(self.directory)
        if len(opened) > 1:
            raise ArchiveFileError(
                f"{self.directory} holds {len(opened)} open files; only the newest may be open. "
                "Run `blauweknop audit verify --archive` and repair by hand"
            )
        if sealed:
            day, path = sealed[-1]
            self.last_sealed = (day, path.name, _sha256_file(path))
            self.next_offsets = self._ranges_of_sealed(sealed)
        if opened:
            day, path = opened[0]
            if self.last_sealed and day <= self.last_sealed[0]:
                raise ArchiveFileError(
                    f"{path.name} is open but not newer than the last sealed file"
                )
            self._reopen(day, path)

    def _ranges_of_sealed(
        self, sealed: Sequence[tuple[dt.date, Path]]
    ) -> dict[tuple[str, int], int]:
        """Next offset per topic, from the seals (the last one that names each topic)."""
        result: dict[tuple[str, int], int] = {}
        for _, path in sealed:
            seal = _read_seal(path)
            for key, rng in seal["ranges"].items():
                topic, _, partition = key.rpartition("/")
                result[(topic, int(partition))] = int(rng["last"]) + 1
        return result

    def _reopen(self, day: dt.date, path: Path) -> None:
        digest = hashlib.sha256()
        ranges: dict[str, _Range] = {}
        good = 0
        sealed_line: dict[str, Any] | None = None
        with path.open("rb") as f:
            try:
                for number, raw in _lines(f):
                    try:
                        line = _parse(raw)
                    except _LineError:
                        if f.read(1):  # not the last line: real damage, not a torn write
                            raise
                        break
                    if number == 1:
                        if line.get("type") != "header" or line.get("day") != day.isoformat():
                            raise ArchiveFileError(f"{path.name}: the first line is not its header")
                    elif line["type"] == "record":
                        record = _parse_record(line)
                        self._advance(ranges, record)
                    elif line["type"] == "gap":
                        topic, partition, _, last = _parse_gap(line)
                        self.next_offsets[(topic, partition)] = last + 1
                    elif line["type"] == "seal":
                        sealed_line = line
                        good += len(raw)
                        break
                    else:
                        raise ArchiveFileError(f"{path.name}:{number}: unknown line type")
                    digest.update(raw)
                    good += len(raw)
            except _LineError as exc:
                raise ArchiveFileError(f"{path.name}: {exc}; repair by hand") from exc
        if good == 0:  # not even a header survived: start the day again
            path.unlink()
            return
        if sealed_line is not None:  # sealed, but not yet renamed when the archiver stopped
            with path.open("r+b") as f:
                f.truncate(good)
            self._finish_seal(path, day)
            return
        handle = path.open("r+b")
        handle.truncate(good)
        handle.seek(good)
        self.current = _OpenFile(day, path, handle, digest, ranges)

    def _advance(self, ranges: dict[str, _Range], record: StreamRecord) -> None:
        # A gap (retention removed records before they were archived) is kept visible:
        # `verify_archive` reports it; the archiver does not invent what it never saw.
        key = (record.topic, record.partition)
        self.next_offsets[key] = record.offset + 1
        rk = _range_key(*key)
        if rk in ranges:
            ranges[rk].last, ranges[rk].count = record.offset, ranges[rk].count + 1
        else:
            ranges[rk] = _Range(record.offset, record.offset, 1)

    def start_offset(self, topic: str, partition: int = 0) -> int | None:
        return self.next_offsets.get((topic, partition))

    def add(self, record: StreamRecord, today: dt.date | None = None) -> bool:
        """Append one record (False if it is already archived: an at-least-once redelivery).

        With `today`, a timestamp more than a day ahead of it (a producer's clock gone wrong)
        counts as tomorrow, so that one bad record cannot hold a far-future file open.
        """
        key = (record.topic, record.partition)
        expected = self.next_offsets.get(key)
        if expected is not None and record.offset < expected:
            self.skipped += 1
            return False
        day = record_day(record)
        if today is not None:
            day = min(day, today + dt.timedelta(days=1))
        if self.current is not None and day > self.current.day:
            self.seal()
        if self.current is None:
            if self.last_sealed is not None:
                day = max(day, self.last_sealed[0] + dt.timedelta(days=1))
            self._open(day)
        current = self.current
        assert current is not None
        line = _record_line(record)
        if expected is not None and record.offset > expected:
            # Kafka delivered no record at these offsets: say so, inside the sealed digest.
            line = _gap_line(record.topic, record.partition, expected, record.offset - 1) + line
        self._advance(current.ranges, record)
        current.handle.write(line)
        current.digest.update(line)
        current.unsynced += 1
        self.written += 1
        if current.unsynced >= FSYNC_EVERY:
            self.sync()
        return True

    def _open(self, day: dt.date) -> None:
        path = self.directory / file_name(day, open_=True)
        previous = self.last_sealed[1:] if self.last_sealed else None
        header = _header_line(day, previous)
        handle = path.open("xb")
        handle.write(header)
        digest = hashlib.sha256(header)
        self.current = _OpenFile(day, path, handle, digest)

    def write_batch(self, records: Sequence[StreamRecord], today: dt.date | None = None) -> None:
        for record in records:
            self.add(record, today)
        self.sync()

    def idle(self, today: dt.date) -> None:
        self.sync()
        self.seal_due(today)

    def sync(self) -> None:
        if self.current is not None and self.current.unsynced:
            self.current.handle.flush()
            os.fsync(self.current.handle.fileno())
            self.current.unsynced = 0

    def seal_due(self, today: dt.date) -> bool:
        """Seal the open file once its UTC day is over; True if one was sealed."""
        if self.current is not None and self.current.day < today:
            self.seal()
            return True
        return False

    def seal(self) -> None:
        current = self.current
        if current is None:
            return
        line = _seal_line(current.day, current.ranges, current.digest.hexdigest(), self.signing_key)
        current.handle.write(line)
        current.handle.flush()
        os.fsync(current.handle.fileno())
        current.handle.close()
        self.current = None
        self._finish_seal(current.path, current.day)

    def _finish_seal(self, path: Path, day: dt.date) -> None:
        final = self.directory / file_name(day)
        if final.exists():
            raise ArchiveFileError(f"{final.name} exists already; not overwriting a sealed file")
        os.replace(path, final)
        _fsync_dir(self.directory)
        self.last_sealed = (day, final.name, _sha256_file(final))
        self.sealed_now.append(final.name)

    def close(self) -> None:
        """Sync and close the open file, leaving it open for the next run."""
        if self.current is not None:
            self.sync()
            self.current.handle.close()
            self.current_name = self.current.path.name
            self.current = None


def _read_seal(path: Path) -> dict[str, Any]:
    """The seal line of a sealed file (its last line), parsed; no checks beyond the shape."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        back = min(size, 64 * 1024)
        f.seek(size - back)
        tail = f.read(back)
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1] + b"\n"
    try:
        seal = _parse(last)
    except _LineError as exc:
        raise ArchiveFileError(f"{path.name}: no readable seal: {exc}") from exc
    if seal.get("type") != "seal" or not isinstance(seal.get("ranges"), dict):
        raise ArchiveFileError(f"{path.name}: the last line is not a seal")
    return seal


# --- Running against Kafka -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchiveRun:
    written: int
    skipped: int
    sealed: tuple[str, ...]
    open_file: str | None


async def run_archiver(
    config: KafkaConfig,
    directory: Path,
    signing_key: ed25519.Ed25519PrivateKey,
    *,
    follow: bool,
    topics: Sequence[str] = TOPICS,
    stop: asyncio.Event | None = None,
    idle_seconds: float = 1.0,
    batch: int = 1000,
) -> ArchiveRun:
    """Consume `topics` into daily files. Without `follow`, stop at the ends seen at the start.

    The topics are merged by broker timestamp while a reader is catching up, so that a backlog
    lands in the files of its own days. Records are written and synced in batches on a worker
    thread; the event loop only moves them.
    """
    writer = ArchiveWriter(directory, signing_key)
    await asyncio.to_thread(writer.resume)
    stop = stop or asyncio.Event()
    arrived = asyncio.Event()
    queues: dict[str, asyncio.Queue[StreamRecord | None]] = {
        t: asyncio.Queue(maxsize=batch) for t in topics
    }
    caught_up: dict[str, bool] = {}
    ends: dict[str, int] = {}
    for topic in topics:
        offsets = await topic_offsets(config, topic)
        start = writer.start_offset(topic)
        ends[topic] = offsets.end
        caught_up[topic] = (offsets.beginning if start is None else start) >= offsets.end

    async def pump(topic: str, end: int) -> None:
        start = writer.start_offset(topic)
        async with contextlib.aclosing(
            read_topic(config, topic, start="beginning" if start is None else start, follow=follow)
        ) as records:
            async for record in records:
                await queues[topic].put(record)
                caught_up[topic] = caught_up[topic] or record.offset >= end - 1
                arrived.set()
        await queues[topic].put(None)
        arrived.set()

    readers = [asyncio.create_task(pump(t, ends[t])) for t in topics]
    heads: dict[str, StreamRecord] = {}
    done: set[str] = set()
    pending: list[StreamRecord] = []

    def today() -> dt.date:
        return dt.datetime.now(dt.UTC).date()

    try:
        while not stop.is_set():
            for topic in topics:
                queue = queues[topic]
                if topic not in heads and topic not in done and not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        done.add(topic)
                    else:
                        heads[topic] = item
            if len(done) == len(topics):
                break
            # Wait for a topic that may still hold older records, or when there is nothing.
            behind = [t for t in topics if t not in heads and t not in done and not caught_up[t]]
            if behind or not heads:
                if pending:
                    await asyncio.to_thread(writer.write_batch, pending, today())
                    pending = []
                arrived.clear()
                if any(not queues[t].empty() for t in topics if t not in heads and t not in done):
                    continue
                try:
                    await asyncio.wait_for(arrived.wait(), idle_seconds)
                except TimeoutError:
                    # Nothing came for a while: a topic that is still "behind" is at its end
                    # (or stalled); stop waiting for it so the other topic moves on.
                    for topic in behind:
                        caught_up[topic] = True
                    await asyncio.to_thread(writer.idle, today())
                    _raise_failed(readers)
                continue
            first = min(heads, key=lambda t: (heads[t].timestamp_ms, t))
            pending.append(heads.pop(first))
            if len(pending) >= batch:
                await asyncio.to_thread(writer.write_batch, pending, today())
                pending = []
        _raise_failed(readers)
        if pending:
            await asyncio.to_thread(writer.write_batch, pending, today())
        await asyncio.to_thread(writer.idle, today())
    finally:
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await asyncio.to_thread(writer.close)
    return ArchiveRun(
        writer.written,
        writer.skipped,
        tuple(writer.sealed_now),
        writer.current_name,
    )


def _raise_failed(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and (error := task.exception()) is not None:
            raise error


# --- Reading and verifying -----------------------------------------------------------------


def read_archive(directory: Path, topic: str = EVENTS_TOPIC) -> Iterator[StreamRecord]:
    """Every archived record of `topic`, in file and offset order (verify the archive first)."""
    if not directory.is_dir():
        raise ArchiveFileError(f"{directory} is not an archive directory")
    sealed, opened = _archive_files(directory)
    for _, path in (*sealed, *opened):
        with path.open("rb") as f:
            try:
                for _, raw in _lines(f):
                    line = _parse(raw)
                    if line["type"] == "record" and line.get("topic") == topic:
                        yield _parse_record(line)
            except _LineError as exc:
                if opened and path == opened[0][1]:
                    return  # a torn last line of the day being written
                raise ArchiveFileError(f"{path.name}: {exc}") from exc


def verify_archive(
    directory: Path, trusted_keys: Collection[ed25519.Ed25519PublicKey] | None = None
) -> list[ArchiveFinding]:
    """Check every file: header chain, seal digest and signature, counts, contiguous offsets.

    Returns findings; any with severity "error" means the archive is not intact. With
    `trusted_keys`, each seal must be signed by one of them; without, the key named in the
    seal is used and an "info" finding says the signer was not pinned.
    """
    findings: list[ArchiveFinding] = []
    if not directory.is_dir():
        return [ArchiveFinding("error", str(directory), "no such archive directory")]
    sealed, opened = _archive_files(directory)
    if not sealed and not opened:
        return [ArchiveFinding("error", str(directory), "holds no archive files")]
    trusted = (
        {k.public_bytes(Encoding.Raw, PublicFormat.Raw) for k in trusted_keys}
        if trusted_keys is not None
        else None
    )
    state = _VerifyState(findings, trusted)
    for day, path in sealed:
        state.check_file(day, path, is_open=False)
    for index, (day, path) in enumerate(opened):
        if index < len(opened) - 1 or (sealed and day <= sealed[-1][0]):
            findings.append(
                ArchiveFinding("error", path.name, "an open file that is not the newest file")
            )
        state.check_file(day, path, is_open=True)
    totals = ", ".join(
        f"{topic}/{partition} offsets {first}..{nxt - 1}"
        for (topic, partition), (first, nxt) in sorted(state.offsets.items())
    )
    findings.append(
        ArchiveFinding(
            "info",
            str(directory),
            f"{len(sealed)} sealed file(s), {len(opened)} open, {state.records} record(s)"
            + (f"; {totals}" if totals else ""),
        )
    )
    if trusted is None:
        findings.append(
            ArchiveFinding(
                "info",
                str(directory),
                "seal signatures checked against the key each seal names; pin the archiver's "
                "key (--archive-key) to detect a rewritten archive",
            )
        )
    return findings


class _VerifyState:
    def __init__(self, findings: list[ArchiveFinding], trusted: set[bytes] | None) -> None:
        self.findings = findings
        self.trusted = trusted
        self.previous: tuple[str, str] | None = None  # name, sha256 of the last file seen
        self.offsets: dict[tuple[str, int], tuple[int, int]] = {}  # first, next
        self.records = 0

    def error(self, path: Path, message: str, line: int | None = None) -> None:
        self.findings.append(ArchiveFinding("error", path.name, message, line))

    def check_file(self, day: dt.date, path: Path, *, is_open: bool) -> None:
        digest = hashlib.sha256()
        whole = hashlib.sha256()
        ranges: dict[str, _Range] = {}
        seal: dict[str, Any] | None = None
        seal_digest = ""
        number = 0
        try:
            with path.open("rb") as f:
                for number, raw in _lines(f):
                    whole.update(raw)
                    if seal is not None:
                        self.error(path, "data after the seal", number)
                        break
                    try:
                        line = _parse(raw)
                    except _LineError as exc:
                        if is_open and not f.read(1):
                            self.findings.append(
                                ArchiveFinding("info", path.name, f"torn last line: {exc}", number)
                            )
                            break
                        raise
                    if number == 1:
                        self._check_header(path, day, line)
                    elif line["type"] == "record":
                        self._check_record(path, number, day, _parse_record(line), ranges)
                    elif line["type"] == "gap":
                        self._check_gap(path, number, *_parse_gap(line))
                    elif line["type"] == "seal":
                        seal, seal_digest = line, digest.hexdigest()
                        continue
                    else:
                        self.error(path, f"unknown line type {line['type']!r}", number)
                    digest.update(raw)
        except _LineError as exc:
            self.error(path, str(exc), number)
            self.previous = (path.name, "")
            return
        except OSError as exc:
            self.error(path, f"cannot read: {exc}")
            return
        if number == 0:
            self.error(path, "empty file")
        if is_open:
            if seal is not None:
                self.error(path, "an open file holds a seal (the archiver stopped while sealing)")
            self.findings.append(
                ArchiveFinding(
                    "info",
                    path.name,
                    f"the day being written: {sum(r.count for r in ranges.values())} "
                    "record(s), not sealed yet",
                )
            )
        elif seal is None:
            self.error(path, "no seal: the file is incomplete or its seal was removed")
        else:
            self._check_seal(path, day, seal, seal_digest, ranges)
        self.previous = (path.name, whole.hexdigest())

    def _check_header(self, path: Path, day: dt.date, header: dict[str, Any]) -> None:
        if header.get("type") != "header" or header.get("format") != FORMAT:
            self.error(path, f"the first line is not a {FORMAT} header", 1)
            return
        if header.get("day") != day.isoformat():
            self.error(path, f"header says day {header.get('day')}, the file name {day}", 1)
        previous = header.get("previous")
        if self.previous is None:
            if previous is not None:
                name = previous.get("file") if isinstance(previous, dict) else previous
                self.error(path, f"chained to {name}, which is missing from the archive", 1)
            return
        if (
            not isinstance(previous, dict)
            or previous.get("file") != self.previous[0]
            or not isinstance(previous.get("sha256"), str)
            or not _SHA256.fullmatch(previous["sha256"])
        ):
            self.error(
                path,
                f"chain broken: the header names {previous!r} as previous file, "
                f"but the previous file is {self.previous[0]} (removed, renamed or reordered?)",
                1,
            )
        elif previous["sha256"] != self.previous[1]:
            self.error(
                path,
                f"chain broken: {self.previous[0]} was altered after this file was started "
                "(its SHA-256 differs from the one recorded here)",
                1,
            )

    def _check_gap(
        self, path: Path, number: int, topic: str, partition: int, first: int, last: int
    ) -> None:
        key = (topic, partition)
        if key not in self.offsets or self.offsets[key][1] != first:
            self.error(path, f"{topic}/{partition}: a gap record that does not follow on", number)
            return
        self.offsets[key] = (self.offsets[key][0], last + 1)
        self.findings.append(
            ArchiveFinding(
                "info",
                path.name,
                f"{topic}/{partition}: Kafka delivered no record at offset(s) {first}..{last} "
                "(recorded by the archiver when it read them)",
                number,
            )
        )

    def _check_record(
        self,
        path: Path,
        number: int,
        day: dt.date,
        record: StreamRecord,
        ranges: dict[str, _Range],
    ) -> None:
        self.records += 1
        if record_day(record) > day:
            self.findings.append(
                ArchiveFinding(
                    "info",
                    path.name,
                    f"{record.topic}/{record.partition} offset {record.offset}: broker timestamp "
                    f"of {record_day(record)}, after the file's day (a producer clock ahead?)",
                    number,
                )
            )
        key = (record.topic, record.partition)
        if key not in self.offsets:
            self.offsets[key] = (record.offset, record.offset + 1)
            if record.offset != 0:
                self.findings.append(
                    ArchiveFinding(
                        "info",
                        path.name,
                        f"{record.topic}/{record.partition} starts at offset {record.offset}, "
                        "not 0 (archiving started after Kafka's retention removed older records)",
                        number,
                    )
                )
        else:
            first, expected = self.offsets[key]
            if record.offset != expected:
                what = "missing" if record.offset > expected else "repeated or out of order"
                self.error(
                    path,
                    f"{record.topic}/{record.partition}: offset {record.offset} where {expected} "
                    f"was expected (records {what})",
                    number,
                )
            self.offsets[key] = (first, max(expected, record.offset + 1))
        rk = _range_key(*key)
        if rk in ranges:
            ranges[rk].last, ranges[rk].count = record.offset, ranges[rk].count + 1
        else:
            ranges[rk] = _Range(record.offset, record.offset, 1)

    def _check_seal(
        self,
        path: Path,
        day: dt.date,
        seal: dict[str, Any],
        digest: str,
        ranges: dict[str, _Range],
    ) -> None:
        if seal.get("sha256") != digest:
            self.error(path, "content altered: the SHA-256 of the records differs from the seal")
        expected = _seal_body(day, ranges, digest)
        for name in ("day", "records", "ranges"):
            if seal.get(name) != expected[name]:
                self.error(
                    path,
                    f"seal {name} {seal.get(name)!r} differs from the content ({expected[name]!r})",
                )
        signer = seal.get("signer")
        signature = seal.get("signature")
        try:
            if not isinstance(signer, dict) or signer.get("alg") != "Ed25519":
                raise ValueError("no Ed25519 signer")
            raw = base64.b64decode(str(signer.get("public_key")), validate=True)
            public = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            public.verify(base64.b64decode(str(signature), validate=True), _signed_bytes(seal))
        except (ValueError, binascii.Error, InvalidSignature) as exc:
            self.error(path, f"the seal's signature does not verify ({exc or 'invalid'})")
            return
        if self.trusted is not None and raw not in self.trusted:
            self.error(
                path,
                f"sealed by key {signer.get('key_id')}, which is not the pinned archiver key",
            )
