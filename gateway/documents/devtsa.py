"""The development TSA (gateway/tsa/server.py) in a process of its own, for sandbox mode.

A time-stamp token costs the development TSA about 10 ms of CPU (asn1crypto); on the gateway's
event loop that would delay every JSON request waiting behind it. So the sandbox gateway runs
the TSA in a child process at the document workers' lower priority, on its own loopback socket.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

from gateway.errors import ConfigError
from gateway.pki import DevPki

START_TIMEOUT_SECONDS = 30.0


def _serve(pki_dir: str, host: str, niceness: int, report: Connection) -> None:
    from gateway.tsa.server import start_dev_tsa

    if niceness > 0:
        os.nice(niceness)

    async def main() -> None:
        runner, url = await start_dev_tsa(DevPki(Path(pki_dir)), host=host)
        report.send(url)
        report.close()
        try:
            await asyncio.Event().wait()  # until the parent terminates us
        finally:
            await runner.cleanup()

    asyncio.run(main())


def start_dev_tsa_process(pki: DevPki, host: str, niceness: int) -> tuple[BaseProcess, str]:
    """Start the TSA process; returns it and the URL it serves (blocking: call in a thread)."""
    pki.ensure()
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(
        target=_serve,
        args=(str(pki.directory), host, niceness, send),
        name="blauweknop-dev-tsa",
        daemon=True,
    )
    process.start()
    send.close()
    if not receive.poll(START_TIMEOUT_SECONDS):
        process.terminate()
        raise ConfigError("the development TSA did not start within 30 s")
    url: str = receive.recv()
    return process, url


def stop(process: BaseProcess) -> None:
    process.terminate()
    process.join(5)
