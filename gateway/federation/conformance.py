"""`blauweknop provider-check URL`: does an implementation of docs/provider-api.yaml conform?

Each check names what it tested; a failed check says what is wrong and how to fix it. The kit
calls the provider the way the gateway's generic connector does, with the test citizens of the
sandbox (CONTEXT: every sandbox knows them), and reads the answers with the same strict code.
An answer signed with an `x5c` certificate chain is checked against the X.509 anchors the
organisation will register, when it gives them (`--x509`).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.generic.connector import GEGEVENS_PATH, JWKS_PATH, MEDIA_TYPE
from connectors.generic.mapping import _RFC3339, DOCUMENT_TYPE, bsn_hash, parse_document
from gateway import jws
from gateway.connector import read_limited
from gateway.errors import VerificationError
from gateway.federation.certs import CertificateRefused, parse_x5c, verify_chain
from gateway.federation.registry import public_keys
from gateway.models import Organisatie

WITH_DATA = "999990020"
WITHOUT_DATA = "999990007"
INVALID_BSN = "123456789"
MAX_SECONDS = 2.0
MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    ok: bool
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    findings: tuple[Finding, ...]

    @property
    def conforms(self) -> bool:
        return all(f.ok for f in self.findings)

    def text(self) -> str:
        lines = [f"provider-check {self.url}"]
        for f in self.findings:
            lines.append(
                f"  {'ok  ' if f.ok else 'FOUT'} {f.check}" + (f": {f.detail}" if f.detail else "")
            )
            if not f.ok and f.fix:
                lines.append(f"       fix: {f.fix}")
        failed = sum(not f.ok for f in self.findings)
        lines.append("conforms" if not failed else f"{failed} defect(s): does not conform")
        return "\n".join(lines)


async def check_provider(
    url: str,
    session: aiohttp.ClientSession,
    *,
    oin: str | None = None,
    code: str | None = None,
    anchors: tuple[x509.Certificate, ...] = (),
) -> Report:
    url = url.rstrip("/")
    findings: list[Finding] = []
    keys = await _check_jwks(url, session, findings)
    for bsn, label in ((WITH_DATA, "citizen with data"), (WITHOUT_DATA, "citizen without data")):
        await _check_answer(url, session, bsn, label, keys, findings, oin, code, anchors)
    await _check_invalid_bsn(url, session, findings)
    return Report(url, tuple(findings))


async def _check_jwks(
    url: str, session: aiohttp.ClientSession, findings: list[Finding]
) -> dict[str, Any]:
    name = f"GET {JWKS_PATH} publishes the signing keys"
    try:
        async with session.get(url + JWKS_PATH, allow_redirects=False) as response:
            raw = await read_limited(response, 256 * 1024)
            status = response.status
        if status != 200:
            raise ValueError(f"HTTP {status}")
        keys = public_keys(orjson.loads(raw))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        findings.append(
            Finding(name, False, str(exc), "serve a JWKS of EC P-256 public keys, each with a kid")
        )
        return {}
    findings.append(Finding(name, True, f"{len(keys)} key(s)"))
    return keys


async def _check_answer(
    url: str,
    session: aiohttp.ClientSession,
    bsn: str,
    label: str,
    keys: Mapping[str, Any],
    findings: list[Finding],
    oin: str | None,
    code: str | None,
    anchors: tuple[x509.Certificate, ...] = (),
) -> None:
    tx = str(uuid.uuid4())
    body = {"transactie_id": tx, "burgerservicenummer": bsn, "categorieen": ["financiele-zaken"]}
    started = time.monotonic()
    try:
        async with session.post(
            url + GEGEVENS_PATH,
            json=body,
            headers={"Accept": MEDIA_TYPE, "X-Transactie-Id": tx},
            allow_redirects=False,
        ) as response:
            raw = await read_limited(response, MAX_BYTES)
            status, content_type = response.status, response.content_type
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        findings.append(
            Finding(f"{label}: answers", False, str(exc), "make the endpoint reachable")
        )
        return
    elapsed = time.monotonic() - started
    findings.append(
        Finding(
            f"{label}: answers within {MAX_SECONDS:.0f} s",
            elapsed <= MAX_SECONDS,
            f"{elapsed * 1000:.0f} ms",
            "answer faster: the gateway waits for all organisations under one deadline",
        )
    )
    ok = status == 200
    findings.append(
        Finding(
            f"{label}: HTTP 200",
            ok,
            f"HTTP {status}",
            "answer 200 with a signed document; a citizen without data gets empty lists, not 404",
        )
    )
    if not ok:
        return
    findings.append(
        Finding(
            f"{label}: Content-Type {MEDIA_TYPE}",
            content_type == MEDIA_TYPE,
            content_type,
            "send the compact JWS as application/jose",
        )
    )
    try:
        parsed, _, _ = jws.parse(raw)
        payload: Any = orjson.loads(parsed.payload)
    except (VerificationError, orjson.JSONDecodeError) as exc:
        findings.append(
            Finding(f"{label}: compact JWS with a JSON payload", False, str(exc), "sign with ES256")
        )
        return
    kid = parsed.header.get("kid")
    signed = False
    if parsed.header.get("alg") != "ES256":
        detail, fix = f"alg {parsed.header.get('alg')!r}", "sign with ES256"
    elif "x5c" in parsed.header:
        named = payload.get("organisatie") if isinstance(payload, dict) else None
        claimed = oin or (str(named.get("oin")) if isinstance(named, dict) else "")
        signed, detail, fix = _certified(raw, parsed.header["x5c"], anchors, claimed)
    elif not isinstance(kid, str) or kid not in keys:
        detail = f"kid {kid!r} is not in the published JWKS"
        fix = "sign with a key whose public half is in the JWKS you register (same kid)"
    else:
        try:
            jws.verify_es256(raw, keys[kid])
            signed, detail, fix = True, f"kid {kid}", ""
        except VerificationError as exc:
            detail, fix = str(exc), "sign the exact payload bytes with the registered key"
    findings.append(
        Finding(f"{label}: signature verifies with a registered key", signed, detail, fix)
    )
    if not isinstance(payload, dict):
        findings.append(Finding(f"{label}: payload is an object", False, "", "send a JSON object"))
        return
    for finding in _document_findings(label, payload, tx, bsn):
        findings.append(finding)
    org = payload.get("organisatie")
    if isinstance(org, dict):
        organisatie = Organisatie(
            oin or str(org.get("oin")), code or str(org.get("code")), "provider"
        )
        try:
            parse_document(payload, organisatie)
            findings.append(Finding(f"{label}: document maps to the common schema", True))
        except ValueError as exc:
            findings.append(
                Finding(
                    f"{label}: document maps to the common schema",
                    False,
                    str(exc),
                    "follow docs/provider-api.yaml (FCID conventions, CONTEXT §4)",
                )
            )


def _certified(
    raw: bytes, x5c: object, anchors: tuple[x509.Certificate, ...], oin: str
) -> tuple[bool, str, str]:
    """An x5c answer: the leaf key signs; the chain ends in `anchors` (when given)."""
    try:
        chain = parse_x5c(x5c)
        key = chain[0].public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CertificateRefused("the x5c leaf has no EC P-256 key")
        jws.verify_es256(raw, key)
        if not anchors:
            return True, "x5c leaf signs; chain not checked (give --x509 with your anchors)", ""
        verify_chain(
            chain[0], chain[1:], anchors, oin=oin, at=dt.datetime.now(dt.UTC), purpose="signing"
        )
    except CertificateRefused as exc:
        return (
            False,
            str(exc),
            "send x5c leaf first, chained to the x509 anchors you register; the leaf names your "
            "OIN (subject serialNumber), allows signing and is valid now",
        )
    except VerificationError as exc:
        return False, str(exc), "sign with the private key of the x5c leaf certificate"
    return True, "x5c chain ends in a registered anchor", ""


def _document_findings(label: str, doc: dict[str, Any], tx: str, bsn: str) -> Iterator[Finding]:
    yield Finding(
        f"{label}: documenttype and versie",
        doc.get("documenttype") == DOCUMENT_TYPE and doc.get("versie") == "1.0.0",
        f"{doc.get('documenttype')!r} {doc.get('versie')!r}",
        f'set "documenttype": "{DOCUMENT_TYPE}" and "versie": "1.0.0"',
    )
    yield Finding(
        f"{label}: names our transaction (replay defence)",
        doc.get("transactie_id") == tx,
        ""
        if doc.get("transactie_id") == tx
        else ("missing" if "transactie_id" not in doc else "another transaction id"),
        "copy the request's transactie_id into the signed document",
    )
    yield Finding(
        f"{label}: names the citizen (bsn_sha256)",
        doc.get("bsn_sha256") == bsn_hash(tx, bsn),
        "" if doc.get("bsn_sha256") == bsn_hash(tx, bsn) else "wrong or missing",
        'set bsn_sha256 to hex SHA-256 of "<transactie_id>:<burgerservicenummer>"',
    )
    stamps = list(_values(doc, ("aangemaakt_op", "datumtijd")))
    bad_stamps = [v for v in stamps if not (isinstance(v, str) and _RFC3339.fullmatch(v))]
    yield Finding(
        f"{label}: date-times are RFC 3339 with an offset",
        not bad_stamps,
        f"{len(bad_stamps)} of {len(stamps)} wrong" if bad_stamps else f"{len(stamps)} checked",
        "write date-times like 2024-03-01T09:00:00+01:00 (an offset or Z is required)",
    )
    amounts = list(_values(doc, ("bedrag", "bedrag_bruto", "bedrag_netto", "termijnbedrag")))
    bad_amounts = [
        v for v in amounts if v is not None and (not isinstance(v, int) or isinstance(v, bool))
    ]
    yield Finding(
        f"{label}: amounts are whole euro cents",
        not bad_amounts,
        f"{len(bad_amounts)} of {len(amounts)} not integers"
        if bad_amounts
        else f"{len(amounts)} checked",
        "give amounts as integers in cents: 1578 for € 15,78, never 15.78",
    )


def _values(data: Any, names: tuple[str, ...]) -> Iterator[Any]:
    if isinstance(data, dict):
        for key, value in data.items():
            if key in names:
                yield value
            else:
                yield from _values(value, names)
    elif isinstance(data, list):
        for item in data:
            yield from _values(item, names)


async def _check_invalid_bsn(
    url: str, session: aiohttp.ClientSession, findings: list[Finding]
) -> None:
    tx = str(uuid.uuid4())
    body = {"transactie_id": tx, "burgerservicenummer": INVALID_BSN, "categorieen": []}
    try:
        async with session.post(url + GEGEVENS_PATH, json=body, allow_redirects=False) as response:
            raw = await read_limited(response, 64 * 1024)
            status, content_type = response.status, response.content_type
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        findings.append(Finding("invalid BSN: refused", False, str(exc), "answer 400"))
        return
    findings.append(
        Finding(
            "invalid BSN: 400 problem+json",
            status == 400 and content_type == "application/problem+json",
            f"HTTP {status} {content_type}",
            "refuse a BSN that fails the 11-proef with 400 application/problem+json",
        )
    )
    findings.append(
        Finding(
            "invalid BSN: the refusal does not echo the BSN",
            INVALID_BSN.encode() not in raw,
            "",
            "never put the BSN in error texts (it is personal data)",
        )
    )
