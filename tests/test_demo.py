"""The README's demo stack, started as a newcomer would: `blauweknop up` in its own process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from connectors._sandbox import CITIZENS
from gateway.config import settings_from_mapping
from gateway.documents.service import document_trust
from gateway.documents.verify import verify_file

BLAUWEKNOP = str(Path(sys.executable).with_name("blauweknop"))


def free_ports(count: int) -> int:
    """A base port with `count` consecutive free ports after it."""
    for base in range(21000, 40000, 17):
        try:
            for port in range(base, base + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def test_citizens_command_lists_every_test_citizen() -> None:
    out = subprocess.run(
        [BLAUWEKNOP, "sandbox", "citizens", "--json"], capture_output=True, check=True
    )
    listed = orjson.loads(out.stdout)
    assert [c["bsn"] for c in listed] == [c.bsn for c in CITIZENS]
    assert all(c["scenario"] and c["scenario_en"] for c in listed)


@pytest.mark.slow
def test_demo_stack_serves_a_bundle_and_stops_cleanly(tmp_path: Path) -> None:
    # sandboxes base..base+3, gateway base+4, demo portal base+5, stand-in DigiD base+10
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
        banner = demo.stdout.readline()
        assert "listening on" in banner, banner + (demo.stderr.read() if demo.stderr else "")
        gateway = f"http://127.0.0.1:{base + 4}"
        request = urllib.request.Request(
            f"{gateway}/v1/sandbox/bundel",
            data=orjson.dumps({"bsn": "999990020"}),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            bronnen = orjson.loads(response.read())["bundel"]["bronnen"]
        assert {b["status"] for b in bronnen} == {"ok"}
        with urllib.request.urlopen(f"{gateway}/", timeout=10) as response:
            assert "Citlali Bakker" in response.read().decode()
        digid = f"http://127.0.0.1:{base + 10}"
        with urllib.request.urlopen(f"{digid}/.well-known/openid-configuration") as response:
            assert orjson.loads(response.read())["issuer"] == digid
        with urllib.request.urlopen(f"{gateway}/login?return_to=/", timeout=10) as response:
            page = response.read().decode()  # followed to the stand-in's login page
        assert response.url.startswith(f"{digid}/authorize?")
        assert "niet voor productie" in page
        # The README's journey command against the running stack, as a newcomer runs it, in
        # three formats at once (three citizens): the JSON, and the certified XML and PDF.
        citizens = {"json": "999990032", "xml": "999990044", "pdf": "999990020"}
        journeys = {
            fmt: subprocess.Popen(
                [BLAUWEKNOP, "demo", "--citizen", bsn, "--format", fmt, "-o", tmp_path / fmt],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for fmt, bsn in citizens.items()
        }
        printed: dict[str, str] = {}
        for fmt, journey in journeys.items():
            out, err = journey.communicate(timeout=120)
            assert journey.returncode == 0, f"{fmt}: {out}{err}"
            assert f"127.0.0.1:{base + 5}" in out
            assert "signature verified" in out
            printed[fmt] = out
        assert "seal certificate" in printed["xml"]
        assert "time-stamp" in printed["pdf"]
        assert orjson.loads((tmp_path / "json").read_bytes())["bundel"]["bsn"] == "999990032"
        # Independently of the journey's own check, as a debt-help worker would with the file.
        trust = document_trust(settings_from_mapping({"state_dir": str(tmp_path / "state")}))
        for fmt in ("xml", "pdf"):
            verdict = verify_file((tmp_path / fmt).read_bytes(), trust)
            assert verdict.ok, (fmt, verdict.problems)
            assert verdict.format == fmt
            assert verdict.bundel is not None
            assert verdict.bundel["bsn"] == citizens[fmt]
            assert {s.provenance for s in verdict.sources} <= {"verified", "absent"}
    finally:
        demo.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = demo.wait(30)
    assert code == 0
    assert time.monotonic() - started < 15
