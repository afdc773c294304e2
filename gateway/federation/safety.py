"""Registration must never make the gateway call its own network: address checks and a resolver.

Outside sandbox mode an organisation's URL must be https and its host must resolve only to
globally routable addresses. The check runs twice: when the entry is registered (a clear error
for the organisation), and at every connection through `GuardedResolver`, so a DNS name that
later resolves to 10.0.0.1 or 127.0.0.1 (DNS rebinding) is refused at call time too.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from gateway.errors import BlauweKnopError

MAX_URL_LENGTH = 512


class UnsafeAddress(BlauweKnopError):
    """A URL or resolved address the gateway refuses to call."""


def address_is_public(address: str) -> bool:
    """True only for globally routable unicast addresses (no private, loopback, link-local,
    multicast, reserved, shared (CGNAT), documentation or IPv4-mapped special addresses)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_global) and not ip.is_multicast


def check_url(url: str, *, sandbox: bool) -> str:
    """Validate an organisation's base URL statically; returns it without a trailing slash."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeAddress(f"the URL is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(url)
    allowed = ("https", "http") if sandbox else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeAddress(
            f"the URL must use https (got {parts.scheme or 'no scheme'!r}); "
            "plain http is only accepted in sandbox mode"
        )
    if not parts.hostname or parts.username or parts.password or parts.query or parts.fragment:
        raise UnsafeAddress("the URL must be scheme://host[:port][/path], with no user, query or #")
    try:
        literal = ipaddress.ip_address(parts.hostname)
    except ValueError:
        literal = None
    if literal is not None and not sandbox and not address_is_public(str(literal)):
        raise UnsafeAddress(
            f"the URL names a non-public address ({literal}); register a public https host name"
        )
    if not sandbox and parts.hostname.rstrip(".").lower() in ("localhost", "localhost.localdomain"):
        raise UnsafeAddress("the URL names localhost; register a public https host name")
    return url.rstrip("/")


class GuardedResolver(AbstractResolver):
    """Resolves like the default resolver, then refuses the host if any address is not public."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            bad = [r["host"] for r in results if not address_is_public(r["host"])]
            if bad:
                raise OSError(f"{host} resolves to a non-public address; refused")
        return results

    async def close(self) -> None:
        await self._inner.close()


async def check_resolves(url: str) -> None:
    """At registration outside sandbox mode: the host must resolve, to public addresses only."""
    host = urlsplit(url).hostname or ""
    try:
        ipaddress.ip_address(host)
        return  # a literal address was already checked by check_url
    except ValueError:
        pass
    resolver = GuardedResolver()
    try:
        await resolver.resolve(host, 443, socket.AF_UNSPEC)
    except OSError as exc:
        raise UnsafeAddress(f"{host} does not resolve to public addresses only: {exc}") from exc
    finally:
        await resolver.close()


class GuardedConnector:
    """Wraps a connector built from a registry entry so that every call it makes goes through
    `GuardedResolver`, whatever session the fan-out hands it (built-in connectors use the
    gateway's shared session, which also serves configured organisations on private networks).
    """

    def __init__(self, inner: Any, *, allow_private: bool) -> None:
        self.inner = inner
        self.organisatie = inner.organisatie
        self.contactopties = inner.contactopties
        self._allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, request: Any) -> Any:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit_per_host=64, **connector_kwargs(allow_private=self._allow_private)
            )
            self._session = aiohttp.ClientSession(connector=connector)
        return await self.inner.fetch(dataclasses.replace(request, session=self._session))

    def verify(self, raw: bytes) -> Any:
        return self.inner.verify(raw)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


def connector_kwargs(*, allow_private: bool) -> dict[str, Any]:
    """TCPConnector arguments for calls to registered organisations."""
    return {"resolver": GuardedResolver(allow_private=allow_private)}
