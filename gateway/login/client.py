"""The gateway's side of OpenID Connect towards DigiD: discovery, JWKS, the code exchange.

authlib supplies the protocol pieces (the authorization URL, the S256 code challenge and the
RFC 7523 client assertion); the HTTP is aiohttp with a size and time limit on every call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7523.assertion import private_key_jwt_sign
from authlib.oauth2.rfc7523.client import ASSERTION_TYPE
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from gateway.config import OidcSettings
from gateway.errors import LoginError
from gateway.login.keys import RelyingPartyKeys

log = logging.getLogger(__name__)

_REQUIRED_METADATA = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")
#: After a failed discovery, wait this long before trying again (a login attempt retries).
_DISCOVERY_RETRY_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    document: Mapping[str, Any]


def unavailable(what: str, exc: BaseException | str) -> LoginError:
    return LoginError(
        "temporarily_unavailable",
        "provider_unreachable",
        f"The identity provider could not be reached ({what}: {exc}). Try again in a minute.",
        status=503,
    )


class OidcClient:
    """One identity provider: its metadata and keys, cached, and the calls to it."""

    def __init__(
        self, settings: OidcSettings, keys: RelyingPartyKeys, session: aiohttp.ClientSession
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.session = session
        self._metadata: ProviderMetadata | None = None
        self._metadata_failed_at = 0.0
        self._metadata_error: LoginError | None = None
        self._metadata_lock = asyncio.Lock()
        self._jwks: dict[str, RSAKey | ECKey] = {}
        self._jwks_fetched_at = float("-inf")
        self._jwks_lock = asyncio.Lock()
        self._last_kid_refetch = float("-inf")
        self.jwks_fetches = 0

    @property
    def timeout(self) -> aiohttp.ClientTimeout:
        s = self.settings
        return aiohttp.ClientTimeout(
            total=s.connect_timeout + s.read_timeout,
            sock_connect=s.connect_timeout,
            sock_read=s.read_timeout,
        )

    async def prefetch(self) -> None:
        """At start-up: discovery and keys, so the first login does not wait. Best effort."""
        try:
            await self.metadata()
            await self._refresh_jwks()
        except LoginError as exc:
            log.warning("identity provider not ready at start-up: %s", exc.description)

    async def metadata(self) -> ProviderMetadata:
        if self._metadata is not None:
            return self._metadata
        async with self._metadata_lock:
            if self._metadata is not None:
                return self._metadata
            recent = time.monotonic() - self._metadata_failed_at < _DISCOVERY_RETRY_SECONDS
            if recent and (last := self._metadata_error) is not None:
                # The same answer, without hammering the provider.
                raise LoginError(last.error, last.reason, last.description, last.status)
            try:
                self._metadata = await self._discover()
            except LoginError as exc:
                self._metadata_failed_at = time.monotonic()
                self._metadata_error = exc
                raise
            return self._metadata

    async def _discover(self) -> ProviderMetadata:
        issuer = self.settings.issuer
        document = await self._get_json(f"{issuer}/.well-known/openid-configuration", "discovery")
        missing = [k for k in _REQUIRED_METADATA if not isinstance(document.get(k), str)]
        if missing:
            raise unavailable("discovery", f"the metadata lacks {missing}")
        # OpenID Connect Discovery §4.3: the issuer in the document must be the one we asked.
        if document["issuer"] != issuer:
            raise LoginError(
                "invalid_configuration",
                "issuer_mismatch",
                f"The provider at {issuer} calls itself {document['issuer']!r}; check [oidc] "
                "issuer (exact, without a trailing slash).",
                status=503,
            )
        methods = document.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            log.warning("the identity provider does not list private_key_jwt; trying anyway")
        return ProviderMetadata(
            issuer=document["issuer"],
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
            document=document,
        )

    async def signing_key(self, kid: str | None, alg: str) -> RSAKey | ECKey:
        """The provider's key for this `kid`; an unknown kid refetches the JWKS, rate-limited."""
        # Refreshed when old, so a key the provider withdrew stops being trusted.
        if time.monotonic() - self._jwks_fetched_at > self.settings.jwks_max_age_seconds:
            await self._refresh_jwks()
        key = self._pick(kid, alg)
        if key is None:
            now = time.monotonic()
            if now - self._last_kid_refetch >= self.settings.jwks_refetch_seconds:
                self._last_kid_refetch = now
                await self._refresh_jwks()
                key = self._pick(kid, alg)
        if key is None:
            raise LoginError(
                "invalid_id_token",
                "unknown_kid",
                f"The ID token is signed with key {kid!r}, which the provider does not publish.",
            )
        return key

    def _pick(self, kid: str | None, alg: str) -> RSAKey | ECKey | None:
        kty = "EC" if alg.startswith("ES") else "RSA"
        if kid is not None:
            key = self._jwks.get(kid)
            return key if key is not None and key.key_type == kty else None
        fitting = [k for k in self._jwks.values() if k.key_type == kty]
        return fitting[0] if len(fitting) == 1 else None

    async def _refresh_jwks(self) -> None:
        async with self._jwks_lock:
            meta = await self.metadata()
            document = await self._get_json(meta.jwks_uri, "JWKS")
            self.jwks_fetches += 1
            try:
                keyset = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as exc:
                raise unavailable("JWKS", f"not a valid key set: {exc}") from exc
            keys: dict[str, RSAKey | ECKey] = {}
            for key in keyset.keys:
                # Only public signing keys: a symmetric key here would let HS256 tokens through.
                public = isinstance(key, RSAKey | ECKey) and not key.is_private
                if public and key.get("use") in (None, "sig"):
                    assert isinstance(key, RSAKey | ECKey)
                    key.ensure_kid()
                    assert key.kid is not None
                    keys[key.kid] = key
            self._jwks = keys
            self._jwks_fetched_at = time.monotonic()

    def authorization_url(
        self,
        meta: ProviderMetadata,
        *,
        redirect_uri: str,
        state: str,
        nonce: str,
        code_challenge: str,
        acr_values: Sequence[str],
    ) -> str:
        extra: dict[str, str] = {
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "prompt": "login",
        }
        if acr_values:
            extra["acr_values"] = " ".join(acr_values)
        url: str = prepare_grant_uri(
            meta.authorization_endpoint,
            self.settings.client_id,
            "code",
            redirect_uri=redirect_uri,
            scope=self.settings.scope,
            state=state,
            **extra,
        )
        return url

    def client_assertion(self, meta: ProviderMetadata) -> str:
        """RFC 7523 §2.2: a short-lived JWT signed with our client key, for this provider."""
        assertion: str = private_key_jwt_sign(
            self.keys.client_key,
            client_id=self.settings.client_id,
            token_endpoint=meta.token_endpoint,
            alg=self.keys.client_alg,
            expires_in=60,
            header={"alg": self.keys.client_alg, "kid": self.keys.client_key.kid},
        )
        return assertion

    async def exchange_code(self, code: str, redirect_uri: str, code_verifier: str) -> str:
        """The token request with PKCE and private_key_jwt; returns the raw ID token."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self.settings.client_id,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.client_assertion(meta),
        }
        try:
            async with self.session.post(
                meta.token_endpoint,
                data=form,
                timeout=self.timeout,
                headers={"Accept": "application/json"},
                allow_redirects=False,
            ) as response:
                body = await self._read(response)
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable("token endpoint", type(exc).__name__) from exc
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict):
            raise unavailable("token endpoint", f"HTTP {status} without a JSON object")
        if status != 200:
            error = str(answer.get("error", "unknown"))[:100]
            description = str(answer.get("error_description", ""))[:300]
            raise LoginError(
                "token_request_refused",
                error,
                f"The identity provider refused the token request: {error} {description}".strip(),
                status=502,
            )
        id_token = answer.get("id_token")
        if not isinstance(id_token, str):
            raise LoginError(
                "invalid_id_token", "missing", "The token response carries no ID token.", 502
            )
        return id_token

    async def _get_json(self, url: str, what: str) -> dict[str, Any]:
        try:
            async with self.session.get(
                url,
                timeout=self.timeout,
                headers={"Accept": "application/json"},
                allow_redirects=False,
            ) as response:
                body = await self._read(response)
                if response.status != 200:
                    raise unavailable(what, f"HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise unavailable(what, type(exc).__name__) from exc
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise unavailable(what, "not JSON") from exc
        if not isinstance(document, dict):
            raise unavailable(what, "not a JSON object")
        return document

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.max_body_bytes
        if response.content_length is not None and response.content_length > limit:
            raise unavailable("response", f"larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise unavailable("response", f"larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
