"""Verify any download offline: a .json, .jws, .xml or .pdf, for debt-help workers and auditors.

What is checked, for every format:
- the gateway's seal: the signature over the bundle, and the seal certificate's chain to a
  trusted root (pyhanko-certvalidator; at the signing time, or at the time-stamp for the PDF);
- every organisation's own provenance signature, re-verified with its connector
  (`gateway.verify`), and that the bundle shows exactly the data the organisation signed;
- for the PDF: PAdES with an RFC 3161 time-stamp and the embedded validation material (B-LT):
  the time-stamp is validated at the validation moment, the seal certificate at the moment the
  time-stamp proves, with only the CRLs/OCSP responses and certificates inside the document.
  Then the JSON attached to the PDF is verified as above, and the XML attachment too.

Everything here is blocking and CPU-bound; the gateway runs it in its process pool.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pyhanko.pdf_utils.misc import PdfError
from pyhanko_certvalidator import CertificateValidator, ValidationContext
from pyhanko_certvalidator.errors import PathBuildingError, PathValidationError, ValidationError

from gateway import jws
from gateway.connector import Connector
from gateway.documents import xml as bundel_xml
from gateway.documents.pades import asn1_certificate, check_pades
from gateway.errors import BlauweKnopError, VerificationError
from gateway.sign import jwk_thumbprint
from gateway.verify import (
    BundleVerdict,
    SourceVerdict,
    Trust,
    verify_bundel_document,
    verify_compact,
    verify_download,
)

Format = Literal["json", "jws", "xml", "pdf"]


@dataclass(frozen=True, slots=True)
class VerifyLimits:
    """How much work one file handed in for verification may cause (`[documents]`).

    The same for `POST /v1/verify`, `/verifieer` and `blauweknop verify`, and for the files
    attached to a PDF, which are checked with these limits too.
    """

    max_bytes: int = 20 * 1024 * 1024
    max_xml_depth: int = bundel_xml.DEFAULT_MAX_DEPTH
    max_pdf_pages: int = 100


@dataclass(frozen=True, slots=True)
class DocumentTrust:
    """What an offline verifier trusts: root certificates, and connectors for the sources."""

    roots: tuple[x509.Certificate, ...]
    connectors: Mapping[str, Connector] = field(default_factory=dict)
    limits: VerifyLimits = field(default_factory=VerifyLimits)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of checking one file; `ok` is the verdict, `problems` say why not."""

    format: Format
    ok: bool
    signer: str | None = None
    signer_kid: str | None = None
    signing_time: dt.datetime | None = None
    timestamp_time: dt.datetime | None = None
    timestamp_authority: str | None = None
    bundel_id: str | None = None
    uitgegeven_op: str | None = None
    sources: tuple[SourceVerdict, ...] = ()
    attachments: tuple[Verdict, ...] = ()
    problems: tuple[str, ...] = ()
    # The bundle as the seal covers it, for callers that act on its content (the scripted
    # journey checks whose it is). Never reported: `as_json` is what the verify page shows.
    bundel: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "formaat": self.format,
            "geldig": self.ok,
            "ondertekenaar": self.signer,
            "sleutel_id": self.signer_kid,
            "ondertekend_op": _iso(self.signing_time),
            "tijdstempel": _iso(self.timestamp_time),
            "tijdstempelautoriteit": self.timestamp_authority,
            "bundel_id": self.bundel_id,
            "uitgegeven_op": self.uitgegeven_op,
            "bronnen": [
                {"organisatie": s.code, "status": s.status, "herkomst": s.provenance}
                for s in self.sources
            ],
            "bijlagen": [a.as_json() for a in self.attachments],
            "problemen": list(self.problems),
        }


def _iso(when: dt.datetime | None) -> str | None:
    return when.isoformat() if when else None


def detect_format(data: bytes, name: str | None = None) -> Format:
    """By content first (a hostile name must not choose the parser), then by file name."""
    head = data[:1024].lstrip()
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"<"):
        return "xml"
    if head.startswith(b"{"):
        return "json"
    if head.startswith(b"ey"):
        return "jws"
    if name:
        suffix = name.rsplit(".", 1)[-1].lower()
        if suffix in ("json", "jws", "xml", "pdf"):
            return suffix  # type: ignore[return-value]
    raise VerificationError(
        "unknown file type: expected a Blauwe Knop .json, .jws, .xml or .pdf download"
    )


def verify_file(
    data: bytes, trust: DocumentTrust, *, name: str | None = None, at: dt.datetime | None = None
) -> Verdict:
    """Check one download; never raises for a bad document, only reports (`ok` False)."""
    fmt: Format = "json"
    try:
        if len(data) > trust.limits.max_bytes:
            raise VerificationError(f"the file is larger than {trust.limits.max_bytes} bytes")
        fmt = detect_format(data, name)
        if fmt == "pdf":
            return _verify_pdf(data, trust, at)
        if fmt == "xml":
            return _verify_xml(data, trust, at)
        return _verify_jose(data, fmt, trust, at)
    except BlauweKnopError as exc:
        return Verdict(fmt, False, problems=(str(exc),))
    except (
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        ArithmeticError,
        zlib.error,
        PdfError,
    ) as exc:
        # Malformed input deep inside a parser: report it, do not crash the verifier. pyHanko
        # reads PDF objects lazily, so a broken one can raise PdfError (or zlib.error, for a
        # stream that does not inflate, or decimal.InvalidOperation, an ArithmeticError, for a
        # number like ".") anywhere, long after the file was opened.
        return Verdict(fmt, False, problems=(f"malformed {fmt} document: {exc!r}"[:500],))


# --- certificates --------------------------------------------------------------------------


