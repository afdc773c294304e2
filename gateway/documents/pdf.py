"""The certified PDF: PDF/A-3 with the JSON and XML attached, sealed PAdES baseline B-LT.

Steps, all in one process (a worker of `gateway.documents.pool`, because pyHanko and reportlab
hold the GIL):

1. `layout.layout_pdf` lays out the readable Dutch document (fonts embedded).
2. PDF/A-3 parts are added in the same incremental update as the signature: XMP metadata with
   `pdfaid:part` 3 and `pdfaid:conformance` B, an sRGB OutputIntent (the ICC profile LittleCMS
   builds, via Pillow), and the JSON download and the sealed XML as embedded files listed in the
   catalog's `/AF` with their `/AFRelationship`.
3. pyHanko signs (PAdES, ECDSA P-256) with an RFC 3161 signature time-stamp from the TSA, and
   embeds the validation material of both chains (certificates and CRLs/OCSP responses) in
   the document security store (DSS): baseline B-LT, valid after the certificates expire.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from asn1crypto import algos
from asn1crypto import crl as asn1_crl
from asn1crypto import ocsp as asn1_ocsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from PIL import ImageCms
from pyhanko.pdf_utils import embed, generic
from pyhanko.pdf_utils.generic import pdf_name, pdf_string
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.metadata.model import (
    NS,
    DocumentMetadata,
    ExpandedName,
    XmpStructure,
    XmpValue,
)
from pyhanko.sign import fields, signers
from pyhanko.sign.signers.pdf_cms import Signer
from pyhanko.sign.timestamps.requests_client import HTTPTimeStamper
from pyhanko.sign.validation.dss import DocumentSecurityStore
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.registry import SimpleCertificateStore

from gateway.documents.layout import layout_pdf

MEDIA_TYPE = "application/pdf"
SIGNATURE_FIELD = "Blauwe-Knop-zegel"
SIGNATURE_BYTES_RESERVED = 16 * 1024
PDFA_PART = "3"
PDFA_CONFORMANCE = "B"
SRGB = "sRGB IEC61966-2.1"


@dataclass(frozen=True, slots=True)
class PdfSealing:
    """What sealing a PDF needs: the seal key and chain, the TSA, and the LT trust material.

    `crls` and `ocsps` (DER) are revocation information to embed as they are; with
    `fetch_revocation` pyHanko fetches what the certificates point at (production).
    """

    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...]
    tsa_url: str
    trust_roots: tuple[x509.Certificate, ...]
    crls: tuple[bytes, ...] = ()
    ocsps: tuple[bytes, ...] = ()
    fetch_revocation: bool = False
    tsa_timeout: float = 10.0


class _SealSigner(Signer):
    """pyHanko signer over any `EllipticCurvePrivateKey`, including one that lives in an HSM."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate]) -> None:
        certs = [_asn1_cert(c) for c in chain]
        self._key = key
        super().__init__(
            signing_cert=certs[0],
            cert_registry=SimpleCertificateStore.from_certs(certs),
            signature_mechanism=algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
            embed_roots=True,
        )

    async def async_sign_raw(
        self, data: bytes, digest_algorithm: str, dry_run: bool = False
    ) -> bytes:
        if dry_run:
            return bytes(72)
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


@cache
def _asn1_cert(cert: x509.Certificate) -> asn1_x509.Certificate:
    """Parsed once per worker: asn1crypto then also encodes it only once."""
    return asn1_x509.Certificate.load(cert.public_bytes(Encoding.DER))


_signers: dict[tuple[int, tuple[bytes, ...]], _SealSigner] = {}


def _signer(key: ec.EllipticCurvePrivateKey, chain: Sequence[x509.Certificate]) -> _SealSigner:
    """One pyHanko signer per key and chain in a worker (building its certificate registry
    costs more than the signature itself)."""
    index = (id(key), tuple(c.public_bytes(Encoding.DER) for c in chain))
    if index not in _signers:
        _signers[index] = _SealSigner(key, chain)
    return _signers[index]


