"""The federation's tools: the conformance kit, the policy tests, the `blauweknop` commands."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp

from connectors._sandbox.runner import serve_app
from connectors.svb.sandbox import create_app as create_svb
from gateway.config import DEFAULT_POLICIES_DIR
from gateway.federation.conformance import check_provider
from gateway.federation.policytest import run_policy_tests
from gateway.pki import DevPki

BLAUWEKNOP = str(Path(sys.executable).with_name("blauweknop"))


async def test_provider_check_passes_the_svb_sandbox_and_names_each_defect_of_a_broken_one(
    pki: DevPki,
) -> None:
    good, good_port = await serve_app(create_svb(pki))
    bad, bad_port = await serve_app(create_svb(pki, broken=True))
    try:
        async with aiohttp.ClientSession() as session:
            report = await check_provider(f"http://127.0.0.1:{good_port}", session)
            assert report.conforms, report.text()
            broken = await check_provider(f"http://127.0.0.1:{bad_port}", session)
        failed = {f.check for f in broken.findings if not f.ok}
        assert not broken.conforms
        assert {
            "citizen with data: signature verifies with a registered key",
            "citizen with data: names our transaction (replay defence)",
            "citizen with data: date-times are RFC 3339 with an offset",
            "citizen with data: amounts are whole euro cents",
            "citizen without data: HTTP 200",
        } <= failed
        assert all(f.fix for f in broken.findings if not f.ok)
        assert "does not conform" in broken.text()
        # The command line says the same, with exit status 1 for a defect.
        process = await asyncio.create_subprocess_exec(
            BLAUWEKNOP,
            "provider-check",
            f"http://127.0.0.1:{bad_port}",
            stdout=asyncio.subprocess.PIPE,
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 1
        assert "fix: copy the request's transactie_id" in stdout.decode()
    finally:
        await good.cleanup()
        await bad.cleanup()


def test_policy_tests_cover_allow_and_deny_for_every_registered_purpose() -> None:
    report = run_policy_tests(DEFAULT_POLICIES_DIR)
    assert report.passed, report.text()
    run = subprocess.run(
        [BLAUWEKNOP, "policy", "test"], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert ", 0 failed" in run.stdout


def test_policy_tests_fail_when_a_policy_changes_or_a_purpose_lacks_cases(tmp_path: Path) -> None:
    target = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICIES_DIR, target)
    cedar = target / "federatie.cedar"
    # Drop the own-municipality rule: the test case for another municipality must now fail.
    text = cedar.read_text()
    start = text.index('@id("alleen-eigen-gemeente")')
    end = text.index('@id("alleen-gevraagde-categorieen")')
    cedar.write_text(text[:start] + text[end:])
    report = run_policy_tests(target)
    assert not report.passed
    assert any("never another municipality" in r.name and not r.ok for r in report.results)

    shutil.copytree(DEFAULT_POLICIES_DIR, tmp_path / "p2")
    (tmp_path / "p2" / "purposes" / "extra.toml").write_text(
        (DEFAULT_POLICIES_DIR / "purposes" / "inzage.toml")
        .read_text()
        .replace('purpose_id = "inzage-avg"', 'purpose_id = "extra-doel"')
    )
    report = run_policy_tests(tmp_path / "p2")
    assert "extra-doel: toegestaan" in report.missing
    assert "extra-doel: geweigerd" in report.missing
