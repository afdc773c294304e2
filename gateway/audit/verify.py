"""`blauweknop audit verify`: recompute the Merkle log from the topics and check every checkpoint.

1. Every record on the checkpoints topic must be a well-formed `CheckpointRecord` whose note is
   signed by the configured checkpoint key for the configured origin, whose RFC 3161
   time-stamp over the note text verifies against the configured TSA, and whose leaf hashes,
   appended to those of the checkpoints before it, reproduce its signed root. Only such
   checkpoints count; their leaf hashes are then authenticated (a root commits to every leaf).
2. Every record on the events topic is leaf `offset`. Its hash is compared with the
   authenticated leaf hashes; where they differ, a sequence alignment names each event that
   was altered, removed, inserted/duplicated or reordered, by its offset.
3. Event ids: the same id twice with identical bytes is an at-least-once redelivery
   (information); the same id with different bytes is a problem.
4. With `--since`, the auditor's own old checkpoint must be consistent with the newest
   (RFC 9162 consistency proof), so history before it cannot have been rewritten; events are
   then read from the old checkpoint's size on.

`LogVerifier` is the synchronous core (fed record by record, no I/O); `verify_log` reads the
topics with the shared reader (`gateway.audit.stream`) and feeds it.
"""

from __future__ import annotations

import array
import asyncio
import bisect
import contextlib
import datetime as dt
import difflib
import time
from dataclasses import dataclass, field
from typing import Literal

import orjson

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit._internal.merkle import (
    HASH_SIZE,
    MerkleTree,
    ProofError,
    leaf_hash,
    verify_consistency,
)
from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointRecord,
    NoteVerifier,
    split_note,
    verify_checkpoint_note,
)
from gateway.audit.stream import read_topic
from gateway.config import KafkaConfig
from gateway.tsa import TimestampError, TsaTrust, verify_timestamp

Severity = Literal["problem", "info"]
MAX_EVENT_BYTES = 16 * 1024 * 1024
# A damaged stretch longer than this is reported as a whole, not aligned event by event.
MAX_ALIGN = 50_000
MAX_NAMED = 1000
# Time-stamps carry an accuracy (the development TSA: 1 s); allow for it when ordering them.
TIME_TOLERANCE = dt.timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    topic: str
    offset: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"{self.topic}@{self.offset}" if self.offset is not None else self.topic
        return f"{self.severity.upper():7} {self.kind:12} {where}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    offset: int
    checkpoint: Checkpoint
    note: str
    timestamp: bytes
    time: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    findings: tuple[Finding, ...]
    events: int
    checkpoints: tuple[VerifiedCheckpoint, ...]
    covered: int
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(f.severity == "problem" for f in self.findings)

    @property
    def newest(self) -> VerifiedCheckpoint | None:
        """The valid checkpoint of the largest tree: the one to keep for `--since`."""
        return max(self.checkpoints, key=lambda c: c.checkpoint.size, default=None)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "problem"]

    def summary(self) -> str:
        rate = f" in {self.seconds:.2f} s" if self.seconds else ""
        if self.seconds and self.events >= 10_000:
            rate += f" ({self.events / self.seconds:,.0f} events/s)"
        newest = self.newest
        head = (
            f"newest checkpoint: tree size {newest.checkpoint.size}, time-stamped {newest.time}"
            if newest
            else "no valid checkpoint"
        )
        verdict = "OK" if self.ok else f"FAILED: {len(self.problems)} problem(s)"
        return (
            f"{verdict} — {self.events} events read{rate}, {len(self.checkpoints)} valid "
            f"checkpoints, {head}, {self.covered} events covered"
        )


