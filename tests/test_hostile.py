"""Hostile input that kills a process: the gateway recovers without a restart."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from tests.conftest import Stack


def _document_workers() -> list[int]:
    """This process's children that multiprocessing spawned: the document pool's workers."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == me and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


async def _verify(stack: Stack) -> int:
    async with stack.session.post(f"{stack.url}/v1/verify", data=b"{}") as response:
        if response.status == 200:
            assert orjson.loads(await response.read())["geldig"] is False
        return response.status


async def test_a_dead_document_worker_costs_one_request_not_the_gateway(stack: Stack) -> None:
    """As if a hostile file crashed a parser in C: the pool is replaced, not left broken."""
    assert await _verify(stack) == 200  # starts the workers
    workers = _document_workers()
    assert workers, "the document pool runs in spawned processes"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert await _verify(stack) == 503
    assert await _verify(stack) == 200
    assert await _verify(stack) == 200


async def test_a_client_leaving_mid_body_is_no_error_in_the_log(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow-loris client that gives up (or a closed tab) must not write a traceback at will."""
    caplog.set_level(logging.INFO, logger="gateway.app")
    port = urlsplit(stack.url).port
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/sandbox/bundel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        b'{"bsn": "9'
    )
    await writer.drain()
    await asyncio.sleep(0.2)  # the handler is now waiting for the rest of the body
    writer.close()
    await writer.wait_closed()
    for _ in range(50):
        if any("went away" in r.getMessage() for r in caplog.records):
            break
        await asyncio.sleep(0.1)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gateway.app"]
    assert (logging.INFO, "the client went away before its request was read") in messages
    assert not [m for level, m in messages if level >= logging.ERROR], messages
    async with stack.session.get(f"{stack.url}/healthz") as response:
        assert response.status == 200
