"""Every audit event written to Kafka matches the JSON Schema of its type (docs/audit.md)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest

from connectors._sandbox import CITIZENS
from gateway.app import AUDIT
from gateway.audit.broker import EmbeddedBroker
from gateway.audit.schemas import event_names, schema, validate_event
from gateway.errors import SchemaViolation
from gateway.pki import DevPki
from tests.test_audit_kafka import eventually, relayed_stack, topic_records


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    assert {"organisatie.bevraagd", "bundel.uitgegeven", "document.gearchiveerd"} <= set(
        event_names()
    )
    for name in event_names():
        jsonschema_rs.meta.validate(schema(name))
        assert schema(name)["properties"]["type"]["const"] == f"nl.blauweknop.audit.{name}.v1"


async def test_real_events_match_their_schemas_and_broken_ones_do_not(
    broker: EmbeddedBroker, tmp_path: Path, pki: DevPki
) -> None:
    async with relayed_stack(tmp_path, pki, broker) as stack:
        for citizen in CITIZENS:
            for formaat in ("json", "jws"):
                async with stack.session.post(
                    f"{stack.url}/v1/sandbox/bundel", json={"bsn": citizen.bsn, "formaat": formaat}
                ) as response:
                    assert response.status == 200
        store = stack.app[AUDIT].store

        async def published() -> bool:
            return await store.backlog() == 0

        await eventually(published, 15, "everything published")
    events = [orjson.loads(r.value) for r in await topic_records(broker.kafka_config())]
    kinds = {e["type"] for e in events}
    assert kinds == {f"nl.blauweknop.audit.{n}.v1" for n in event_names()}, "all types seen"
    for event in events:
        validate_event(event)

    issued = next(e for e in events if e["type"].endswith("bundel.uitgegeven.v1"))
    asked = next(e for e in events if e["type"].endswith("organisatie.bevraagd.v1"))
    broken: list[tuple[dict[str, Any], str]] = []
    for path, value in (
        (("data", "burger"), CITIZENS[2].bsn),  # a BSN where the pseudonym belongs
        (("data", "formaten", "json"), "not a hash"),
        (("data", "extra"), "unexpected"),
        (("specversion",), "0.3"),
        (("time",), "yesterday"),
    ):
        changed = copy.deepcopy(issued)
        target = changed
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        broken.append((changed, "/".join(path)))
    wrong_status = copy.deepcopy(asked)
    wrong_status["data"]["status"] = "prima"
    broken.append((wrong_status, "status"))
    missing = copy.deepcopy(asked)
    del missing["data"]["antwoord_sha256"]
    broken.append((missing, "antwoord_sha256"))
    for event, what in broken:  # each is refused, and the message names what is wrong
        with pytest.raises(SchemaViolation, match=what.split("/")[-1]):
            validate_event(event)
    with pytest.raises(SchemaViolation, match="no schema"):
        validate_event({**issued, "type": "nl.blauweknop.audit.onbekend.v1"})
