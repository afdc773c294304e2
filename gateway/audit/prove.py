"""`blauweknop audit prove TXID` and `audit verify-proof FILE`: inclusion proofs an auditor can
check offline, with nothing but the log's public key and the TSA's CA certificate.

A proof document (JSON, `nl.blauweknop.audit.proof.v1`) holds the newest checkpoint (signed
note and RFC 3161 time-stamp), and for every event of the transaction that the checkpoint
covers: its leaf index and offset (equal on Apache Kafka), its exact bytes (base64) and its
RFC 9162 inclusion proof. With `--checkpoint OLD` it also holds an RFC 9162 consistency proof
from the auditor's old checkpoint to this one. No personal data is in it: events carry
pseudonyms only.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit._internal.merkle import (
    HASH_SIZE,
    MAX_PROOF_HASHES,
    MerkleTree,
    ProofError,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from gateway.audit.checkpoint import (
    CheckpointError,
    NoteVerifier,
    split_note,
    verify_checkpoint_note,
)
from gateway.audit.stream import read_topic
from gateway.audit.verify import LogVerifier
from gateway.config import KafkaConfig
from gateway.errors import VerificationError
from gateway.tsa import TimestampError, TsaTrust, verify_timestamp

PROOF_FORMAT = "nl.blauweknop.audit.proof.v1"
MAX_PROOF_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_EVENTS_IN_PROOF = 10_000


class ProveError(VerificationError):
    """No proof can be given: no valid checkpoint, no such transaction, or a tampered topic."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def prove_transaction(
    kafka: KafkaConfig,
    transactie_id: str,
    *,
    origin: str,
    verifier: NoteVerifier,
    trust: TsaTrust,
    old_note: str | None = None,
    events_topic: str = EVENTS_TOPIC,
    checkpoints_topic: str = CHECKPOINTS_TOPIC,
) -> dict[str, Any]:
    """The proof document for every event of one transaction against the newest checkpoint."""
    checker = LogVerifier(origin, verifier, trust, events_topic, checkpoints_topic)
    async with contextlib.aclosing(read_topic(kafka, checkpoints_topic)) as records:
        async for record in records:
            checker.add_checkpoint(record.offset, record.value)
    if not checker.checkpoints:
        raise ProveError(
            f"{checkpoints_topic} has no valid checkpoint yet; is the checkpointer running?"
        )
    newest = checker.checkpoints[-1]
    size = newest.checkpoint.size
    tree = MerkleTree()
    mine: list[tuple[int, int, bytes]] = []  # (leaf index, offset, value)
    key = transactie_id.encode()
    async with contextlib.aclosing(read_topic(kafka, events_topic, max_records=10_000)) as events:
        async for record in events:
            index = tree.append(record.value)
            if record.key == key or _transaction_of(record.value) == transactie_id:
                if len(mine) >= MAX_EVENTS_IN_PROOF:
                    raise ProveError(f"more than {MAX_EVENTS_IN_PROOF} events for one transaction")
                mine.append((index, record.offset, record.value))
    if not mine:
        raise ProveError(f"no event of transaction {transactie_id} on {events_topic}")
    if tree.size < size or tree.root(size) != newest.checkpoint.root:
        raise ProveError(
            f"{events_topic} does not reproduce the newest checkpoint (tree size {size}): the "
            "topic was tampered with; run `blauweknop audit verify` to see which events"
        )
    document: dict[str, Any] = {
        "format": PROOF_FORMAT,
        "transactieid": transactie_id,
        "log": {"origin": origin, "verifier_key": str(verifier)},
        "checkpoint": newest.note,
        "timestamp": _b64(newest.timestamp),
        "events": [
            {
                "leaf_index": index,
                "offset": offset,
                "event": _b64(value),
                "inclusion_proof": [_b64(h) for h in tree.inclusion_proof(index, size)],
            }
            for index, offset, value in mine
            if index < size
        ],
        "not_yet_checkpointed": [offset for index, offset, _ in mine if index >= size],
    }
    if old_note is not None:
        try:
            old = verify_checkpoint_note(old_note, verifier, origin)
        except CheckpointError as exc:
            raise ProveError(f"your old checkpoint: {exc}") from exc
        if old.size > size:
            raise ProveError(
                f"your checkpoint has tree size {old.size}, larger than the newest ({size})"
            )
        document["consistency"] = {
            "old_checkpoint": old_note,
            "proof": [_b64(h) for h in tree.consistency_proof(old.size, size)],
        }
    return document


