"""`blauweknop audit tail` and `audit find`, run as an auditor runs them: as commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest

from connectors._sandbox import CITIZENS
from gateway.app import AUDIT
from gateway.audit.broker import EmbeddedBroker
from gateway.pki import DevPki
from tests.test_audit_kafka import eventually, relayed_stack
from tests.test_demo import free_ports

BLAUWEKNOP = str(Path(sys.executable).with_name("blauweknop"))


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        BLAUWEKNOP,
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_find_lists_what_one_citizen_received_and_tail_decodes_events(
    broker: EmbeddedBroker, tmp_path: Path, pki: DevPki
) -> None:
    citizen, other = CITIZENS[2], CITIZENS[3]
    async with relayed_stack(tmp_path, pki, broker) as stack:
        mine: dict[str, dict[str, Any]] = {}
        for bsn in (citizen.bsn, other.bsn, citizen.bsn):
            async with stack.session.post(
                f"{stack.url}/v1/sandbox/bundel", json={"bsn": bsn}
            ) as response:
                assert response.status == 200
                body = orjson.loads(await response.read())
                if bsn == citizen.bsn:
                    mine[response.headers["X-Transactie-Id"]] = body["bundel"]
        store = stack.app[AUDIT].store

        async def published() -> bool:
            return await store.backlog() == 0

        await eventually(published, 15, "the relay published everything")
        key = tmp_path / "state" / "audit-pseudonym.key"

    kafka = ["--bootstrap-server", broker.bootstrap]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    code, out, err = await run(
        "audit", *kafka, "find", "--bsn", citizen.bsn, "--from", today, "--to", today,
        "--key", str(key), "--json",
    )  # fmt: skip
    assert code == 0, err
    report = orjson.loads(out)
    found = {t["transactie_id"]: t for t in report["transactions"]}
    assert set(found) == set(mine), "exactly this citizen's two transactions"
    for tx, bundel in mine.items():
        t = found[tx]
        assert t["bundel_id"] == bundel["bundel_id"]
        assert set(t["formaten"]) == {"json"}
        statuses = {b["organisatie"]["code"]: b["status"] for b in bundel["bronnen"]}
        assert {code: o["status"] for code, o in t["organisaties"].items()} == statuses
        assert len(t["bundel_sha256"]) == 64
    assert citizen.bsn not in out, "the BSN is never printed"

    code, out, _ = await run(
        "audit", *kafka, "find", "--bsn", citizen.bsn, "--from", "2020-01-01",
        "--to", "2020-12-31", "--key", str(key), "--json",
    )  # fmt: skip
    assert code == 0
    assert orjson.loads(out)["transactions"] == [], "nothing outside the period"

    other_key = tmp_path / "rotated.key"
    other_key.write_bytes(b"r" * 32)
    code, out, _ = await run(
        "audit", *kafka, "find", "--bsn", citizen.bsn, "--from", today, "--to", today,
        "--key", str(other_key), "--json",
    )  # fmt: skip
    assert code == 0
    other = orjson.loads(out)
    assert other["transactions"] == []
    assert other["events_with_other_keys"] > 0, "events of another key are reported, not missed"

    code, out, err = await run(
        "audit", *kafka, "find", "--bsn", "123456789", "--from", today, "--to", today
    )
    assert code == 1
    assert "11-proef" in err

    code, out, err = await run(
        "audit", *kafka, "tail", "--from-beginning", "--json", "--limit", "15"
    )
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["offset"] for line in lines] == sorted(line["offset"] for line in lines)
    assert len(lines) == 15
    assert {line["event"]["transactieid"] for line in lines} >= set(mine)
    code, out, err = await run("audit", *kafka, "tail", "--from-beginning", "--limit", "3")
    assert code == 0, err
    assert "organisatie.bevraagd" in out
    assert "tx=" in out


async def test_commands_say_where_kafka_is_missing(tmp_path: Path) -> None:
    code, _, err = await run("audit", "tail", env={"BLAUWEKNOP_STATE_DIR": str(tmp_path)})
    assert code == 1
    assert "bootstrap_servers" in err
    assert "blauweknop up" in err


@pytest.mark.slow
def test_demo_stack_has_an_audit_stream_that_tail_reads(tmp_path: Path) -> None:
    # The stack also uses base + 8 (TSA) and + 10 (DigiD); the portal gets base + 5, not 8088.
    base = free_ports(11)
    env = {
        **os.environ,
        "BLAUWEKNOP_STATE_DIR": str(tmp_path / "state"),
        "BLAUWEKNOP_PORT": str(base + 4),
        "BLAUWEKNOP_SANDBOX_BASE_PORT": str(base),
        "BLAUWEKNOP_DEMO_PORTAL_PORT": str(base + 5),
    }
    demo = subprocess.Popen(
        [BLAUWEKNOP, "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert demo.stdout is not None
        banner = [demo.stdout.readline() for _ in range(2)]
        assert "listening on" in banner[0], banner
        request = urllib.request.Request(
            f"http://127.0.0.1:{base + 4}/v1/sandbox/bundel",
            data=orjson.dumps({"bsn": "999990020"}),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            tx = response.headers["X-Transactie-Id"]
        # No Kafka settings: `audit tail` finds the demo's broker through the state dir.
        tail = subprocess.run(
            [BLAUWEKNOP, "audit", "tail", "--from-beginning", "--json", "--limit", "6"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert tail.returncode == 0, tail.stderr
        events = [orjson.loads(line)["event"] for line in tail.stdout.splitlines()]
        assert {e["transactieid"] for e in events} == {tx}
        assert events[-1]["type"] == "nl.blauweknop.audit.bundel.uitgegeven.v1"
    finally:
        demo.send_signal(signal.SIGTERM)
        code = demo.wait(30)
    assert code == 0
    assert not (tmp_path / "state" / "kafka-bootstrap").exists(), "the address is removed"
