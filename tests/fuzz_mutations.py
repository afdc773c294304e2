"""Structured mutations of real signed documents, as Hypothesis strategies.

XML: elements dropped, duplicated, moved, renamed, emptied or given odd text and attributes, an
extra `ds:Signature`, deep nesting, XInclude; then byte-level damage (flipped bytes, truncation)
or a prologue with a DTD, entities (billion laughs, external ones), another encoding or a BOM.
JSON: a value anywhere in the document replaced, dropped or duplicated. Bytes: flips, cuts and
insertions anywhere. Each mutation names what it did, so a failure reads as a recipe.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st
from lxml import etree

from tests.fuzz_world import JSON

DS = "http://www.w3.org/2000/09/xmldsig#"

# Text that parsers of amounts, dates, ids and codes trip over.
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "0",
        "-0",
        "1e999",
        "-1e-999",
        "NaN",
        "Infinity",
        "sNaN",
        "1" * 400,
        "0.001",
        "12,50",
        "１２３",
        "١٢٣",
        "٠٣٦٣",
        "²³⁴⁵",
        "2024-02-30",
        "2024-13-01",
        "9999-12-31T23:59:59",
        "0001-01-01",
        "2024-01-01T00:00:00+25:00",
        "2024-01-01T24:00:00",
        "--",
        "\u0000",
        "\ud800",
        "\x85",
        "a\u202eb",
        "#id-body",
        "id-body",
    ]
) | st.text(max_size=40)

_BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">'
        for i in range(1, 10)
    )
    + "]>"
)
PROLOGUES = [
    '<!DOCTYPE a [<!ENTITY x "y">]>',
    _BILLION_LAUGHS,
    '<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    '<!DOCTYPE a SYSTEM "http://127.0.0.1:9/evil.dtd">',
    '<!DOCTYPE a [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>',
    '<!DOCTYPE a PUBLIC "-//x//y" "file:///dev/zero">',
    "<!DOCTYPE a>",
    '<?xml-stylesheet type="text/xsl" href="http://127.0.0.1:9/x.xsl"?>',
    "<!-- a comment before the root -->",
    "<?pi with data?>",
]
ENTITY_REFERENCES = ["&x;", "&lol9;", "&amp;", "&#0;", "&#x110000;", "&#65;", "&undefined;"]


def _elements(root: etree._Element) -> list[etree._Element]:
    return [e for e in root.iter() if isinstance(e.tag, str)]


def _pick(draw: st.DrawFn, items: list[Any]) -> Any:
    return items[draw(st.integers(0, len(items) - 1))]


TreeOp = Callable[[etree._Element], None]


@st.composite
def tree_ops(draw: st.DrawFn) -> tuple[str, TreeOp]:
    """One change to a parsed document; elements are chosen when it is applied."""
    kind = draw(
        st.sampled_from(
            [
                "drop",
                "duplicate",
                "text",
                "attribute",
                "move",
                "rename",
                "extra-signature",
                "nest",
                "xinclude",
                "empty",
            ]
        )
    )
    i, j = draw(st.integers(0, 10_000)), draw(st.integers(0, 10_000))
    text = draw(ODD_TEXT)
    depth = draw(st.sampled_from([2, 50, 255, 300, 5000]))
    attribute = draw(
        st.sampled_from(
            [
                "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd}Id",
                "{http://www.w3.org/XML/1998/namespace}id",
                "Id",
                "ID",
                "URI",
                "Algorithm",
            ]
        )
    )

    def apply(root: etree._Element) -> None:
        elements = _elements(root)
        el, other = elements[i % len(elements)], elements[j % len(elements)]
        parent = el.getparent()
        if kind == "drop" and parent is not None:
            parent.remove(el)
        elif kind == "duplicate" and parent is not None:
            el.addnext(copy.deepcopy(el))
        elif kind == "text":
            try:
                el.text = text
            except ValueError:  # lxml refuses control characters and lone surrogates
                el.text = "\ufffd"
        elif kind == "attribute":
            el.set(attribute, text if text.isprintable() and text.isascii() else "id-body")
        elif kind == "move" and other is not el and el not in other.iterancestors():
            if other.getparent() is not None and el not in list(other.iter()):
                el.append(other)
        elif kind == "rename":
            el.tag = other.tag
        elif kind == "extra-signature":
            signature = next(root.iter(f"{{{DS}}}Signature"), None)
            if signature is not None:
                other.append(copy.deepcopy(signature))
        elif kind == "nest":
            inner = el
            for _ in range(depth):
                inner = etree.SubElement(inner, "n")
        elif kind == "xinclude":
            include = etree.SubElement(el, "{http://www.w3.org/2001/XInclude}include")
            include.set("href", "file:///etc/passwd")
            include.set("parse", "text")
        elif kind == "empty":
            for child in list(el):
                el.remove(child)

    return f"{kind}({i}, {j}, {text!r}, {depth}, {attribute})", apply


@st.composite
def byte_damage(draw: st.DrawFn, data: bytes) -> tuple[str, bytes]:
    """Flipped, cut or inserted bytes anywhere, or a hostile prologue after the declaration."""
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "prologue", "entity", "encoding"]))
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    if kind == "flip":
        mask = draw(st.integers(1, 255))
        return f"flip({at}, {mask})", data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]
    if kind == "truncate":
        return f"truncate({at})", data[:at]
    if kind == "insert":
        extra = draw(st.binary(min_size=1, max_size=16))
        return f"insert({at}, {extra!r})", data[:at] + extra + data[at:]
    declaration_end = data.find(b"?>") + 2 if data.startswith(b"<?xml") else 0
    if kind == "prologue":
        prologue = draw(st.sampled_from(PROLOGUES)).encode()
        return (
            f"prologue({prologue[:40]!r})",
            data[:declaration_end] + prologue + data[declaration_end:],
        )
    if kind == "entity":
        prologue = draw(st.sampled_from(PROLOGUES[:3])).encode()
        reference = draw(st.sampled_from(ENTITY_REFERENCES)).encode()
        # Into the text of some element: after a `>` that is followed by text.
        gt = data.find(b">", at)
        where = gt + 1 if gt >= 0 else len(data)
        body = data[:where] + reference + data[where:]
        return (
            f"entity({prologue[:30]!r}, {reference!r}, {where})",
            body[:declaration_end] + prologue + body[declaration_end:],
        )
    encoding = draw(st.sampled_from(["UTF-16", "ISO-8859-1", "EBCDIC", "x-unknown", "UTF-32"]))
    bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"]))
    declaration = f'<?xml version="1.0" encoding="{encoding}"?>'.encode()
    return f"encoding({encoding}, {bom!r})", bom + declaration + data[declaration_end:]


@st.composite
def json_mutation(draw: st.DrawFn, document: Any) -> tuple[str, Any]:
    """`document` with one value replaced, dropped or duplicated, anywhere in it."""
    paths: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, (*path, index))

    walk(document, ())
    path = _pick(draw, paths)
    kind = draw(st.sampled_from(["replace", "drop", "duplicate", "type"]))
    replacement = draw(JSON | ODD_TEXT)
    mutated = copy.deepcopy(document)
    if not path:
        return f"root = {replacement!r}", replacement
    parent = mutated
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "replace":
        parent[last] = replacement
    elif kind == "drop":
        del parent[last]
    elif kind == "duplicate" and isinstance(parent, list):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif kind == "duplicate" or kind == "type":
        value = parent[last]
        parent[last] = (
            ([value] if not isinstance(value, list) else {"0": value})
            if kind == "type"
            else copy.deepcopy(value)
        )
    return f"{kind} at {list(path)} ({replacement!r})", mutated
