"""One small interface for every piece of shared state: the audit outbox and expiring keys.

The outbox holds audit events until the relay has published them; expiring keys hold sessions,
authorization codes and replay caches. SQLite (`gateway.store.sqlite`) is the embedded default;
PostgreSQL (`gateway.store.postgres`, `[store] url = "postgresql://…"`) serves several replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class Store(Protocol):
    async def append(self, records: Sequence[OutboxRecord]) -> None:
        """Store durably (synced to disk) before returning, or raise StoreUnavailable."""
        ...

    async def unsent(self, limit: int) -> Sequence[OutboxRecord]:
        """The oldest records not yet marked sent, in append order."""
        ...

    async def mark_sent(self, seqs: Sequence[int]) -> None: ...

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
