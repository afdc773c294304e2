"""The OpenAPI description against the router, and the one shape of every error, on real sockets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from bench.fuzz_api import fuzz, gateway_under_test
from gateway.app import create_app
from gateway.audit.archive import write_key_pair
from gateway.config import sandbox_organisation_table, settings_from_mapping
from gateway.openapi import HTTP_METHODS, description_file, served_bytes
from gateway.pki import DevPki
from gateway.schema import schema_bytes
from tests.conftest import Stack
from tests.production import production_config

PROBLEM = "application/problem+json"


def routed(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route; aiohttp's implicit HEAD beside a GET left out."""
    found: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info["formatter"]
        for route in resource:
            found.add((route.method, path))
    return {(m, p) for m, p in found if not (m == "HEAD" and ("GET", p) in found)}


def described(document: dict[str, object]) -> set[tuple[str, str]]:
    paths = document["paths"]
    assert isinstance(paths, dict)
    return {(m.upper(), p) for p, item in paths.items() for m in HTTP_METHODS if m in item}


def test_description_lists_exactly_the_sandbox_routes(state_dir: Path, pki: DevPki) -> None:
    app = create_app(settings_from_mapping({"state_dir": str(state_dir)}))
    assert routed(app) == described(orjson.loads(served_bytes("sandbox")))
    # The file itself too: every operation in it is routed in sandbox mode.
    assert routed(app) == described(description_file())


def test_description_lists_exactly_the_production_routes(pki: DevPki, tmp_path: Path) -> None:
    write_key_pair(tmp_path / "archivist.key", tmp_path / "archivist.pub")
    config = production_config(pki, tmp_path)
    orgs = {org: f"https://{org}.invalid" for org in ("duo", "uwv", "cak", "gemeente")}
    config["organisations"] = sandbox_organisation_table(pki, orgs)
    app = create_app(settings_from_mapping(config))
    document = orjson.loads(served_bytes("production"))
    assert routed(app) == described(document)
    assert ("POST", "/v1/sandbox/bundel") not in described(document)


async def test_served_description_carries_the_bundle_schema(stack: Stack) -> None:
    async with stack.session.get(f"{stack.url}/openapi.json") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        document = orjson.loads(await response.read())
    assert document["openapi"] == "3.1.0"
    schemas = document["components"]["schemas"]
    bundle = orjson.loads(schema_bytes())
    assert schemas["Bundel"]["required"] == bundle["required"]
    for name in bundle["$defs"]:
        assert f"Bundel.{name}" in schemas
    refs = [r for r in _refs(document) if not r.startswith("#/components/")]
    assert refs == [], "the served document is self-contained"


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for item in node for r in _refs(item)]
    return []


async def _problem(response: aiohttp.ClientResponse, status: int) -> dict[str, object]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, object] = orjson.loads(await response.read())
    assert body["status"] == status
    assert {"type", "title", "detail"} <= set(body)
    assert "aiohttp" not in response.headers.get("Server", "")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    return body


async def test_router_errors_are_problem_details_with_security_headers(stack: Stack) -> None:
    async with stack.session.get(f"{stack.url}/nergens") as response:
        body = await _problem(response, 404)
        assert "404:" not in str(body["detail"])
    async with stack.session.delete(f"{stack.url}/healthz") as response:
        await _problem(response, 405)
        assert set(response.headers["Allow"].split(",")) >= {"GET"}
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel",
        data=b"{" * (stack.settings.max_request_bytes + 1),
        headers={"Content-Type": "application/json"},
    ) as response:
        await _problem(response, 413)


BROKEN_BODIES = [
    # multipart without a boundary: aiohttp raises ValueError
    ({"Content-Type": "multipart/form-data"}, b"bsn=999990020"),
    # a part whose header line has no colon: aiohttp raises InvalidHeader
    ({"Content-Type": "multipart/form-data; boundary=b"}, b"--b\r\n[]\r\n\r\nx\r\n--b--\r\n"),
    # an unknown transfer encoding on a part: aiohttp raises RuntimeError
    (
        {"Content-Type": "multipart/form-data; boundary=b"},
        b"--b\r\nContent-Disposition: form-data; name=bestand\r\n"
        b"Content-Transfer-Encoding: x-nonsense\r\n\r\nx\r\n--b--\r\n",
    ),
    # a form in a charset Python does not know: LookupError
    ({"Content-Type": "application/x-www-form-urlencoded; charset=x-nonsense"}, b"bsn=1"),
]


@pytest.mark.parametrize(("headers", "body"), BROKEN_BODIES)
async def test_broken_bodies_are_refused_in_the_documented_shape(
    stack: Stack, headers: dict[str, str], body: bytes
) -> None:
    """Each of these was a 500 before schemathesis found them."""
    for path in ("/v1/sandbox/bundel", "/login/uitloggen"):
        async with stack.session.post(
            f"{stack.url}{path}", data=body, headers=headers, allow_redirects=False
        ) as response:
            await _problem(response, 400)
    # The verifier takes a non-multipart body as the file itself, and reads a part's bytes as
    # they are (no transfer decoding): such bodies are verified and found not valid.
    async with stack.session.post(f"{stack.url}/v1/verify", data=body, headers=headers) as response:
        if response.status == 200:
            assert orjson.loads(await response.read())["geldig"] is False
        else:
            await _problem(response, 400)
    async with stack.session.post(f"{stack.url}/verifieer", data=body, headers=headers) as response:
        assert response.status in (200, 400)
        assert response.content_type == "text/html"
    async with stack.session.post(f"{stack.url}/par", data=body, headers=headers) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        assert orjson.loads(await response.read())["error"] == "invalid_request"


async def _raw(url: str, request: bytes) -> bytes:
    """One request as bytes on a socket: aiohttp's client would refuse to send these."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return answer


@pytest.mark.parametrize(
    ("request_line", "header"),
    [
        (b"GET /login/sessie", b"Cookie: bk-sessie=a\x80b"),
        (b"POST /login/uitloggen", b"Cookie: bk-sessie=a\x80b"),
        (b"GET /login?return_to=/", b"Cookie: bk-login=" + b"\x80" * 40),
        (b"GET /v1/bundel", b"Authorization: DPoP \x80\r\nDPoP: \x80"),
    ],
)
async def test_header_bytes_that_are_not_utf8_are_no_internal_error(
    tmp_path: Path, request_line: bytes, header: bytes
) -> None:
    """Each of these was a 500: the surrogates aiohttp makes of such bytes broke our digests."""
    async with gateway_under_test(tmp_path / "state") as target:  # with DigiD: /login gets far
        answer = await _raw(
            target.url,
            request_line + b" HTTP/1.1\r\nHost: gateway\r\n" + header + b"\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, answer


@pytest.mark.slow
async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    """A short fuzzing round in CI; `make fuzz` runs a long one (docs/hostile-input.md)."""
    async with gateway_under_test(tmp_path / "state") as target:
        outcome = await fuzz(target, examples=25, report_dir=tmp_path / "report")
    # Every operation but GET /openapi.json, which schemathesis leaves out as its own schema.
    operations = len(described(orjson.loads(served_bytes("sandbox")))) - 1
    assert f"Tested: {operations}\n" in outcome.output, outcome.output
    assert outcome.passed, outcome.output
