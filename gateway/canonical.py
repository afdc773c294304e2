"""RFC 8785 (JSON Canonicalization Scheme) for the JSON this project signs.

orjson with sorted keys produces the RFC 8785 bytes for data without floats, as long as object
keys sort the same in UTF-8 and UTF-16 (always true for keys below U+E000). Floats are refused
(our amounts are integer cents), as are integers outside the I-JSON safe range; documents with
rare keys above U+E000 take a slower path that sorts by UTF-16 code units as the RFC says.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BlauweKnopError

_SAFE_INT = 2**53 - 1
_UTF8_SORT_SAFE = "\ue000"


class CanonicalizationError(BlauweKnopError):
    """The value cannot be canonicalised for signing (floats, huge integers, odd types)."""


def canonicalize(value: Any) -> bytes:
    if _check(value):
        return orjson.dumps(_utf16_sorted(value))
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _check(value: Any) -> bool:
    """Refuse what RFC 8785 cannot represent; True if some key needs UTF-16 ordering."""
    needs_utf16 = False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise CanonicalizationError("object keys must be strings")
                if key and max(key) >= _UTF8_SORT_SAFE:
                    needs_utf16 = True
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        elif isinstance(item, int):
            if not -_SAFE_INT <= item <= _SAFE_INT:
                raise CanonicalizationError(f"integer {item} is outside the I-JSON safe range")
        elif isinstance(item, float):
            raise CanonicalizationError("floats are not allowed in signed documents; use cents")
        else:
            raise CanonicalizationError(f"cannot canonicalise a {type(item).__name__}")
    return needs_utf16


def _utf16_sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _utf16_sorted(value[k]) for k in sorted(value, key=lambda k: k.encode("utf-16-be"))
        }
    if isinstance(value, list | tuple):
        return [_utf16_sorted(v) for v in value]
    return value
