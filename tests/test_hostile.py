"""Hostile input that kills a process: the gateway recovers without a restart."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson

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