def check_chain(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], at: dt.datetime
) -> None:
    """The first certificate must chain to one of `roots` and be valid for signing at `at`."""
    if not roots:
        raise VerificationError("no trusted root certificates configured")
    context = ValidationContext(
        trust_roots=[asn1_certificate(r) for r in roots],
        other_certs=[asn1_certificate(c) for c in chain[1:]],
        moment=at,
        allow_fetching=False,
        revocation_mode="soft-fail",
    )
    validator = CertificateValidator(asn1_certificate(chain[0]), validation_context=context)
    try:
        asyncio.run(validator.async_validate_usage({"digital_signature"}))
    except (PathBuildingError, PathValidationError, ValidationError) as exc:
        raise VerificationError(
            f"the seal certificate {chain[0].subject.rfc4514_string()} is not trusted at "
            f"{at.isoformat()}: {exc}"
        ) from exc


def _verdict(
    fmt: Format,
    bundle: BundleVerdict,
    chain: Sequence[x509.Certificate],
    signing_time: dt.datetime | None,
    **extra: Any,
) -> Verdict:
    problems = tuple(
        f"{s.code}: the organisation's own signature was not checked (no trust configured)"
        for s in bundle.sources
        if s.provenance == "not checked"
    )
    return Verdict(
        fmt,
        ok=not problems,
        signer=chain[0].subject.rfc4514_string(),
        signer_kid=bundle.kid,
        signing_time=signing_time,
        bundel_id=bundle.document["bundel_id"],
        uitgegeven_op=bundle.document["uitgegeven_op"],
        sources=bundle.sources,
        problems=problems,
        bundel=bundle.document,
        **extra,
    )


# --- JSON and JWS --------------------------------------------------------------------------


def _x5c_chain(token: str) -> tuple[x509.Certificate, ...]:
    try:
        header = orjson.loads(jws.b64url_decode(token.split(".", 1)[0]))
    except (orjson.JSONDecodeError, VerificationError) as exc:
        raise VerificationError("the JWS header is not base64url JSON") from exc
    x5c = header.get("x5c") if isinstance(header, dict) else None
    if not isinstance(x5c, list) or not x5c or not all(isinstance(c, str) for c in x5c):
        raise VerificationError("the JWS header carries no x5c certificate chain")
    try:
        return tuple(x509.load_der_x509_certificate(base64.b64decode(c)) for c in x5c)
    except ValueError as exc:
        raise VerificationError(f"a certificate in x5c is malformed: {exc}") from exc


def _verify_jose(data: bytes, fmt: Format, trust: DocumentTrust, at: dt.datetime | None) -> Verdict:
    if fmt == "json":
        try:
            outer = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise VerificationError("not a JSON document") from exc
        if not isinstance(outer, dict) or not isinstance(outer.get("jws"), str):
            raise VerificationError('expected a JSON object with "bundel" and "jws"')
        token: str = outer["jws"]
    else:
        token = data.decode("ascii", errors="replace").strip()
    chain = _x5c_chain(token)
    public = chain[0].public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise VerificationError("the seal certificate does not carry an EC P-256 key")
    kid = jwk_thumbprint(public)
    seal_trust = Trust({kid: public}, trust.connectors)
    bundle = (
        verify_download(data, seal_trust)
        if fmt == "json"
        else verify_compact(token.encode(), seal_trust)
    )
    issued = dt.datetime.fromisoformat(bundle.document["uitgegeven_op"])
    check_chain(chain, trust.roots, at or issued)
    return _verdict(fmt, bundle, chain, issued)


# --- XML ------------------------------------------------------------------------------------


def _verify_xml(data: bytes, trust: DocumentTrust, at: dt.datetime | None) -> Verdict:
    seal = bundel_xml.verify_xml_seal(data, max_depth=trust.limits.max_xml_depth)
    when = seal.signing_time or dt.datetime.fromisoformat(seal.document["uitgegeven_op"])
    check_chain(seal.chain, trust.roots, at or when)
    public = seal.chain[0].public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    kid = jwk_thumbprint(public)
    bundle = verify_bundel_document(seal.document, kid, Trust({kid: public}, trust.connectors))
    return _verdict("xml", bundle, seal.chain, seal.signing_time)


# --- PDF ------------------------------------------------------------------------------------


def _verify_pdf(data: bytes, trust: DocumentTrust, at: dt.datetime | None) -> Verdict:
    pades = check_pades(data, trust.roots, at, max_pages=trust.limits.max_pdf_pages)
    attachments: list[Verdict] = []
    # The time-stamp proves the attachments existed then: their seals are judged at that moment.
    for name, content in pades.attachments:
        attachments.append(verify_file(content, trust, name=name, at=pades.timestamp_time))
    problems = list(pades.problems)
    if not any(a.format == "json" for a in attachments):
        problems.append("the PDF carries no JSON bundle attachment")
    for attachment in attachments:
        if not attachment.ok:
            problems.extend(f"attachment ({attachment.format}): {p}" for p in attachment.problems)
        elif attachment.bundel_id != (attachments[0].bundel_id if attachments else None):
            problems.append("the attachments describe different bundles")
    first = next((a for a in attachments if a.format == "json"), None)
    return Verdict(
        "pdf",
        ok=not problems,
        signer=pades.signer,
        signer_kid=first.signer_kid if first else None,
        signing_time=pades.signing_time,
        timestamp_time=pades.timestamp_time,
        timestamp_authority=pades.timestamp_authority,
        bundel_id=first.bundel_id if first else None,
        uitgegeven_op=first.uitgegeven_op if first else None,
        sources=first.sources if first else (),
        attachments=tuple(attachments),
        problems=tuple(problems),
        bundel=first.bundel if first else None,
    )


__all__ = [
    "DocumentTrust",
    "Verdict",
    "VerifyLimits",
    "check_chain",
    "detect_format",
    "verify_file",
]
