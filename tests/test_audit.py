"""Evidence first: audit events are durably in the outbox before any data goes out."""

from __future__ import annotations

import hashlib
import hmac
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from gateway.app import AUDIT, METRICS
from gateway.audit import PseudonymKey
from tests.conftest import Stack

CITIZEN = "999990032"


async def test_every_bundle_leaves_cloudevents_in_the_outbox_without_the_bsn(
    stack: Stack,
) -> None:
    audit = stack.app[AUDIT]
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel", json={"bsn": CITIZEN}
    ) as response:
        assert response.status == 200
        body = await response.read()
        tx = response.headers["X-Transactie-Id"]
    # The session's store holds other tests' events too: this transaction's are keyed by its id.
    records = [r for r in await audit.store.unsent(1_000_000) if r.key == tx]
    assert [r.key for r in records] == [tx] * 6, "four calls, the archived document, the bundle"
    events = [orjson.loads(r.payload) for r in records]
    assert all(e["specversion"] == "1.0" and e["transactieid"] == tx for e in events)
    assert [e["id"] for e in events] == [r.event_id for r in records]
    types = [e["type"] for e in events]
    assert types.count("nl.blauweknop.audit.organisatie.bevraagd.v1") == 4
    assert types[-2:] == [
        "nl.blauweknop.audit.document.gearchiveerd.v1",
        "nl.blauweknop.audit.bundel.uitgegeven.v1",
    ]

    pseudonym = hmac.new(audit.key.secret, CITIZEN.encode(), hashlib.sha256).hexdigest()
    issued = events[-1]["data"]
    assert issued["burger"] == pseudonym
    assert issued["formaten"] == {"json": hashlib.sha256(body).hexdigest()}
    bundel = orjson.loads(body)["bundel"]
    assert issued["bundel_id"] == bundel["bundel_id"]
    answers = {e["data"]["organisatie"]["code"]: e["data"]["antwoord_sha256"] for e in events[:4]}
    assert answers == {b["organisatie"]["code"]: b["herkomst"]["sha256"] for b in bundel["bronnen"]}
    for record in records:
        assert CITIZEN.encode() not in record.payload


async def test_no_evidence_no_data(stack: Stack) -> None:
    await stack.app[AUDIT].store.close()  # the outbox can no longer be written
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel", json={"bsn": CITIZEN}
    ) as response:
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        text = await response.text()
    assert CITIZEN not in text
    assert "financiele_zaken" not in text
    async with stack.session.get(f"{stack.url}/readyz") as response:
        assert response.status == 503, "not ready without a working outbox"
    metric = stack.app[METRICS].bundles.labels("withheld_no_evidence")._value.get()
    assert metric == 1


def test_replicas_starting_together_share_one_development_pseudonym_key(tmp_path: Path) -> None:
    """Two gateway processes on a fresh state_dir once raced to create the key (seen in
    tests/test_replicas.py); every starter must end up with the same, complete key."""
    for round_ in range(20):
        state_dir = tmp_path / f"state{round_}"
        barrier = threading.Barrier(8)

        def start(
            _: int, barrier: threading.Barrier = barrier, state_dir: Path = state_dir
        ) -> bytes:
            barrier.wait()
            return PseudonymKey.development(state_dir).secret

        with ThreadPoolExecutor(8) as pool:
            secrets = list(pool.map(start, range(8)))
        assert len(set(secrets)) == 1
        assert len(secrets[0]) == 64
        assert [p.name for p in state_dir.iterdir()] == ["audit-pseudonym.key"]
