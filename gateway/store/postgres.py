"""The shared store for several replicas: PostgreSQL through psycopg 3's async pool.

Same contract as the SQLite store (`gateway.store.Store`):

- the outbox is group-committed: concurrent appends queue while one transaction commits, and
  each caller returns only once the transaction that holds its records has committed. The store
  refuses to open on a server with `fsync` or `synchronous_commit` off, so a commit is on disk
  (or, with synchronous replication, on the standby as the server demands) before we answer;
- expiring keys use the database's clock, so replicas with skewed clocks still agree on what
  has expired; `put_new` and `take` are single statements, atomic across replicas: of two
  replicas redeeming one code at the same moment, exactly one gets it;
- expired keys are purged in the background, a bounded batch at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.store import DocumentVersion, OutboxRecord, StoreUnavailable, VersionConflict
from gateway.store._groupcommit import GroupCommit
from gateway.store._leadership import Election, check_role_name

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blauweknop_outbox (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    key TEXT NOT NULL,
    payload BYTEA NOT NULL,
    sent BOOLEAN NOT NULL DEFAULT FALSE,
    stored_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS blauweknop_outbox_unsent ON blauweknop_outbox (seq) WHERE NOT sent;
CREATE TABLE IF NOT EXISTS blauweknop_kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE INDEX IF NOT EXISTS blauweknop_kv_expires ON blauweknop_kv (expires);
CREATE TABLE IF NOT EXISTS blauweknop_documents (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    body BYTEA NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    UNIQUE (kind, key, version)
);
CREATE INDEX IF NOT EXISTS blauweknop_documents_kind ON blauweknop_documents (kind, seq);
CREATE TABLE IF NOT EXISTS blauweknop_counters (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    count BIGINT NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (namespace, key)
);
"""

# Several replicas may start at once: the schema is created under one advisory lock.
_SCHEMA_LOCK = 0x426B_5374  # "BkSt"
# Leadership roles are two-key advisory locks (this class, hashtext(role)): a space of their
# own, apart from the one-key schema lock and from other applications' locks.
_LEADER_LOCK_CLASS = 0x426B_4C64  # "BkLd"

_PUT_NEW = """
INSERT INTO blauweknop_kv (namespace, key, value, expires)
VALUES (%s, %s, %s, now() + make_interval(secs => %s))
ON CONFLICT (namespace, key) DO UPDATE
    SET value = EXCLUDED.value, expires = EXCLUDED.expires
    WHERE blauweknop_kv.expires <= now()
RETURNING 1
"""
_TAKE = """
DELETE FROM blauweknop_kv WHERE namespace = %s AND key = %s AND expires > now() RETURNING value
"""
_GET = "SELECT value FROM blauweknop_kv WHERE namespace = %s AND key = %s AND expires > now()"
_PURGE = """
DELETE FROM blauweknop_kv WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM blauweknop_kv WHERE expires <= now() LIMIT %s))
"""
_PURGE_COUNTERS = """
DELETE FROM blauweknop_counters WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM blauweknop_counters WHERE expires <= now() LIMIT %s))
"""
# One statement, so replicas counting the same key at once never lose a hit.
_INCREMENT = """
INSERT INTO blauweknop_counters AS c (namespace, key, count, expires)
VALUES (%s, %s, 1, now() + make_interval(secs => %s))
ON CONFLICT (namespace, key) DO UPDATE SET
    count = CASE WHEN c.expires <= now() THEN 1 ELSE c.count + 1 END,
    expires = CASE WHEN c.expires <= now() THEN EXCLUDED.expires ELSE c.expires END
RETURNING count
"""
_DOC_COLUMNS = "kind, key, version, body, seq, created"


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """How to reach PostgreSQL: `[store]` in the configuration (docs/configuration.md)."""

    url: str
    password_file: Path | None = None
    pool_min: int = 1
    pool_max: int = 10
    connect_timeout: float = 5.0
    # How long a request may wait for a connection from the pool before the store is unavailable.
    acquire_timeout: float = 5.0
    purge_seconds: float = 60.0


