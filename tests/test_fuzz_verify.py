"""Property-based fuzzing of the verify command's input: JSON, JWS, XML and PDF downloads.

The documents are the gateway's own: one citizen's bundle in all four formats from the real
stack (tests/fuzz_world.py). They are mutated (tests/fuzz_mutations.py) and, to get past the
seal to the code behind it, sealed again with the gateway's own signing code and seal key:
`canonicalize` and `jws.sign_es256` for JSON and JWS, signxml's XAdES signer as in
`gateway.documents.xml.sign_xml` for XML. (Anyone can do the same with a key of their own,
since the seal is checked against the certificate in the document before its chain is.)

Properties:

* `verify_file` (the verify page, `POST /v1/verify`, `blauweknop verify`) never raises: it
  returns a verdict, `ok` or with problems, and quickly;
* `verify_download` and `verify_compact` (also used by the audit archive and the scripted
  journey) give a verdict or raise `VerificationError`, nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
from typing import Any

import orjson
from hypothesis import event, given, note
from hypothesis import strategies as st
from lxml import etree
from signxml import SignatureMethod  # type: ignore[attr-defined]
from signxml.xades import XAdESDataObjectFormat, XAdESSigner  # type: ignore[attr-defined]

from gateway import jws
from gateway.canonical import CanonicalizationError, canonicalize
from gateway.documents import xml as bundel_xml
from gateway.documents.verify import Verdict, verify_file
from gateway.errors import VerificationError
from gateway.sign import KeyRing, SealKey
from gateway.verify import Trust, verify_compact, verify_download
from tests.fuzz_mutations import byte_damage, json_mutation, tree_ops
from tests.fuzz_world import SignedWorld, encode_json, fuzz, signed_world

__all__ = ["signed_world"]

SLOW = 10.0  # seconds; a bundle of this size verifies in well under one


def seal_key(world: SignedWorld) -> SealKey:
    key = KeyRing.from_dev_pki(world.settings.dev_pki).active
    assert key.private_key is not None
    return key


def header(key: SealKey) -> dict[str, Any]:
    """The header `gateway.sign.sign_bundel` writes."""
    return {
        "kid": key.kid,
        "x5c": key.jwk()["x5c"],
        "typ": "JOSE",
        "cty": "application/vnd.blauweknop.bundel.v1+json",
    }


def check_file(
    world: SignedWorld, data: bytes, name: str | None = None, *, in_hypothesis: bool = True
) -> Verdict:
    started = time.perf_counter()
    verdict = verify_file(data, world.trust, name=name)
    elapsed = time.perf_counter() - started
    assert elapsed < SLOW, f"verification took {elapsed:.1f} s"
    assert isinstance(verdict, Verdict)
    assert verdict.ok or verdict.problems
    if in_hypothesis:  # in --hypothesis-show-statistics: which check refuses the inputs
        event("ok" if verdict.ok else verdict.problems[0][:60])
    return verdict


# --- JSON and JWS ----------------------------------------------------------------------------


@st.composite
def sealed_json(draw: st.DrawFn, world: SignedWorld) -> tuple[bytes, bytes]:
    """A (download JSON, compact JWS) pair of the same mutated bundle, sealed again."""
    document = orjson.loads(world.documents["json"])["bundel"]
    if draw(st.booleans()):
        # A source's own answer damaged, with a matching digest: the connector judges it.
        bron = document["bronnen"][draw(st.integers(0, len(document["bronnen"]) - 1))]
        description, raw = draw(byte_damage(base64.b64decode(bron["herkomst"]["inhoud"])))
        note(f"{bron['organisatie']['code']}: {description}")
        bron["herkomst"]["inhoud"] = base64.b64encode(raw).decode()
        bron["herkomst"]["sha256"] = hashlib.sha256(raw).hexdigest()
    else:
        for _ in range(draw(st.integers(1, 3))):
            description, document = draw(json_mutation(document))
            note(description)
    key = seal_key(world)
    assert key.private_key is not None
    try:
        payload = canonicalize(document)
    except (CanonicalizationError, TypeError):  # TypeError: orjson and a lone surrogate
        payload = encode_json(document)  # not canonical: the verifier must say so
    detached = jws.sign_es256(payload, key.private_key, header(key), detached=True)
    protected, _, signature = detached.split(".")
    compact = f"{protected}.{jws.b64url(payload)}.{signature}".encode()
    return encode_json({"bundel": document, "jws": detached}), compact


@fuzz(60)
@given(data=st.data())
def test_resealed_json_and_jws_give_a_verdict(
    signed_world: SignedWorld, data: st.DataObject
) -> None:
    download, compact = data.draw(sealed_json(signed_world))
    check_file(signed_world, download)
    check_file(signed_world, compact)
    key = seal_key(signed_world)
    trust = Trust({key.kid: key.public_key}, signed_world.trust.connectors)
    for verify, document in ((verify_download, download), (verify_compact, compact)):
        with contextlib.suppress(VerificationError):
            verify(document, trust)


@fuzz(100)
@given(data=st.data(), fmt=st.sampled_from(["json", "jws", "xml"]))
def test_damaged_downloads_give_a_verdict(
    signed_world: SignedWorld, data: st.DataObject, fmt: str
) -> None:
    description, damaged = data.draw(byte_damage(signed_world.documents[fmt]))
    note(description)
    check_file(signed_world, damaged, name=data.draw(st.sampled_from([None, f"x.{fmt}", "x.pdf"])))


@fuzz(300)
@given(raw=st.binary(max_size=2048) | st.text(max_size=2048).map(str.encode))
def test_arbitrary_bytes_give_a_verdict(signed_world: SignedWorld, raw: bytes) -> None:
    check_file(signed_world, raw)
    check_file(signed_world, b"%PDF-" + raw)
    check_file(signed_world, b"ey" + raw)


# --- XML -------------------------------------------------------------------------------------


def reseal_xml(root: etree._Element, key: SealKey) -> bytes:
    """As `gateway.documents.xml.sign_xml`, for a tree that no longer comes from a bundle."""
    signer = XAdESSigner(
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm="sha256",
        data_object_format=XAdESDataObjectFormat(
            Description="Blauwe Knop bundel v1", MimeType=bundel_xml.MEDIA_TYPE
        ),
    )
    signed = signer.sign(
        root, key=key.private_key, cert=list(key.chain), always_add_key_value=False
    )
    body: bytes = etree.tostring(signed, xml_declaration=True, encoding="UTF-8")
    return body


@fuzz(40)
@given(data=st.data())
def test_resealed_xml_gives_a_verdict(signed_world: SignedWorld, data: st.DataObject) -> None:
    root = etree.fromstring(signed_world.documents["xml"])
    for signature in root.findall(f"{{{bundel_xml.DS_NS}}}Signature"):
        root.remove(signature)
    for description, op in data.draw(st.lists(tree_ops(), min_size=1, max_size=3)):
        note(description)
        op(root)
    try:
        document = reseal_xml(root, seal_key(signed_world))
    except Exception as exc:  # signxml refuses some trees; then the unsigned tree goes in
        note(f"not sealed again: {exc!r}")
        document = etree.tostring(root)
    if data.draw(st.integers(0, 3)) == 0:
        description, document = data.draw(byte_damage(document))
        note(description)
    check_file(signed_world, document)


# --- PDF -------------------------------------------------------------------------------------


@st.composite
def pdf_damage(draw: st.DrawFn, pdf: bytes) -> tuple[str, bytes]:
    """Byte damage, or one PDF object's dictionary entry, number or name changed in place."""
    if draw(st.booleans()):
        return draw(byte_damage(pdf))
    tokens = [
        b"/Type",
        b"/Names",
        b"/EmbeddedFiles",
        b"/EF",
        b"/F",
        b"/UF",
        b"/Length",
        b"/ByteRange",
        b"/Contents",
        b"/Size",
        b"/Root",
        b"/Prev",
        b"/Filter",
        b"/DSS",
        b"/Kids",
        b"/Count",
        b"obj",
        b"endobj",
        b"stream",
        b"xref",
        b"trailer",
        b"startxref",
    ]
    token = draw(st.sampled_from(tokens))
    starts = [i for i in range(len(pdf)) if pdf.startswith(token, i)] or [0]
    at = starts[draw(st.integers(0, len(starts) - 1))]
    replacement = draw(
        st.sampled_from(
            [
                b"",
                b"/Foo",
                b"0",
                b"-1",
                b"99999999999999999999",
                b"null",
                b"[]",
                b"<<>>",
                b"(x)",
                b"1 0 R",
                b"9999 0 R",
                b"/Names",
            ]
        )
    )
    return f"pdf({token!r} at {at} -> {replacement!r})", pdf[:at] + replacement + pdf[
        at + len(token) :
    ]


