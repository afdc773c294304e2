"""Producing and verifying documents off the event loop, in a pool of worker processes.

reportlab, signxml and pyHanko are CPU-bound and hold the GIL (CONTEXT.md §7: a PAdES
signature alone is ~38 ms), so the gateway never runs them on its event loop: each worker
process loads the seal key itself (from its file, or its own PKCS#11 session on the HSM),
the trust roots and the connectors, once, and then signs XML, certifies PDFs and verifies
uploads. Workers are started with `spawn`, so they share no threads or sockets with the
gateway.

`render(signed, media_type)` is the one function every bundle endpoint calls: it returns the
exact bytes to send, which the caller hashes into the audit record before releasing them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import multiprocessing
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from cryptography import x509

from gateway.config import Settings, load_keys, verification_connectors
from gateway.documents import pdf as certified_pdf
from gateway.documents import xml as bundel_xml
from gateway.documents.devtsa import start_dev_tsa_process
from gateway.documents.devtsa import stop as stop_dev_tsa
from gateway.documents.layout import register_fonts
from gateway.documents.pades import check_pades
from gateway.documents.verify import DocumentTrust, Verdict, VerifyLimits, verify_file
from gateway.errors import ConfigError, DocumentUnavailable
from gateway.sign import KeyRing, SignedBundel

log = logging.getLogger(__name__)

JSON = "application/json"
JOSE = "application/jose"
XML = bundel_xml.MEDIA_TYPE
PDF = certified_pdf.MEDIA_TYPE
MEDIA_TYPES: Mapping[str, str] = {JSON: "json", JOSE: "jws", XML: "xml", PDF: "pdf"}
EXTENSIONS: Mapping[str, str] = {v: k for k, v in MEDIA_TYPES.items()}


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs to build its own state; picklable."""

    settings: Settings
    tsa_url: str | None  # None: the development TSA, started on first use (sandbox only)
    verify_url: str


@dataclass(frozen=True, slots=True)
class _WorkerState:
    keys: KeyRing
    sealing: certified_pdf.PdfSealing
    trust: DocumentTrust
    verify_url: str
    settings: Settings


_state: _WorkerState | None = None
_proven: set[tuple[tuple[bytes, ...], tuple[bytes, ...]]] = set()


