"""Validating the PDF's PAdES B-LT seal with pyHanko, offline, at any moment.

B-LT validation at a moment `at` (default now), with nothing fetched from the network:
1. the signature time-stamp (RFC 3161) is validated at `at`, with the certificates and
   revocation information from the document's DSS;
2. the seal certificate is validated at the time the time-stamp proves (its POE), with the
   same embedded material: so the seal still validates after its certificate expired, as
   long as the time-stamp authority's certificate is valid at `at`;
3. the signature must cover the whole document except later DSS/time-stamp updates.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pyhanko.pdf_utils.misc import PdfError
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko.sign.validation.errors import NoDSSFoundError
from pyhanko.sign.validation.generic_cms import extract_tst_data_iter
from pyhanko_certvalidator import ValidationContext

from gateway.errors import VerificationError

MAX_ATTACHMENTS = 8


def asn1_certificate(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


@dataclass(frozen=True, slots=True)
class PadesResult:
    signer: str | None
    signing_time: dt.datetime | None
    timestamp_time: dt.datetime | None
    timestamp_authority: str | None
    attachments: tuple[tuple[str, bytes], ...]
    problems: tuple[str, ...]


def _context(
    dss: DocumentSecurityStore | None, roots: Sequence[x509.Certificate], moment: dt.datetime
) -> ValidationContext:
    kwargs = {
        "trust_roots": [asn1_certificate(r) for r in roots],
        "allow_fetching": False,
        "revocation_mode": "hard-fail",
        "moment": moment,
    }
    if dss is None:
        return ValidationContext(**kwargs)  # type: ignore[arg-type]
    return dss.as_validation_context(kwargs)


def attachments(reader: PdfFileReader) -> tuple[tuple[str, bytes], ...]:
    """The embedded files (name, bytes) from the catalog's EmbeddedFiles name tree."""
    if "/Names" not in reader.root:
        return ()
    names = reader.root["/Names"]
    if "/EmbeddedFiles" not in names:
        return ()
    tree = names["/EmbeddedFiles"]
    entries = tree["/Names"] if "/Names" in tree else []  # noqa: SIM401 (a PDF dict)
    found: list[tuple[str, bytes]] = []
    for i in range(0, min(len(entries), 2 * MAX_ATTACHMENTS), 2):
        spec = entries[i + 1].get_object()
        name = str(spec["/UF"] if "/UF" in spec else spec["/F"])
        stream = spec["/EF"]["/F"].get_object()
        found.append((name, stream.data))
    return tuple(found)


def check_pades(
    data: bytes,
    roots: Sequence[x509.Certificate],
    at: dt.datetime | None = None,
    *,
    max_pages: int | None = None,
) -> PadesResult:
    """Validate the PDF's one seal; `max_pages` refuses longer documents before any work."""
    moment = at or dt.datetime.now(dt.UTC)
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=True)
        if max_pages is not None:
            pages = reader.root["/Pages"]["/Count"]
            if not isinstance(pages, int) or not 0 < pages <= max_pages:
                raise VerificationError(
                    f"the PDF has {pages} pages; at most {max_pages} are checked"
                )
        signatures = reader.embedded_regular_signatures
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise VerificationError(f"not a readable PDF: {exc}") from exc
    if len(signatures) != 1:
        raise VerificationError(f"expected exactly one seal in the PDF, found {len(signatures)}")
    signature = signatures[0]
    try:
        dss: DocumentSecurityStore | None = DocumentSecurityStore.read_dss(reader)
    except NoDSSFoundError:
        dss = None
    problems: list[str] = []
    if dss is None:
        problems.append("the PDF has no embedded validation material (DSS): it is not B-LT")
    tst = next(extract_tst_data_iter(signature.signer_info, signed=False), None)
    if tst is None:
        raise VerificationError("the seal has no signature time-stamp: it is not B-T/B-LT")
    tst_info = tst["encap_content_info"]["content"].parsed
    proven: dt.datetime = tst_info["gen_time"].native
    try:
        status = validate_pdf_signature(
            signature,
            signer_validation_context=_context(dss, roots, proven),
            ts_validation_context=_context(dss, roots, moment),
        )
    except (PdfError, ValueError) as exc:
        raise VerificationError(f"the PDF seal cannot be validated: {exc}") from exc
    if not status.intact or not status.valid:
        problems.append("the PDF seal does not match the document: it was changed after sealing")
    elif not status.trusted:
        problems.append(
            f"the seal certificate is not trusted at the time-stamp ({proven.isoformat()}) "
            "with the embedded validation material"
        )
    ts = status.timestamp_validity
    if ts is None or not (ts.intact and ts.valid and ts.trusted):
        problems.append(f"the signature time-stamp does not validate at {moment.isoformat()}")
    level = status.modification_level
    if level is None or level > ModificationLevel.LTA_UPDATES:
        problems.append("the PDF was modified after sealing beyond adding validation material")
    signer = status.signing_cert.subject.human_friendly if status.signing_cert else None
    tsa = ts.signing_cert.subject.human_friendly if ts and ts.signing_cert else None
    return PadesResult(
        signer=signer,
        signing_time=status.signer_reported_dt,
        timestamp_time=ts.timestamp if ts else proven,
        timestamp_authority=tsa,
        attachments=attachments(reader),
        problems=tuple(problems),
    )
