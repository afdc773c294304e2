"""Every limit of `[limits]` crossed over a real socket: what the client gets, and that it ends.

The gateway runs as in production (`serve_gateway`, the `GatewayRunner`); the requests are raw
bytes where aiohttp's client would refuse to send them (a NUL in a header, a bad
Content-Length) or would not dribble them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from lxml import etree

from connectors._sandbox.runner import RunningSandbox, serve_app, start_sandbox
from connectors.duo import create as create_duo
from connectors.duo.protocol import PATH as DUO_PATH
from connectors.generic.connector import create_generic
from connectors.svb.sandbox import jwks as svb_jwks
from connectors.svb.sandbox import signing_key as svb_signing_key
from connectors.uwv import create as create_uwv
from gateway.app import create_app
from gateway.config import settings_from_mapping
from gateway.connector import DEFAULT_MAX_XML_DEPTH, ConnectorSettings, FetchRequest
from gateway.errors import ConfigError, SourceInvalid, SourceTimeout
from gateway.federation.api import FEDERATION
from gateway.limits import serve_gateway
from gateway.models import Organisatie
from gateway.pki import DevPki
from tests.conftest import fresh_state, start_stack
from tests.test_connector_duo import settings as duo_settings
from tests.test_connector_uwv import settings_for as uwv_settings
from tests.test_federation import EVERYWHERE, eventually, register_and_approve, statuses, svb_entry


@asynccontextmanager
async def gateway(
    state_dir: Path,
    deadline_seconds: float = 5.0,
    config: dict[str, Any] | None = None,
    **limits: Any,
) -> AsyncIterator[int]:
    """A sandbox gateway with these `[limits]` (and other `config`); yields its port."""
    settings = settings_from_mapping(
        {
            "state_dir": str(state_dir),
            "deadline_seconds": deadline_seconds,
            "limits": limits,
            **(config or {}),
        }
    )
    runner, port = await serve_gateway(create_app(settings), settings.limits)
    try:
        yield port
    finally:
        await runner.cleanup()


class Answer:
    """One HTTP/1.1 answer read off the socket until the server closed it."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {
            k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
        }

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/problem+json", self.headers
        body: dict[str, Any] = orjson.loads(self.body)
        assert body["status"] == self.status
        return body


async def exchange(port: int, data: bytes) -> Answer:
    """Send raw bytes, read until the server closes the connection (it must, in time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return Answer(await asyncio.wait_for(reader.read(), 5))
    finally:
        writer.close()


def assert_below_app_answer(answer: Answer, leaked: bytes) -> dict[str, Any]:
    """A problem in our shape, with our headers, that repeats nothing of what was sent."""
    body = answer.problem()
    assert answer.headers["server"] == "Blauwe Knop"
    assert "aiohttp" not in answer.body.decode()
    assert "aiohttp" not in str(answer.headers)
    assert leaked not in answer.body
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    return body


@pytest.mark.parametrize(
    ("request_bytes", "status", "leaked"),
    [
        # a header line longer than max_field_bytes
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"SECRET" * 400 + b"\r\n\r\n",
            431,
            b"SECRET",
        ),
        # a request line longer than max_line_bytes
        (b"GET /" + b"SECRET" * 400 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, b"SECRET"),
        # more than max_headers headers
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: SECRET\r\n" % i for i in range(20))
            + b"\r\n",
            400,
            b"SECRET",
        ),
        (b"G\x00T /SECRET HTTP/1.1\r\nHost: x\r\n\r\n", 400, b"SECRET"),  # bad request line
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: SE\x00CRET\r\n\r\n", 400, b"CRET"),  # NUL
        (
            b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: -SECRET\r\n\r\n",
            400,
            b"SECRET",
        ),
        (
            b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"SECRET\r\nxx\r\n0\r\n\r\n",
            400,
            b"SECRET",
        ),
    ],
    ids=[
        "header-too-long",
        "request-line-too-long",
        "too-many-headers",
        "bad-request-line",
        "nul-in-header",
        "bad-content-length",
        "bad-chunk-size",
    ],
)
async def test_what_the_http_parser_refuses_is_a_problem_in_our_shape(
    state_dir: Path, pki: DevPki, request_bytes: bytes, status: int, leaked: bytes
) -> None:
    async with gateway(
        state_dir, max_line_bytes=1024, max_field_bytes=1024, max_headers=16
    ) as port:
        answer = await exchange(port, request_bytes)
    assert answer.status == status
    body = assert_below_app_answer(answer, leaked)
    assert body["title"] in ("Kopregels te groot", "Ongeldig verzoek")
    if status == 431:
        assert "1024 bytes" in body["detail"]


async def test_headers_within_the_limits_pass(state_dir: Path, pki: DevPki) -> None:
    """The same limits let an ordinary request with a large DPoP-sized header through."""
    async with gateway(
        state_dir, max_line_bytes=1024, max_field_bytes=1024, max_headers=16
    ) as port:
        headers = {f"X-H{i}": "v" for i in range(10)} | {"X-Proof": "a" * 1000}
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/healthz", headers=headers) as response,
        ):
            assert response.status == 200


async def test_dribbled_headers_are_cut_off_with_a_408(state_dir: Path, pki: DevPki) -> None:
    async with gateway(state_dir, header_seconds=1.0) as port:
        started = time.monotonic()
        answer = await dribble(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X", 0.6)
    elapsed = time.monotonic() - started
    assert answer.status == 408
    assert answer.problem()["title"] == "Verzoek te traag ontvangen"
    assert 0.9 < elapsed < 4.0, elapsed


async def test_an_idle_connection_is_closed(state_dir: Path, pki: DevPki) -> None:
    async with gateway(state_dir, idle_seconds=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        try:
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without a word
        finally:
            writer.close()
    assert time.monotonic() - started < 2.5


async def dribble(port: int, start: bytes, more: bytes, for_seconds: float) -> Answer:
    """Send `start`, then `more` every 0.1 s for `for_seconds`; then wait for the answer.

    The dribbling stops before the limit runs out: bytes arriving as the server closes make
    its kernel reset the connection, and a reset can discard the answer before it is read.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(start)
        answered = asyncio.create_task(reader.read(65536))
        until = time.monotonic() + for_seconds
        while time.monotonic() < until:
            await asyncio.wait({answered}, timeout=0.1)
            if answered.done():
                break
            writer.write(more)
        head = await asyncio.wait_for(answered, 10)
        return Answer(head + await asyncio.wait_for(reader.read(), 5))
    finally:
        writer.close()


