"""Our orjson-based RFC 8785 canonicalisation gives the reference implementation's bytes."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.canonical import CanonicalizationError, canonicalize

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | _text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_matches_reference_implementation(value: Any) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


def test_keys_beyond_bmp_sort_by_utf16_code_units() -> None:
    value = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert canonicalize(value) == rfc8785.dumps(value)
    assert canonicalize(value).index("\U0001f600".encode()) < canonicalize(value).index(
        "\ue000".encode()
    )


@pytest.mark.parametrize("value", [1.5, {"a": [0.1]}, 2**53, {"a": -(2**53)}, {1: "x"}, b"x"])
def test_refuses_what_cannot_be_signed_exactly(value: Any) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize(value)
