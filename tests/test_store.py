"""One contract for every store: SQLite (embedded) and PostgreSQL (several replicas).

Each test runs against both, over real files and a real PostgreSQL server on a real socket.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import psycopg
import pytest

from gateway.store import OutboxRecord, Store, StoreUnavailable
from gateway.store.postgres import PostgresOptions, PostgresStore
from gateway.store.sqlite import SqliteStore
from tests.postgres import PostgresServer

Opener = Callable[[], Awaitable[Store]]


def record(i: int) -> OutboxRecord:
    return OutboxRecord(f"ev-{i}", f"tx-{i % 7}", f"payload {i}".encode())


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the same store anew each time it is called (so reopening can be tested)."""
    if request.param == "sqlite":
        return lambda: SqliteStore.open(tmp_path / "state.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    options = PostgresOptions(
        server.url(server.create_database()), password_file=server.password_file, pool_max=4
    )
    return lambda: PostgresStore.open(options)


async def test_concurrent_appends_survive_reopen_in_order(opener: Opener) -> None:
    store = await opener()
    await asyncio.gather(*(store.append([record(i)]) for i in range(300)))
    await store.close()

    reopened = await opener()
    try:
        pending = await reopened.unsent(1000)
        assert sorted(r.event_id for r in pending) == sorted(f"ev-{i}" for i in range(300))
        assert [r.seq for r in pending] == sorted(r.seq for r in pending)
        assert await reopened.backlog() == 300
        await reopened.mark_sent([r.seq for r in pending[:100]])
        assert await reopened.backlog() == 200
        assert (await reopened.unsent(1))[0].seq == pending[100].seq
        assert (await reopened.unsent(1000))[0].payload == pending[100].payload
    finally:
        await reopened.close()


async def test_large_batches_stay_whole_and_in_order(opener: Opener) -> None:
    # More records than SQLite writes in one statement: still one transaction, in order.
    store = await opener()
    try:
        await store.append([record(i) for i in range(1234)])
        with pytest.raises(StoreUnavailable):
            await store.append([record(i) for i in range(2000, 3100)] + [record(7)])
        pending = await store.unsent(5000)
        assert [r.event_id for r in pending] == [f"ev-{i}" for i in range(1234)]
        await store.mark_sent([r.seq for r in pending[:1100]])
        assert [r.event_id for r in await store.unsent(5000)] == [
            f"ev-{i}" for i in range(1100, 1234)
        ]
    finally:
        await store.close()


async def test_committed_appends_are_handed_over_with_their_seqs_where_seqs_keep_order(
    opener: Opener,
) -> None:
    store = await opener()
    handed: list[Sequence[OutboxRecord]] = []
    store.follow_appends(handed.append)
    try:
        await asyncio.gather(*(store.append([record(i), record(1000 + i)]) for i in range(50)))
        with pytest.raises(StoreUnavailable):
            await store.append([record(5000), record(1)])  # a duplicate id: nothing committed
        await store.append([record(i) for i in range(2000, 2600)])  # more than one statement
        pending = list(await store.unsent(5000))
        assert len(pending) == 700
        if isinstance(store, SqliteStore):
            # Dense seqs in commit order: exactly what the relay would read back, seqs included.
            assert [r for batch in handed for r in batch] == pending
        else:
            assert handed == [], "PostgreSQL's identity values do not follow commit order"
    finally:
        await store.close()


async def test_payloads_come_back_byte_for_byte(opener: Opener) -> None:
    # Events carry any UTF-8 text, quotes and backslashes, and archived documents of 100 KB.
    payloads = [
        '{"naam":"Zoë \\"de\\" Vries, ½ \\\\ ]","x":[1,2]}'.encode(),
        "€𝄞\u2028".encode() * 3,
        b"{}" + b"x" * 100_000,
        b"",
    ]
    store = await opener()
    try:
        await store.append([OutboxRecord(f"ev-{i}", "tx-1", p) for i, p in enumerate(payloads)])
        assert [r.payload for r in await store.unsent(10)] == payloads
        assert [r.payload for r in await store.unsent(2)] == payloads[:2]
    finally:
        await store.close()