@dataclass
class LogVerifier:
    origin: str
    verifier: NoteVerifier
    trust: TsaTrust
    events_topic: str = EVENTS_TOPIC
    checkpoints_topic: str = CHECKPOINTS_TOPIC
    findings: list[Finding] = field(default_factory=list)
    # Authenticated leaf hashes (from valid checkpoints) and the tree of the topic as read.
    published: MerkleTree = field(default_factory=MerkleTree)
    observed: MerkleTree = field(default_factory=MerkleTree)
    checkpoints: list[VerifiedCheckpoint] = field(default_factory=list)
    # Checkpoints that verify but whose leaf hashes cannot be placed (a gap before them).
    unanchored: list[Checkpoint] = field(default_factory=list)
    _ids: dict[str, int] = field(default_factory=dict)
    _stamp_sizes: list[int] = field(default_factory=list)
    _stamp_times: list[dt.datetime] = field(default_factory=list)
    _offsets: array.array[int] = field(default_factory=lambda: array.array("q"))
    _events_read: int = 0
    _first_event_offset: int = 0

    def _find(
        self, severity: Severity, topic: str, offset: int | None, kind: str, message: str
    ) -> None:
        self.findings.append(Finding(severity, topic, offset, kind, message))

    # --- checkpoints -------------------------------------------------------------------------

    def add_checkpoint(self, offset: int, value: bytes) -> None:
        topic = self.checkpoints_topic
        try:
            record = CheckpointRecord.parse(value)
            checkpoint = verify_checkpoint_note(record.note, self.verifier, self.origin)
        except CheckpointError as exc:
            self._find("problem", topic, offset, "signature", f"checkpoint rejected: {exc}")
            return
        try:
            stamp = verify_timestamp(record.timestamp, record.text.encode(), self.trust)
        except TimestampError as exc:
            self._find(
                "problem",
                topic,
                offset,
                "timestamp",
                f"checkpoint of tree size {checkpoint.size}: its RFC 3161 time-stamp is not "
                f"valid: {exc}",
            )
            return
        known = self.published.size
        hashes = record.leaf_hashes
        if record.first_leaf > known:
            self._find(
                "problem",
                topic,
                offset,
                "gap",
                f"checkpoint of tree size {checkpoint.size} starts at leaf {record.first_leaf}, "
                f"but the checkpoints before it end at {known}: checkpoint records are missing",
            )
            self.unanchored.append(checkpoint)
            return
        overlap_end = min(known, checkpoint.size)
        if overlap_end > record.first_leaf:
            mine = hashes[: (overlap_end - record.first_leaf) * HASH_SIZE]
            if mine != self.published.leaf_hashes(record.first_leaf, overlap_end):
                self._find(
                    "problem",
                    topic,
                    offset,
                    "fork",
                    f"checkpoint of tree size {checkpoint.size} disagrees with earlier "
                    f"checkpoints about leaves [{record.first_leaf}, {overlap_end})",
                )
                return
        if checkpoint.size <= known:
            if self.published.root(checkpoint.size) != checkpoint.root:
                self._find(
                    "problem",
                    topic,
                    offset,
                    "fork",
                    f"checkpoint of tree size {checkpoint.size} has a root that differs from "
                    "the tree of the earlier checkpoints: two histories were signed",
                )
                return
        else:
            start = (known - record.first_leaf) * HASH_SIZE
            for i in range(start, len(hashes), HASH_SIZE):
                self.published.append_hash(hashes[i : i + HASH_SIZE])
            if self.published.root() != checkpoint.root:
                self.published.truncate(known)
                self._find(
                    "problem",
                    topic,
                    offset,
                    "leaf-hashes",
                    f"the leaf hashes published with checkpoint {checkpoint.size} do not "
                    "reproduce its signed root",
                )
                return
        self._check_time_order(offset, checkpoint.size, stamp.time)
        self.checkpoints.append(
            VerifiedCheckpoint(
                offset, checkpoint, record.note, record.timestamp, stamp.time.isoformat()
            )
        )

    def _check_time_order(self, offset: int, size: int, when: dt.datetime) -> None:
        """A larger tree cannot have been time-stamped before a smaller one (beyond accuracy)."""
        sizes, times = self._stamp_sizes, self._stamp_times
        before = bisect.bisect_left(sizes, size) - 1
        after = bisect.bisect_right(sizes, size)
        if before >= 0 and times[before] > when + TIME_TOLERANCE:
            other = (sizes[before], times[before])
        elif after < len(sizes) and times[after] < when - TIME_TOLERANCE:
            other = (sizes[after], times[after])
        else:
            other = None
        if other is not None:
            self._find(
                "problem",
                self.checkpoints_topic,
                offset,
                "time-order",
                f"checkpoint of tree size {size} is time-stamped {when.isoformat()}, but the "
                f"one of tree size {other[0]} {other[1].isoformat()}: a checkpoint was "
                "back-dated or made later than it claims",
            )
        sizes.insert(after, size)
        times.insert(after, when)

    # --- --since -----------------------------------------------------------------------------

    def check_since(self, note: str) -> Checkpoint | None:
        """Check the auditor's old checkpoint against the newest; None if it cannot be used."""
        try:
            old = verify_checkpoint_note(note, self.verifier, self.origin)
        except CheckpointError as exc:
            self._find("problem", "--since", None, "signature", f"your checkpoint: {exc}")
            return None
        newest = self.published.size
        if old.size > newest:
            self._find(
                "problem",
                "--since",
                None,
                "rollback",
                f"your checkpoint has tree size {old.size}, but the log's newest valid "
                f"checkpoint has only {newest}: checkpoints or events were removed",
            )
            return None
        proof = self.published.consistency_proof(old.size, newest)
        try:
            verify_consistency(old.size, newest, old.root, self.published.root(), proof)
        except ProofError as exc:
            self._find(
                "problem",
                "--since",
                None,
                "consistency",
                f"the log is NOT consistent with your checkpoint of tree size {old.size}: "
                f"history before it was rewritten ({exc})",
            )
            return None
        self._find(
            "info",
            "--since",
            None,
            "consistency",
            f"consistency proof from your checkpoint (tree size {old.size}) to the newest "
            f"({newest}) verifies ({len(proof)} hashes)",
        )
        return old

    def start_events_at(self, size: int) -> None:
        """Take leaves [0, size) from the authenticated hashes (after a verified --since)."""
        self.observed = MerkleTree()
        hashes = self.published.leaf_hashes(0, size)
        for i in range(0, len(hashes), HASH_SIZE):
            self.observed.append_hash(hashes[i : i + HASH_SIZE])
        self._first_event_offset = size

    # --- events ------------------------------------------------------------------------------

    def add_event(self, offset: int, value: bytes) -> None:
        """Leaf i is the i-th record: offsets must increase (Tansu may skip one, Kafka not)."""
        topic = self.events_topic
        index = self.observed.size
        if self._offsets and offset <= self._offsets[-1]:
            self._find(
                "problem",
                topic,
                offset,
                "offsets",
                f"offset {offset} arrived after offset {self._offsets[-1]}",
            )
        self._offsets.append(offset)
        self._events_read += 1
        hashed = leaf_hash(value)
        self.observed.append_hash(hashed)
        event_id = _event_id(value)
        if event_id is None:
            self._find(
                "problem", topic, offset, "malformed", "not a CloudEvents JSON object with an id"
            )
            return
        first = self._ids.get(event_id)
        if first is None:
            self._ids[event_id] = index
        elif self.observed.leaf_hash(first) == hashed:
            self._find(
                "info",
                topic,
                offset,
                "redelivery",
                f"event {event_id} again, identical to offset {self._offset(first)} "
                "(at-least-once delivery)",
            )
        else:
            self._find(
                "problem",
                topic,
                offset,
                "conflict",
                f"event id {event_id} was first seen at offset {self._offset(first)} with "
                "different bytes",
            )

    def _offset(self, leaf: int) -> int:
        """The topic offset of observed leaf `leaf` (equal to it, unless --since skipped some)."""
        position = leaf - self._first_event_offset
        return self._offsets[position] if 0 <= position < len(self._offsets) else leaf

    # --- the verdict -------------------------------------------------------------------------

    def finish(self, seconds: float = 0.0) -> VerifyReport:
        covered = self.published.size
        observed = self.observed.size
        if covered == 0 and observed > 0 and not self.unanchored:
            self._find(
                "problem",
                self.checkpoints_topic,
                None,
                "uncovered",
                f"no valid checkpoint covers any of the {observed} events (a running "
                "checkpointer publishes one within [audit] checkpoint_every_seconds)",
            )
        elif covered:
            self._compare(covered)
        for cp in self.unanchored:
            if cp.size <= observed and self.observed.root(cp.size) != cp.root:
                self._find(
                    "problem",
                    self.events_topic,
                    None,
                    "root",
                    f"the events do not reproduce the root of checkpoint {cp.size} (its leaf "
                    "hashes are missing, so the changed events cannot be named)",
                )
        return VerifyReport(
            tuple(self.findings), self._events_read, tuple(self.checkpoints), covered, seconds
        )

    def _compare(self, covered: int) -> None:
        observed = self.observed.size
        expected_bytes = self.published.leaf_hashes()
        observed_bytes = self.observed.leaf_hashes(0, min(observed, covered))
        if observed >= covered and expected_bytes == observed_bytes:
            if observed > covered:
                self._find(
                    "info",
                    self.events_topic,
                    self._offset(covered),
                    "uncovered",
                    f"{observed - covered} newer events are not yet covered by a checkpoint",
                )
            return
        first = _first_difference(expected_bytes, observed_bytes)
        everything = self.observed.leaf_hashes()
        # Anchor the end of the checkpointed log on the topic (its last few leaves, searched
        # from the end), so that the window to align is only the damaged stretch.
        anchor = min(8, covered - first)
        last = _rfind_block(everything, expected_bytes[-anchor * HASH_SIZE :], first)
        if last is None:
            exp_end, obs_end, open_end = covered, observed, True
        else:
            same = _common_suffix(
                expected_bytes[first * HASH_SIZE :],
                everything[first * HASH_SIZE : last * HASH_SIZE],
            )
            exp_end, obs_end, open_end = covered - same, last - same, False
            if last < observed:
                self._find(
                    "info",
                    self.events_topic,
                    self._offset(last),
                    "uncovered",
                    f"{observed - last} newer events are not yet covered by a checkpoint",
                )
        expected = _split(expected_bytes[first * HASH_SIZE : exp_end * HASH_SIZE])
        actual = _split(everything[first * HASH_SIZE : obs_end * HASH_SIZE])
        if len(expected) > MAX_ALIGN or len(actual) > MAX_ALIGN:
            self._find(
                "problem",
                self.events_topic,
                self._offset(first) if first < observed else None,
                "rewritten",
                f"from leaf {first} on, {len(expected)} checkpointed events and {len(actual)} "
                "events on the topic differ: too many to name one by one",
            )
            return
        before = len(self.findings)
        self._name_differences(first, expected, actual, open_end)
        named = self.findings[before:]
        if len(named) > MAX_NAMED:
            del self.findings[before + MAX_NAMED :]
            self._find(
                "problem",
                self.events_topic,
                None,
                "more",
                f"{len(named) - MAX_NAMED} more differences are not listed",
            )

    def _name_differences(
        self, first: int, expected: list[bytes], actual: list[bytes], open_end: bool
    ) -> None:
        topic = self.events_topic
        matcher = difflib.SequenceMatcher(None, expected, actual, autojunk=False)
        opcodes = matcher.get_opcodes()
        # Trailing observed events after the last checkpointed one are merely not covered yet.
        trailing_from: int | None = None
        if (
            open_end
            and opcodes
            and opcodes[-1][0] == "insert"
            and opcodes[-1][1] == len(expected)
            and set(actual[opcodes[-1][3] :]).isdisjoint(expected)
        ):
            trailing_from = opcodes[-1][3]
            opcodes = opcodes[:-1]
        # expected leaf hash -> (its leaf index, the observed position where it is missing)
        missing: dict[bytes, tuple[int, int]] = {}
        extra: dict[bytes, int] = {}  # observed leaf hash -> observed leaf index
        altered: list[tuple[int, int]] = []
        for tag, a1, a2, b1, b2 in opcodes:
            if tag == "equal":
                continue
            pairs = min(a2 - a1, b2 - b1) if tag == "replace" else 0
            for k in range(pairs):
                altered.append((first + a1 + k, first + b1 + k))
            for a in range(a1 + pairs, a2):
                missing.setdefault(expected[a], (first + a, first + b1 + pairs))
            for b in range(b1 + pairs, b2):
                extra.setdefault(actual[b], first + b)
        # A leaf hash that the checkpoints expect elsewhere: the event was moved (reordered).
        replaced_expected = {expected[e - first]: e for e, _ in altered}
        for exp_leaf, obs_leaf in altered:
            h_exp, h_obs = expected[exp_leaf - first], actual[obs_leaf - first]
            moved = missing.pop(h_obs, None)
            origin = moved[0] if moved else replaced_expected.get(h_obs)
            if origin is not None:
                self._find(
                    "problem",
                    topic,
                    self._offset(obs_leaf),
                    "reordered",
                    f"holds the event the checkpoints record as leaf {origin}",
                )
            else:
                self._find(
                    "problem",
                    topic,
                    self._offset(obs_leaf),
                    "altered",
                    self._altered_message(exp_leaf, h_exp, h_obs),
                )
        for h_obs, obs_leaf in sorted(extra.items(), key=lambda item: item[1]):
            moved = missing.pop(h_obs, None)
            origin = moved[0] if moved else replaced_expected.get(h_obs)
            if origin is not None:
                self._find(
                    "problem",
                    topic,
                    self._offset(obs_leaf),
                    "reordered",
                    f"holds the event the checkpoints record as leaf {origin}",
                )
                continue
            copy_of = self._copy_of(h_obs, obs_leaf)
            if copy_of is not None:
                self._find(
                    "problem",
                    topic,
                    self._offset(obs_leaf),
                    "duplicated",
                    f"a copy of the event at offset {self._offset(copy_of)}, which the "
                    "checkpoints do not contain here",
                )
            else:
                self._find(
                    "problem",
                    topic,
                    self._offset(obs_leaf),
                    "inserted",
                    "an event that no checkpoint contains",
                )
        observed_size = self.observed.size
        for h_exp, (exp_leaf, obs_leaf) in sorted(missing.items(), key=lambda item: item[1]):
            where = (
                f"before offset {self._offset(obs_leaf)}"
                if obs_leaf < observed_size
                else "at the end of the topic"
            )
            self._find(
                "problem",
                topic,
                self._offset(obs_leaf) if obs_leaf < observed_size else None,
                "removed",
                f"the event the checkpoints record as leaf {exp_leaf} (leaf hash "
                f"{h_exp.hex()[:16]}…) is missing, {where}",
            )
        if trailing_from is not None:
            start = first + trailing_from
            self._find(
                "info",
                topic,
                self._offset(start),
                "uncovered",
                f"{observed_size - start} newer events are not yet covered by a checkpoint",
            )

    @staticmethod
    def _altered_message(leaf: int, expected: bytes, actual: bytes) -> str:
        return (
            f"differs from the checkpointed event (leaf {leaf}: leaf hash {actual.hex()[:16]}…, "
            f"the checkpoints say {expected.hex()[:16]}…)"
        )

    def _copy_of(self, hashed: bytes, leaf: int) -> int | None:
        """Another observed leaf with the same hash (the same bytes), if any."""
        hashes = self.observed.leaf_hashes()
        position = hashes.find(hashed)
        while position >= 0:
            if position % HASH_SIZE == 0 and position // HASH_SIZE != leaf:
                return position // HASH_SIZE
            position = hashes.find(hashed, position + 1)
        return None


