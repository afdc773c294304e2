"""Real signed material for the fuzz tests, made once by the real stack, and the fuzz settings.

`signed_world` starts the four sandboxes and a sandbox-mode gateway on real sockets, asks for
one citizen's bundle in all four formats and keeps what came back: each organisation's own
signed answer (byte for byte, from the bundle's provenance) and the gateway's sealed JSON,
JWS, XML and PDF. The fuzz tests mutate these; nothing here is hand-made.

Example counts: `EXAMPLES` for a cheap parser, scaled down for the slow ones so that all new
fuzz tests together stay within about a minute in the suite; `HYPOTHESIS_PROFILE=long` runs
20 times as many.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from connectors._sandbox.runner import start_sandbox
from gateway.config import Settings
from gateway.connector import Connector
from gateway.documents.service import document_trust
from gateway.documents.verify import DocumentTrust
from gateway.pki import DevPki
from tests.conftest import start_stack

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EVERYWHERE = "999990020"  # data at all four organisations
TRANSACTIE_ID = "tx-fuzz-1"

_F = TypeVar("_F", bound=Callable[..., Any])


def fuzz(examples: int) -> Callable[[_F], _F]:
    """Hypothesis settings: `examples` in the suite, 20 times as many in the long profile."""
    return settings(
        max_examples=examples * 20 if LONG else examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def encode_json(value: Any) -> bytes:
    """JSON as any other encoder may write it: big integers, lone surrogates as escapes."""
    return json.dumps(value).encode()


@dataclass(frozen=True, repr=False)
class SignedWorld:
    """What the real stack signed, and who can check it."""

    def __repr__(self) -> str:  # Hypothesis prints its arguments; these are large
        return "SignedWorld(…)"

    settings: Settings
    sources: dict[str, bytes]  # organisation code -> its signed answer, as received
    provider: bytes  # the SVB sandbox's provider-API document (the generic connector's input)
    documents: dict[str, bytes]  # json, jws, xml, pdf -> the sealed download
    trust: DocumentTrust

    @property
    def connectors(self) -> dict[str, Connector]:
        return dict(self.trust.connectors)


_ACCEPT = {
    "json": "application/json",
    "jws": "application/jose",
    "xml": "application/xml",
    "pdf": "application/pdf",
}


async def _make(state_dir: Path, pki: DevPki) -> SignedWorld:
    stack, runners = await start_stack(state_dir, pki, documents={"workers": 1})
    try:
        documents: dict[str, bytes] = {}
        for fmt, accept in _ACCEPT.items():
            async with stack.session.post(
                f"{stack.url}/v1/sandbox/bundel",
                json={"bsn": EVERYWHERE},
                headers={"Accept": accept},
            ) as response:
                body = await response.read()
                assert response.status == 200, body[:300]
                documents[fmt] = body
        bundel = orjson.loads(documents["json"])["bundel"]
        sources = {
            bron["organisatie"]["code"]: base64.b64decode(bron["herkomst"]["inhoud"])
            for bron in bundel["bronnen"]
            if bron["herkomst"] is not None
        }
        svb = await start_sandbox("svb", pki)
        runners.append(svb.runner)
        async with stack.session.post(
            f"{svb.url}/blauweknop/v1/gegevens",
            json={"transactie_id": TRANSACTIE_ID, "burgerservicenummer": EVERYWHERE},
        ) as response:
            assert response.status == 200
            provider = await response.read()
        return SignedWorld(
            stack.settings, sources, provider, documents, document_trust(stack.settings)
        )
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()


@pytest.fixture(scope="module")
def signed_world(state_dir: Path, pki: DevPki) -> Iterator[SignedWorld]:
    """Made on a loop of its own: Hypothesis drives synchronous tests."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete(_make(state_dir, pki))
    finally:
        loop.close()