async def test_prune_deletes_only_sent_records_older_than_asked(opener: Opener) -> None:
    store = await opener()
    try:
        await store.append([record(i) for i in range(10)])
        pending = await store.unsent(100)
        await store.mark_sent([r.seq for r in pending[:6]])
        assert await store.prune_sent(3600) == 0, "sent a moment ago: kept for the window"
        await asyncio.sleep(0.05)
        assert await store.prune_sent(0.01, limit=4) == 4, "at most `limit` at a time"
        assert await store.prune_sent(0.01) == 2
        assert await store.prune_sent(0) == 0, "unsent records are never pruned"
        assert [r.event_id for r in await store.unsent(100)] == [f"ev-{i}" for i in range(6, 10)]
        assert await store.backlog() == 4
    finally:
        await store.close()


async def test_sqlite_outbox_from_before_pruning_gains_its_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the outbox table as earlier versions made it
        conn.execute(
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT "
            "NULL UNIQUE, key TEXT NOT NULL, payload BLOB NOT NULL, sent INTEGER NOT NULL "
            "DEFAULT 0)"
        )
        conn.execute(
            "INSERT INTO outbox (event_id, key, payload, sent) VALUES ('a', 'k', x'00', 1)"
        )
        conn.execute("INSERT INTO outbox (event_id, key, payload) VALUES ('b', 'k', x'00')")
    store = await SqliteStore.open(path)
    try:
        await store.append([record(1)])
        assert await store.prune_sent(3600) == 1, "the old sent record counts as long ago"
        assert [r.event_id for r in await store.unsent(10)] == ["b", "ev-1"]
    finally:
        await store.close()


async def test_duplicate_event_id_fails_the_batch_loudly(opener: Opener) -> None:
    store = await opener()
    try:
        await store.append([record(1)])
        with pytest.raises(StoreUnavailable):
            await store.append([record(2), record(1)])
        assert [r.event_id for r in await store.unsent(10)] == ["ev-1"], "nothing half-written"
    finally:
        await store.close()


async def test_closed_store_refuses(opener: Opener) -> None:
    store = await opener()
    await store.ping()
    await store.close()
    assert not store.is_open
    with pytest.raises(StoreUnavailable):
        await store.append([record(1)])
    with pytest.raises(StoreUnavailable):
        await store.put_new("ns", "k", b"v", ttl=60)
    with pytest.raises(StoreUnavailable):
        await store.ping()


async def test_close_waits_for_queued_appends(opener: Opener) -> None:
    """Graceful shutdown: appends already queued when close starts are committed."""
    store = await opener()
    appends = [asyncio.ensure_future(store.append([record(i)])) for i in range(50)]
    await asyncio.sleep(0)  # queued, not yet committed
    await store.close()
    await asyncio.gather(*appends)
    reopened = await opener()
    try:
        assert await reopened.backlog() == 50
    finally:
        await reopened.close()


async def test_put_new_detects_replays_and_take_is_single_use(opener: Opener) -> None:
    store = await opener()
    try:
        assert await store.put_new("dpop", "jti-1", b"1", ttl=60)
        assert not await store.put_new("dpop", "jti-1", b"1", ttl=60), "replay refused"
        assert await store.put_new("other", "jti-1", b"1", ttl=60), "namespaces are separate"
        assert await store.put_new("code", "c1", b"grant", ttl=60)
        assert await store.get("code", "c1") == b"grant"
        assert await store.take("code", "c1") == b"grant"
        assert await store.take("code", "c1") is None, "a code is redeemed once"
        assert await store.get("code", "c1") is None
        assert await store.put_new("short", "k", b"v", ttl=0.05)
        await asyncio.sleep(0.1)
        assert await store.get("short", "k") is None, "expired"
        assert await store.take("short", "k") is None, "an expired code cannot be redeemed"
        assert await store.put_new("short", "k", b"v2", ttl=60), "an expired key can be reused"
        assert await store.get("short", "k") == b"v2"
    finally:
        await store.close()


async def test_versioned_documents_keep_every_version_and_refuse_lost_updates(
    opener: Opener,
) -> None:
    from gateway.store import VersionConflict

    store = await opener()
    try:
        assert await store.head("organisatie") == 0
        first = await store.put_version("organisatie", "svb", b"v1", expected_version=0)
        assert first.version == 1
        with pytest.raises(VersionConflict):
            await store.put_version("organisatie", "svb", b"again", expected_version=0)
        second = await store.put_version("organisatie", "svb", b"v2", expected_version=1)
        await store.put_version("organisatie", "duo", b"d1", expected_version=0)
        assert second.seq > first.seq
        latest = await store.get_latest("organisatie", "svb")
        assert latest is not None
        assert (latest.version, latest.body) == (2, b"v2")
        assert [(d.key, d.body) for d in await store.list_latest("organisatie")] == [
            ("duo", b"d1"),
            ("svb", b"v2"),
        ]
        assert [d.body for d in await store.history("organisatie", "svb")] == [b"v1", b"v2"]
        assert await store.head("organisatie") > second.seq
        assert await store.head("andere-soort") == 0
        assert await store.get_latest("organisatie", "cak") is None
    finally:
        await store.close()


