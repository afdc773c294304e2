"""The stand-in DigiD's OpenID Connect machinery, on authlib's provider components.

authlib has no aiohttp integration, so `AiohttpRequest` is the thin adapter: the handler reads
the body asynchronously first, then hands authlib a request object it can read synchronously.
Everything lives in memory: this provider is for tests and demos only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlencode

import orjson
from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    InvalidClientError,
    InvalidRequestError,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6749.requests import OAuth2Payload
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import OpenIDCode
from cryptography.hazmat.primitives import serialization
from joserfc import jwe, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from gateway.assurance import BSN_SUB_ID_TYPE
from gateway.demo.digid.knobs import IdTokenKnobs

CODE_SECONDS = 60
ID_TOKEN_SECONDS = 300
SIGNING_ALG = "RS256"
CLIENT_ASSERTION_ALGS = ["ES256", "RS256", "PS256"]


@dataclass(slots=True)
class RegisteredClient(ClientMixin):  # type: ignore[misc]
    """A relying party registered with the stand-in: exact redirect URIs and its public keys."""

    client_id: str
    redirect_uris: tuple[str, ...]
    jwks_uri: str | None = None
    jwks: dict[str, Any] | None = None
    id_token_encrypted_response_alg: str | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # the redirect_uri is always required, and compared exactly

    def get_allowed_scope(self, scope: str | None) -> str:
        return " ".join(s for s in (scope or "").split() if s == "openid")

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return False  # no shared secrets: private_key_jwt only

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "private_key_jwt"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"

    def keyset(self, use: str) -> KeySet:
        keys = [
            k
            for k in KeySet.import_key_set(self.jwks or {"keys": []}).keys  # type: ignore[arg-type]
            if k.get("use") in (None, use)
        ]
        return KeySet(keys)


@dataclass(frozen=True, slots=True)
class DigidUser:
    bsn: str
    acr: str
    auth_time: int


@dataclass(slots=True)
class AuthorizationCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    user: DigidUser
    expires_at: float

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.user.auth_time

    def get_acr(self) -> str:
        return self.user.acr

    def get_amr(self) -> list[str]:
        return []


class _Payload(OAuth2Payload):  # type: ignore[misc]
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for key, value in pairs:
            self._datalist[key].append(value)
        self._data = {k: v[0] for k, v in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class AiohttpRequest(OAuth2Request):  # type: ignore[misc]
    """What authlib needs of a request, made from what the aiohttp handler already read."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        query: Iterable[tuple[str, str]],
        form: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(method=method, uri=uri, headers=dict(headers))
        self._args = list(query)
        self._form = list(form)
        self.payload = _Payload(self._form if method == "POST" else self._args)

    @property
    def args(self) -> dict[str, str]:
        return dict(self._args)

    @property
    def form(self) -> dict[str, str]:
        return dict(self._form)


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE is required of every client, with S256; `plain` and a missing challenge are refused."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge (S256).")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Only code_challenge_method=S256 is accepted, not plain.")
        super().validate_code_challenge(grant, redirect_uri)


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 client authentication against the client's registered public keys."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, provider: Provider) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self.provider = provider

    def get_audiences(self) -> list[str]:
        return [self.provider.token_endpoint, self.provider.issuer]

    def validate_jti(self, claims: Mapping[str, Any], jti: str) -> bool:
        return self.provider.use_jti(f"{claims['sub']}:{jti}")

    def resolve_client_public_key(self, client: RegisteredClient) -> KeySet:
        keys = client.keyset("sig")
        if not keys.keys:
            raise InvalidClientError(description="No public keys registered for this client.")
        return keys

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=CLIENT_ASSERTION_ALGS)
        except (JoseError, ValueError) as exc:
            raise InvalidClientError(description="The client assertion does not verify.") from exc
        self.verify_claims(token.claims)
        return token.claims


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["private_key_jwt"]
    AUTHORIZATION_CODE_LENGTH = 43

    @property
    def provider(self) -> Provider:
        provider: Provider = self.server.provider
        return provider

    def save_authorization_code(self, code: str, request: AiohttpRequest) -> None:
        data = request.payload.data
        self.provider.codes[code] = AuthorizationCode(
            code=code,
            client_id=request.client.client_id,
            redirect_uri=data["redirect_uri"],
            scope=request.scope,
            nonce=data.get("nonce"),
            code_challenge=data.get("code_challenge"),
            code_challenge_method=data.get("code_challenge_method"),
            user=request.user,
            expires_at=time.time() + CODE_SECONDS,
        )

    def query_authorization_code(
        self, code: str, client: RegisteredClient
    ) -> AuthorizationCode | None:
        # Taken on first presentation, even if the rest of the request fails: single use.
        found = self.provider.codes.pop(code, None)
        if found is None or found.client_id != client.client_id or found.expires_at < time.time():
            return None
        return found

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.provider.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> DigidUser:
        return authorization_code.user


