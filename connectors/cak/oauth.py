"""OAuth 2.0 client credentials (RFC 6749 §4.4) with one cached access token per connector."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import aiohttp
import orjson
import yarl

from gateway.connector import ConnectorSettings, client_timeout, read_limited
from gateway.errors import ConfigError, SourceInvalid, SourceUnreachable

# Renew this long before the token expires, so a request never travels with a dying token.
_RENEW_MARGIN_S = 30.0
# RFC 6750 b64token: anything else must never reach an Authorization header.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float  # time.monotonic()


class ClientCredentials:
    """Fetches and caches a bearer token; concurrent callers share one token request."""

    def __init__(self, settings: ConnectorSettings) -> None:
        self._settings = settings
        self._name = settings.organisatie.naam
        self._token_url = _option(settings, "token_url")
        if not yarl.URL(self._token_url).absolute:
            raise ConfigError(f"{self._name} option token_url must be an absolute URL")
        secret_file = Path(_option(settings, "client_secret_file"))
        try:
            secret = secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{self._name} client_secret_file {secret_file} cannot be read: {exc.strerror}"
            ) from exc
        # client_secret_basic form-encodes both parts before Basic encoding (RFC 6749 §2.3.1).
        self._authorization = aiohttp.encode_basic_auth(
            quote(_option(settings, "client_id"), safe=""), quote(secret, safe="")
        )
        self._lock = asyncio.Lock()
        self._token: _Token | None = None

    async def bearer(self, session: aiohttp.ClientSession, *, rejected: str | None = None) -> str:
        """A valid token; `rejected` is one the API refused, which is never handed out again."""
        async with self._lock:
            token = self._token
            if token is None or token.value == rejected or time.monotonic() >= token.renew_at:
                token = self._token = await self._request(session)
            return token.value

    async def _request(self, session: aiohttp.ClientSession) -> _Token:
        started = time.monotonic()
        async with session.post(
            self._token_url,
            data={"grant_type": "client_credentials"},
            headers={"Authorization": self._authorization, "Accept": "application/json"},
            timeout=client_timeout(self._settings),
        ) as response:
            body = await read_limited(response, self._settings.max_body_bytes)
            if response.status != 200:
                raise SourceUnreachable(self._refusal(response.status, body))
        return self._parse(body, started)

    def _refusal(self, status: int, body: bytes) -> str:
        try:
            error = orjson.loads(body).get("error")
        except (orjson.JSONDecodeError, AttributeError):
            error = None
        if error == "invalid_client":
            return (
                f"{self._name} token endpoint refused our client credentials "
                f"(HTTP {status} invalid_client); check client_id and client_secret_file"
            )
        detail = f" ({error})" if isinstance(error, str) else ""
        return f"{self._name} token endpoint answered HTTP {status}{detail}"

    def _parse(self, body: bytes, started: float) -> _Token:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            document = None
        if not isinstance(document, dict):
            raise SourceInvalid(f"{self._name} token endpoint did not answer with a JSON object")
        value = document.get("access_token")
        token_type = document.get("token_type")
        lifetime = document.get("expires_in")
        if not isinstance(value, str) or not _B64TOKEN.fullmatch(value):
            raise SourceInvalid(f"{self._name} token endpoint sent no usable access_token")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise SourceInvalid(f"{self._name} token endpoint sent a non-Bearer token")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
            raise SourceInvalid(f"{self._name} token endpoint sent no positive expires_in")
        # Count from when we asked, not when the answer arrived: the lifetime started earlier.
        return _Token(value, started + lifetime - min(_RENEW_MARGIN_S, lifetime / 2))


def _option(settings: ConnectorSettings, name: str) -> str:
    value = settings.options.get(name)
    if not value:
        raise ConfigError(f"{settings.organisatie.naam} connector needs the option {name!r}")
    return value
