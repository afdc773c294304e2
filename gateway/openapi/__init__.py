"""The gateway's OpenAPI 3.1 description: `gateway-v1.json`, hand-written, served at /openapi.json.

The file describes every operation of both modes; production serves it without the operations
marked `x-sandbox-only`. The bundle's schema lives in one place (gateway/schema/) and the file
refers to it by its published path; the served document carries it inline, under
`components.schemas.Bundel` and `Bundel.<name>` for its `$defs`, so a client (or a fuzzer)
needs no second fetch to check a bundle. tests/test_openapi.py keeps file and router in step.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any, Literal

import orjson

from gateway.schema import SCHEMA_FILE, schema_bytes

OPENAPI_FILE = "gateway-v1.json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_BUNDEL = "Bundel"


def description_file() -> dict[str, Any]:
    """The description as written, with the bundle schema still referred to by its path."""
    document: dict[str, Any] = orjson.loads(
        resources.files(__package__).joinpath(OPENAPI_FILE).read_bytes()
    )
    return document


@cache
def served_bytes(mode: Literal["sandbox", "production"]) -> bytes:
    """The document served at /openapi.json in this mode."""
    document = description_file()
    if mode != "sandbox":
        for path in list(document["paths"]):
            item = document["paths"][path]
            for method in HTTP_METHODS:
                if item.get(method, {}).get("x-sandbox-only"):
                    del item[method]
            if not any(method in item for method in HTTP_METHODS):
                del document["paths"][path]
    schemas = document["components"]["schemas"]
    assert schemas[_BUNDEL] == {"$ref": f"/schema/{SCHEMA_FILE}"}, "the file refers to the schema"
    schemas.update(_inlined_bundle_schema())
    return orjson.dumps(document)


def _inlined_bundle_schema() -> dict[str, Any]:
    bundle = orjson.loads(schema_bytes())
    definitions = bundle.pop("$defs")
    for keyword in ("$schema", "$id"):
        bundle.pop(keyword)
    inlined = {_BUNDEL: bundle} | {f"{_BUNDEL}.{name}": d for name, d in definitions.items()}
    return {name: _rewrite_refs(schema) for name, schema in inlined.items()}


def _rewrite_refs(node: Any) -> Any:
    """`#/$defs/x` inside the bundle schema becomes `#/components/schemas/Bundel.x`."""
    if isinstance(node, dict):
        rewritten = {key: _rewrite_refs(value) for key, value in node.items()}
        ref = rewritten.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rewritten["$ref"] = f"#/components/schemas/{_BUNDEL}.{ref.removeprefix('#/$defs/')}"
        return rewritten
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node