class PostgresStore:
    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], purge: float):
        self._pool = pool
        self._group = GroupCommit(self._insert)
        self._purge_seconds = purge
        self._purger: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(cls, options: PostgresOptions) -> PostgresStore:
        kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(options.connect_timeout)),
            "application_name": "blauweknop-gateway",
        }
        if options.password_file is not None:
            try:
                kwargs["password"] = options.password_file.read_text().strip()
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot read [store] password_file {options.password_file}: {exc}"
                ) from exc
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            options.url,
            kwargs=kwargs,
            min_size=options.pool_min,
            max_size=options.pool_max,
            timeout=options.acquire_timeout,
            open=False,
            name="blauweknop-store",
        )
        try:
            await pool.open(wait=True, timeout=options.connect_timeout)
            async with pool.connection() as conn:
                await _check_durability(conn)
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    await conn.execute(_SCHEMA)
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            await pool.close()
            raise StoreUnavailable(
                f"cannot open the PostgreSQL store ({_redact(options.url)}): {exc}; check "
                "[store] url, password_file, and that the server accepts this client"
            ) from exc
        except StoreUnavailable:
            await pool.close()
            raise
        store = cls(pool, options.purge_seconds)
        store._purger = asyncio.create_task(store._purge_loop())
        return store

    @property
    def is_open(self) -> bool:
        return not self._closed

    async def ping(self) -> None:
        try:
            async with self._pool.connection(timeout=2.0) as conn:
                await conn.execute("SELECT 1")
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise StoreUnavailable(f"PostgreSQL store does not answer: {exc}") from exc

    def leadership(self, name: str, *, retry_seconds: float = 2.0) -> Election:
        """A session-level advisory lock on a connection of its own, outside the pool.

        The lock lives exactly as long as that connection: a holder killed outright frees it
        the moment its socket closes, a lost machine once the server's TCP keepalives give up.
        """
        lock = _AdvisoryLock(self._pool, check_role_name(name), retry_seconds)
        return Election(name, lock, retry_seconds=retry_seconds)

    async def _exec(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall() if cursor.description else []
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise StoreUnavailable(f"PostgreSQL store failed: {exc}") from exc

    async def append(self, records: Sequence[OutboxRecord]) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        await self._group.append(records)

    async def _insert(self, records: list[OutboxRecord]) -> None:
        async with (
            self._pool.connection() as conn,
            conn.transaction(),
            conn.cursor() as cursor,
        ):
            await cursor.executemany(
                "INSERT INTO blauweknop_outbox (event_id, key, payload) VALUES (%s, %s, %s)",
                [(r.event_id, r.key, r.payload) for r in records],
            )

    def follow_appends(self, listener: Callable[[Sequence[OutboxRecord]], None]) -> None:
        """Never calls `listener`: identity values are not in commit order across replicas."""

    async def unsent(self, limit: int) -> Sequence[OutboxRecord]:
        rows = await self._exec(
            "SELECT event_id, key, payload, seq FROM blauweknop_outbox WHERE NOT sent "
            "ORDER BY seq LIMIT %s",
            (limit,),
        )
        return [OutboxRecord(r[0], r[1], bytes(r[2]), int(r[3])) for r in rows]

    async def mark_sent(self, seqs: Sequence[int]) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.connection() as conn, conn.transaction():
                # Not waited for: a mark lost in a crash only means those events are sent
                # again (same ids, same bytes), and the relay need not wait for a WAL flush.
                await conn.execute("SET LOCAL synchronous_commit TO OFF")
                await conn.execute(
                    "UPDATE blauweknop_outbox SET sent = TRUE WHERE seq = ANY(%s)", (list(seqs),)
                )
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise StoreUnavailable(f"PostgreSQL store failed: {exc}") from exc

    async def prune_sent(self, older_than: float, limit: int = 10_000) -> int:
        rows = await self._exec(
            "DELETE FROM blauweknop_outbox WHERE seq IN (SELECT seq FROM blauweknop_outbox "
            "WHERE sent AND stored_at < now() - make_interval(secs => %s) ORDER BY seq "
            "LIMIT %s) RETURNING seq",
            (older_than, limit),
        )
        return len(rows)

    async def backlog(self) -> int:
        rows = await self._exec("SELECT count(*) FROM blauweknop_outbox WHERE NOT sent", ())
        return int(rows[0][0])

    async def put_new(self, namespace: str, key: str, value: bytes, ttl: float) -> bool:
        return bool(await self._exec(_PUT_NEW, (namespace, key, value, float(ttl))))

    async def take(self, namespace: str, key: str) -> bytes | None:
        rows = await self._exec(_TAKE, (namespace, key))
        return bytes(rows[0][0]) if rows else None

    async def get(self, namespace: str, key: str) -> bytes | None:
        rows = await self._exec(_GET, (namespace, key))
        return bytes(rows[0][0]) if rows else None

    async def put_version(
        self, kind: str, key: str, body: bytes, *, expected_version: int
    ) -> DocumentVersion:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.connection() as conn, conn.transaction():
                # Writers of one kind go one at a time, so sequence numbers commit in order and
                # a reader polling head() never misses a version that commits late.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (kind,))
                cursor = await conn.execute(
                    "SELECT coalesce(max(version), 0) FROM blauweknop_documents "
                    "WHERE kind = %s AND key = %s",
                    (kind, key),
                )
                row = await cursor.fetchone()
                latest = int(row[0]) if row else 0
                if latest != expected_version:
                    raise VersionConflict(
                        f"{kind} {key!r} is at version {latest}, not {expected_version}: "
                        "read it again"
                    )
                cursor = await conn.execute(
                    "INSERT INTO blauweknop_documents (kind, key, version, body, created) "
                    "VALUES (%s, %s, %s, %s, extract(epoch FROM now())) RETURNING seq, created",
                    (kind, key, expected_version + 1, body),
                )
                inserted = await cursor.fetchone()
        except psycopg.errors.UniqueViolation as exc:
            raise VersionConflict(f"{kind} {key!r} changed meanwhile: read it again") from exc
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise StoreUnavailable(f"document could not be written: {exc}") from exc
        assert inserted is not None
        return DocumentVersion(
            kind, key, expected_version + 1, body, int(inserted[0]), float(inserted[1])
        )

    async def get_latest(self, kind: str, key: str) -> DocumentVersion | None:
        rows = await self._exec(
            f"SELECT {_DOC_COLUMNS} FROM blauweknop_documents "  # noqa: S608
            "WHERE kind = %s AND key = %s ORDER BY version DESC LIMIT 1",
            (kind, key),
        )
        return _document(rows[0]) if rows else None

    async def list_latest(self, kind: str) -> Sequence[DocumentVersion]:
        rows = await self._exec(
            f"SELECT DISTINCT ON (key) {_DOC_COLUMNS} FROM blauweknop_documents "  # noqa: S608
            "WHERE kind = %s ORDER BY key, version DESC",
            (kind,),
        )
        return [_document(r) for r in rows]

    async def history(self, kind: str, key: str) -> Sequence[DocumentVersion]:
        rows = await self._exec(
            f"SELECT {_DOC_COLUMNS} FROM blauweknop_documents "  # noqa: S608
            "WHERE kind = %s AND key = %s ORDER BY version",
            (kind, key),
        )
        return [_document(r) for r in rows]

    async def head(self, kind: str) -> int:
        rows = await self._exec(
            "SELECT coalesce(max(seq), 0) FROM blauweknop_documents WHERE kind = %s", (kind,)
        )
        return int(rows[0][0])

    async def increment(self, namespace: str, key: str, window: float) -> int:
        rows = await self._exec(_INCREMENT, (namespace, key, float(window)))
        return int(rows[0][0])

    async def purge_expired(self, limit: int = 10_000) -> int:
        """Delete up to `limit` expired keys; how many went."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.connection() as conn:
                cursor = await conn.execute(_PURGE, (limit,))
                purged = cursor.rowcount
                await conn.execute(_PURGE_COUNTERS, (limit,))
                return purged
        except (psycopg.Error, PoolTimeout, OSError) as exc:
            raise StoreUnavailable(f"PostgreSQL store failed: {exc}") from exc

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(self._purge_seconds)
            try:
                await self.purge_expired()
            except StoreUnavailable:
                log.warning("purging expired keys failed; retrying later", exc_info=True)

    async def close(self) -> None:
        """Finish the appends already queued, then close the pool."""
        if self._closed:
            return
        self._closed = True
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self._group.drain()
        await self._pool.close()


class _AdvisoryLock:
    """One leadership role as `pg_try_advisory_lock` held on a dedicated connection."""

    def __init__(
        self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]], role: str, retry: float
    ) -> None:
        self._pool = pool
        self._role = role
        self._retry = retry
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        # The pool's own connection settings (password, timeouts); open() made them a dict.
        kwargs = dict(self._pool.kwargs) if isinstance(self._pool.kwargs, dict) else {}
        kwargs["application_name"] = f"blauweknop-leader-{self._role}"[:63]
        # Both ends watch the connection: ours notices a dead server or network within seconds,
        # the server frees the lock of a vanished holder (no FIN: a lost machine) in ~20 s
        # rather than after the operating system's default of two hours.
        kwargs |= {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2}
        kwargs["keepalives_count"] = 3
        conninfo = self._pool.conninfo if isinstance(self._pool.conninfo, str) else ""
        conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
        try:
            await conn.execute("SET tcp_keepalives_idle = 5")
            await conn.execute("SET tcp_keepalives_interval = 2")
            await conn.execute("SET tcp_keepalives_count = 3")
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def acquire(self) -> bool:
        try:
            conn = await self._connection()
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LEADER_LOCK_CLASS, self._role)
            )
            row = await cursor.fetchone()
        except (psycopg.Error, OSError):
            await self.release()
            raise
        return bool(row and row[0])

    async def confirm(self) -> bool:
        # The lock is session-level and never unlocked while held: a live session holds it.
        # Asked of the server, not of our socket, so a silently dead link counts as lost.
        if self._conn is None or self._conn.closed:
            return False
        try:
            cursor = await self._conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND pid = pg_backend_pid() AND classid = %s::oid",
                (_LEADER_LOCK_CLASS,),
            )
            row = await cursor.fetchone()
        except (psycopg.Error, OSError):
            await self.release()
            raise
        return bool(row and row[0])

    async def release(self) -> None:
        """Close the connection: the server drops the lock with the session."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self._retry)


def _document(row: tuple[Any, ...]) -> DocumentVersion:
    return DocumentVersion(row[0], row[1], int(row[2]), bytes(row[3]), int(row[4]), float(row[5]))


async def _check_durability(conn: psycopg.AsyncConnection[Any]) -> None:
    for setting in ("fsync", "synchronous_commit"):
        cursor = await conn.execute(f"SHOW {setting}")
        row = await cursor.fetchone()
        if row is not None and str(row[0]).lower() == "off":
            raise StoreUnavailable(
                f"PostgreSQL has {setting}=off, so an acknowledged audit event could be lost; "
                f"set {setting}=on for the gateway's database (ALTER DATABASE … SET {setting} = on)"
            )


def _redact(url: str) -> str:
    """The URL without a password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable url"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(info.items()))
