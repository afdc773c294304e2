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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

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

    @property
    def passed(self) -> bool:
        return self.returncode == 0


@asynccontextmanager
async def gateway_under_test(state_dir: Path) -> AsyncIterator[str]:
    """Sandboxes, stand-in DigiD and a sandbox-mode gateway on free ports; yields its URL."""
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
        }
    )
    runner, port = await serve_app(create_app(settings))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for made in (runner, digid.runner, *(s.runner for s in sandboxes)):
            await made.cleanup()


async def fuzz(url: str, examples: int, report_dir: Path, seed: int | None = None) -> Outcome:
    """Run schemathesis against `url` in its own process; the gateway keeps serving meanwhile."""
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "4",
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
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "bench.fuzz_hooks", "PYTHONPATH": pythonpath}
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=report_dir.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return Outcome(process.returncode, output.decode(errors="replace"))


async def _main(examples: int, seed: int | None) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        async with gateway_under_test(Path(scratch) / "state") as url:
            outcome = await fuzz(url, examples, Path(scratch) / "report", seed)
    print(outcome.output)
    return outcome.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="test cases per operation")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    sys.exit(asyncio.run(_main(args.examples, args.seed)))


if __name__ == "__main__":
    main()
