"""The embedded store: SQLite in WAL mode with full sync, on a thread of its own.

Appends from concurrent requests are group-committed: while one transaction is being synced,
new records queue up and go into the next one, so each request still waits for its own records
to be on disk, but the disk syncs once per batch rather than once per event.

On a busy gateway every wait for the GIL costs a thread switch: sqlite3 gives the GIL up for
every step of a statement (one step per row read), and each time the store's thread wants it
back it waits for the event loop's thread. So a batch of appends is one statement, which in
autocommit mode is its own transaction (one step, commit and sync included), the relay's marks
go through a second connection that does not sync and so needs no pragma switching, and the
relay is handed what was committed instead of reading it back (`follow_appends`).
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from gateway.store import DocumentVersion, OutboxRecord, StoreUnavailable, VersionConflict
from gateway.store._groupcommit import GroupCommit
from gateway.store._leadership import Election, check_role_name

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0,
    stored_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent = 0;
CREATE TABLE IF NOT EXISTS kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS documents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    UNIQUE (kind, key, version)
);
CREATE INDEX IF NOT EXISTS documents_kind ON documents (kind, seq);
"""

# Many rows per statement, not one statement per row (see the module's docstring).
_ROWS_PER_STATEMENT = 500  # at most 2,000 parameters; SQLite allows 32,766 since 3.32


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    return (items[start : start + size] for start in range(0, len(items), size))


@functools.lru_cache(maxsize=64)  # the same texts, so sqlite3's statement cache finds them
def _insert_sql(rows: int) -> str:
    # Only placeholders are joined in; every value is a bound parameter.
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return f"INSERT INTO outbox (event_id, key, payload, stored_at) VALUES {values}"  # noqa: S608


