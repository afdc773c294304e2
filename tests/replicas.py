"""Gateway replicas as real processes (`blauweknop serve`) for the tests and the soak benchmark.

The organisations' sandboxes and the stand-in DigiD run in the calling process; each replica is
its own OS process with a TOML configuration, here sharing one PostgreSQL store.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.config import sandbox_organisation_table
from gateway.pki import DevPki
from tests.postgres import PostgresServer

BLAUWEKNOP = str(Path(sys.executable).with_name("blauweknop"))
_LISTENING = re.compile(r"listening on (http://\S+)")


def toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """A small TOML writer for the configurations the tests make (strings, numbers, tables)."""
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            tables.append((f"{prefix}{key}", value))
        else:
            lines.append(f"{key} = {orjson.dumps(value).decode()}")
    out = "\n".join(lines) + "\n"
    for name, table in tables:
        out += f"\n[{name}]\n" + toml(table, f"{name}.")
    return out


async def spawn(
    config: Path, log: Path, *command: str, stdout: int = subprocess.DEVNULL
) -> asyncio.subprocess.Process:
    """`blauweknop --config CONFIG COMMAND…` as a process of its own, its stderr added to `log`.

    Without this process's BLAUWEKNOP_ variables: the configuration file alone counts.
    """
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            BLAUWEKNOP,
            "--config",
            str(config),
            *command,
            stdout=stdout,
            stderr=err,
            env={k: v for k, v in os.environ.items() if not k.startswith("BLAUWEKNOP_")},
        )


def replica_config(
    state_dir: Path,
    pki: DevPki,
    postgres: PostgresServer,
    database: str,
    sandbox_urls: Mapping[str, str],
) -> dict[str, Any]:
    """What every replica's configuration has: sandbox mode on loopback, one `database` of
    `postgres` as the store they share."""
    return {
        "mode": "sandbox",
        "host": "127.0.0.1",
        "state_dir": str(state_dir),
        "deadline_seconds": 3.0,
        "store": {"url": postgres.url(database), "password_file": str(postgres.password_file)},
        "organisations": sandbox_organisation_table(pki, sandbox_urls),
    }


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def kill(self) -> None:
        """SIGKILL: the replica dies at once, mid-request, as on a lost machine."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM, as Kubernetes does; waits for the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


def launch(
    name: str, config: Mapping[str, Any], workdir: Path
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start `blauweknop serve` with this configuration on a free port."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / f"{name}.toml"
    config_file.write_text(toml({"port": 0, **config}))
    log = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLAUWEKNOP_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [BLAUWEKNOP, "--config", str(config_file), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    return process, log


async def start_replica(name: str, config: Mapping[str, Any], workdir: Path) -> Replica:
    """Start `blauweknop serve` with this configuration on a free port; wait until it listens."""
    process, log = await asyncio.to_thread(launch, name, config, workdir)
    deadline = time.monotonic() + 30
    while True:
        text = await asyncio.to_thread(log.read_text, errors="replace")
        if found := _LISTENING.search(text):
            return Replica(name, process, found.group(1), log)
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"replica {name} did not start:\n{text[-3000:]}")
        await asyncio.sleep(0.05)