def _rfind_block(hashes: bytes, block: bytes, first: int) -> int | None:
    """The leaf index just after the last leaf-aligned occurrence of `block`, at or after leaf
    `first`; None if it is not there."""
    end = len(hashes)
    while True:
        position = hashes.rfind(block, first * HASH_SIZE, end)
        if position < 0:
            return None
        if position % HASH_SIZE == 0:
            return (position + len(block)) // HASH_SIZE
        end = position + len(block) - 1


def _common_suffix(a: bytes, b: bytes) -> int:
    """How many trailing leaf hashes two concatenations share."""
    lo, hi = 0, min(len(a), len(b)) // HASH_SIZE
    while lo < hi:  # invariant: the last lo leaves agree; more than hi do not
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid * HASH_SIZE :] == b[len(b) - mid * HASH_SIZE :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _split(hashes: bytes) -> list[bytes]:
    return [hashes[i : i + HASH_SIZE] for i in range(0, len(hashes), HASH_SIZE)]


def _first_difference(a: bytes, b: bytes) -> int:
    """The first leaf index where two concatenations of leaf hashes differ."""
    lo, hi = 0, min(len(a), len(b)) // HASH_SIZE
    if a[: hi * HASH_SIZE] == b[: hi * HASH_SIZE]:
        return hi
    while hi - lo > 1:  # invariant: prefix [0, lo) equal, prefix [0, hi) not
        mid = (lo + hi) // 2
        if a[: mid * HASH_SIZE] == b[: mid * HASH_SIZE]:
            lo = mid
        else:
            hi = mid
    return lo


def _event_id(value: bytes) -> str | None:
    if len(value) > MAX_EVENT_BYTES:
        return None
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    event_id = event.get("id")
    return event_id if isinstance(event_id, str) and 0 < len(event_id) <= 200 else None


async def verify_log(
    kafka: KafkaConfig,
    *,
    origin: str,
    verifier: NoteVerifier,
    trust: TsaTrust,
    since_note: str | None = None,
    events_topic: str = EVENTS_TOPIC,
    checkpoints_topic: str = CHECKPOINTS_TOPIC,
) -> VerifyReport:
    """Read both topics (checkpoints first, so every checkpoint's events exist) and verify."""
    started = time.perf_counter()
    core = LogVerifier(origin, verifier, trust, events_topic, checkpoints_topic)
    async with contextlib.aclosing(read_topic(kafka, checkpoints_topic)) as records:
        async for record in records:
            core.add_checkpoint(record.offset, record.value)
    old = core.check_since(since_note) if since_note is not None else None
    if old is not None and old.size > 0 and await _resume_after(kafka, core, old.size):
        start = old.size
    else:
        start = 0
    async with contextlib.aclosing(
        read_topic(kafka, events_topic, start=start, max_records=10_000)
    ) as events:
        async for record in events:
            core.add_event(record.offset, record.value)
    # The alignment can be heavy for a badly damaged log: keep the loop free.
    return await asyncio.to_thread(core.finish, time.perf_counter() - started)


async def _resume_after(kafka: KafkaConfig, core: LogVerifier, size: int) -> bool:
    """Take leaves [0, size) from the authenticated hashes if the topic's record at offset
    size - 1 is leaf size - 1 (true on Kafka, where offsets have no gaps); else read all."""
    async with contextlib.aclosing(
        read_topic(kafka, core.events_topic, start=size - 1, stop=size)
    ) as records:
        boundary = [r async for r in records]
    if (
        len(boundary) == 1
        and boundary[0].offset == size - 1
        and leaf_hash(boundary[0].value) == core.published.leaf_hash(size - 1)
    ):
        core.start_events_at(size)
        return True
    core._find(
        "info",
        core.events_topic,
        size - 1,
        "since",
        "the record at the kept checkpoint's last offset is not its last leaf; reading the "
        "topic from the beginning",
    )
    return False


def read_since_file(text: str) -> str:
    """The auditor's kept checkpoint: a signed note, or a checkpoint record / proof JSON."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"the checkpoint file is not valid JSON: {exc}") from exc
        note = None
        if isinstance(data, dict):  # a checkpoint record, a proof, or a `verify --json` report
            note = data.get("checkpoint") or data.get("newest_checkpoint")
        if not isinstance(note, str):
            raise CheckpointError("the checkpoint file's JSON has no 'checkpoint' note")
        text = note
    split_note(text)
    return text