async def test_counters_count_within_their_window_and_reset_after(opener: Opener) -> None:
    store = await opener()
    try:
        counts = [await store.increment("rate", "portaal", 0.3) for _ in range(3)]
        assert counts == [1, 2, 3]
        assert await store.increment("rate", "ander", 0.3) == 1
        await asyncio.sleep(0.35)
        assert await store.increment("rate", "portaal", 0.3) == 1
        # Two replicas counting at once lose no hit.
        hits = await asyncio.gather(*(store.increment("rate", "samen", 60) for _ in range(20)))
        assert sorted(hits) == list(range(1, 21))
    finally:
        await store.close()


async def test_concurrent_take_gives_the_value_to_exactly_one(opener: Opener) -> None:
    """Two stores on one location (two replicas): a code is redeemed exactly once."""
    first, second = await opener(), await opener()
    try:
        for i in range(20):
            assert await first.put_new("code", f"c{i}", b"grant", ttl=60)
        results = await asyncio.gather(
            *(s.take("code", f"c{i}") for i in range(20) for s in (first, second))
        )
        assert results.count(b"grant") == 20
        assert results.count(None) == 20
        replays = await asyncio.gather(
            *(s.put_new("jti", "same", b"1", ttl=60) for s in (first, second) for _ in range(5))
        )
        assert replays.count(True) == 1, "one proof accepted, every replay refused"
    finally:
        await first.close()
        await second.close()


async def test_postgres_purges_expired_keys(postgres: PostgresServer) -> None:
    database = postgres.create_database()
    options = PostgresOptions(postgres.url(database), password_file=postgres.password_file)
    store = await PostgresStore.open(options)
    try:
        for i in range(30):
            await store.put_new("short", f"k{i}", b"v", ttl=0.01)
        await store.put_new("long", "k", b"v", ttl=60)
        await asyncio.sleep(0.05)
        assert await store.purge_expired() == 30
        assert await store.get("long", "k") == b"v"
        assert await store.purge_expired() == 0
    finally:
        await store.close()


async def test_postgres_refuses_unsafe_durability_settings(postgres: PostgresServer) -> None:
    database = postgres.create_database()
    with postgres.connect() as conn:
        conn.execute(f"ALTER DATABASE {database} SET synchronous_commit = off")
    options = PostgresOptions(postgres.url(database), password_file=postgres.password_file)
    with pytest.raises(StoreUnavailable, match="synchronous_commit=off"):
        await PostgresStore.open(options)


async def test_postgres_unreachable_or_wrong_password_is_a_clear_error(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password")
    options = PostgresOptions(postgres.url(), password_file=wrong, connect_timeout=2)
    with pytest.raises(StoreUnavailable, match="password_file") as refused:
        await PostgresStore.open(options)
    assert "not-the-password" not in str(refused.value)
    with pytest.raises(StoreUnavailable, match="cannot read"):
        await PostgresStore.open(PostgresOptions(postgres.url(), password_file=tmp_path / "none"))


async def test_postgres_store_unavailable_when_server_connections_are_cut(
    postgres: PostgresServer,
) -> None:
    """Connections killed under the store: the next call fails loudly or reconnects, never lies."""
    database = postgres.create_database()
    options = PostgresOptions(
        postgres.url(database), password_file=postgres.password_file, pool_min=1, pool_max=1
    )
    store = await PostgresStore.open(options)
    try:
        await store.append([record(1)])
        with postgres.connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
        outcomes: list[bool] = []
        for i in range(2, 5):
            try:
                await store.append([record(i)])
                outcomes.append(True)
            except StoreUnavailable:
                outcomes.append(False)
        assert outcomes[-1], "the pool reconnects after a broken connection"
        stored = {r.event_id for r in await store.unsent(100)}
        assert {f"ev-{i}" for i, ok in zip(range(2, 5), outcomes, strict=True) if ok} <= stored
    finally:
        await store.close()
    with psycopg.connect(
        postgres.url(database), password=postgres.password, autocommit=True
    ) as check:
        row = check.execute("SELECT count(*) FROM blauweknop_outbox").fetchone()
        assert row is not None
        assert row[0] >= 2