@fuzz(100)
@given(data=st.data())
def test_damaged_pdfs_give_a_verdict(signed_world: SignedWorld, data: st.DataObject) -> None:
    description, damaged = data.draw(pdf_damage(signed_world.documents["pdf"]))
    note(description)
    check_file(signed_world, damaged)


def test_the_real_documents_verify(signed_world: SignedWorld) -> None:
    """The starting points are valid: the mutations, not the material, make the failures."""
    for fmt, document in signed_world.documents.items():
        verdict = check_file(signed_world, document, in_hypothesis=False)
        assert verdict.ok, (fmt, verdict.problems)


def test_a_pdf_with_a_broken_dss_object_is_reported(signed_world: SignedWorld) -> None:
    """Found by the PDF property: a PdfReadError from reading the DSS escaped (a 500)."""
    pdf = signed_world.documents["pdf"]
    certs = pdf.rindex(b"/Certs [")
    number = pdf[certs + len(b"/Certs [") :].split()[0]
    start = pdf.rindex(b"\n" + number + b" 0 obj")
    length = pdf.index(b"/Length", start)
    broken = pdf[:length] + b"9999 0 R" + pdf[length + len(b"/Length") :]
    verdict = check_file(signed_world, broken, in_hypothesis=False)
    assert not verdict.ok
    assert any("PdfReadError" in problem for problem in verdict.problems), verdict.problems


def test_a_pdf_with_a_number_that_is_no_number_is_reported(signed_world: SignedWorld) -> None:
    """Found by the PDF property: "." read as a number raised decimal.InvalidOperation (a 500)."""
    pdf = signed_world.documents["pdf"]
    broken = pdf.replace(b"/ProcSet [ /PDF", b"/ProcSet [ .PDF")  # a flipped bit, each page
    assert broken != pdf
    verdict = check_file(signed_world, broken, in_hypothesis=False)
    assert not verdict.ok
    assert any("InvalidOperation" in problem for problem in verdict.problems), verdict.problems


def test_a_pdf_attachment_that_does_not_inflate_is_reported(signed_world: SignedWorld) -> None:
    """Found by the PDF property: zlib.error from pyHanko escaped the verifier (a 500)."""
    pdf = signed_world.documents["pdf"]
    at = pdf.index(b"stream", pdf.index(b"/EmbeddedFile")) + len(b"stream\n")
    broken = pdf[:at] + bytes([pdf[at] ^ 1]) + pdf[at + 1 :]  # the zlib header
    verdict = check_file(signed_world, broken, in_hypothesis=False)
    assert not verdict.ok
    assert any("decompressing" in problem for problem in verdict.problems), verdict.problems
