"""Operations: readiness follows the store's health; the seal certificate's expiry is exported."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import KEYS
from gateway.pki import DevPki
from tests.conftest import Stack, start_stack
from tests.postgres import PostgresServer


@pytest.fixture
async def pg_stack(
    state_dir: Path, pki: DevPki, postgres: PostgresServer
) -> AsyncIterator[tuple[Stack, str]]:
    database = postgres.create_database()
    store = {
        "url": postgres.url(database),
        "password_file": str(postgres.password_file),
        "pool_max": 2,
        "connect_timeout": 1,
        "acquire_timeout": 1,
    }
    made, runners = await start_stack(state_dir, pki, store=store)
    yield made, database
    await made.session.close()
    for runner in runners:
        await runner.cleanup()


async def metric(stack: Stack, name: str) -> list[str]:
    async with stack.session.get(f"{stack.url}/metrics") as response:
        return [line for line in (await response.text()).splitlines() if line.startswith(name)]


async def test_readiness_turns_false_while_the_store_is_unreachable(
    pg_stack: tuple[Stack, str], postgres: PostgresServer
) -> None:
    stack, database = pg_stack
    async with stack.session.get(f"{stack.url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["checks"]["store"] == "ok"
    assert await metric(stack, "blauweknop_ready ") == ["blauweknop_ready 1.0"]

    with postgres.connect() as conn:
        conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
    try:
        async with stack.session.get(f"{stack.url}/readyz") as response:
            assert response.status == 503
            body = await response.json()
            assert body["ready"] is False
            assert body["checks"]["store"] != "ok"
            assert postgres.password not in await response.text()
        assert await metric(stack, "blauweknop_ready ") == ["blauweknop_ready 0.0"]
        # Liveness is not readiness: the process is fine, it must not be restarted for this.
        async with stack.session.get(f"{stack.url}/healthz") as response:
            assert response.status == 200
        # And no bundle leaves without its audit record.
        async with stack.session.post(
            f"{stack.url}/v1/sandbox/bundel", json={"bsn": "999990020"}
        ) as response:
            assert response.status == 503
    finally:
        with postgres.connect() as conn:
            conn.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    async with stack.session.get(f"{stack.url}/readyz") as response:
        assert response.status == 200, await response.text()


async def test_seal_certificate_expiry_is_exported(stack: Stack) -> None:
    ring = stack.app[KEYS]
    lines = await metric(stack, "blauweknop_signing_certificate_not_after_seconds{")
    active = [line for line in lines if f'kid="{ring.active.kid}"' in line]
    assert len(active) == 1
    assert 'role="active"' in active[0]
    expected = ring.active.chain[0].not_valid_after_utc.timestamp()
    assert float(active[0].rsplit(" ", 1)[1]) == pytest.approx(expected)
