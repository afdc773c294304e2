"""One small interface for every piece of shared state: the audit outbox and expiring keys.

The outbox holds audit events until the relay has published them; expiring keys hold sessions,
authorization codes and replay caches; versioned documents hold the federation's organisation
registry (every version kept); counters hold rate limits shared by all replicas. SQLite
(`gateway.store.sqlite`) is the embedded default; PostgreSQL (`gateway.store.postgres`,
`[store] url = "postgresql://…"`) serves several replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gateway.errors import BlauweKnopError

if TYPE_CHECKING:
    from gateway.config import Settings


class StoreUnavailable(BlauweKnopError):
    """The store could not durably write; the caller must not release what it records."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One audit event waiting for the relay. `seq` is assigned by the store."""

    event_id: str
    key: str
    payload: bytes
    seq: int = 0


class VersionConflict(BlauweKnopError):
    """A versioned document changed since the caller read it; read again and retry."""


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """One version of a document. `version` counts per key from 1; `seq` orders all writes."""

    kind: str
    key: str
    version: int
    body: bytes
    seq: int
    created: float


class Leadership(Protocol):
    """A role that at most one process holds at a time, across every replica on one store."""

    @property
    def held(self) -> bool:
        """Whether this process held the role at the last check (every `retry_seconds`)."""
        ...

    async def wait(self, seconds: float) -> bool:
        """Wait at most `seconds` for the role; whether it is held."""
        ...

    async def confirm(self) -> bool:
        """Ask the store now whether the role is still held; call right before acting on it."""
        ...


class Store(Protocol):
    async def append(self, records: Sequence[OutboxRecord]) -> None:
        """Store durably (synced to disk) before returning, or raise StoreUnavailable."""
        ...

    def follow_appends(self, listener: Callable[[Sequence[OutboxRecord]], None]) -> None:
        """Call `listener` with every batch this process appends, once committed, seqs set.

        Only a store whose seqs are dense and in commit order calls it (SQLite): there the
        relay can publish what it was handed without reading it back, and tell by a gap in
        the seqs that another process appended too. A store without that order (PostgreSQL,
        several replicas) never calls it, and the relay reads everything back.
        """
        ...

    async def unsent(self, limit: int) -> Sequence[OutboxRecord]:
        """The oldest records not yet marked sent, in append order."""
        ...

    async def mark_sent(self, seqs: Sequence[int]) -> None: ...

    async def prune_sent(self, older_than: float, limit: int = 10_000) -> int:
        """Delete up to `limit` sent records stored more than `older_than` seconds ago."""
        ...

    async def backlog(self) -> int:
        """How many records wait for the relay."""
        ...

    async def put_new(self, namespace: str, key: str, value: bytes, ttl: float) -> bool:
        """Store if absent or expired; False if a live entry exists (a replay)."""
        ...

    async def take(self, namespace: str, key: str) -> bytes | None:
        """Read and delete in one step, for single-use values such as codes."""
        ...

    async def get(self, namespace: str, key: str) -> bytes | None: ...

    # Versioned documents: append-only, one row per version (the registry's history).

    async def put_version(
        self, kind: str, key: str, body: bytes, *, expected_version: int
    ) -> DocumentVersion:
        """Store version `expected_version + 1` of (kind, key); 0 means "must not exist yet".

        Raises VersionConflict when the latest version is not `expected_version` (two writers).
        Durable when this returns, or StoreUnavailable.
        """
        ...

    async def get_latest(self, kind: str, key: str) -> DocumentVersion | None: ...

    async def list_latest(self, kind: str) -> Sequence[DocumentVersion]:
        """The latest version of every key of a kind, ordered by key."""
        ...

    async def history(self, kind: str, key: str) -> Sequence[DocumentVersion]:
        """Every version of one key, oldest first."""
        ...

    async def head(self, kind: str) -> int:
        """The highest `seq` written for a kind (0 if none): a cheap "did anything change?"."""
        ...

    # Counters with a window, for rate limits shared by replicas.

    async def increment(self, namespace: str, key: str, window: float) -> int:
        """Add one to a counter that resets `window` seconds after its first hit; the new count."""
        ...

    def leadership(
        self, name: str, *, retry_seconds: float = 2.0
    ) -> AbstractAsyncContextManager[Leadership]:
        """Compete for the role `name` while inside: `async with store.leadership("x") as lead`.

        Never raises for an unreachable store: the role is then simply not held. It is tried
        again every `retry_seconds`, and given up on leaving (or when the process dies).
        """
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers now (readiness)."""
        ...

    async def close(self) -> None:
        """Finish the appends already queued, then release the store."""
        ...

    @property
    def is_open(self) -> bool: ...


async def open_store(settings: Settings) -> Store:
    """The store `[store] url` names: PostgreSQL for `postgresql://…`, else SQLite in state_dir."""
    if settings.store.postgres is not None:
        from gateway.store.postgres import PostgresStore

        return await PostgresStore.open(settings.store.postgres)
    from gateway.store.sqlite import SqliteStore

    return await SqliteStore.open(settings.store_path)
