"""The embedded SQLite store: durable group-committed outbox and expiring single-use keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.store import OutboxRecord, StoreUnavailable
from gateway.store.sqlite import SqliteStore


def record(i: int) -> OutboxRecord:
    return OutboxRecord(f"ev-{i}", f"tx-{i % 7}", f"payload {i}".encode())


async def test_concurrent_appends_survive_reopen_in_order(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    await asyncio.gather(*(store.append([record(i)]) for i in range(300)))
    await store.close()

    reopened = await SqliteStore.open(tmp_path / "state.db")
    try:
        pending = await reopened.unsent(1000)
        assert sorted(r.event_id for r in pending) == sorted(f"ev-{i}" for i in range(300))
        assert [r.seq for r in pending] == sorted(r.seq for r in pending)
        assert await reopened.backlog() == 300
        await reopened.mark_sent([r.seq for r in pending[:100]])
        assert await reopened.backlog() == 200
        assert (await reopened.unsent(1))[0].seq == pending[100].seq
    finally:
        await reopened.close()


async def test_duplicate_event_id_fails_the_batch_loudly(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        await store.append([record(1)])
        with pytest.raises(StoreUnavailable):
            await store.append([record(2), record(1)])
        assert [r.event_id for r in await store.unsent(10)] == ["ev-1"], "nothing half-written"
    finally:
        await store.close()


async def test_closed_store_refuses_to_append(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    await store.close()
    store2 = SqliteStore(tmp_path / "never-opened.db")
    with pytest.raises(StoreUnavailable):
        await store2.append([record(1)])
    await store2.close()


async def test_put_new_detects_replays_and_take_is_single_use(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        assert await store.put_new("dpop", "jti-1", b"1", ttl=60)
        assert not await store.put_new("dpop", "jti-1", b"1", ttl=60), "replay refused"
        assert await store.put_new("other", "jti-1", b"1", ttl=60), "namespaces are separate"
        assert await store.put_new("code", "c1", b"grant", ttl=60)
        assert await store.get("code", "c1") == b"grant"
        assert await store.take("code", "c1") == b"grant"
        assert await store.take("code", "c1") is None, "a code is redeemed once"
        assert await store.put_new("short", "k", b"v", ttl=0.05)
        await asyncio.sleep(0.1)
        assert await store.get("short", "k") is None, "expired"
        assert await store.put_new("short", "k", b"v2", ttl=60), "an expired key can be reused"
    finally:
        await store.close()


async def test_versioned_documents_keep_every_version_and_refuse_lost_updates(
    tmp_path: Path,
) -> None:
    from gateway.store import VersionConflict

    store = await SqliteStore.open(tmp_path / "state.db")
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


async def test_counters_count_within_their_window_and_reset_after(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        counts = [await store.increment("rate", "portaal", 0.3) for _ in range(3)]
        assert counts == [1, 2, 3]
        assert await store.increment("rate", "ander", 0.3) == 1
        await asyncio.sleep(0.35)
        assert await store.increment("rate", "portaal", 0.3) == 1
    finally:
        await store.close()
