"""CloudEvents written to the durable outbox before the response they record goes out.

No event carries the BSN: the citizen appears as a keyed pseudonym (HMAC-SHA256 with a
deployment secret), and every event names the key id so the key can rotate.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import os
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.archive import (
    EVENT_ARCHIVED,
    ArchiveError,
    ArchivistPublicKey,
    IssuedDocument,
    seal_documents,
)
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.models import Bron, Organisatie
from gateway.store import OutboxRecord, Store, open_store

EVENT_TYPE_PREFIX = "nl.blauweknop.audit."
SPEC_VERSION = "1.0"


@dataclass(frozen=True, slots=True)
class PseudonymKey:
    key_id: str
    secret: bytes

    def pseudonym(self, bsn: str) -> str:
        return hmac.new(self.secret, bsn.encode("ascii"), hashlib.sha256).hexdigest()

    @classmethod
    def from_file(cls, path: Path) -> PseudonymKey:
        secret = path.read_bytes().strip()
        if len(secret) < 32:
            raise ValueError(f"{path}: a pseudonym key needs at least 32 bytes")
        return cls(hashlib.sha256(secret).hexdigest()[:16], secret)

    @classmethod
    def development(cls, state_dir: Path) -> PseudonymKey:
        """Made on first use in sandbox mode; production configures a file."""
        path = state_dir / "audit-pseudonym.key"
        if not path.exists():
            # Replicas may start together on one state_dir: write aside, then link into place
            # atomically; whoever links first wins, and nobody reads a half-written key.
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            aside = state_dir / f".audit-pseudonym.key.{secrets.token_hex(8)}"
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_hex(32).encode())
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
            aside.unlink()
        return cls.from_file(path)


@dataclass(frozen=True, slots=True)
class OrganisatieBevraagd:
    """What one organisation call contributes to the audit: who, the outcome, how long, hash."""

    oin: str
    code: str
    status: str
    duur_ms: int | None
    antwoord_sha256: str | None

    @classmethod
    def of(cls, bron: Bron) -> OrganisatieBevraagd:
        return cls(
            bron.organisatie.oin,
            bron.organisatie.code,
            bron.status,
            bron.duur_ms,
            bron.herkomst.sha256 if bron.herkomst else None,
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class AuditTrail:
    def __init__(
        self,
        store: Store,
        key: PseudonymKey,
        uitgever: Organisatie,
        archive_key: ArchivistPublicKey | None = None,
        max_event_bytes: int | None = None,
    ) -> None:
        self.store = store
        self.key = key
        self.source = f"urn:oin:{uitgever.oin}:blauweknop-gateway"
        # The archivist's public key: every issued document is archived encrypted to it.
        self.archive_key = archive_key
        # The largest event Kafka takes ([kafka] max_message_bytes), when there is a relay.
        self.max_event_bytes = max_event_bytes

    @classmethod
    async def open(cls, settings: Settings) -> AuditTrail:
        """The configured trail: its keys, and the store it appends to (opened here)."""
        key = (
            PseudonymKey.from_file(settings.pseudonym_key_file)
            if settings.pseudonym_key_file
            else PseudonymKey.development(settings.state_dir)
        )
        # Only the archivist's public key: the gateway archives documents but never reads them.
        if settings.archive_public_key_file:
            archive_key = ArchivistPublicKey.from_file(settings.archive_public_key_file)
        elif settings.mode == "sandbox":
            archive_key = ArchivistPublicKey.development(settings.state_dir)
        else:
            raise ConfigError("production mode needs [audit] archive_public_key_file")
        store = await open_store(settings)
        max_event_bytes = settings.kafka.max_message_bytes if settings.kafka else None
        return cls(store, key, settings.uitgever, archive_key, max_event_bytes)

    def event(
        self, name: str, transactie_id: str, data: dict[str, Any], *, time: str | None = None
    ) -> OutboxRecord:
        """One CloudEvents 1.0 event in structured JSON, keyed by transaction id."""
        event_id = str(uuid.uuid4())
        envelope = {
            "specversion": SPEC_VERSION,
            "id": event_id,
            "source": self.source,
            "type": f"{EVENT_TYPE_PREFIX}{name}.v1",
            "time": time or _now(),
            "datacontenttype": "application/json",
            "transactieid": transactie_id,
            "pseudonymkeyid": self.key.key_id,
            "data": data,
        }
        return OutboxRecord(event_id, transactie_id, orjson.dumps(envelope))

    async def record(self, name: str, transactie_id: str, data: dict[str, Any]) -> None:
        """Append one event; durable when this returns, or StoreUnavailable."""
        await self.store.append([self.event(name, transactie_id, data)])

    async def bundle_issued(
        self,
        *,
        transactie_id: str,
        burger: str,
        bundel_id: str,
        canonical_sha256: str,
        documents: Sequence[IssuedDocument],
        bevragingen: Sequence[OrganisatieBevraagd],
    ) -> None:
        """Record every organisation call, the archived documents and the issued bundle.

        `burger` is the citizen's pseudonym (`key.pseudonym(bsn)`). One durable append: the
        documents' encrypted bytes (`document.gearchiveerd`, one per format) are stored together
        with `bundel.uitgegeven`, or nothing is.
        """
        if self.archive_key is None:
            raise ArchiveError("no archivist key configured; documents cannot be archived")
        if not documents:
            raise ArchiveError("a bundle is issued in at least one format")
        sealed = await seal_documents(documents, transactie_id, self.archive_key)
        now = _now()  # the events of one append record one moment
        records = [
            self.event(
                "organisatie.bevraagd",
                transactie_id,
                {
                    "burger": burger,
                    "organisatie": {"oin": b.oin, "code": b.code},
                    "status": b.status,
                    "duur_ms": b.duur_ms,
                    "antwoord_sha256": b.antwoord_sha256,
                },
                time=now,
            )
            for b in bevragingen
        ]
        archived = [
            self.event(
                EVENT_ARCHIVED,
                transactie_id,
                {"burger": burger, "bundel_id": bundel_id, **s.event_data()},
                time=now,
            )
            for s in sealed
        ]
        limit = self.max_event_bytes
        for record, s in zip(archived, sealed, strict=True):
            # An event Kafka refuses would stop the relay; refuse the document instead.
            if limit is not None and len(record.payload) + len(record.key) + 1024 > limit:
                raise ArchiveError(
                    f"the archived {s.formaat} document ({s.grootte} bytes) makes an audit event "
                    f"of {len(record.payload)} bytes, more than Kafka takes ([kafka] "
                    f"max_message_bytes = {limit}); raise it and the topic's max.message.bytes"
                )
        records.extend(archived)
        records.append(
            self.event(
                "bundel.uitgegeven",
                transactie_id,
                {
                    "burger": burger,
                    "bundel_id": bundel_id,
                    "bundel_sha256": canonical_sha256,
                    "formaten": {s.formaat: s.sha256 for s in sealed},
                    "organisaties": {b.code: b.status for b in bevragingen},
                },
                time=now,
            )
        )
        await self.store.append(records)