def trust_roots(settings: Settings) -> tuple[x509.Certificate, ...]:
    paths = settings.documents.trust_roots or (
        (settings.dev_pki.root_cert,) if settings.mode == "sandbox" else ()
    )
    roots: list[x509.Certificate] = []
    for path in paths:
        try:
            roots.extend(x509.load_pem_x509_certificates(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load trust root certificates from {path}: {exc}") from exc
    return tuple(roots)


def document_trust(settings: Settings) -> DocumentTrust:
    """The roots and the organisations' connectors (to re-check each source's signature)."""
    connectors, problems = verification_connectors(settings)
    # Without an organisation's certificate its sources show as "not checked", and the verdict
    # says so; that is clearer than refusing to verify anything.
    for problem in problems:
        log.warning("%s", problem)
    documents = settings.documents
    limits = VerifyLimits(
        documents.max_verify_bytes, documents.max_xml_depth, documents.max_pdf_pages
    )
    return DocumentTrust(trust_roots(settings), connectors, limits)


def _crls(settings: Settings) -> tuple[bytes, ...]:
    crls = [Path(p).read_bytes() for p in settings.documents.crl_files]
    if settings.mode == "sandbox" and not settings.documents.crl_files:
        crls.append(settings.dev_pki.crl())
    return tuple(crls)


def _init_worker(spec: WorkerSpec) -> None:
    global _state
    # Documents wait a little rather than slow down everyone else: the event loop process
    # (JSON, login, fan-out) goes first when the cores are busy.
    if spec.settings.documents.niceness > 0:
        os.nice(spec.settings.documents.niceness)
    settings = spec.settings
    keys = load_keys(settings)
    assert keys.active.private_key is not None
    sealing = certified_pdf.PdfSealing(
        key=keys.active.private_key,
        chain=keys.active.chain,
        tsa_url=spec.tsa_url or "",
        trust_roots=trust_roots(settings),
        crls=_crls(settings),
        fetch_revocation=settings.documents.fetch_revocation,
    )
    _state = _WorkerState(keys, sealing, document_trust(settings), spec.verify_url, settings)
    # Warm up what the first document would otherwise pay for: fonts, the ICC profile, XSD.
    register_fonts()
    certified_pdf.srgb_profile()
    bundel_xml.xsd_bytes()


def _worker() -> _WorkerState:
    if _state is None:
        raise RuntimeError("document worker used before its initializer ran")
    return _state


def _ping() -> int:
    _worker()
    return 1


def _sign_xml(document: dict[str, Any]) -> bytes:
    state = _worker()
    key = state.keys.active
    assert key.private_key is not None
    return bundel_xml.sign_xml(document, key.private_key, key.chain)


def _certify_pdf(
    document: dict[str, Any], json_download: bytes, canonical_sha256: str, tsa_url: str
) -> bytes:
    try:
        return _certify_pdf_unchecked(document, json_download, canonical_sha256, tsa_url)
    except ConfigError:
        raise
    except Exception as exc:  # TSA down, HSM gone, …: a clear error, never a half document
        raise DocumentUnavailable(
            f"the certified PDF could not be made: {type(exc).__name__}: {exc}"[:500]
        ) from None


def _certify_pdf_unchecked(
    document: dict[str, Any], json_download: bytes, canonical_sha256: str, tsa_url: str
) -> bytes:
    state = _worker()
    xml_download = _sign_xml(document)
    sealing = state.sealing
    if sealing.tsa_url != tsa_url:
        sealing = replace(sealing, tsa_url=tsa_url)
    if state.settings.mode == "sandbox" and not state.settings.documents.crl_files:
        # The development CRL is reissued daily; a long-running worker picks up the new one.
        crls = _crls(state.settings)
        if crls != sealing.crls:
            sealing = replace(sealing, crls=crls)
    body = certified_pdf.certify_pdf(
        document,
        json_download=json_download,
        xml_download=xml_download,
        canonical_sha256=canonical_sha256,
        verify_url=state.verify_url,
        sealing=sealing,
    )
    if not sealing.fetch_revocation and (sealing.crls, sealing.ocsps) not in _proven:
        # The first PDF with a new set of CRLs/OCSP responses is validated offline here, as a
        # recipient would in years: only then is the set trusted to make documents B-LT.
        result = check_pades(body, sealing.trust_roots)
        if result.problems:
            raise ConfigError(
                "the configured revocation information does not make the PDF seal valid "
                "offline (B-LT): " + "; ".join(result.problems)
            )
        _proven.add((sealing.crls, sealing.ocsps))
    return body


def _verify(data: bytes, name: str | None) -> Verdict:
    return verify_file(data, _worker().trust, name=name)


class DocumentService:
    """The process pool and the formats; one per gateway."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._tsa_url = spec.tsa_url
        self._tsa_process: BaseProcess | None = None
        self._tsa_lock = asyncio.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=max(1, self.spec.settings.documents.workers),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.spec,),
        )

    async def start(self) -> None:
        """Start every worker now (key loading, imports) instead of on the first request."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, _ping)
                for _ in range(self.spec.settings.documents.workers)
            )
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self._tsa_process is not None:
            stop_dev_tsa(self._tsa_process)

    async def tsa_url(self) -> str:
        """The configured TSA, or (sandbox) the development TSA in its own process."""
        async with self._tsa_lock:
            if self._tsa_url is None:
                settings = self.spec.settings
                if settings.mode != "sandbox":
                    raise ConfigError("[documents] tsa_url is required outside sandbox mode")
                self._tsa_process, self._tsa_url = await asyncio.get_running_loop().run_in_executor(
                    None,
                    start_dev_tsa_process,
                    settings.dev_pki,
                    settings.sandbox_host,
                    settings.documents.niceness,
                )
            url = self._tsa_url
            assert url is not None
            return url

    async def _run(self, fn: Any, *args: Any) -> Any:
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except concurrent.futures.BrokenExecutor as exc:
            # A worker died (killed, out of memory, or a file that crashes a parser in C). A
            # broken pool refuses every later call, so the next request gets a fresh one; the
            # calls that were running on the old one fail with this error.
            if self._pool is pool:
                log.error("a document worker process died; starting a new pool")
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise DocumentUnavailable("a document worker process died; try again") from exc

    async def render(self, signed: SignedBundel, media_type: str) -> bytes:
        """The exact bytes of `signed` in `media_type` (one of MEDIA_TYPES)."""
        if media_type == JSON:
            return signed.download_json()
        if media_type == JOSE:
            return signed.compact_jws.encode()
        if media_type == XML:
            body: bytes = await self._run(_sign_xml, signed.document)
            return body
        if media_type == PDF:
            pdf: bytes = await self._run(
                _certify_pdf,
                signed.document,
                signed.download_json(),
                hashlib.sha256(signed.canonical).hexdigest(),
                await self.tsa_url(),
            )
            return pdf
        raise ValueError(f"no rendering for {media_type!r}")

    async def verify(self, data: bytes, name: str | None = None) -> Verdict:
        verdict: Verdict = await self._run(_verify, data, name)
        return verdict


def negotiate(accept: str, formaat: str | None = None) -> str:
    """The media type to send: an explicit `formaat` wins, then Accept (q-values), else JSON."""
    if formaat:
        if formaat not in EXTENSIONS:
            raise ValueError(f"unknown formaat {formaat!r}; choose json, jws, xml or pdf")
        return EXTENSIONS[formaat]
    best, best_q = JSON, 0.0
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        media = fields[0].lower()
        q = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media in MEDIA_TYPES and q > best_q:
            best, best_q = media, q
    return best


__all__ = [
    "EXTENSIONS",
    "MEDIA_TYPES",
    "DocumentService",
    "WorkerSpec",
    "document_trust",
    "negotiate",
]
