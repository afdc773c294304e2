"""Group commit for the outbox, shared by the SQLite and PostgreSQL stores.

While one transaction is being written, new records queue up and go into the next one, so each
caller still waits for its own records to be durable, but the store commits once per batch
rather than once per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from gateway.store import OutboxRecord, StoreUnavailable


class GroupCommit:
    def __init__(self, write: Callable[[list[OutboxRecord]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[tuple[Sequence[OutboxRecord], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def append(self, records: Sequence[OutboxRecord]) -> None:
        """Return once `records` are written in one committed transaction, or raise."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((records, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def drain(self) -> None:
        """Wait until every queued append has been written (or failed)."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write([r for records, _ in batch for r in records])
            except Exception as exc:  # every waiter must hear of it, whatever went wrong
                error = StoreUnavailable(f"audit outbox could not be written: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
