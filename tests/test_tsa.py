"""RFC 3161: our client against the development TSA over HTTP, checked by `openssl ts` too."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from hypothesis import given, settings
from hypothesis import strategies as st
from rfc3161_client import decode_timestamp_response

from connectors._sandbox.runner import serve_app
from gateway.pki import DevPki
from gateway.tsa import (
    TIMESTAMP_QUERY,
    TIMESTAMP_REPLY,
    TimestampError,
    TsaTrust,
    TsaUnavailable,
    request_timestamp,
    verify_timestamp,
)
from gateway.tsa.server import DevTsa, start_dev_tsa


def openssl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The independent verifier: OpenSSL's own RFC 3161 implementation."""
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)


@pytest.fixture
async def tsa_url(pki: DevPki) -> AsyncIterator[str]:
    runner, url = await start_dev_tsa(pki)
    yield url
    await runner.cleanup()


@pytest.fixture
def trust(pki: DevPki) -> TsaTrust:
    return TsaTrust.from_files(pki.root_cert)


def test_tsa_certificate_has_critical_time_stamping_purpose(pki: DevPki) -> None:
    cert = x509.load_pem_x509_certificate(pki.identity("tsa").cert.read_bytes())
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert eku.critical
    assert list(eku.value) == [x509.oid.ExtendedKeyUsageOID.TIME_STAMPING]


async def test_token_verifies_with_our_client_and_openssl(
    tsa_url: str, trust: TsaTrust, pki: DevPki, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    message = b"blauweknop/audit\n12\nAAAA\n"
    stamp = await request_timestamp(session, tsa_url, message, trust)
    assert abs(stamp.time - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=30)
    assert "CN=tsa" in stamp.tsa_subject
    # The stored response verifies again later, without the nonce.
    assert verify_timestamp(stamp.response, message, trust).serial_number == stamp.serial_number

    (tmp_path / "data").write_bytes(message)
    (tmp_path / "resp.tsr").write_bytes(stamp.response)
    (tmp_path / "token.tst").write_bytes(stamp.token)
    for source in (["-in", "resp.tsr"], ["-in", "token.tst", "-token_in"]):
        result = openssl(
            "ts", "-verify", "-data", "data", *source, "-CAfile", str(pki.root_cert), cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Verification: OK" in result.stdout
    # openssl refuses it for other data: the check above can fail.
    (tmp_path / "other").write_bytes(message + b"x")
    result = openssl(
        "ts",
        "-verify",
        "-data",
        "other",
        "-in",
        "resp.tsr",
        "-CAfile",
        str(pki.root_cert),
        cwd=tmp_path,
    )
    assert result.returncode != 0


async def test_wrong_message_wrong_root_or_altered_token_fail(
    tsa_url: str, trust: TsaTrust, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    stamp = await request_timestamp(session, tsa_url, b"checkpoint", trust)
    with pytest.raises(TimestampError, match="does not verify"):
        verify_timestamp(stamp.response, b"another checkpoint", trust)

    stranger = DevPki(tmp_path / "other-pki")
    stranger.ensure()
    with pytest.raises(TimestampError):
        verify_timestamp(stamp.response, b"checkpoint", TsaTrust.from_files(stranger.root_cert))
    # Pinning another TSA certificate (same CA) fails too.
    pinned = TsaTrust(
        trust.roots,
        TsaTrust.from_files(stranger.identity("tsa").cert).roots[0],
    )
    with pytest.raises(TimestampError):
        verify_timestamp(stamp.response, b"checkpoint", pinned)

    token = decode_timestamp_response(stamp.response).time_stamp_token()
    signature_at = stamp.response.rindex(bytes(token)[-20:])
    altered = bytearray(stamp.response)
    altered[signature_at + 5] ^= 0x01
    with pytest.raises(TimestampError):
        verify_timestamp(bytes(altered), b"checkpoint", trust)
    with pytest.raises(TimestampError, match="not valid DER"):
        verify_timestamp(stamp.response[:-3], b"checkpoint", trust)
    with pytest.raises(TimestampError, match="at most"):
        verify_timestamp(b"\x30" * 70_000, b"checkpoint", trust)


async def test_tsa_rejects_what_it_cannot_sign(
    tsa_url: str, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    (tmp_path / "data").write_bytes(b"data")
    for options, failure in ((["-sha1"], "bad_alg"), (["-tspolicy", "1.2.3.4"], "policy")):
        made = openssl(
            "ts", "-query", "-data", "data", "-cert", *options, "-out", "q.tsq", cwd=tmp_path
        )
        assert made.returncode == 0, made.stderr
        async with session.post(
            tsa_url,
            data=(tmp_path / "q.tsq").read_bytes(),
            headers={"Content-Type": TIMESTAMP_QUERY},
        ) as answer:
            assert answer.status == 200
            response = decode_timestamp_response(await answer.read())
        assert response.status == 2, failure
    async with session.post(
        tsa_url, data=b"\x30\x03\x02\x01\x01", headers={"Content-Type": TIMESTAMP_QUERY}
    ) as answer:
        assert decode_timestamp_response(await answer.read()).status == 2


async def test_hostile_or_absent_tsa(
    trust: TsaTrust, session: aiohttp.ClientSession, tsa_url: str
) -> None:
    async def huge(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\x30" * 100_000, content_type=TIMESTAMP_REPLY)

    async def html(_: web.Request) -> web.StreamResponse:
        return web.Response(text="<html>", content_type="text/html")

    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response()

    app = web.Application()
    app.router.add_post("/huge", huge)
    app.router.add_post("/html", html)
    app.router.add_post("/slow", slow)
    runner, port = await serve_app(app)
    base = f"http://127.0.0.1:{port}"
    try:
        with pytest.raises(TimestampError, match=r"larger than|announces"):
            await request_timestamp(session, base + "/huge", b"m", trust)
        with pytest.raises(TimestampError, match="text/html"):
            await request_timestamp(session, base + "/html", b"m", trust)
        with pytest.raises(TsaUnavailable, match="did not answer"):
            await request_timestamp(session, base + "/slow", b"m", trust, timeout_seconds=0.3)
    finally:
        await runner.cleanup()
    with pytest.raises(TimestampError, match="clock"):
        await request_timestamp(
            session, tsa_url, b"m", trust, now=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        )


@pytest.fixture(scope="module")
def dev_tsa(tmp_path_factory: pytest.TempPathFactory) -> DevTsa:
    pki = DevPki(tmp_path_factory.mktemp("fuzz") / "pki")
    pki.ensure()
    return DevTsa.from_pki(pki)


@settings(max_examples=200, deadline=None)
@given(garbage=st.binary(max_size=300))
def test_tsa_answers_garbage_with_a_rejection(dev_tsa: DevTsa, garbage: bytes) -> None:
    answer = decode_timestamp_response(dev_tsa.respond(garbage))
    assert answer.status == 2
