"""The common schema v1, shipped inside the package and published by the gateway."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs
import orjson

from gateway.errors import SchemaViolation

SCHEMA_FILE = "bundel-v1.schema.json"
_MAX_REPORTED = 5


@cache
def schema_bytes() -> bytes:
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_bytes()


@cache
def _validator(definition: str | None) -> Any:
    """A validator for the whole bundle, or for one of the schema's `$defs`."""
    schema = orjson.loads(schema_bytes())
    if definition is not None:
        schema = {"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}
    return jsonschema_rs.Draft202012Validator(schema)


def validate_bundel(document: Any) -> None:
    _validate(document, None, "bundle")


def validate_gegevens(document: Any) -> None:
    """Check one organisation's mapped data before it joins a bundle."""
    _validate(document, "gegevens", "source data")


def _validate(document: Any, definition: str | None, what: str) -> None:
    """Raise SchemaViolation naming the first few problems by path and rule.

    The message leaves out the offending values: they may be personal data.
    """
    validator = _validator(definition)
    if validator.is_valid(document):
        return
    problems = [
        f"/{'/'.join(str(p) for p in error.instance_path)} fails "
        f"{'/'.join(str(p) for p in error.schema_path)}"
        for _, error in zip(range(_MAX_REPORTED), validator.iter_errors(document), strict=False)
    ]
    raise SchemaViolation(f"{what} does not match schema v1: " + "; ".join(problems))