class _Pdf17Writer(IncrementalPdfFileWriter):
    """PDF/A-3 is based on PDF 1.7: /AF and ECDSA (ISO 32002, registered as an extension) must
    not make pyHanko declare the document PDF 2.0."""

    def ensure_output_version(self, version: tuple[int, int]) -> None:
        super().ensure_output_version(min(version, (1, 7)))


@cache
def srgb_profile() -> bytes:
    """An sRGB ICC profile made by LittleCMS (MIT licence), shipped inside Pillow's wheel."""
    profile: bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile


def _xmp_pdfa() -> XmpStructure:
    return XmpStructure.of(
        (ExpandedName(ns=NS["pdfaid"], local_name="part"), XmpValue(PDFA_PART)),
        (ExpandedName(ns=NS["pdfaid"], local_name="conformance"), XmpValue(PDFA_CONFORMANCE)),
    )


def _add_output_intent(writer: IncrementalPdfFileWriter) -> None:
    icc = generic.StreamObject(
        {pdf_name("/N"): generic.NumberObject(3)}, stream_data=srgb_profile()
    )
    icc.compress()
    intent = generic.DictionaryObject(
        {
            pdf_name("/Type"): pdf_name("/OutputIntent"),
            pdf_name("/S"): pdf_name("/GTS_PDFA1"),
            pdf_name("/OutputConditionIdentifier"): pdf_string(SRGB),
            pdf_name("/Info"): pdf_string(SRGB),
            pdf_name("/RegistryName"): pdf_string("http://www.color.org"),
            pdf_name("/DestOutputProfile"): writer.add_object(icc),
        }
    )
    writer.root["/OutputIntents"] = generic.ArrayObject([writer.add_object(intent)])
    writer.update_root()


def _attach(
    writer: IncrementalPdfFileWriter,
    name: str,
    data: bytes,
    mime_type: str,
    description: str,
    relationship: str,
    when: dt.datetime,
) -> None:
    spec = embed.FileSpec(
        file_spec_string=name,
        file_name=name,
        embedded_data=embed.EmbeddedFileObject.from_file_data(
            writer,
            data,
            mime_type=mime_type,
            params=embed.EmbeddedFileParams(creation_date=when, modification_date=when),
        ),
        description=description,
        af_relationship=pdf_name(relationship),
    )
    embed.embed_file(writer, spec)


def certify_pdf(
    document: dict[str, Any],
    *,
    json_download: bytes,
    xml_download: bytes,
    canonical_sha256: str,
    verify_url: str,
    sealing: PdfSealing,
) -> bytes:
    """Lay out, make PDF/A-3, attach, seal (PAdES B-LT). Blocking and CPU-heavy: use the pool."""
    raw = layout_pdf(document, canonical_sha256=canonical_sha256, verify_url=verify_url)
    writer = _Pdf17Writer(io.BytesIO(raw))
    issued = dt.datetime.fromisoformat(document["uitgegeven_op"])
    _add_output_intent(writer)
    stem = f"blauwe-knop-{document['bundel_id']}"
    _attach(
        writer,
        f"{stem}.json",
        json_download,
        "application/json",
        "De gegevens van dit overzicht als JSON met JWS-zegel (bron van dit document)",
        "/Source",
        issued,
    )
    _attach(
        writer,
        f"{stem}.xml",
        xml_download,
        "application/xml",
        "Dezelfde gegevens als XML met XAdES-zegel (schema bundel-v1.xsd)",
        "/Alternative",
        issued,
    )
    meta_data: DocumentMetadata = writer.document_meta
    meta_data.title = "Overzicht van uw financiële gegevens"
    meta_data.author = document["uitgever"]["naam"]
    meta_data.subject = "Blauwe Knop: gewaarmerkt overzicht"
    meta_data.creator = "Blauwe Knop gateway"
    meta_data.created = issued
    meta_data.xmp_extra = [_xmp_pdfa()]
    # reportlab always writes /Trapped and /Keywords, which have no counterpart in our XMP
    # (PDF/A: every information entry must have one), so they go.
    info = writer.trailer["/Info"]
    for entry in ("/Trapped", "/Keywords"):
        if entry in info:
            del info[entry]
    writer.mark_update(writer.trailer.raw_get("/Info"))
    meta = signers.PdfSignatureMetadata(
        field_name=SIGNATURE_FIELD,
        subfilter=fields.SigSeedSubFilter.PADES,
        # With fetching (production) pyHanko validates and collects the material itself;
        # otherwise the configured CRLs/OCSP responses are embedded directly, below.
        embed_validation_info=sealing.fetch_revocation,
        use_pades_lta=False,
        validation_context=_validation_context(sealing) if sealing.fetch_revocation else None,
        reason="Gewaarmerkt overzicht (Blauwe Knop)",
        location="Nederland",
    )
    timestamper = _timestamper(sealing.tsa_url, sealing.tsa_timeout)
    # Known material goes into the DSS in the signed revision itself (no second update): the
    # seal chain, the roots, the TSA certificates seen in earlier tokens, the revocation data.
    pre_signed = not sealing.fetch_revocation and timestamper.known_certs is not None
    if pre_signed:
        _supply_dss(writer, sealing, timestamper.known_certs or {})
    out = signers.sign_pdf(
        writer,
        meta,
        signer=_signer(sealing.key, sealing.chain),
        timestamper=timestamper,
        # A fixed reservation spares pyHanko a dry-run signature to estimate the size; the CMS
        # (two chains, the time-stamp token) is 3-5 KB, far below this.
        bytes_reserved=SIGNATURE_BYTES_RESERVED,
    )
    fresh = timestamper.take_new_certs()
    if not sealing.fetch_revocation and (fresh or not pre_signed):
        # A TSA certificate we had not seen (first document, or the TSA rotated its key):
        # add it in a DSS update after the signature, as PAdES allows.
        out.seek(0)
        after = IncrementalPdfFileWriter(out)
        _supply_dss(after, sealing, timestamper.known_certs or {})
        after.write_in_place()
    return bytes(out.getvalue())