@functools.lru_cache(maxsize=64)
def _mark_sent_sql(rows: int) -> str:
    return f"UPDATE outbox SET sent = 1 WHERE seq IN ({', '.join('?' * rows)})"  # noqa: S608


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite-store")
        self._conn: sqlite3.Connection | None = None
        self._marks: sqlite3.Connection | None = None  # the relay's marks: not synced
        self._listeners: list[Callable[[Sequence[OutboxRecord]], None]] = []
        self._group = GroupCommit(self._write)

    @classmethod
    async def open(cls, path: Path) -> Self:
        store = cls(path)
        await store._run(store._connect)
        return store

    def _connect(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # FULL: every commit is synced, so an acknowledged event survives a power cut.
        conn = self._open_connection("FULL")
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(outbox)")}
        if "stored_at" not in columns:  # an outbox made before sent records were pruned
            conn.execute("ALTER TABLE outbox ADD COLUMN stored_at REAL NOT NULL DEFAULT 0")
        # A mark lost in a power cut only makes the relay send those events again (same ids,
        # same bytes), and the next synced append carries it to disk: marks are not synced.
        self._marks = self._open_connection("NORMAL")
        self._conn = conn

    def _open_connection(self, synchronous: str) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA mmap_size=268435456")
        # A statement journal (a multi-row write inside a transaction) stays in memory instead
        # of spilling into a temporary file that is created and deleted for every batch.
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except RuntimeError as exc:  # the executor is shut down: the store was closed
            raise StoreUnavailable("the store is closed") from exc

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the store is closed")
        return self._conn

    async def append(self, records: Sequence[OutboxRecord]) -> None:
        await self._group.append(records)

    def follow_appends(self, listener: Callable[[Sequence[OutboxRecord]], None]) -> None:
        self._listeners.append(listener)

    async def _write(self, records: list[OutboxRecord]) -> None:
        stored: list[OutboxRecord] = await self._run(self._insert, records)
        for listener in self._listeners:
            try:
                listener(stored)
            except Exception:  # committed already: a listener's failure must not undo that
                log.exception("an outbox listener failed; the relay reads the records back")

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        conn = conn or self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _in_one_transaction(
        self,
        conn: sqlite3.Connection,
        items: Sequence[T],
        write: Callable[[sqlite3.Connection, Sequence[T]], R],
    ) -> R:
        """`write` the items in one transaction; what it returned for the last of them.

        Items that fit one statement are written by one, which in autocommit mode is its own
        transaction; more go in statement-sized chunks inside BEGIN ... COMMIT.
        """
        if len(items) <= _ROWS_PER_STATEMENT:
            return write(conn, items)
        with self._transaction(conn):
            for chunk in _chunks(items, _ROWS_PER_STATEMENT):
                result = write(conn, chunk)
        return result

    def _insert(self, records: list[OutboxRecord]) -> list[OutboxRecord]:
        """Write the records in one transaction; them with their seqs."""
        if not records:
            return []
        now = time.time()
        last = self._in_one_transaction(
            self.conn, records, lambda conn, chunk: _insert_rows(conn, chunk, now)
        )
        # One writer at a time, AUTOINCREMENT: the rows of a transaction get consecutive seqs.
        first = last - len(records) + 1
        return [
            OutboxRecord(r.event_id, r.key, r.payload, seq)
            for seq, r in enumerate(records, start=first)
        ]

    async def unsent(self, limit: int) -> Sequence[OutboxRecord]:
        rows = await self._run(
            self._query,
            "SELECT event_id, key, payload, seq FROM outbox WHERE sent = 0 ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [OutboxRecord(r[0], r[1], r[2], r[3]) for r in rows]

    async def mark_sent(self, seqs: Sequence[int]) -> None:
        await self._run(self._mark_sent, seqs)

    def _mark_sent(self, seqs: Sequence[int]) -> None:
        if self._marks is None:
            raise StoreUnavailable("the store is closed")
        if seqs:
            self._in_one_transaction(self._marks, seqs, _mark_rows)

    async def prune_sent(self, older_than: float, limit: int = 10_000) -> int:
        rows = await self._run(
            self._query,
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE sent = 1 "
            "AND stored_at < ? ORDER BY seq LIMIT ?) RETURNING seq",
            (time.time() - older_than, limit),
        )
        return len(rows)

    async def backlog(self) -> int:
        rows = await self._run(self._query, "SELECT count(*) FROM outbox WHERE sent = 0", ())
        return int(rows[0][0])

    async def put_new(self, namespace: str, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self._run(self._put_new, namespace, key, value, ttl))

    def _put_new(self, namespace: str, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM kv WHERE namespace = ? AND key = ? AND expires <= ?",
                (namespace, key, now),
            )
            cursor = conn.execute(
                "INSERT OR IGNORE INTO kv (namespace, key, value, expires) VALUES (?, ?, ?, ?)",
                (namespace, key, value, now + ttl),
            )
        return cursor.rowcount == 1

    async def take(self, namespace: str, key: str) -> bytes | None:
        rows = await self._run(
            self._query,
            "DELETE FROM kv WHERE namespace = ? AND key = ? AND expires > ? RETURNING value",
            (namespace, key, time.time()),
        )
        return bytes(rows[0][0]) if rows else None

    async def get(self, namespace: str, key: str) -> bytes | None:
        rows = await self._run(
            self._query,
            "SELECT value FROM kv WHERE namespace = ? AND key = ? AND expires > ?",
            (namespace, key, time.time()),
        )
        return bytes(rows[0][0]) if rows else None

    async def put_version(
        self, kind: str, key: str, body: bytes, *, expected_version: int
    ) -> DocumentVersion:
        result: DocumentVersion = await self._run(
            self._put_version, kind, key, body, expected_version
        )
        return result

    def _put_version(self, kind: str, key: str, body: bytes, expected: int) -> DocumentVersion:
        now = time.time()
        try:
            with self._transaction() as conn:
                row = conn.execute(
                    "SELECT max(version) FROM documents WHERE kind = ? AND key = ?", (kind, key)
                ).fetchone()
                latest = int(row[0] or 0)
                if latest != expected:
                    raise VersionConflict(
                        f"{kind} {key!r} is at version {latest}, not {expected}: read it again"
                    )
                cursor = conn.execute(
                    "INSERT INTO documents (kind, key, version, body, created) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (kind, key, expected + 1, body, now),
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"document could not be written: {exc}") from exc
        seq = cursor.lastrowid
        assert seq is not None
        return DocumentVersion(kind, key, expected + 1, body, seq, now)

    async def get_latest(self, kind: str, key: str) -> DocumentVersion | None:
        rows = await self._run(
            self._query,
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE kind = ? AND key = ? "  # noqa: S608
            "ORDER BY version DESC LIMIT 1",
            (kind, key),
        )
        return _document(rows[0]) if rows else None

    async def list_latest(self, kind: str) -> Sequence[DocumentVersion]:
        rows = await self._run(
            self._query,
            f"SELECT {_DOC_COLUMNS} FROM documents d WHERE kind = ? AND version = "  # noqa: S608
            "(SELECT max(version) FROM documents WHERE kind = d.kind AND key = d.key) "
            "ORDER BY key",
            (kind,),
        )
        return [_document(r) for r in rows]

    async def history(self, kind: str, key: str) -> Sequence[DocumentVersion]:
        rows = await self._run(
            self._query,
            f"SELECT {_DOC_COLUMNS} FROM documents "  # noqa: S608
            "WHERE kind = ? AND key = ? ORDER BY version",
            (kind, key),
        )
        return [_document(r) for r in rows]

    async def head(self, kind: str) -> int:
        rows = await self._run(
            self._query, "SELECT coalesce(max(seq), 0) FROM documents WHERE kind = ?", (kind,)
        )
        return int(rows[0][0])

    async def increment(self, namespace: str, key: str, window: float) -> int:
        return int(await self._run(self._increment, namespace, key, window))

    def _increment(self, namespace: str, key: str, window: float) -> int:
        now = time.time()
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM kv WHERE namespace = ? AND key = ? AND expires <= ?",
                (namespace, key, now),
            )
            conn.execute(
                "INSERT INTO kv (namespace, key, value, expires) VALUES (?, ?, '1', ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                (namespace, key, now + window),
            )
            row = conn.execute(
                "SELECT value FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
            ).fetchone()
        return int(row[0])

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def leadership(self, name: str, *, retry_seconds: float = 2.0) -> Election:
        """An exclusive `flock` on `<database>.<name>.leader`: one process per state dir leads.

        SQLite serves one process, so that process normally always leads; the lock keeps a
        second process started by mistake on the same state dir from publishing too.
        """
        lock = _FileLock(self.path.with_name(f"{self.path.name}.{check_role_name(name)}.leader"))
        return Election(name, lock, retry_seconds=retry_seconds)

    async def ping(self) -> None:
        try:
            await self._run(self._query, "SELECT 1", ())
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the SQLite store does not answer: {exc}") from exc

    async def close(self) -> None:
        await self._group.drain()
        if self._marks is not None:
            await self._run(self._marks.close)
            self._marks = None
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)


_DOC_COLUMNS = "kind, key, version, body, seq, created"


def _mark_rows(conn: sqlite3.Connection, seqs: Sequence[int]) -> None:
    conn.execute(_mark_sent_sql(len(seqs)), seqs)


def _insert_rows(conn: sqlite3.Connection, records: Sequence[OutboxRecord], now: float) -> int:
    """Insert in one statement; the seq of the last row."""
    cursor = conn.execute(
        _insert_sql(len(records)), [v for r in records for v in (r.event_id, r.key, r.payload, now)]
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


class _FileLock:
    """A non-blocking exclusive flock; the kernel releases it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    async def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    async def confirm(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor drops the flock


def _document(row: tuple[Any, ...]) -> DocumentVersion:
    return DocumentVersion(row[0], row[1], int(row[2]), bytes(row[3]), int(row[4]), float(row[5]))