async def test_a_client_that_stops_reading_the_answer_is_reset(
    state_dir: Path, pki: DevPki
) -> None:
    """400 pipelined requests for /openapi.json (about 11 MB of answers), none of it read."""
    async with gateway(state_dir, send_seconds=0.5) as port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.connect(("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        try:
            request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n"
            writer.write((request + b"\r\n") * 399 + request + b"Connection: close\r\n\r\n")
            await asyncio.sleep(2.0)  # send_seconds, and more
            received = 0
            with contextlib.suppress(ConnectionResetError):
                while chunk := await asyncio.wait_for(reader.read(65536), 5):
                    received += len(chunk)
        finally:
            writer.close()
    # Each answer is over 28 kB: fewer than half of them arrived before the reset.
    assert received < 200 * 28_000, f"{received} bytes arrived: the stalled connection was kept"


async def _dribble_body(port: int, for_seconds: float) -> tuple[Answer, float]:
    """POST a 1000-byte body to /v1/verify, ten bytes every 0.1 s for `for_seconds`."""
    started = time.monotonic()
    answer = await dribble(
        port,
        b"POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{",
        b" " * 10,
        for_seconds,
    )
    return answer, time.monotonic() - started


async def test_a_dribbled_body_is_cut_off_with_a_408(state_dir: Path, pki: DevPki) -> None:
    async with gateway(state_dir, body_seconds=1.0) as port:
        answer, elapsed = await _dribble_body(port, 0.6)
    assert answer.status == 408
    assert "within 1 s;" in answer.problem()["detail"]
    assert "x-transactie-id" in answer.headers
    assert 0.9 < elapsed < 4.0, elapsed


async def test_a_request_that_takes_too_long_in_all_is_stopped_with_a_503(
    state_dir: Path, pki: DevPki
) -> None:
    async with gateway(state_dir, request_seconds=1.0, body_seconds=30, deadline_seconds=0.5) as p:
        answer, elapsed = await _dribble_body(p, 0.6)
    assert answer.status == 503
    assert answer.problem()["title"] == "Verzoek duurde te lang"
    assert 0.9 < elapsed < 4.0, elapsed


async def test_too_many_requests_in_flight_from_one_client_get_a_429(
    state_dir: Path, pki: DevPki
) -> None:
    async with gateway(state_dir, concurrent_per_client=2, body_seconds=2) as port:
        slow = [asyncio.create_task(_dribble_body(port, 1.0)) for _ in range(2)]
        await asyncio.sleep(0.3)  # both are in flight, waiting for their bodies
        url = f"http://127.0.0.1:{port}/healthz"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as response:
                assert response.status == 429
                assert response.headers["Retry-After"] == "1"
                body = orjson.loads(await response.read())
                assert body["title"] == "Te veel gelijktijdige verzoeken"
            for task in slow:
                answer, _ = await task
                assert answer.status == 408
            async with session.get(url) as response:  # once they are done, the client may again
                assert response.status == 200


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"header_seconds": 0}, "header_seconds must be positive"),
        ({"max_field_bytes": 100}, "at least 1024"),
        ({"request_seconds": 5}, "longer than deadline_seconds"),
        ({"concurrent_per_client": "many"}, "whole number"),
        ({"documents": {"max_pdf_pages": 0}}, "at least 1"),
        ({"organisations": {"duo": {"max_xml_depth": 0}}}, "at least 1"),
    ],
)
def test_unsafe_limits_are_refused(limits: dict[str, Any], message: str) -> None:
    config = limits if "documents" in limits or "organisations" in limits else {"limits": limits}
    with pytest.raises(ConfigError, match=message):
        settings_from_mapping(config)


