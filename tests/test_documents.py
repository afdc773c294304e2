"""Certified documents end to end: the gateway on real sockets with the four sandboxes and the
development TSA, checked by independent tools (xmlsec1, pdfsig, pdftotext, pdftoppm) and ours."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from pyhanko.pdf_utils.reader import PdfFileReader

from gateway.app import AUDIT
from gateway.documents.layout import euro
from gateway.documents.service import document_trust
from gateway.documents.verify import DocumentTrust, Verdict, verify_file
from gateway.documents.xml import bundel_from_xml, parse_strict, validate_xml
from gateway.errors import SchemaViolation, VerificationError
from gateway.pki import DevPki
from tests.conftest import Stack, start_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

EVERYWHERE = "999990020"  # data at all four organisations
LONG_HISTORY = "999990068"  # > 500 events
OUTPUT = Path(__file__).resolve().parent.parent / "test-output" / "documents"
BLAUWEKNOP = str(Path(sys.executable).parent / "blauweknop")
XADES_ID = "http://uri.etsi.org/01903/v1.3.2#:SignedProperties"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def docs(state_dir: Path, pki: DevPki) -> AsyncIterator[Stack]:
    # One document worker: its first PDF gets the TSA certificate in a DSS update after the
    # signature, later ones in the signed revision; the tests see both.
    made, runners = await start_stack(state_dir, pki, documents={"workers": 1})
    yield made
    await made.session.close()
    for runner in runners:
        await runner.cleanup()


async def fetch(stack: Stack, bsn: str, accept: str, **extra: Any) -> tuple[bytes, dict[str, str]]:
    async with stack.session.post(
        f"{stack.url}/v1/sandbox/bundel", json={"bsn": bsn, **extra}, headers={"Accept": accept}
    ) as response:
        body = await response.read()
        assert response.status == 200, body[:500]
        return body, dict(response.headers)


async def check(data: bytes, trust: DocumentTrust, **kwargs: Any) -> Verdict:
    """Our verifier is blocking (the gateway runs it in its process pool): off the loop."""
    return await asyncio.to_thread(verify_file, data, trust, **kwargs)


def trust_of(stack: Stack) -> DocumentTrust:
    return document_trust(stack.settings)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, cwd=cwd)


@pytest.fixture(scope="module")
def nss_db(tmp_path_factory: pytest.TempPathFactory, pki: DevPki) -> str:
    """An NSS database that trusts the development root, for pdfsig."""
    directory = tmp_path_factory.mktemp("nss")
    assert run("certutil", "-N", "-d", f"sql:{directory}", "--empty-password").returncode == 0
    added = run(
        "certutil",
        "-A",
        "-d",
        f"sql:{directory}",
        "-n",
        "bk-root",
        "-t",
        "CT,C,C",
        "-i",
        str(pki.root_cert),
    )
    assert added.returncode == 0, added.stderr
    return f"sql:{directory}"


# --- XML -------------------------------------------------------------------------------------


async def test_xml_matches_the_xsd_the_gateway_publishes_and_the_json(docs: Stack) -> None:
    async with docs.session.get(f"{docs.url}/schema/bundel-v1.xsd") as response:
        assert response.status == 200
        xsd = etree.XMLSchema(etree.fromstring(await response.read()))
    for bsn in (EVERYWHERE, "999990007", "999990044"):
        body, headers = await fetch(docs, bsn, "application/xml")
        assert headers["Content-Type"].startswith("application/xml")
        root = parse_strict(body)
        assert xsd.validate(root), xsd.error_log
        json_body, _ = await fetch(docs, bsn, "application/json")
        expected = orjson.loads(json_body)["bundel"]
        actual = bundel_from_xml(root)
        # Two requests, two bundles: everything but ids and times is the same data.
        for volatile in ("bundel_id", "transactie_id", "uitgegeven_op"):
            actual.pop(volatile), expected.pop(volatile)
        for bron in (*actual["bronnen"], *expected["bronnen"]):
            bron.pop("opgehaald_op"), bron.pop("duur_ms"), bron.pop("herkomst")
        assert actual == expected


async def test_the_xsd_rejects_a_wrong_amount() -> None:
    root = etree.fromstring(
        b'<bundel xmlns="urn:blauweknop:xml:bundel:1"><bundel_id>x</bundel_id></bundel>'
    )
    with pytest.raises(SchemaViolation, match=r"bundel-v1\.xsd"):
        validate_xml(root)


async def test_xml_seal_verifies_with_xmlsec1_and_ours_and_both_catch_a_changed_amount(
    docs: Stack, pki: DevPki, tmp_path: Path
) -> None:
    body, _ = await fetch(docs, EVERYWHERE, "application/xml")
    signed = tmp_path / "bundel.xml"
    signed.write_bytes(body)
    ok = run(
        "xmlsec1",
        "--verify",
        "--trusted-pem",
        str(pki.root_cert),
        "--id-attr:Id",
        XADES_ID,
        str(signed),
    )
    assert ok.returncode == 0, ok.stderr
    assert "SignedInfo References (ok/all): 3/3" in ok.stderr
    verdict = await check(body, trust_of(docs))
    assert verdict.ok, verdict.problems
    assert verdict.format == "xml"
    assert "gateway-seal" in (verdict.signer or "")
    assert verdict.signing_time is not None
    assert [s.provenance for s in verdict.sources] == ["verified"] * 4

    text = body.decode()
    match = re.search(r"<saldo>(\d+)</saldo>", text)
    assert match
    tampered = text.replace(match.group(0), f"<saldo>{int(match.group(1)) + 1}</saldo>", 1)
    bad = tmp_path / "tampered.xml"
    bad.write_text(tampered)
    failed = run(
        "xmlsec1",
        "--verify",
        "--trusted-pem",
        str(pki.root_cert),
        "--id-attr:Id",
        XADES_ID,
        str(bad),
    )
    assert failed.returncode != 0
    verdict = await check(tampered.encode(), trust_of(docs))
    assert not verdict.ok
    assert "does not verify" in verdict.problems[0]


@pytest.mark.parametrize(
    "hostile",
    [
        b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
        b'<bundel xmlns="urn:blauweknop:xml:bundel:1">&b;</bundel>',
        b'<?xml version="1.0"?><!DOCTYPE b SYSTEM "file:///etc/passwd"><b/>',
        b"<bundel><unclosed></bundel>",
    ],
)
async def test_hostile_xml_is_refused_before_anything_is_expanded(hostile: bytes) -> None:
    with pytest.raises(VerificationError):
        parse_strict(hostile)
    verdict = await check(hostile, DocumentTrust(()))
    assert not verdict.ok
    assert verdict.format == "xml"


# --- PDF -------------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def certified(docs: Stack) -> tuple[bytes, dict[str, Any]]:
    first, _ = await fetch(docs, EVERYWHERE, "application/pdf")
    assert (await check(first, trust_of(docs))).ok
    body, headers = await fetch(docs, EVERYWHERE, "application/pdf")
    assert body.count(b"%%EOF") < first.count(b"%%EOF"), "DSS in the signed revision"
    assert headers["Content-Type"] == "application/pdf"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / f"{EVERYWHERE}.pdf").write_bytes(body)
    reader = PdfFileReader(__import__("io").BytesIO(body))
    attachments = {
        str(reader.root["/Names"]["/EmbeddedFiles"]["/Names"][i]): i
        for i in range(0, len(reader.root["/Names"]["/EmbeddedFiles"]["/Names"]), 2)
    }
    names = reader.root["/Names"]["/EmbeddedFiles"]["/Names"]
    json_name = next(n for n in attachments if n.endswith(".json"))
    xml_name = next(n for n in attachments if n.endswith(".xml"))
    bundel: dict[str, Any] = orjson.loads(names[attachments[json_name] + 1]["/EF"]["/F"].data)[
        "bundel"
    ]
    # The XML attachment is the same bundle, exactly, element for element.
    xml_root = parse_strict(names[attachments[xml_name] + 1]["/EF"]["/F"].data)
    assert bundel_from_xml(xml_root) == bundel
    return body, bundel


async def test_pdf_seal_verifies_with_pdfsig_and_ours(
    certified: tuple[bytes, dict[str, Any]], docs: Stack, nss_db: str
) -> None:
    body, _ = certified
    result = run("pdfsig", "-nssdir", nss_db, str(OUTPUT / f"{EVERYWHERE}.pdf"))
    assert result.returncode == 0, result.stderr
    assert "Signature Validation: Signature is Valid." in result.stdout
    assert "Certificate Validation: Certificate is Trusted." in result.stdout
    assert "ETSI.CAdES.detached" in result.stdout  # PAdES baseline
    verdict = await check(body, trust_of(docs))
    assert verdict.ok, verdict.problems
    assert verdict.timestamp_time is not None
    assert verdict.signing_time is not None
    assert "tsa" in (verdict.timestamp_authority or "")
    assert [a.format for a in verdict.attachments] == ["json", "xml"]
    assert all(a.ok for a in verdict.attachments)
    assert [s.provenance for s in verdict.sources] == ["verified"] * 4


async def test_pdf_is_b_lt_and_validates_after_the_seal_certificate_expired(
    certified: tuple[bytes, dict[str, Any]], docs: Stack, pki: DevPki
) -> None:
    body, _ = certified
    reader = PdfFileReader(__import__("io").BytesIO(body))
    dss = reader.root["/DSS"]
    assert len(dss["/Certs"]) >= 3, "seal, TSA and root certificates"
    assert len(dss["/CRLs"]) >= 1, "the root's CRL covering seal and TSA"
    seal = x509.load_pem_x509_certificate(pki.identity(pki.seal_names()[-1]).cert.read_bytes())
    later = seal.not_valid_after_utc + dt.timedelta(days=30)
    verdict = await check(body, trust_of(docs), at=later)
    assert verdict.ok, verdict.problems
    # The embedded material is what makes this work: the JSON alone no longer validates then.
    json_download, _ = await fetch(docs, EVERYWHERE, "application/json")
    assert not (await check(json_download, trust_of(docs), at=later)).ok
    # And the check can fail: once the TSA certificate has expired too, B-LT is not enough.
    tsa = x509.load_pem_x509_certificate(pki.identity("tsa").cert.read_bytes())
    much_later = tsa.not_valid_after_utc + dt.timedelta(days=1)
    assert not (await check(body, trust_of(docs), at=much_later)).ok


async def test_one_changed_byte_in_the_pdf_is_caught_by_pdfsig_and_ours(
    certified: tuple[bytes, dict[str, Any]], docs: Stack, nss_db: str, tmp_path: Path
) -> None:
    body, _ = certified
    # A byte inside the signed range, in the page content: flip it.
    position = body.index(b"/Type /Page") + 2
    tampered = body[:position] + bytes([body[position] ^ 0x01]) + body[position + 1 :]
    path = tmp_path / "tampered.pdf"
    path.write_bytes(tampered)
    result = run("pdfsig", "-nssdir", nss_db, str(path))
    assert "Signature is Valid" not in result.stdout
    verdict = await check(tampered, trust_of(docs))
    assert not verdict.ok


async def test_pdf_reads_as_the_citizens_overview(
    certified: tuple[bytes, dict[str, Any]], tmp_path: Path
) -> None:
    _body, bundel = certified
    pdf = OUTPUT / f"{EVERYWHERE}.pdf"
    text = run("pdftotext", "-layout", str(pdf), "-").stdout
    assert "Overzicht van uw financiële gegevens" in text
    assert "Hoe controleert u dit document?" in text
    for bron in bundel["bronnen"]:
        assert bron["organisatie"]["naam"] in text
        for zaak in bron["gegevens"]["financiele_zaken"]:
            assert euro(zaak["saldo"]) in text
            assert euro(zaak["totaal_financieel_verplicht"]) in text
        for inkomen in bron["gegevens"]["inkomsten"]:
            assert euro(inkomen["bedrag_bruto"]) in text
    assert re.search(r"€ \d{1,3}(\.\d{3})*,\d{2}", text), "Dutch euro notation"
    rendered = run("pdftoppm", "-r", "60", "-png", str(pdf), str(OUTPUT / EVERYWHERE))
    assert rendered.returncode == 0, rendered.stderr
    pages = sorted(OUTPUT.glob(f"{EVERYWHERE}-*.png"))
    assert pages
    assert all(p.stat().st_size > 10_000 for p in pages)


async def test_unreachable_organisations_are_shown_plainly(docs: Stack) -> None:
    await docs.set_faults("cak", error_rate=1.0)
    try:
        body, _ = await fetch(docs, EVERYWHERE, "application/pdf")
    finally:
        await docs.set_faults("cak")
    path = OUTPUT / "onbereikbaar.pdf"
    path.write_bytes(body)
    text = run("pdftotext", str(path), "-").stdout
    assert "niet bereikt" in text.lower()
    assert "Centraal Administratie Kantoor" in text or "CAK" in text


async def test_pdf_a_3_parts_are_there(certified: tuple[bytes, dict[str, Any]]) -> None:
    body, _bundel = certified
    reader = PdfFileReader(__import__("io").BytesIO(body))
    root = reader.root
    xmp = root["/Metadata"].data.decode()
    assert re.search(r'pdfaid:part(="|>)3', xmp)
    assert re.search(r'pdfaid:conformance(="|>)B', xmp)
    assert EVERYWHERE not in xmp, "never the BSN in metadata"
    info = reader.trailer["/Info"]
    assert all(EVERYWHERE not in str(info[k]) for k in info)
    # Every information entry has its XMP counterpart, with the same value where comparable.
    counterparts = {
        "/Title": "dc:title",
        "/Author": "dc:creator",
        "/Subject": "dc:description",
        "/Creator": "xmp:CreatorTool",
        "/Producer": "pdf:Producer",
        "/CreationDate": "xmp:CreateDate",
        "/ModDate": "xmp:ModifyDate",
    }
    assert set(info) <= set(counterparts), set(info) - set(counterparts)
    for key in info:
        assert counterparts[key] in xmp, key
    assert f'pdf:Producer="{info["/Producer"]}"' in xmp
    assert "/Version" not in root or str(root["/Version"]) <= "/1.7", "PDF/A-3 is PDF 1.7"
    intents = root["/OutputIntents"]
    assert len(intents) == 1
    intent = intents[0]
    assert intent["/S"] == "/GTS_PDFA1"
    assert "sRGB" in str(intent["/OutputConditionIdentifier"])
    profile = intent["/DestOutputProfile"]
    assert profile["/N"] == 3
    assert profile.data[36:40] == b"acsp"
    assert b"RGB " in profile.data[16:20], "an RGB ICC profile"
    fonts = run("pdffonts", str(OUTPUT / f"{EVERYWHERE}.pdf")).stdout.splitlines()[2:]
    assert fonts, "text needs fonts"
    assert all(line.split()[-5] == "yes" for line in fonts), fonts  # the 'emb' column
    af = [root["/AF"][i] for i in range(len(root["/AF"]))]
    names = root["/Names"]["/EmbeddedFiles"]["/Names"]
    specs = [names[i + 1] for i in range(0, len(names), 2)]
    assert len(af) == len(specs) == 2
    for spec in af:
        assert spec["/AFRelationship"] in ("/Source", "/Alternative", "/Data")
        assert spec["/EF"]["/F"]["/Subtype"] in ("/application/json", "/application/xml")
        assert "/ModDate" in spec["/EF"]["/F"]["/Params"]
    assert {str(s["/UF"]) for s in af} == {str(s["/UF"]) for s in specs}


async def test_pdf_for_the_very_long_history_stays_small(docs: Stack) -> None:
    body, _ = await fetch(docs, LONG_HISTORY, "application/pdf")
    assert len(body) < 2 * 1024 * 1024
    assert (await check(body, trust_of(docs))).ok


async def test_every_format_is_in_the_audit_record_before_release(docs: Stack) -> None:
    audit = docs.app[AUDIT]
    for accept, formaat in (
        ("application/pdf", "pdf"),
        ("application/xml", "xml"),
        ("application/jose", "jws"),
        ("application/json", "json"),
    ):
        body, headers = await fetch(docs, "999990019", accept)
        tx = headers["X-Transactie-Id"]
        records = [r for r in await audit.store.unsent(10_000) if r.key == tx]
        issued = orjson.loads(records[-1].payload)["data"]
        assert issued["formaten"] == {formaat: hashlib.sha256(body).hexdigest()}


async def test_unknown_format_is_refused(docs: Stack) -> None:
    async with docs.session.post(
        f"{docs.url}/v1/sandbox/bundel", json={"bsn": EVERYWHERE, "formaat": "docx"}
    ) as response:
        assert response.status == 400


# --- JSON and JWS tampering, unknown keys ---------------------------------------------------


async def test_a_source_removed_from_the_json_is_caught(docs: Stack) -> None:
    body, _ = await fetch(docs, EVERYWHERE, "application/json")
    assert (await check(body, trust_of(docs))).ok
    outer = orjson.loads(body)
    outer["bundel"]["bronnen"] = outer["bundel"]["bronnen"][1:]
    verdict = await check(orjson.dumps(outer), trust_of(docs))
    assert not verdict.ok


async def test_a_signature_from_an_unknown_key_is_caught(docs: Stack, tmp_path: Path) -> None:
    """A look-alike PKI: same names, other keys. Every verifier must refuse it."""
    other = DevPki(tmp_path / "other-pki")
    other.ensure()
    from gateway.documents.xml import sign_xml
    from gateway.sign import KeyRing, sign_bundel

    ring = KeyRing.from_dev_pki(other)
    body, _ = await fetch(docs, EVERYWHERE, "application/json")
    bundel = orjson.loads(body)["bundel"]
    key = ring.active.private_key
    assert key is not None
    forged_xml = sign_xml(bundel, key, ring.active.chain)
    verdict = await check(forged_xml, trust_of(docs))
    assert not verdict.ok
    assert "not trusted" in verdict.problems[0]
    forged = tmp_path / "forged.xml"
    forged.write_bytes(forged_xml)
    assert (
        run(
            "xmlsec1",
            "--verify",
            "--trusted-pem",
            str(docs.settings.dev_pki.root_cert),
            "--id-attr:Id",
            XADES_ID,
            str(forged),
        ).returncode
        != 0
    )
    from gateway import jws
    from gateway.canonical import canonicalize

    header = {"kid": ring.active.kid, "x5c": ring.active.jwk()["x5c"], "typ": "JOSE"}
    token = jws.sign_es256(canonicalize(bundel), key, header, detached=True)
    forged_json = orjson.dumps({"bundel": bundel, "jws": token})
    verdict = await check(forged_json, trust_of(docs))
    assert not verdict.ok
    assert "not trusted" in verdict.problems[0]
    _ = sign_bundel, ec


# --- the verifier as a command and as a service ----------------------------------------------


async def test_blauweknop_verify_command(
    certified: tuple[bytes, dict[str, Any]], docs: Stack, tmp_path: Path
) -> None:
    body, _ = certified
    env = {"BLAUWEKNOP_STATE_DIR": str(docs.settings.state_dir), "PATH": "/usr/bin:/bin"}
    good = tmp_path / "overzicht.pdf"
    good.write_bytes(body)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BLAUWEKNOP, "verify", *args], capture_output=True, text=True, env=env, check=False
        )

    result = await asyncio.to_thread(cli, str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OORDEEL: GELDIG" in result.stdout
    assert "Tijdstempel:" in result.stdout
    assert "gateway-seal" in result.stdout
    assert result.stdout.count("handtekening klopt") == 4
    english = await asyncio.to_thread(cli, str(good), "--lang", "en")
    assert "VERDICT: VALID" in english.stdout
    bad = tmp_path / "kapot.pdf"
    bad.write_bytes(body[:2000] + b"X" + body[2001:])
    result = await asyncio.to_thread(cli, str(bad))
    assert result.returncode == 1
    assert "NIET GELDIG" in result.stdout


async def test_verify_service_and_page(
    certified: tuple[bytes, dict[str, Any]], docs: Stack
) -> None:
    body, bundel = certified
    async with docs.session.post(f"{docs.url}/v1/verify", data=body) as response:
        assert response.status == 200
        result = orjson.loads(await response.read())
    assert result["geldig"] is True
    assert result["bundel_id"] == bundel["bundel_id"]
    assert result["tijdstempel"]
    assert len(result["bronnen"]) == 4
    async with docs.session.post(f"{docs.url}/v1/verify", data=b"%PDF-1.7 nonsense") as response:
        assert response.status == 200
        result = orjson.loads(await response.read())
    assert result["geldig"] is False
    assert result["problemen"]
    huge = b"{" + b" " * (docs.settings.documents.max_verify_bytes + 10)
    async with docs.session.post(f"{docs.url}/v1/verify", data=huge) as response:
        assert response.status == 413
    async with docs.session.get(f"{docs.url}/verifieer") as response:
        assert response.status == 200
        page = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "<script" not in page
    assert "style=" not in page
    assert "<style" not in page
    assert '<label for="bestand">' in page
    assert 'lang="nl"' in page
    import aiohttp

    form = aiohttp.FormData()
    form.add_field("bestand", body, filename="overzicht.pdf", content_type="application/pdf")
    async with docs.session.post(f"{docs.url}/verifieer?lang=en", data=form) as response:
        assert response.status == 200
        result_page = await response.text()
    assert "Valid: this document is genuine" in result_page
    assert 'lang="en"' in result_page


async def test_verify_json_by_name_and_jws(docs: Stack) -> None:
    jose, _ = await fetch(docs, EVERYWHERE, "application/jose")
    verdict = await check(jose, trust_of(docs), name="x.jws")
    assert verdict.ok
    assert verdict.format == "jws"
    parts = jose.decode().split(".")
    payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    payload["bronnen"][0]["gegevens"]["financiele_zaken"] = []
    parts[1] = base64.urlsafe_b64encode(orjson.dumps(payload)).rstrip(b"=").decode()
    assert not (await check(".".join(parts).encode(), trust_of(docs))).ok


async def test_no_time_stamp_no_pdf(state_dir: Path, pki: DevPki) -> None:
    """With the TSA unreachable the gateway answers 503 and releases (and records) nothing."""
    import socket

    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    stack, runners = await start_stack(
        state_dir,
        pki,
        documents={"workers": 1, "tsa_url": f"http://127.0.0.1:{closed}/"},
    )
    try:
        async with stack.session.post(
            f"{stack.url}/v1/sandbox/bundel",
            json={"bsn": EVERYWHERE},
            headers={"Accept": "application/pdf"},
        ) as response:
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            tx = response.headers["X-Transactie-Id"]
            assert EVERYWHERE not in await response.text()
        records = [r for r in await stack.app[AUDIT].store.unsent(10_000) if r.key == tx]
        assert not any(b"bundel.uitgegeven" in r.payload for r in records)
        json_body, _ = await fetch(stack, EVERYWHERE, "application/json")
        assert orjson.loads(json_body)["jws"], "JSON needs no TSA and still works"
    finally:
        await stack.session.close()
        for runner in runners:
            await runner.cleanup()
