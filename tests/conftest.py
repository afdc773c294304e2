"""Fixtures shared by the tests: a development PKI, and the whole stack on real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from connectors._sandbox.runner import RunningSandbox
from gateway.app import create_app
from gateway.audit.broker import EmbeddedBroker, start_broker
from gateway.config import Settings, sandbox_organisation_table, settings_from_mapping
from gateway.connector import client_tls
from gateway.limits import serve_gateway
from gateway.pki import DevPki
from gateway.serve import start_sandboxes
from tests.postgres import PostgresServer


def fresh_state(tmp_path: Path, pki: DevPki) -> Path:
    """A state dir of its own (its own outbox) that shares the session's development PKI."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "pki").symlink_to(pki.directory)
    return state


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="session")
def pki(state_dir: Path) -> DevPki:
    made = DevPki(state_dir / "pki")
    made.ensure()
    return made


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    """A real Kafka-protocol broker (Tansu, in memory) with the audit topics, for one test."""
    started = await start_broker()
    yield started
    await started.stop()


@dataclass
class Stack:
    """The four sandboxes and a gateway, each on its own real socket."""

    url: str
    settings: Settings
    app: web.Application
    sandboxes: dict[str, RunningSandbox]
    session: aiohttp.ClientSession

    async def set_faults(self, org: str, **knobs: Any) -> None:
        # UWV's sandbox wants our client certificate on every connection, control routes too.
        settings = next(o.settings for o in self.settings.organisations if o.connector == org)
        async with self.session.put(
            f"{self.sandboxes[org].url}/_sandbox/faults",
            json=knobs,
            ssl=client_tls(settings) or True,
        ) as response:
            assert response.status == 200, await response.text()

    async def bundle(self, bsn: str, **extra: Any) -> dict[str, Any]:
        async with self.session.post(
            f"{self.url}/v1/sandbox/bundel", json={"bsn": bsn, **extra}
        ) as response:
            assert response.status == 200, await response.text()
            body: dict[str, Any] = orjson.loads(await response.read())
            return body


async def start_stack(
    state_dir: Path, pki: DevPki, **overrides: Any
) -> tuple[Stack, list[web.AppRunner]]:
    base = settings_from_mapping({"state_dir": str(state_dir)})
    sandboxes = {s.org: s for s in await start_sandboxes(base, any_port=True)}
    settings = settings_from_mapping(
        {
            "state_dir": str(state_dir),
            "deadline_seconds": 2.0,
            "organisations": sandbox_organisation_table(
                pki, {org: s.url for org, s in sandboxes.items()}
            ),
            **overrides,
        }
    )
    app = create_app(settings)
    runner, port = await serve_gateway(app, settings.limits)
    session = aiohttp.ClientSession()
    stack = Stack(f"http://127.0.0.1:{port}", replace(settings, port=port), app, sandboxes, session)
    return stack, [runner, *(s.runner for s in sandboxes.values())]


@pytest.fixture
async def stack(state_dir: Path, pki: DevPki) -> AsyncIterator[Stack]:
    made, runners = await start_stack(state_dir, pki)
    yield made
    await made.session.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (tests/postgres.py); each test its own db."""
    server = PostgresServer.start()
    yield server
    server.stop()
