"""Fuzz the running gateway from its own OpenAPI description with schemathesis.

Starts the four sandboxes, the stand-in DigiD and a gateway in sandbox mode, each on a real
socket in this process, and runs schemathesis in a second process against `/openapi.json`:
every operation, `--examples` generated requests each (valid and invalid ones), with these
checks on every response:

* no 5xx (`not_a_server_error`);
* the status code, content type, headers and body are the ones the description gives;
* no stack trace or internal detail in any body (bench/fuzz_hooks.py).

    .venv/bin/python -m bench.fuzz_api [--examples N] [--seed S]    # or: make fuzz

Prints the figures (operations, test cases, failures) that docs/hostile-input.md quotes and
exits non-zero when schemathesis found a failure. tests/test_fuzz_api.py runs a short round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from connectors._sandbox.runner import serve_app
from gateway.app import create_app
from gateway.config import sandbox_organisation_table, settings_from_mapping
from gateway.demo.digid import start_digid
from gateway.pki import DevPki
from gateway.serve import start_sandboxes

REPOSITORY = Path(__file__).resolve().parent.parent  # where schemathesis imports bench.fuzz_hooks
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "no_internal_detail",  # bench/fuzz_hooks.py
)


@dataclass(frozen=True)
class Outcome:
    returncode: int
    output: str
    statuses: dict[str, Counter[str]] = field(default_factory=dict)

    def statuses_of(self, *operations: str) -> str:
        """`POST /token: 400×31 200×9`, one line per operation, for the figures in the docs."""
        return "\n".join(
            f"{op}: " + " ".join(f"{s}×{n}" for s, n in sorted(self.statuses.get(op, {}).items()))
            for op in operations
        )

    @property
    def passed(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True)
class Target:
    """A gateway under test, and what the hooks need to act as its demo portal."""

    url: str
    state_dir: Path
    redirect_uri: str  # the demo portal's registered redirect URI (never served here)

    def env(self) -> dict[str, str]:
        return {
            "BLAUWEKNOP_FUZZ_GATEWAY": self.url,
            "BLAUWEKNOP_FUZZ_STATE_DIR": str(self.state_dir),
            "BLAUWEKNOP_FUZZ_REDIRECT_URI": self.redirect_uri,
        }


@asynccontextmanager
async def gateway_under_test(state_dir: Path) -> AsyncIterator[Target]:
    """Sandboxes, stand-in DigiD and a sandbox-mode gateway on free ports."""
    pki = DevPki(state_dir / "pki")
    pki.ensure()
    base = settings_from_mapping({"state_dir": str(state_dir)})
    sandboxes = await start_sandboxes(base, any_port=True)
    digid = await start_digid()
    settings = settings_from_mapping(
        {
            "state_dir": str(state_dir),
            "deadline_seconds": 2.0,
            "organisations": sandbox_organisation_table(pki, {s.org: s.url for s in sandboxes}),
            "oidc": {"issuer": digid.url},
            # The hooks fetch bundles as one portal for one citizen; the limits have tests.
            "federation": {"rate_portal_per_minute": 100_000, "rate_citizen_per_minute": 100_000},
        }
    )
    runner, port = await serve_app(create_app(settings))
    url = f"http://127.0.0.1:{port}"
    try:
        await _register_at_digid(digid.url, url)
        redirect = f"http://{settings.host}:{settings.demo_portal_port}/blauwe-knop/callback"
        yield Target(url, state_dir, redirect)
    finally:
        for made in (runner, digid.runner, *(s.runner for s in sandboxes)):
            await made.cleanup()


async def _register_at_digid(digid_url: str, gateway_url: str) -> None:
    """Tell the stand-in DigiD where this gateway's login callback and keys are."""
    registration = {
        "redirect_uris": [f"{gateway_url}/login/callback"],
        "jwks_uri": f"{gateway_url}/login/jwks.json",
        "id_token_encrypted_response_alg": "RSA-OAEP-256",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{digid_url}/_sandbox/clients/blauweknop-gateway", json=registration) as r,
    ):
        if r.status != 200:
            raise RuntimeError(f"the stand-in DigiD refused the registration: {r.status}")


async def fuzz(
    target: Target, examples: int, report_dir: Path, seed: int | None = None, workers: int = 1
) -> Outcome:
    """Run schemathesis against `target` in its own process; the gateway keeps serving.

    One worker by default: with several, Hypothesis parses source from several threads at once,
    and CPython before 3.11.8 then crashes in its `ast` module now and then ("SystemError: AST
    constructor recursion depth mismatch"), a crash of the tool, not a finding.
    """
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{target.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        str(workers),
        "--request-timeout",
        "60",
        "--max-redirects",
        "0",
        "--suppress-health-check",
        "too_slow,filter_too_much",
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
        "--no-color",
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    # Run in the scratch directory, so schemathesis' own cache stays out of the repository.
    pythonpath = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    tally = report_dir.parent / "tally.txt"
    env = {
        **os.environ,
        **target.env(),
        "BLAUWEKNOP_FUZZ_TALLY": str(tally),
        "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks",
        "PYTHONPATH": pythonpath,
    }
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=report_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return Outcome(process.returncode, output.decode(errors="replace"), _read_tally(tally))


def _read_tally(path: Path) -> dict[str, Counter[str]]:
    """Status codes (with the OAuth error, if any) per operation, from the hooks' tally."""
    statuses: dict[str, Counter[str]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            operation, _, status = line.rpartition(" ")
            statuses.setdefault(operation, Counter())[status] += 1
    return statuses


async def _main(examples: int, seed: int | None, workers: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        async with gateway_under_test(Path(scratch) / "state") as target:
            outcome = await fuzz(target, examples, Path(scratch) / "report", seed, workers)
    print(outcome.output)
    print(outcome.statuses_of("POST /par", "POST /token", "GET /v1/bundel"))
    return outcome.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="test cases per operation")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--workers", type=int, default=1, help="schemathesis workers (more need Python ≥ 3.11.8)"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(_main(args.examples, args.seed, args.workers)))


if __name__ == "__main__":
    main()