class DigidOpenIDCode(OpenIDCode):  # type: ignore[misc]
    def __init__(self, provider: Provider) -> None:
        super().__init__(require_nonce=True)
        self.provider = provider

    def exists_nonce(self, nonce: str, request: AiohttpRequest) -> bool:
        return any(c.nonce == nonce for c in self.provider.codes.values())

    def encode_id_token(self, token: Mapping[str, Any], request: AiohttpRequest) -> str:
        return self.provider.id_token(request.client, request.authorization_code)


class Server(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, provider: Provider) -> None:
        super().__init__(scopes_supported=["openid"])
        self.provider = provider

    def query_client(self, client_id: str) -> RegisteredClient | None:
        return self.provider.clients.get(client_id)

    def save_token(self, token: Mapping[str, Any], request: AiohttpRequest) -> None:
        return None  # no userinfo endpoint: the ID token carries all there is

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

    def create_oauth2_request(self, request: Any) -> AiohttpRequest:
        assert isinstance(request, AiohttpRequest)
        return request

    def handle_response(
        self, status: int, body: Any, headers: Iterable[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        return status, body, list(headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class Provider:
    """The provider's state: clients, signing keys, codes, knobs. `issuer` is set once bound."""

    issuer: str = ""
    clients: dict[str, RegisteredClient] = field(default_factory=dict)
    signing_keys: list[RSAKey] = field(default_factory=list)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    knobs: IdTokenKnobs = field(default_factory=IdTokenKnobs)
    jwks_requests: int = 0
    pending: dict[str, tuple[list[tuple[str, str]], float]] = field(default_factory=dict)
    _jti: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.signing_keys:
            self.rotate()
        self.server = Server(self)
        self.server.register_token_generator("default", self._access_token)
        self.server.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self))
        self.server.register_grant(CodeGrant, [S256Only(required=True), DigidOpenIDCode(self)])

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    def rotate(self, *, keep_old: bool = True) -> str:
        """A new signing key signs from now on; the old one stays published unless dropped."""
        key = RSAKey.generate_key(2048, {"use": "sig", "alg": SIGNING_ALG})
        key.ensure_kid()
        self.signing_keys = [*self.signing_keys, key] if keep_old else [key]
        assert key.kid is not None
        return key.kid

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                k.as_dict(private=False, use="sig", alg=SIGNING_ALG) for k in self.signing_keys
            ]
        }

    def metadata(self) -> dict[str, Any]:
        from gateway.assurance import DIGID_LEVELS

        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": self.token_endpoint,
            "jwks_uri": f"{self.issuer}/jwks.json",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["public"],
            "scopes_supported": ["openid"],
            "claims_supported": ["sub", "sub_id_type", "acr", "auth_time", "nonce"],
            "acr_values_supported": [acr for _, _, acr in DIGID_LEVELS],
            "id_token_signing_alg_values_supported": [SIGNING_ALG],
            "id_token_encryption_alg_values_supported": ["RSA-OAEP-256", "ECDH-ES"],
            "id_token_encryption_enc_values_supported": ["A256GCM"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGS,
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": True,
            "request_parameter_supported": False,
            "x_niet_voor_productie": "stand-in DigiD: only for tests and demos",
        }

    def use_jti(self, key: str) -> bool:
        now = time.time()
        self._jti = {k: t for k, t in self._jti.items() if t > now}
        if key in self._jti:
            return False
        self._jti[key] = now + 600
        return True

    def _access_token(
        self,
        grant_type: str,
        client: RegisteredClient,
        user: Any = None,
        scope: str = "",
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        return {
            "token_type": "Bearer",
            "access_token": secrets.token_urlsafe(32),
            "expires_in": expires_in or ID_TOKEN_SECONDS,
            "scope": scope,
        }

    # --- the ID token, as the knobs say --------------------------------------------------------

    def id_token(self, client: RegisteredClient, code: AuthorizationCode) -> str:
        k = self.knobs
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://nep-digid.invalid" if k.wrong_iss else self.issuer,
            "aud": "iemand-anders" if k.wrong_aud else client.client_id,
            "sub": k.sub or code.user.bsn,
            "sub_id_type": k.sub_id_type or BSN_SUB_ID_TYPE,
            "acr": k.acr or code.user.acr,
            "auth_time": code.user.auth_time,
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_SECONDS,
            "jti": secrets.token_urlsafe(16),
        }
        if k.extra_aud_without_azp:
            claims["aud"] = [client.client_id, "ook-iemand-anders"]
        if not k.omit_nonce and code.nonce is not None:
            claims["nonce"] = "niet-de-nonce" if k.wrong_nonce else code.nonce
        if k.expired:
            claims.update(iat=now - 4000, nbf=now - 4000, exp=now - 3600)
        if k.not_yet_valid:
            claims.update(iat=now + 3600, nbf=now + 3600, exp=now + 7200)
        if k.represents:
            claims["represents"] = {"sub": "999990019", "sub_id_type": BSN_SUB_ID_TYPE}
        signed = self._sign(claims)
        return self._maybe_encrypt(signed, client)

    def _sign(self, claims: dict[str, Any]) -> str:
        k = self.knobs
        key = self.signing_keys[-1]
        payload = _b64(orjson.dumps(claims))
        if k.alg_none:
            header = _b64(orjson.dumps({"alg": "none", "typ": "JWT"}))
            return f"{header}.{payload}."
        if k.hs256_public_key:
            # The classic confusion attack: HMAC keyed with the public key everyone can fetch.
            secret = key.public_key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            header = _b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}))
            mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
            return f"{header}.{payload}.{_b64(mac)}"
        if k.unknown_kid:
            key = RSAKey.generate_key(2048, {"use": "sig"})
            key.ensure_kid()
        token: str = jwt.encode(
            {"alg": SIGNING_ALG, "kid": key.kid, "typ": "JWT"}, claims, key, [SIGNING_ALG]
        )
        if k.bad_signature:
            head, body, signature = token.split(".")
            flipped = bytearray(base64.urlsafe_b64decode(signature + "=="))
            flipped[0] ^= 0xFF
            token = f"{head}.{body}.{_b64(bytes(flipped))}"
        return token

    def _maybe_encrypt(self, token: str, client: RegisteredClient) -> str:
        k = self.knobs
        alg = client.id_token_encrypted_response_alg if k.encryption == "auto" else k.encryption
        if not alg or alg == "none":
            return token
        kty = "RSA" if alg.startswith("RSA") else "EC"
        candidates = [key for key in client.keyset("enc").keys if key.key_type == kty]
        if not candidates:
            raise InvalidClientError(description=f"No {kty} encryption key registered.")
        target: Any = candidates[0]
        kid = target.kid
        if k.wrong_encryption_key:
            target = RSAKey.generate_key(2048) if kty == "RSA" else ECKey.generate_key("P-256")
        header = {"alg": alg, "enc": "A256GCM", "cty": "JWT", "kid": kid}
        encrypted: str = jwe.encrypt_compact(header, token, target, algorithms=[alg, "A256GCM"])
        return encrypted


def authorization_query(params: Mapping[str, str]) -> str:
    return urlencode(list(params.items()))
