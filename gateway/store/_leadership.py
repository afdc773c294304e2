"""Leader election behind the store: one named role, held by at most one process at a time.

Each store supplies three primitives (try to take the role, check it is still held, give it
up); `Election` runs them: it tries to take the role every `retry_seconds` while another holds
it, and checks every `retry_seconds` that it still holds it while it does. PostgreSQL holds a
session-level advisory lock on a connection of its own (the lock goes when that connection
does, so a killed holder frees it); SQLite holds an exclusive `flock` on a file next to the
database (the kernel frees it when the process dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Protocol

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_role_name(name: str) -> str:
    """Role names go into lock keys and file names: lower-case letters, digits and dashes."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"leadership role name {name!r}: use [a-z0-9-], at most 63 characters")
    return name


class RoleLock(Protocol):
    """A store's three primitives for one role."""

    async def acquire(self) -> bool: ...

    async def confirm(self) -> bool: ...

    async def release(self) -> None: ...


class Election:
    """Who holds one role, kept current in the background; see `Store.leadership`."""

    def __init__(self, name: str, lock: RoleLock, *, retry_seconds: float) -> None:
        self.name = check_role_name(name)
        self._acquire = lock.acquire
        self._confirm = lock.confirm
        self._release = lock.release
        self.retry_seconds = retry_seconds
        self._held = False
        self._acquired = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """Whether this process held the role at the last check."""
        return self._held

    async def wait(self, seconds: float) -> bool:
        """Wait at most `seconds` for the role; whether it is held."""
        if not self._held:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acquired.wait(), seconds)
        return self._held

    async def confirm(self) -> bool:
        """Check now, with the store, that the role is still held: call before acting on it."""
        if not self._held:
            return False
        if not await self._safely(self._confirm):
            self._lose()
        return self._held

    async def _safely(self, primitive: Callable[[], Awaitable[bool]]) -> bool:
        # A hung store answers nothing: treat no answer in time as "not held".
        try:
            return await asyncio.wait_for(primitive(), max(1.0, self.retry_seconds))
        except Exception:  # any failure of the store means: not (or no longer) leading
            log.debug("leadership %s: store check failed", self.name, exc_info=True)
            return False

    def _lose(self) -> None:
        if self._held:
            log.warning("leadership %s lost", self.name)
        self._held = False
        self._acquired.clear()

    async def _run(self) -> None:
        while True:
            if self._held:
                await self.confirm()
            elif await self._safely(self._acquire):
                self._held = True
                self._acquired.set()
                log.info("leadership %s taken", self.name)
            await asyncio.sleep(self.retry_seconds)

    async def __aenter__(self) -> Election:
        self._task = asyncio.create_task(self._run(), name=f"leadership-{self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._held = False
        self._acquired.clear()
        with contextlib.suppress(Exception):  # giving up must not fail a shutdown
            await asyncio.wait_for(self._release(), max(1.0, self.retry_seconds))