class _TsaClient(HTTPTimeStamper):
    """pyHanko's RFC 3161 HTTP client that remembers the certificates in the tokens."""

    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout=timeout)
        self.known_certs: dict[bytes, asn1_x509.Certificate] | None = None
        self._new = False

    async def async_timestamp(self, message_digest: bytes, md_algorithm: str) -> Any:
        token = await super().async_timestamp(message_digest, md_algorithm)
        known = self.known_certs if self.known_certs is not None else {}
        for choice in token["content"]["certificates"]:
            cert = choice.chosen
            if cert.dump() not in known:
                known[cert.dump()] = cert
                self._new = True
        self.known_certs = known
        return token

    def take_new_certs(self) -> bool:
        new, self._new = self._new, False
        return new


@cache
def _timestamper(url: str, timeout: float) -> _TsaClient:
    """One per worker and URL: it keeps the TSA's certificates for the DSS."""
    return _TsaClient(url, timeout)


def _supply_dss(
    writer: IncrementalPdfFileWriter,
    sealing: PdfSealing,
    tsa_certs: dict[bytes, asn1_x509.Certificate],
) -> None:
    """Baseline B-LT: a DSS with every certificate of the seal and the time-stamp (both chains,
    roots included) and the configured revocation information. `gateway.documents.pades` (run
    once per CRL set by each worker, and by every verifier) proves the material suffices."""
    certs = {c.dump(): c for c in (_asn1_cert(c) for c in (*sealing.chain, *sealing.trust_roots))}
    certs.update(tsa_certs)
    DocumentSecurityStore.supply_dss_in_writer(
        writer,
        None,
        certs=list(certs.values()),
        crls=[asn1_crl.CertificateList.load(c) for c in sealing.crls],
        ocsps=[asn1_ocsp.OCSPResponse.load(o) for o in sealing.ocsps],
    )


def _validation_context(sealing: PdfSealing) -> ValidationContext:
    return ValidationContext(
        trust_roots=[_asn1_cert(c) for c in sealing.trust_roots],
        crls=[asn1_crl.CertificateList.load(c) for c in sealing.crls],
        ocsps=[asn1_ocsp.OCSPResponse.load(o) for o in sealing.ocsps],
        allow_fetching=sealing.fetch_revocation,
        revocation_mode="require",
    )


__all__ = ["MEDIA_TYPE", "PdfSealing", "certify_pdf", "srgb_profile"]
