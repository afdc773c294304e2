"""JSON Schema (2020-12) of every audit event type: the CloudEvents envelope and its `data`.

One file per type, `<name>.v1.schema.json`, documented in docs/audit.md. A new event type gets a
schema here before it is ever written; `validate_event` is what the tests run on real events.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

import jsonschema_rs
import orjson

from gateway.audit.events import EVENT_TYPE_PREFIX
from gateway.errors import SchemaViolation


def event_names() -> list[str]:
    """The event names that have a schema, e.g. `bundel.uitgegeven`."""
    return sorted(
        p.name.removesuffix(".v1.schema.json")
        for p in files(__name__).iterdir()
        if p.name.endswith(".v1.schema.json")
    )


@functools.cache
def schema(name: str) -> dict[str, Any]:
    resource = files(__name__).joinpath(f"{name}.v1.schema.json")
    if not resource.is_file():
        raise SchemaViolation(f"no schema for audit event type {name!r}")
    loaded: dict[str, Any] = orjson.loads(resource.read_bytes())
    return loaded


@functools.cache
def _validator(name: str) -> Any:
    return jsonschema_rs.validator_for(schema(name))


def validate_event(event: Any) -> None:
    """Raise SchemaViolation unless `event` is a valid audit event of a known type."""
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise SchemaViolation("an audit event is a JSON object with a string `type`")
    kind = event["type"]
    if not kind.startswith(EVENT_TYPE_PREFIX) or not kind.endswith(".v1"):
        raise SchemaViolation(f"unknown audit event type {kind!r}")
    name = kind.removeprefix(EVENT_TYPE_PREFIX).removesuffix(".v1")
    errors = [f"{e.instance_path}: {e.message}" for e in _validator(name).iter_errors(event)]
    if errors:
        raise SchemaViolation(f"{kind}: " + "; ".join(errors[:5]))
