"""Property-based fuzzing of who-are-you parsing: client assertions, ID tokens, registry requests.

* `authenticate_client` (PAR and token endpoints) with the demo portal's registered key and the
  real SQLite store: arbitrary forms, and assertions validly signed by the portal's key whose
  header and claims are each valid or arbitrary: a `Portal` or `OAuthError("invalid_client")`.
* `validate_id_token` with the gateway's real relying-party keys and its real `OidcClient`
  fetching the stand-in DigiD's JWKS over a socket: ID tokens signed by the provider's key,
  encrypted to the gateway's key or not, with arbitrary headers and claims, damaged or not: a
  `VerifiedLogin` or a `LoginError`.
* registry requests (`POST /v1/federatie/verzoeken`): `verify_request` with requests signed by
  the organisation's key, with arbitrary claims: a `Verzoek` or `RegistrationRefused`; and the
  entry inside (`parse_entry`), mutated from a real one: an `Inschrijving` or `ValueError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import event, given, note
from hypothesis import strategies as st
from joserfc import jwe
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, RSAKey

from connectors.svb.sandbox import jwks as svb_jwks
from connectors.svb.sandbox import signing_key as svb_signing_key
from gateway.authz.proofs import CLIENT_ASSERTION_TYPE, authenticate_client
from gateway.authz.registry import Portal, Registry
from gateway.config import Settings, settings_from_mapping
from gateway.demo.digid import PROVIDER, RunningDigid, start_digid
from gateway.demo.portal.keys import ClientKey, ensure_client_key
from gateway.errors import LoginError, OAuthError
from gateway.federation import registry as reg
from gateway.login.client import OidcClient
from gateway.login.idtoken import VerifiedLogin, validate_id_token
from gateway.login.keys import RelyingPartyKeys, load_rp_keys
from gateway.pki import DevPki
from gateway.store.sqlite import SqliteStore
from tests.fuzz_mutations import ODD_TEXT, byte_damage, json_mutation
from tests.fuzz_world import JSON, encode_json, fuzz

ISSUER = "http://127.0.0.1:8080"
CLIENT_ID = "demo-mijngemeente"
SLOW = 5.0


def _mostly(valid: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The valid value four times in five, so that most inputs get past the first checks."""
    return st.integers(0, 4).flatmap(lambda n: st.just(valid) if n else other)


def _rarely(valid: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The valid value eleven times in twelve: for each of many claims, most tokens valid."""
    return st.integers(0, 11).flatmap(lambda n: st.just(valid) if n else other)


def jwt_text(header: dict[str, Any], claims: Any, sign: Any) -> str:
    """A JWS over any claims JSON (also big integers and lone surrogates), signed by `sign`."""
    from gateway.jws import b64url

    head = b64url(encode_json(header))
    body = b64url(claims if isinstance(claims, bytes) else encode_json(claims))
    return f"{head}.{body}.{b64url(sign(f'{head}.{body}'.encode()))}"


@dataclass
class AuthWorld:
    loop: asyncio.AbstractEventLoop
    store: SqliteStore
    registry: Registry
    portal_key: ClientKey
    settings: Settings
    rp_keys: RelyingPartyKeys
    oidc: OidcClient
    digid: RunningDigid

    def __repr__(self) -> str:
        return "AuthWorld(…)"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> Iterator[AuthWorld]:
    """One loop, one real store, the real registry, a real stand-in DigiD on a socket."""
    state_dir = Path(tmp_path_factory.mktemp("auth"))
    loop = asyncio.new_event_loop()
    store = loop.run_until_complete(SqliteStore.open(state_dir / "store.sqlite"))
    portal_key = ensure_client_key(state_dir)
    registry = Registry.load(
        Path("policies"),
        {"state_dir": str(state_dir), "demo_portal_url": "http://127.0.0.1:8088"},
        sandbox=True,
    )
    digid = loop.run_until_complete(start_digid())
    settings = settings_from_mapping({"state_dir": str(state_dir), "oidc": {"issuer": digid.url}})
    rp_keys = load_rp_keys(settings.oidc, state_dir / "pki", sandbox=True)
    session = loop.run_until_complete(_session())
    oidc = OidcClient(settings.oidc, rp_keys, session)
    yield AuthWorld(loop, store, registry, portal_key, settings, rp_keys, oidc, digid)
    loop.run_until_complete(session.close())
    loop.run_until_complete(digid.runner.cleanup())
    loop.run_until_complete(store.close())
    loop.close()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


# --- client assertions (private_key_jwt) ----------------------------------------------------


@st.composite
def client_assertions(draw: st.DrawFn, key: ClientKey) -> str:
    now = int(time.time())
    header = {
        "alg": draw(_rarely("ES256", st.sampled_from(["none", "HS256", "EdDSA", "RS256"]) | JSON)),
        "typ": draw(_rarely("JWT", JSON)),
        "kid": draw(_rarely(key.kid, JSON)),
    }
    claims: dict[str, Any] = {
        "iss": draw(_rarely(CLIENT_ID, JSON)),
        "sub": draw(_rarely(CLIENT_ID, JSON)),
        "aud": draw(_rarely(ISSUER, JSON | st.lists(st.just(ISSUER) | st.text(), max_size=3))),
        "iat": draw(_rarely(now, JSON | ODD_TEXT)),
        "exp": draw(_rarely(now + 60, JSON | ODD_TEXT | st.just(float(2**64)))),
        "jti": draw(_rarely(str(uuid.uuid4()), JSON)),
        "nbf": draw(_rarely(now, JSON | ODD_TEXT)),
    }
    dropped = draw(_rarely(set(), st.sets(st.sampled_from(sorted(claims)), max_size=3)))
    body = {k: v for k, v in claims.items() if k not in dropped}

    def sign(message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.private_key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    token = jwt_text(header, body, sign)
    if draw(st.integers(0, 5)) == 0:
        description, damaged = draw(byte_damage(token.encode()))
        note(description)
        return damaged.decode("latin-1")
    return token


@fuzz(200)
@given(data=st.data())
def test_client_authentication_gives_a_portal_or_invalid_client(
    world: AuthWorld, data: st.DataObject
) -> None:
    form: dict[str, str] = {
        "client_assertion_type": data.draw(_mostly(CLIENT_ASSERTION_TYPE, st.text())),
        "client_assertion": data.draw(_mostly(None, st.text()))
        or data.draw(client_assertions(world.portal_key)),
    }
    if data.draw(st.booleans()):
        form["client_id"] = data.draw(_mostly(CLIENT_ID, st.text()))
    started = time.perf_counter()
    try:
        outcome: object = world.loop.run_until_complete(
            authenticate_client(form, world.registry, world.store, [ISSUER, f"{ISSUER}/par"])
        )
        event("authenticated")
    except OAuthError as error:
        outcome = error.error
        event(error.description[:40])
    assert time.perf_counter() - started < SLOW
    assert outcome == "invalid_client" or isinstance(outcome, Portal)


# --- ID tokens ------------------------------------------------------------------------------


@st.composite
def id_tokens(draw: st.DrawFn, world: AuthWorld, nonce: str) -> str:
    provider = world.digid.app[PROVIDER]
    key: RSAKey = provider.signing_keys[-1]
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": draw(_rarely(world.digid.url, JSON)),
        "aud": draw(_rarely(world.settings.oidc.client_id, JSON)),
        "azp": draw(_rarely(world.settings.oidc.client_id, JSON)),
        "sub": draw(_rarely("999990020", JSON | ODD_TEXT)),
        "sub_id_type": draw(_rarely(world.settings.oidc.sub_id_type, JSON)),
        "acr": draw(_rarely("urn:oasis:names:tc:SAML:2.0:ac:classes:Smartcard", JSON)),
        "auth_time": draw(_rarely(now, JSON)),
        "iat": draw(_rarely(now, JSON)),
        "nbf": draw(_rarely(now, JSON)),
        "exp": draw(_rarely(now + 300, JSON)),
        "nonce": draw(_rarely(nonce, JSON)),
    }
    dropped = draw(_rarely(set(), st.sets(st.sampled_from(sorted(claims)), max_size=3)))
    body: Any = {k: v for k, v in claims.items() if k not in dropped}
    if draw(st.integers(0, 9)) == 0:
        description, body = draw(json_mutation(body))
        note(description)
    header = {
        "alg": draw(_rarely("RS256", st.sampled_from(["none", "HS256", "ES256", "PS256"]) | JSON)),
        "kid": draw(_rarely(key.kid, JSON)),
        "typ": "JWT",
    }
    if draw(st.integers(0, 9)) == 0:
        header["crit"] = draw(JSON)
    token = jwt_text(header, body, lambda m: jose_sign(key, m))
    if isinstance(body, dict) and header["alg"] == "RS256" and draw(st.booleans()):
        with contextlib.suppress(UnicodeEncodeError):  # joserfc writes UTF-8 only
            token = jose_jwt.encode({"alg": "RS256", "kid": key.kid}, body, key, ["RS256"])
    if draw(st.booleans()):
        targets = world.rp_keys.encryption_keys
        target: RSAKey | ECKey = targets[draw(st.integers(0, len(targets) - 1))]
        alg = "RSA-OAEP-256" if target.key_type == "RSA" else "ECDH-ES"
        jwe_header = {
            "alg": draw(_rarely(alg, st.sampled_from(["RSA1_5", "dir", "ECDH-ES+A128KW"]))),
            "enc": draw(_rarely("A256GCM", st.sampled_from(["A128CBC-HS256", "A128GCM"]))),
            "kid": draw(_rarely(target.kid, JSON)),
            "cty": "JWT",
        }
        try:
            token = jwe.encrypt_compact(
                jwe_header, token, target, algorithms=[jwe_header["alg"], jwe_header["enc"]]
            )
        except Exception as exc:  # joserfc refuses some headers; the plain token is sent
            note(f"not encrypted: {exc!r}")
    if draw(st.integers(0, 5)) == 0:
        description, damaged = draw(byte_damage(token.encode()))
        note(description)
        token = damaged.decode("latin-1")
    return token


def jose_sign(key: RSAKey, message: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    private = key.private_key
    assert isinstance(private, rsa.RSAPrivateKey)
    return private.sign(message, padding.PKCS1v15(), hashes.SHA256())


@fuzz(150)
@given(data=st.data())
def test_id_token_validation_gives_a_login_or_login_error(
    world: AuthWorld, data: st.DataObject
) -> None:
    nonce = "n-" + uuid.uuid4().hex
    raw = data.draw(_mostly(None, st.text(max_size=200))) or data.draw(id_tokens(world, nonce))
    started = time.perf_counter()
    try:
        outcome: object = world.loop.run_until_complete(
            validate_id_token(
                raw,
                settings=world.settings.oidc,
                keys=world.rp_keys,
                signing_key=world.oidc.signing_key,
                issuer=world.digid.url,
                nonce=nonce,
                min_acr=world.settings.oidc.min_acr,
            )
        )
        event("logged in")
    except LoginError as error:
        outcome = None
        event(error.reason)
    assert time.perf_counter() - started < SLOW
    assert outcome is None or isinstance(outcome, VerifiedLogin)


# --- registry requests ----------------------------------------------------------------------


def svb_entry(pki: DevPki) -> dict[str, Any]:
    return {
        "oin": "00000099000000002000",
        "code": "svb",
        "naam": "Sociale Verzekeringsbank (SVB)",
        "connector": "generic",
        "url": "http://127.0.0.1:9105",
        "jwks": svb_jwks(pki),
        "categorieen": ["financiele-zaken", "inkomen"],
        "contactopties": [
            {"contactvorm": "telefoon", "waarde": "030 264 90 00", "omschrijving": "SVB"}
        ],
    }


RULES = reg.Rules(
    frozenset({"financiele-zaken", "inkomen", "betalingsregelingen", "contactgegevens"}),
    frozenset({"generic", "duo", "uwv", "cak", "gemeente"}),
    sandbox=True,
)


@fuzz(150)
@given(data=st.data())
def test_registry_requests_give_a_request_or_a_refusal(pki: DevPki, data: st.DataObject) -> None:
    key = svb_signing_key(pki)
    keys = reg.public_keys(svb_jwks(pki))
    kid = next(iter(keys))
    now = int(time.time())
    entry: Any = svb_entry(pki)
    for _ in range(data.draw(st.integers(0, 2))):
        description, entry = data.draw(json_mutation(entry))
        note(description)
    claims: dict[str, Any] = {
        "iss": data.draw(_rarely("00000099000000002000", JSON)),
        "aud": data.draw(_rarely(reg.AUDIENCE, JSON)),
        "iat": data.draw(_rarely(now, JSON)),
        "exp": data.draw(_rarely(now + 60, JSON)),
        "jti": data.draw(_rarely(str(uuid.uuid4()), JSON)),
        "actie": data.draw(
            _rarely("aanmelden", st.sampled_from(["wijzigen", "goedkeuren"]) | JSON)
        ),
        "oin": data.draw(_rarely("00000099000000002000", JSON)),
        "versie": data.draw(_rarely(None, JSON)),
        "inschrijving": entry,
    }
    header = {
        "alg": data.draw(_rarely("ES256", JSON)),
        "kid": data.draw(_rarely(kid, JSON)),
        "typ": "JWT",
    }

    def sign(message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    token = jwt_text(header, claims, sign)
    if data.draw(st.integers(0, 5)) == 0:
        description, damaged = data.draw(byte_damage(token.encode()))
        note(description)
        token = damaged.decode("latin-1")
    try:
        verzoek = reg.verify_request(token, keys)
    except reg.RegistrationRefused as refused:
        event(f"refused: {str(refused)[:40]}")
        return
    try:
        reg.parse_entry(verzoek.inschrijving, RULES)
        event("entry accepted")
    except ValueError as exc:
        event(f"entry refused: {str(exc)[:40]}")


@fuzz(300)
@given(entry=JSON | st.builds(dict))
def test_arbitrary_entries_give_an_entry_or_value_error(entry: Any) -> None:
    with contextlib.suppress(ValueError):
        reg.parse_entry(entry, RULES)


@pytest.mark.parametrize("connector", [["generic"], {"generic": 1}, 7, None])
def test_an_entry_whose_connector_is_no_string_is_refused(pki: DevPki, connector: object) -> None:
    """Found by the registry property: a list as connector raised TypeError (unhashable): a 500
    on POST /v1/federatie/verzoeken for a request signed with the key in the entry itself."""
    with pytest.raises(ValueError, match="cannot be registered here"):
        reg.parse_entry({**svb_entry(pki), "connector": connector}, RULES)
