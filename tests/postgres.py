"""A real PostgreSQL server for the tests: Debian's binaries, a throw-away cluster, a free port.

`initdb` refuses to run as root (CI runs as root), so the cluster is made and run as the
`postgres` user (CONTEXT.md §6) in a temporary directory that user owns, with its Unix socket
there too. Password authentication (SCRAM) over loopback TCP, so the gateway's
`[store] password_file` is exercised.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "postgres"


def _bindir() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; "
            "run deploy/dev/system-packages.sh (installs Debian's postgresql)"
        )
    return Path(found[-1]).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    root: Path
    port: int
    password_file: Path
    password: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url(database), password=self.password, autocommit=True)

    def create_database(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        with self.connect() as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = _bindir()
        account = pwd.getpwnam(SUPERUSER)
        root = Path(tempfile.mkdtemp(prefix="blauweknop-pg-"))
        os.chown(root, account.pw_uid, account.pw_gid)
        password = secrets.token_urlsafe(24)
        pwfile = root / "initdb-password"
        pwfile.write_text(password)
        os.chown(pwfile, account.pw_uid, account.pw_gid)
        client_pwfile = Path(tempfile.mkdtemp(prefix="blauweknop-pgpass-")) / "password"
        client_pwfile.write_text(password + "\n")
        client_pwfile.chmod(0o600)
        as_postgres = ["runuser", "-u", SUPERUSER, "--"]
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth",
                "scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        port = _free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c shared_buffers=32MB"
        )
        subprocess.run(
            [
                *as_postgres,
                str(bindir / "pg_ctl"),
                "-D",
                str(root / "data"),
                "-l",
                str(root / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=True,
            capture_output=True,
        )
        server = cls(root, port, client_pwfile, password)
        deadline = time.monotonic() + 30
        while True:
            try:
                server.connect().close()
                return server
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    SUPERUSER,
                    "--",
                    str(_bindir() / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                check=True,
                capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.password_file.parent, ignore_errors=True)
