"""schemathesis hooks for bench/fuzz_api.py: the check that no body leaks internal detail.

Loaded by schemathesis through SCHEMATHESIS_HOOKS in its own process, never by the gateway.
"""

from __future__ import annotations

from typing import Any

import schemathesis

# What a leaked exception or debug page carries: a traceback, source paths, module names of the
# libraries underneath, or the text of a Python exception.
LEAKS = (
    b"Traceback (most recent call last)",
    b'File "/',
    b'.py", line ',
    b"site-packages",
    b"aiohttp.",
    b"asyncio.",
    b"orjson.",
    b"lxml.",
    b"Exception(",
    b"Error(",
    b"object at 0x",
)


@schemathesis.check
def no_internal_detail(ctx: Any, response: Any, case: Any) -> None:
    body: bytes = response.content or b""
    found = [leak.decode() for leak in LEAKS if leak in body]
    if found:
        raise AssertionError(f"the response body shows internal detail: {found}")
    server = response.headers.get("server", [""])
    if any("python" in value.lower() or "aiohttp" in value.lower() for value in server):
        raise AssertionError(f"the Server header names the software and its version: {server}")