# --- organisations: answer size, time and XML ------------------------------------------------


def depth_of(element: etree._Element) -> int:
    return 1 + max((depth_of(child) for child in element), default=0)


@pytest.mark.parametrize("org", ["duo", "uwv"])
async def test_xml_nesting_in_an_answer_is_bounded_by_max_xml_depth(
    pki: DevPki, session: aiohttp.ClientSession, org: str
) -> None:
    """The real answer passes at its own depth and is refused one level below it."""
    sandbox = await start_sandbox(org, pki)
    try:
        if org == "duo":
            config, create, bsn = duo_settings(pki, sandbox.url), create_duo, "999990019"
        else:
            config, create, bsn = uwv_settings(pki, sandbox.url), create_uwv, "999990032"
        request = FetchRequest(bsn, "tx-limits", session)
        answer = await create(config).fetch(request)
        depth = depth_of(etree.fromstring(base64.b64decode(answer.herkomst.inhoud)))
        assert depth <= DEFAULT_MAX_XML_DEPTH, "the default must take real answers"
        await create(replace(config, max_xml_depth=depth)).fetch(request)
        with pytest.raises(SourceInvalid, match=f"deeper than {depth - 1} elements"):
            await create(replace(config, max_xml_depth=depth - 1)).fetch(request)
    finally:
        await sandbox.runner.cleanup()


LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]><OverzichtAntwoord>&lol9;</OverzichtAntwoord>"
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<a>" * 100 + b"</a>" * 100, "deeper than 32 elements"),
        (b"<a>" * 100_000 + b"</a>" * 100_000, "malformed XML"),  # libxml2 stops at 256
        (LAUGHS, "DOCTYPE|amplification"),  # libxml2 may stop it first
        (b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>', "DOCTYPE"),
        (b'<!DOCTYPE a SYSTEM "http://127.0.0.1:1/evil.dtd"><a/>', "DOCTYPE"),
    ],
    ids=["deep", "very-deep", "billion-laughs", "external-entity", "external-dtd"],
)
async def test_hostile_xml_from_an_organisation_is_refused(
    pki: DevPki, session: aiohttp.ClientSession, body: bytes, message: str
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/xml")

    app = web.Application()
    app.router.add_post(DUO_PATH, answer)
    runner, port = await serve_app(app)
    try:
        connector = create_duo(duo_settings(pki, f"http://127.0.0.1:{port}"))
        started = time.monotonic()
        with pytest.raises(SourceInvalid, match=message):
            await connector.fetch(FetchRequest("999990019", "tx-limits", session))
        assert time.monotonic() - started < 2.0  # nothing was expanded
    finally:
        await runner.cleanup()


@pytest.fixture
async def svb(pki: DevPki) -> AsyncIterator[RunningSandbox]:
    running = await start_sandbox("svb", pki)
    yield running
    await running.runner.cleanup()


async def set_faults(session: aiohttp.ClientSession, url: str, **knobs: Any) -> None:
    async with session.put(f"{url}/_sandbox/faults", json=knobs) as response:
        assert response.status == 200


async def test_the_generic_connector_keeps_to_max_body_bytes_and_read_timeout(
    pki: DevPki, svb: RunningSandbox, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    jwks = tmp_path / "svb-jwks.json"
    jwks.write_bytes(orjson.dumps(svb_jwks(pki)))
    config = ConnectorSettings(
        organisatie=Organisatie("00000001001000000000", "svb", "SVB"),
        base_url=svb.url,
        trust_cert=jwks,
        read_timeout=0.5,
        max_body_bytes=64 * 1024,
        options={"allow_private": "true", "categorieen": "financiele-zaken"},
    )
    connector = create_generic(config)
    request = FetchRequest("999990020", "tx-limits", session)
    try:
        assert (await connector.fetch(request)).herkomst.handtekening == "jws"
        await set_faults(session, svb.url, oversized=True, oversized_bytes=1024 * 1024)
        with pytest.raises(SourceInvalid, match="exceeds the limit of 65536 bytes"):
            await connector.fetch(request)
        await set_faults(session, svb.url, oversized=False, latency_ms=3000)
        started = time.monotonic()
        with pytest.raises(SourceTimeout):
            await connector.fetch(request)
        assert time.monotonic() - started < 2.0
    finally:
        await connector.aclose()


async def test_the_brp_lookup_keeps_to_its_size_and_time_limits(
    state_dir: Path, pki: DevPki
) -> None:
    """A BRP answer too large or too late names no municipality; the good one does."""
    brp = await start_sandbox("brp", pki)
    stack, runners = await start_stack(
        state_dir,
        pki,
        federation={"brp_url": brp.url, "brp_timeout": 0.5, "brp_max_body_bytes": 16 * 1024},
    )
    federation = stack.app[FEDERATION]
    try:
        assert await federation.gemeentecode("999990020", stack.session) == "0363"
        await set_faults(stack.session, brp.url, oversized=True, oversized_bytes=1024 * 1024)
        assert await federation.gemeentecode("999990020", stack.session) == ""
        await set_faults(stack.session, brp.url, oversized=False, latency_ms=3000)
        started = time.monotonic()
        assert await federation.gemeentecode("999990020", stack.session) == ""
        assert time.monotonic() - started < 2.0
    finally:
        await stack.session.close()
        for runner in [*runners, brp.runner]:
            await runner.cleanup()


# --- files handed in for verification --------------------------------------------------------


def pdf_with_pages(count: int) -> bytes:
    """A minimal well-formed PDF of `count` blank pages (and no seal)."""
    kids = b" ".join(b"%d 0 R" % (3 + i) for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % count,
        *[b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >>"] * count,
    ]
    out = b"%PDF-1.7\n"
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


async def verify_over_http(port: int, data: bytes) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/v1/verify", data=data) as response,
    ):
        assert response.status == 200, await response.text()
        verdict = orjson.loads(await response.read())
    assert verdict["geldig"] is False
    problems: list[str] = verdict["problemen"]
    return problems


async def test_verification_keeps_to_the_pdf_page_and_xml_depth_limits(
    state_dir: Path, pki: DevPki
) -> None:
    documents = {"max_pdf_pages": 2, "max_xml_depth": 8, "max_verify_bytes": 4096}
    async with gateway(state_dir, config={"documents": documents}) as port:
        assert "3 pages; at most 2" in " ".join(await verify_over_http(port, pdf_with_pages(3)))
        # Within the limit the page count is no objection: the missing seal is.
        two = " ".join(await verify_over_http(port, pdf_with_pages(2)))
        assert "pages" not in two
        assert "seal" in two
        deep = b'<bundel xmlns="urn:blauweknop:xml:bundel:1">' + b"<a>" * 10 + b"</a>" * 10
        problems = await verify_over_http(port, deep + b"</bundel>")
        assert "nests deeper than 8 elements" in " ".join(problems)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/v1/verify", data=b"{" + b" " * 5000) as r,
        ):
            assert r.status == 413


def test_the_verify_command_keeps_to_the_same_limits(tmp_path: Path, pki: DevPki) -> None:
    pdf = tmp_path / "lang.pdf"
    pdf.write_bytes(pdf_with_pages(3))
    env = {
        **os.environ,
        "BLAUWEKNOP_STATE_DIR": str(pki.directory.parent),
        "BLAUWEKNOP_DOCUMENTS__MAX_PDF_PAGES": "2",
    }
    done = subprocess.run(
        [str(Path(sys.executable).with_name("blauweknop")), "verify", str(pdf), "--json"],
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0
    assert "3 pages; at most 2" in " ".join(orjson.loads(done.stdout)["problemen"])


async def test_an_organisation_that_joined_through_the_registry_keeps_to_the_federation_limits(
    tmp_path: Path, pki: DevPki, caplog: pytest.LogCaptureFixture
) -> None:
    state = fresh_state(tmp_path, pki)
    federation = {"poll_seconds": 0.1, "read_timeout": 0.5, "max_body_bytes": 64 * 1024}
    stack, runners = await start_stack(state, pki, federation=federation)
    svb = await start_sandbox("svb", pki)
    try:
        await register_and_approve(stack, state, svb_signing_key(pki), svb_entry(svb.url, pki))

        async def svb_status() -> str | None:
            return statuses(await stack.bundle(EVERYWHERE)).get("svb")

        async def svb_ok() -> bool:
            return await svb_status() == "ok"

        await eventually(svb_ok)
        await set_faults(stack.session, svb.url, oversized=True, oversized_bytes=1024 * 1024)
        assert await svb_status() == "ongeldig"
        assert "exceeds the limit of 65536 bytes" in caplog.text
        await set_faults(stack.session, svb.url, oversized=False, latency_ms=3000)
        started = time.monotonic()
        assert await svb_status() == "time-out"
        # The read timeout, not the two-second fan-out deadline of the test stack, cut it off.
        assert time.monotonic() - started < 1.5
    finally:
        await stack.session.close()
        for runner in [*runners, svb.runner]:
            await runner.cleanup()
