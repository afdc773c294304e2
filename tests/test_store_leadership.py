"""One contract for leadership (`Store.leadership`) in every store: SQLite and PostgreSQL.

A role is held by at most one process at a time; it passes on when the holder leaves, and when
the holder is killed outright (a real subprocess, SIGKILL). Real files, a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.store import Store
from gateway.store.postgres import PostgresOptions, PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.postgres import PostgresServer

RETRY = 0.2

# A second process that takes the role and keeps it until it is killed.
_HOLDER = """
import asyncio, sys
from pathlib import Path

async def main() -> None:
    if sys.argv[1] == "sqlite":
        from gateway.store.sqlite import SqliteStore
        store = await SqliteStore.open(Path(sys.argv[2]))
    else:
        from gateway.store.postgres import PostgresOptions, PostgresStore
        options = PostgresOptions(sys.argv[2], password_file=Path(sys.argv[3]))
        store = await PostgresStore.open(options)
    async with store.leadership("audit-relay", retry_seconds=0.2) as lead:
        print("held" if await lead.wait(20) else "not held", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


@dataclass(frozen=True, slots=True)
class Location:
    """Where one store lives, so that several stores (and processes) can open it."""

    kind: str
    target: str
    password_file: Path | None = None

    async def open(self) -> Store:
        if self.kind == "sqlite":
            return await SqliteStore.open(Path(self.target))
        return await PostgresStore.open(
            PostgresOptions(self.target, password_file=self.password_file, pool_max=2)
        )

    def argv(self) -> list[str]:
        return [self.kind, self.target, str(self.password_file or "")]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    if request.param == "sqlite":
        return Location("sqlite", str(tmp_path / "state.db"))
    server: PostgresServer = request.getfixturevalue("postgres")
    return Location("postgres", server.url(server.create_database()), server.password_file)


@contextlib.asynccontextmanager
async def stores(location: Location, count: int) -> AsyncIterator[list[Store]]:
    opened = [await location.open() for _ in range(count)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def test_one_holder_at_a_time_and_the_role_passes_on_when_it_leaves(
    location: Location,
) -> None:
    async with stores(location, 2) as (first, second):
        leaving = first.leadership("audit-relay", retry_seconds=RETRY)
        a = await leaving.__aenter__()
        try:
            assert await a.wait(5), "a lone candidate leads"
            assert a.held
            assert await a.confirm()
            async with (
                second.leadership("audit-relay", retry_seconds=RETRY) as b,
                second.leadership("archive", retry_seconds=RETRY) as other,
            ):
                assert not await b.wait(1.0), "one holder at a time"
                assert not await b.confirm()
                assert await other.wait(5), "each role is held on its own"
                assert await a.confirm(), "the holder keeps the role while it stays"
                await leaving.__aexit__(None, None, None)
                assert not a.held
                assert not await a.confirm()
                assert await b.wait(5), "taken over once the holder left"
                assert await b.confirm()
        finally:
            await leaving.__aexit__(None, None, None)


async def test_role_passes_on_when_the_holding_process_is_killed(location: Location) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOLDER,
        *location.argv(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = await asyncio.wait_for(holder.stdout.readline(), 30)
        assert line == b"held\n", (line, await holder.stderr.read() if holder.stderr else b"")
        async with (
            stores(location, 1) as (store,),
            store.leadership("audit-relay", retry_seconds=RETRY) as lead,
        ):
            assert not await lead.wait(1.0), "the other process holds it"
            holder.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.wait_for(holder.wait(), 10)
            assert await lead.wait(10), "taken over after the holder died"
            assert time.monotonic() - killed < 5, "within a few retries"
            assert await lead.confirm()
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()


def test_role_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="role name"):
        SqliteStore(tmp_path / "state.db").leadership("../../etc/passwd")


async def test_postgres_holder_whose_session_is_cut_stops_leading_and_another_takes_over(
    postgres: PostgresServer,
) -> None:
    """The server ends the holder's session (failover, an operator): it notices at its next
    check and another replica takes the role; nobody believes it leads alongside."""
    database = postgres.create_database()
    location = Location("postgres", postgres.url(database), postgres.password_file)
    async with (
        stores(location, 2) as (first, second),
        first.leadership("audit-relay", retry_seconds=RETRY) as a,
        second.leadership("audit-relay", retry_seconds=RETRY) as b,
    ):
        assert await a.wait(5) != await b.wait(1.0), "exactly one leads"
        holder, other = (a, b) if a.held else (b, a)
        with postgres.connect(database) as conn:
            cut = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'blauweknop-leader-audit-relay' AND pid IN "
                "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
            ).fetchall()
        assert len(cut) == 1
        assert not await holder.confirm(), "the holder notices at once when it asks"
        assert await other.wait(5), "the other takes over"
        await asyncio.sleep(RETRY * 3)
        assert [holder.held, other.held].count(True) == 1, "never two"
