"""Operations commands: `config check`, and `sandbox serve --digid-for` (the compose stack's)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from pathlib import Path

import aiohttp

from tests.replicas import BLAUWEKNOP, toml


def free_base_port() -> int:
    """A base port whose four sandbox ports and the DigiD port (+10) are all free now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + 10 > 65535:
            continue
        try:
            sockets = []
            for port in (base, base + 1, base + 2, base + 3, base + 10):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no free port range")


def env_without_blauweknop() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BLAUWEKNOP_")}


def test_config_check_says_what_is_wrong(tmp_path: Path, state_dir: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(toml({"state_dir": str(state_dir)}))
    result = subprocess.run(
        [BLAUWEKNOP, "--config", str(good), "config", "check"],
        capture_output=True,
        text=True,
        env=env_without_blauweknop(),
    )
    assert result.returncode == 0, result.stderr
    assert "sandbox mode, store SQLite" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(toml({"state_dir": str(state_dir), "store": {"url": "postgresql://u:pw@db/x"}}))
    result = subprocess.run(
        [BLAUWEKNOP, "--config", str(bad), "config", "check"],
        capture_output=True,
        text=True,
        env=env_without_blauweknop(),
    )
    assert result.returncode == 1
    assert "password_file" in result.stderr
    assert "pw@" not in result.stderr


async def test_sandboxes_with_the_stand_in_digid_for_given_gateways(
    tmp_path: Path, state_dir: Path
) -> None:
    base = free_base_port()
    config = tmp_path / "sandboxes.toml"
    config.write_text(toml({"state_dir": str(state_dir), "sandbox_base_port": base}))
    gateway = "http://127.0.0.1:8081"
    process = await asyncio.create_subprocess_exec(
        BLAUWEKNOP,
        "--config",
        str(config),
        "sandbox",
        "serve",
        "--digid-for",
        gateway,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env_without_blauweknop(),
    )
    assert process.stdout is not None
    try:
        output = b""
        while b"stand-in DigiD" not in output:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, f"the sandboxes exited: {output.decode()}"
            output += line
        digid = f"http://127.0.0.1:{base + 10}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{digid}/.well-known/openid-configuration") as response:
                assert response.status == 200
                assert (await response.json())["issuer"] == digid
            async with session.get(f"http://127.0.0.1:{base}/_sandbox/health") as response:
                assert response.status == 200
            # The gateway named on the command line is registered: its callback is accepted.
            params = {
                "client_id": "blauweknop-gateway",
                "response_type": "code",
                "scope": "openid",
                "state": "s" * 16,
                "nonce": "n" * 16,
                "code_challenge": "c" * 43,
                "code_challenge_method": "S256",
            }
            async with session.get(
                f"{digid}/authorize",
                params={**params, "redirect_uri": f"{gateway}/login/callback"},
                allow_redirects=False,
            ) as response:
                assert response.status == 200, await response.text()
            async with session.get(
                f"{digid}/authorize",
                params={**params, "redirect_uri": "http://127.0.0.1:9/login/callback"},
                allow_redirects=False,
            ) as response:
                assert response.status == 400
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
