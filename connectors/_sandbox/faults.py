"""Fault knobs every sandbox offers, for tests and benchmarks.

Set them at start-up or at run time through `PUT /_sandbox/faults` with a JSON object; `DELETE`
resets them. The knobs act on every route outside `/_sandbox/`, except `wrong_signature`, which
each sandbox's signer honours by signing with `rogue_identity` instead of its real key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

CONTROL_PREFIX = "/_sandbox/"
_CHUNK = b"x" * (1024 * 1024)


@dataclass(slots=True)
class Faults:
    latency_ms: int = 0
    error_rate: float = 0.0
    malformed: bool = False
    hang: bool = False
    oversized: bool = False
    oversized_bytes: int = 64 * 1024 * 1024
    wrong_signature: bool = False

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown fault knob {name!r}; known: {sorted(known)}")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative number")
            setattr(self, name, type(current)(value))


FAULTS = web.AppKey("faults", Faults)
_RANDOM = web.AppKey("fault_random", random.Random)


def install_faults(app: web.Application, initial: Faults | None = None) -> None:
    """Add the fault middleware and the `/_sandbox/faults` control routes to a sandbox app."""
    app[FAULTS] = initial or Faults()
    app[_RANDOM] = random.Random(0)  # noqa: S311 - fault injection, not cryptography
    app.middlewares.append(_fault_middleware)
    app.router.add_get("/_sandbox/faults", _get_faults)
    app.router.add_put("/_sandbox/faults", _put_faults)
    app.router.add_delete("/_sandbox/faults", _reset_faults)
    app.router.add_get("/_sandbox/health", _health)


@web.middleware
async def _fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(CONTROL_PREFIX):
        return await handler(request)
    faults = request.app[FAULTS]
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.error_rate and request.app[_RANDOM].random() < faults.error_rate:
        return web.Response(status=503, text="sandbox fault: service unavailable")
    if faults.hang:
        return await _never_finish(request)
    if faults.oversized:
        return await _oversized(request, faults.oversized_bytes)
    response = await handler(request)
    if faults.malformed and isinstance(response, web.Response):
        return web.Response(
            status=response.status,
            body=b"\x00<<{ sandbox fault: this is not what you expect",
            content_type=response.content_type,
        )
    return response


async def _never_finish(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = 1024 * 1024
    await response.prepare(request)
    await response.write(b"<")
    await asyncio.sleep(3600)
    return response


async def _oversized(request: web.Request, size: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await response.prepare(request)
    sent = 0
    while sent < size:
        await response.write(_CHUNK)
        sent += len(_CHUNK)
    await response.write_eof()
    return response


async def _get_faults(request: web.Request) -> web.Response:
    return web.json_response(asdict(request.app[FAULTS]), dumps=lambda o: orjson.dumps(o).decode())


async def _put_faults(request: web.Request) -> web.Response:
    try:
        values = orjson.loads(await request.read())
        if not isinstance(values, dict):
            raise ValueError("expected a JSON object of fault knobs")
        fresh = Faults()
        fresh.update(values)
    except (orjson.JSONDecodeError, ValueError) as exc:
        return web.json_response({"error": str(exc)}, status=400)
    # Change the app's object in place: replacing app state after start-up is deprecated.
    request.app[FAULTS].update(asdict(fresh))
    return await _get_faults(request)


async def _reset_faults(request: web.Request) -> web.Response:
    request.app[FAULTS].update(asdict(Faults()))
    return await _get_faults(request)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@cache
def rogue_identity(
    key_type: str,
) -> tuple[ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, x509.Certificate]:
    """A key and self-signed certificate that nobody trusts, for the `wrong_signature` knob."""
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1())
        if key_type == "ec"
        else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue signer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert
