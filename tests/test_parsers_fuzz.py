"""Property-based fuzzing of parsers that read outside data: a clean error from our hierarchy.

Hypothesis feeds the compact-JWS parser arbitrary text and bytes, and the DPoP proof check both
arbitrary text and proofs that are validly signed (the key travels in the proof, so anyone can
sign one) but carry arbitrary headers, keys and claims: whatever comes in, the answer is a result
or an error from gateway/errors.py, never another exception (which the gateway would turn into a
500). The store is the real SQLite store. `HYPOTHESIS_PROFILE=long` runs many more examples.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.authz.proofs import DpopProof, access_token_hash, verify_dpop
from gateway.errors import OAuthError, VerificationError
from gateway.jws import b64url, parse, sign_es256
from gateway.store.sqlite import SqliteStore

EXAMPLES = 20_000 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 1000
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
URL = "https://gateway.example/v1/bundel"
TOKEN = "an-access-token-of-43-characters-0123456789"

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
# Header bytes that are not UTF-8 reach handlers as lone surrogates (aiohttp's surrogateescape).
HEADER_TEXT = st.text() | st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF))
BASE64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


# --- compact JWS -----------------------------------------------------------------------------

KEY = ec.generate_private_key(ec.SECP256R1())
GOOD = sign_es256(b'{"a":1}', KEY, {"kid": "k"}, detached=False)


def _mutations() -> st.SearchStrategy[str]:
    """Tokens near a good one: parts swapped for arbitrary base64url, JSON or text."""
    part = BASE64URL | st.text() | JSON.map(lambda v: b64url(repr(v).encode()))
    return st.tuples(part, part, part).map(".".join) | st.text() | st.just(GOOD)


@FUZZ
@given(token=_mutations() | st.binary(), detached=st.none() | st.binary(max_size=64))
def test_compact_jws_parsing_never_raises_anything_else(
    token: str | bytes, detached: bytes | None
) -> None:
    try:
        jws, _, _ = parse(token, detached_payload=detached)
    except VerificationError:
        return
    assert isinstance(jws.header, dict)


# --- DPoP proofs -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop_and_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, SqliteStore]]:
    """Hypothesis drives synchronous tests: one loop and one real store for all examples."""
    loop = asyncio.new_event_loop()
    path = Path(tmp_path_factory.mktemp("dpop")) / "store.sqlite"
    store = loop.run_until_complete(SqliteStore.open(path))
    yield loop, store
    loop.run_until_complete(store.close())
    loop.close()


def _public_jwk() -> dict[str, Any]:
    jwk: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(KEY.public_key(), as_dict=True)
    return jwk


def _mostly(valid: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The valid value four times in five: so that most proofs get past the first checks."""
    return st.integers(0, 4).flatmap(lambda n: st.just(valid) if n else other)


@st.composite
def _signed_proofs(draw: st.DrawFn) -> str:
    """A proof signed with KEY; each header and claim valid or replaced by something arbitrary."""
    valid_jwk = _public_jwk()
    jwk = draw(
        _mostly(
            valid_jwk,
            st.fixed_dictionaries({k: _mostly(v, JSON) for k, v in valid_jwk.items()}) | JSON,
        )
    )
    header = {"typ": draw(_mostly("dpop+jwt", JSON)), "alg": "ES256", "jwk": jwk}
    claims = {
        "htm": draw(_mostly("GET", JSON)),
        "htu": draw(_mostly(URL, st.text() | st.just("https://[gateway.example/"))),
        "iat": draw(_mostly(int(time.time()), JSON)),
        "jti": draw(_mostly(draw(st.text(min_size=8)), JSON)),
        "ath": draw(_mostly(access_token_hash(TOKEN), JSON)),
    }
    dropped = draw(_mostly(set(), st.sets(st.sampled_from(sorted(claims)), max_size=2)))
    body = {k: v for k, v in claims.items() if k not in dropped}
    return jwt.encode(body, KEY, algorithm="ES256", headers=header)


@FUZZ
@given(
    proof=_mostly(None, HEADER_TEXT).flatmap(lambda t: st.just(t) if t else _signed_proofs()),
    token=_mostly(TOKEN, HEADER_TEXT | st.none()),
)
def test_dpop_proof_check_never_raises_anything_else(
    loop_and_store: tuple[Any, SqliteStore], proof: str | None, token: str | None
) -> None:
    loop, store = loop_and_store
    outcome: object
    try:
        outcome = loop.run_until_complete(
            verify_dpop(proof, store, method="GET", url=URL, access_token=token)
        )
    except OAuthError as error:
        outcome = error.error
    assert outcome == "invalid_dpop_proof" or isinstance(outcome, DpopProof)
