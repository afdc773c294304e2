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
    """Refuse what RFC 8785 cannot represent; True if some key needs UTF-16 ordering.

    Written for speed (it runs on every bundle): exact type tests, strings first.
    """
    needs_utf16 = False
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    raise CanonicalizationError("object keys must be strings")
                if not key.isascii() and max(key) >= _UTF8_SORT_SAFE:
                    needs_utf16 = True
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif kind is int:
            if not -_SAFE_INT <= item <= _SAFE_INT:
                raise CanonicalizationError(f"integer {item} is outside the I-JSON safe range")
        elif kind is float:
            raise CanonicalizationError("floats are not allowed in signed documents; use cents")
        else:
            raise CanonicalizationError(f"cannot canonicalise a {kind.__name__}")
    return needs_utf16


def _utf16_sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _utf16_sorted(value[k]) for k in sorted(value, key=lambda k: k.encode("utf-16-be"))
        }
    if isinstance(value, list | tuple):
        return [_utf16_sorted(v) for v in value]
    return value