def _transaction_of(value: bytes) -> str | None:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    tx = event.get("transactieid") if isinstance(event, dict) else None
    return tx if isinstance(tx, str) else None


@dataclass(frozen=True, slots=True)
class ProofCheck:
    """The result of checking a proof document offline."""

    lines: tuple[str, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_proof_document(
    raw: bytes, verifier: NoteVerifier, trust: TsaTrust, origin: str | None = None
) -> ProofCheck:
    """Check a proof document against the log's key and the TSA's CA, without the log."""
    lines: list[str] = []
    problems: list[str] = []
    if len(raw) > MAX_PROOF_DOCUMENT_BYTES:
        return ProofCheck(
            (), (f"the proof document is larger than {MAX_PROOF_DOCUMENT_BYTES} bytes",)
        )
    try:
        doc = orjson.loads(raw)
        if not isinstance(doc, Mapping) or doc.get("format") != PROOF_FORMAT:
            raise ProofError(f"not a {PROOF_FORMAT} document")
        origin = origin or verifier.name
        note = _text(doc, "checkpoint")
        checkpoint = verify_checkpoint_note(note, verifier, origin)
        lines.append(
            f"checkpoint of {origin}: tree size {checkpoint.size}, signed by {verifier.name}"
        )
        stamp = verify_timestamp(
            _b64decode(_text(doc, "timestamp")), split_note(note)[0].encode(), trust
        )
        lines.append(f"time-stamped {stamp.time.isoformat()} by {stamp.tsa_subject}")
        events = doc.get("events")
        if not isinstance(events, list) or len(events) > MAX_EVENTS_IN_PROOF:
            raise ProofError("'events' must be a list of at most 10000 entries")
        tx = doc.get("transactieid")
        for entry in events:
            if not isinstance(entry, Mapping):
                raise ProofError("every entry of 'events' is an object")
            index = entry.get("leaf_index")
            offset = entry.get("offset")
            if not all(isinstance(n, int) and not isinstance(n, bool) for n in (index, offset)):
                raise ProofError("an event's leaf_index and offset must be whole numbers")
            assert isinstance(index, int)
            value = _b64decode(_text(entry, "event"))
            proof = _hashes(entry.get("inclusion_proof"))
            try:
                verify_inclusion(leaf_hash(value), index, checkpoint.size, proof, checkpoint.root)
            except ProofError as exc:
                problems.append(f"event at offset {offset}: {exc}")
                continue
            if tx is not None and _transaction_of(value) != tx:
                problems.append(f"event at offset {offset} is not of transaction {tx}")
                continue
            lines.append(f"event at offset {offset} (leaf {index}): included ({len(proof)} hashes)")
        consistency = doc.get("consistency")
        if consistency is not None:
            if not isinstance(consistency, Mapping):
                raise ProofError("'consistency' must be an object")
            old = verify_checkpoint_note(_text(consistency, "old_checkpoint"), verifier, origin)
            path = _hashes(consistency.get("proof"))
            try:
                verify_consistency(old.size, checkpoint.size, old.root, checkpoint.root, path)
                lines.append(
                    f"consistent with the old checkpoint of tree size {old.size} "
                    f"({len(path)} hashes)"
                )
            except ProofError as exc:
                problems.append(f"consistency with the old checkpoint: {exc}")
    except orjson.JSONDecodeError as exc:
        problems.append(f"the proof document is not JSON: {exc}")
    except (CheckpointError, TimestampError, ProofError) as exc:
        problems.append(str(exc))
    return ProofCheck(tuple(lines), tuple(problems))


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        raise ProofError(f"'{name}' must be a string")
    return value


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProofError(f"not valid base64: {exc}") from exc


def _hashes(value: Any) -> Sequence[bytes]:
    if not isinstance(value, list) or len(value) > MAX_PROOF_HASHES:
        raise ProofError("a proof is a list of at most 64 base64 hashes")
    hashes = [_b64decode(v) if isinstance(v, str) else b"" for v in value]
    if any(len(h) != HASH_SIZE for h in hashes):
        raise ProofError("every proof hash is 32 bytes in base64")
    return hashes
