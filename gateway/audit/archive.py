"""Archive for reproduction: the exact bytes of every issued document, encrypted to the archivist.

Every document the gateway hands out (the JSON download, the compact JWS, later PDF and XML)
goes into the audit stream as a `document.gearchiveerd` event, in the same durable outbox append
as the `bundel.uitgegeven` event that records it. Its bytes are encrypted with HPKE (RFC 9180)
base mode, suite DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, to the archivist's
public key. Only the holder of the archivist's private key can read them: not the Kafka
operators, not the gateway (which only ever loads the public key).

The HPKE `info` binds each ciphertext to its context (transaction id, format, media type,
SHA-256 and size of the plaintext, key id), so a ciphertext moved to another event, or an event
whose hash was edited, no longer decrypts. The exact layout is in `context_info` and
docs/audit.md, so that any RFC 9180 implementation can decrypt.

`reproduce` is the auditor's "time travel": from the events of one transaction it decrypts the
documents, checks every hash against the events, and verifies every signature (the gateway's
seal and each organisation's own) with `gateway.verify`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import orjson
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from gateway.canonical import CanonicalizationError, canonicalize
from gateway.documents.verify import DocumentTrust, verify_file
from gateway.errors import BlauweKnopError, ConfigError, VerificationError
from gateway.verify import BundleVerdict, Trust, verify_compact, verify_download

# RFC 9180 identifiers: KEM 0x0020 DHKEM(X25519, HKDF-SHA256), KDF 0x0001 HKDF-SHA256,
# AEAD 0x0002 AES-256-GCM; mode 0x00 (base).
HPKE_SUITE_NAME: Final = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
ENC_BYTES: Final = 32  # Nenc of DHKEM(X25519): the sender's ephemeral public key
TAG_BYTES: Final = 16
INFO_LABEL: Final = b"blauweknop.archief.v1"

# Limits on what is read back from the stream, which may be hostile.
MAX_DOCUMENT_BYTES: Final = 64 * 1024 * 1024
MAX_EVENT_BYTES: Final = 128 * 1024 * 1024
# Encrypt on a worker thread above this size, so a large PDF does not stall the event loop.
OFF_LOOP_BYTES: Final = 256 * 1024
# Text formats shrink about 4x under zstd level 1 (0.2 ms for an 80 KB bundle), which the
# synced outbox write, the relay and Kafka more than pay back; a PDF is compressed already.
COMPRESSION: Final = "zstd"
_COMPRESSED_TYPES: Final = frozenset({"application/json", "application/jose", "application/xml"})
_ZSTD_LEVEL: Final = 1
# One compressor per thread (they are not thread-safe): making one allocates its tables afresh.
_compressors = threading.local()

EVENT_ARCHIVED: Final = "document.gearchiveerd"
EVENT_ISSUED: Final = "bundel.uitgegeven"
_TYPE_PREFIX: Final = "nl.blauweknop.audit."

_TRANSACTIE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_FORMAAT = re.compile(r"[a-z0-9]{1,16}")
_MT_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
_MEDIATYPE = re.compile(f"{_MT_NAME}/{_MT_NAME}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_DEV_PRIVATE = "archivist-DEVELOPMENT-ONLY.key"
_DEV_PUBLIC = "archivist.pub"

# The media types the gateway issues, and how each is verified when reproduced.
Verifier = Callable[[bytes, Trust], BundleVerdict]
VERIFIERS: Final[Mapping[str, Verifier]] = {
    "application/json": verify_download,
    "application/jose": verify_compact,
}
# The certified documents: their seal chains to trust roots (and the PDF's to a time-stamp).
CERTIFIED: Final = frozenset({"application/pdf", "application/xml"})


class ArchiveError(BlauweKnopError):
    """An archived document cannot be sealed, found, opened or reproduced."""


class ArchiveKeyError(ArchiveError):
    """The archivist key is unusable, or not the key the documents were encrypted to."""


class ArchiveIntegrityError(ArchiveError, VerificationError):
    """A ciphertext, hash or signature does not match: the evidence was altered or moved."""


def archive_key_id(public_key: x25519.X25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 over the raw 32-byte X25519 public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def development_key_path(state_dir: Path) -> Path:
    """Sandbox only: where the development archivist's private key is made."""
    return state_dir / "archivist" / _DEV_PRIVATE


@dataclass(frozen=True, slots=True)
class ArchivistPublicKey:
    """What the gateway holds: the public half only."""

    key_id: str
    public_key: x25519.X25519PublicKey

    @classmethod
    def from_public_key(cls, public_key: x25519.X25519PublicKey) -> ArchivistPublicKey:
        return cls(archive_key_id(public_key), public_key)

    @classmethod
    def from_file(cls, path: Path) -> ArchivistPublicKey:
        """A PEM SubjectPublicKeyInfo X25519 key (`openssl pkey -pubout`)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the archivist's public key {path}: {exc}") from exc
        if b"PRIVATE KEY" in data:
            raise ConfigError(
                f"{path} holds a private key; the gateway must only get the archivist's public "
                "key (make it with `openssl pkey -in PRIVATE.pem -pubout`)"
            )
        try:
            key = load_pem_public_key(data)
        except ValueError as exc:
            raise ConfigError(f"{path}: not a PEM public key: {exc}") from exc
        if not isinstance(key, x25519.X25519PublicKey):
            raise ConfigError(f"{path}: the archivist's key must be an X25519 key")
        return cls.from_public_key(key)

    @classmethod
    def development(cls, state_dir: Path) -> ArchivistPublicKey:
        """Sandbox mode only: a key pair made on first use; the gateway keeps only the public key.

        The private key is written once to `state_dir/archivist/archivist-DEVELOPMENT-ONLY.key`
        (mode 0600) for `blauweknop audit reproduce --key` in the demo, and never read back here.
        """
        folder = state_dir / "archivist"
        public = folder / _DEV_PUBLIC
        if not public.exists():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                write_key_pair(folder / _DEV_PRIVATE, public)
            except ArchiveKeyError:  # another process is making it right now
                deadline = time.monotonic() + 5
                while not public.exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
        return cls.from_file(public)


@dataclass(frozen=True, slots=True)
class ArchivistPrivateKey:
    """What only the archivist holds, to reproduce documents."""

    key_id: str
    private_key: x25519.X25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> ArchivistPrivateKey:
        """A PEM PKCS#8 X25519 private key (`openssl genpkey -algorithm X25519`)."""
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ArchiveKeyError(f"cannot read the archivist's key {path}: {exc}") from exc
        try:
            key = load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ArchiveKeyError(
                f"{path}: not an unencrypted PEM private key ({exc}); give the archivist's "
                "X25519 private key"
            ) from exc
        if not isinstance(key, x25519.X25519PrivateKey):
            raise ArchiveKeyError(f"{path}: the archivist's key must be an X25519 private key")
        return cls(archive_key_id(key.public_key()), key)


def write_key_pair(private_path: Path, public_path: Path) -> ArchivistPublicKey:
    """Make an archivist key pair: the private key 0600 (refuses to overwrite), the public PEM."""
    key = x25519.X25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ArchiveKeyError(f"{private_path} exists; not overwriting a key") from exc
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    # Written whole, then renamed: a reader never sees half a key.
    partial = public_path.with_name(f".{public_path.name}.{os.getpid()}")
    partial.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    os.replace(partial, public_path)
    return ArchivistPublicKey.from_public_key(key.public_key())


@dataclass(frozen=True, slots=True)
class IssuedDocument:
    """One document exactly as handed out: its format name, media type and bytes."""

    formaat: str
    mediatype: str
    content: bytes

    def __post_init__(self) -> None:
        if not _FORMAAT.fullmatch(self.formaat):
            raise ArchiveError(f"format name {self.formaat!r} must be 1-16 of a-z, 0-9")
        if not _MEDIATYPE.fullmatch(self.mediatype):
            raise ArchiveError(f"media type {self.mediatype!r} must be type/subtype, no params")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True, slots=True)
class SealedDocument:
    """The data of one `document.gearchiveerd` event (without the citizen's pseudonym)."""

    formaat: str
    mediatype: str
    sha256: str
    grootte: int
    archiefsleutel: str
    enc: bytes
    ciphertext: bytes
    # "zstd" when the sealed plaintext is the document compressed (RFC 8878); None otherwise.
    compressie: str | None = None

    def event_data(self) -> dict[str, Any]:
        data = {
            "formaat": self.formaat,
            "mediatype": self.mediatype,
            "sha256": self.sha256,
            "grootte": self.grootte,
            "archiefsleutel": self.archiefsleutel,
            "hpke": HPKE_SUITE_NAME,
            "enc": base64.b64encode(self.enc).decode("ascii"),
            "ciphertext": base64.b64encode(self.ciphertext).decode("ascii"),
        }
        if self.compressie is not None:
            data["compressie"] = self.compressie
        return data

    @classmethod
    def from_event_data(cls, data: Any) -> SealedDocument:
        """Strict parse of an event's `data`; raises ArchiveIntegrityError on anything odd."""
        if not isinstance(data, dict):
            raise ArchiveIntegrityError("document.gearchiveerd: data must be an object")
        expected = {"formaat", "mediatype", "sha256", "grootte", "archiefsleutel", "hpke", "enc"}
        expected |= {"ciphertext", "burger", "bundel_id", "compressie"}
        if unknown := set(data) - expected:
            raise ArchiveIntegrityError(f"document.gearchiveerd: unknown fields {sorted(unknown)}")

        def text(name: str, pattern: re.Pattern[str]) -> str:
            value = data.get(name)
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ArchiveIntegrityError(f"document.gearchiveerd: malformed {name!r}")
            return value

        if data.get("hpke") != HPKE_SUITE_NAME:
            raise ArchiveIntegrityError(
                f"document.gearchiveerd: HPKE suite {data.get('hpke')!r} is not {HPKE_SUITE_NAME}"
            )
        size = data.get("grootte")
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or not 0 <= size <= MAX_DOCUMENT_BYTES
        ):
            raise ArchiveIntegrityError("document.gearchiveerd: malformed 'grootte'")
        compressie = data.get("compressie")
        if compressie not in (None, COMPRESSION):
            raise ArchiveIntegrityError(
                f"document.gearchiveerd: unknown compression {compressie!r}; only "
                f"{COMPRESSION!r} is defined"
            )
        enc = _b64(data.get("enc"), "enc", ENC_BYTES)
        ciphertext = _b64(data.get("ciphertext"), "ciphertext", _max_sealed(size) + TAG_BYTES)
        # Uncompressed, the ciphertext is exactly the document and its tag; compressed, the
        # document may not shrink, but zstd never grows it beyond _max_sealed.
        fits = (
            len(ciphertext) == size + TAG_BYTES
            if compressie is None
            else TAG_BYTES < len(ciphertext) <= _max_sealed(size) + TAG_BYTES
        )
        if len(enc) != ENC_BYTES or not fits:
            raise ArchiveIntegrityError(
                "document.gearchiveerd: enc or ciphertext length does not fit the stated size"
            )
        return cls(
            formaat=text("formaat", _FORMAAT),
            mediatype=text("mediatype", _MEDIATYPE),
            sha256=text("sha256", _SHA256),
            grootte=size,
            archiefsleutel=text("archiefsleutel", _KEY_ID),
            enc=enc,
            ciphertext=ciphertext,
            compressie=compressie,
        )


def _max_sealed(size: int) -> int:
    """ZSTD_compressBound for `size` bytes, with room for the frame header and checksum."""
    return size + (size >> 8) + 64


def context_info(
    transactie_id: str,
    formaat: str,
    mediatype: str,
    sha256: str,
    grootte: int,
    key_id: str,
    compressie: str | None = None,
) -> bytes:
    """The HPKE `info`: ASCII lines joined by LF (0x0A), no trailing LF.

        blauweknop.archief.v1
        <transactieid>
        <formaat>
        <mediatype>
        <sha256 of the document, lowercase hex>
        <size of the document in bytes, decimal>
        <archivist key id, 16 lowercase hex>
        zstd                                      (only when the document was compressed)

    Each field is checked against its pattern, none can hold a LF, so the encoding is unambiguous.
    """
    if not _TRANSACTIE_ID.fullmatch(transactie_id):
        raise ArchiveError(
            f"transaction id {transactie_id!r} has characters outside [A-Za-z0-9._:-]"
        )
    for value, pattern, name in (
        (formaat, _FORMAAT, "format"),
        (mediatype, _MEDIATYPE, "media type"),
        (sha256, _SHA256, "sha256"),
        (key_id, _KEY_ID, "key id"),
    ):
        if not pattern.fullmatch(value):
            raise ArchiveError(f"malformed {name} {value!r}")
    if compressie not in (None, COMPRESSION):
        raise ArchiveError(f"unknown compression {compressie!r}")
    fields = [INFO_LABEL.decode(), transactie_id, formaat, mediatype, sha256, str(grootte), key_id]
    if compressie is not None:
        fields.append(compressie)
    return "\n".join(fields).encode("ascii")


def _compressor() -> zstandard.ZstdCompressor:
    compressor: zstandard.ZstdCompressor | None = getattr(_compressors, "zstd", None)
    if compressor is None:
        compressor = _compressors.zstd = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
    return compressor


def seal_document(
    document: IssuedDocument, transactie_id: str, key: ArchivistPublicKey
) -> SealedDocument:
    """HPKE base-mode single-shot seal of the document, zstd-compressed first if it is text."""
    if len(document.content) > MAX_DOCUMENT_BYTES:
        raise ArchiveError(f"document larger than {MAX_DOCUMENT_BYTES} bytes cannot be archived")
    sha256 = document.sha256
    size = len(document.content)
    compressie = COMPRESSION if document.mediatype in _COMPRESSED_TYPES else None
    plaintext = document.content
    if compressie is not None:
        # The frame records the size, which `_inflate` insists on before it allocates.
        plaintext = _compressor().compress(plaintext)
    info = context_info(
        transactie_id, document.formaat, document.mediatype, sha256, size, key.key_id, compressie
    )
    sealed = _SUITE.encrypt(plaintext, key.public_key, info=info)
    return SealedDocument(
        formaat=document.formaat,
        mediatype=document.mediatype,
        sha256=sha256,
        grootte=size,
        archiefsleutel=key.key_id,
        enc=sealed[:ENC_BYTES],
        ciphertext=sealed[ENC_BYTES:],
        compressie=compressie,
    )


async def seal_documents(
    documents: Sequence[IssuedDocument], transactie_id: str, key: ArchivistPublicKey
) -> list[SealedDocument]:
    """Seal each document; large ones on a worker thread so the event loop keeps serving."""
    sealed = []
    for document in documents:
        if len(document.content) > OFF_LOOP_BYTES:
            sealed.append(await asyncio.to_thread(seal_document, document, transactie_id, key))
        else:
            sealed.append(seal_document(document, transactie_id, key))
    return sealed


def open_document(sealed: SealedDocument, transactie_id: str, key: ArchivistPrivateKey) -> bytes:
    """Decrypt, decompress, and check the document's SHA-256 and size against the event."""
    if sealed.archiefsleutel != key.key_id:
        raise ArchiveKeyError(
            f"the {sealed.formaat} document of transaction {transactie_id} was encrypted to "
            f"archivist key {sealed.archiefsleutel}, but the key given has id {key.key_id}; "
            "use the archivist key that was configured at the time"
        )
    info = context_info(
        transactie_id,
        sealed.formaat,
        sealed.mediatype,
        sealed.sha256,
        sealed.grootte,
        key.key_id,
        sealed.compressie,
    )
    try:
        plaintext = _SUITE.decrypt(sealed.enc + sealed.ciphertext, key.private_key, info=info)
    except InvalidTag as exc:
        raise ArchiveIntegrityError(
            f"the {sealed.formaat} document of transaction {transactie_id} does not decrypt: its "
            "ciphertext was altered, moved from another event, or its event's hash, size or "
            "format was changed"
        ) from exc
    if sealed.compressie is not None:
        plaintext = _inflate(
            plaintext, sealed.grootte, f"{sealed.formaat} document of {transactie_id}"
        )
    if len(plaintext) != sealed.grootte or hashlib.sha256(plaintext).hexdigest() != sealed.sha256:
        raise ArchiveIntegrityError(
            f"the {sealed.formaat} document of transaction {transactie_id} decrypts to bytes "
            "whose SHA-256 or size differs from its event"
        )
    return plaintext


def _inflate(data: bytes, size: int, what: str) -> bytes:
    """Decompress exactly `size` bytes: a hostile frame cannot make us allocate more."""
    try:
        # zstandard sizes its output from the frame header and ignores max_output_size when
        # the header has a size, so the header's size must be the event's before anything else.
        stated = zstandard.frame_content_size(data)
        if stated < 0:  # the binding's "unknown"
            raise ArchiveIntegrityError(
                f"the {what} is a zstd frame that does not record its size; it is not inflated"
            )
        if stated != size:
            raise ArchiveIntegrityError(
                f"the {what} is compressed to another size than its event states ({size} bytes)"
            )
        plaintext = zstandard.ZstdDecompressor().decompress(
            data, max_output_size=size, allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise ArchiveIntegrityError(f"the {what} does not decompress: {exc}") from exc
    if len(plaintext) != size:
        raise ArchiveIntegrityError(f"the {what} decompresses to another size than {size} bytes")
    return plaintext


def _verify_certified(
    plaintext: bytes, documents: DocumentTrust | None, issued_at: str
) -> BundleVerdict:
    """A PDF or XML document: its seal chained to the trust roots as it was when issued."""
    if documents is None:
        raise VerificationError("no trust roots given to check a certified document's seal")
    try:
        at = dt.datetime.fromisoformat(issued_at)
    except ValueError as exc:
        raise VerificationError(f"bundel.uitgegeven has no valid time: {issued_at!r}") from exc
    verdict = verify_file(plaintext, documents, at=at)
    if not verdict.ok or verdict.bundel is None or verdict.signer_kid is None:
        raise VerificationError("; ".join(verdict.problems) or "the seal does not verify")
    return BundleVerdict(verdict.bundel, verdict.signer_kid, verdict.sources)


def _b64(value: Any, name: str, max_bytes: int) -> bytes:
    if not isinstance(value, str) or len(value) > (max_bytes + 2) // 3 * 4:
        raise ArchiveIntegrityError(f"document.gearchiveerd: malformed or oversized {name!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ArchiveIntegrityError(f"document.gearchiveerd: {name!r} is not base64") from exc


# --- Reproduction ---------------------------------------------------------------------------


class StoredEvent(Protocol):
    """One event as read back from the stream or an archive file, before it is trusted."""

    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ReproducedDocument:
    formaat: str
    mediatype: str
    sha256: str
    content: bytes
    verdict: BundleVerdict

    @property
    def filename(self) -> str:
        return f"blauwe-knop-{self.verdict.document['bundel_id']}.{self.formaat}"


@dataclass(frozen=True, slots=True)
class Reproduction:
    transactie_id: str
    bundel_id: str
    issued_at: str
    documents: tuple[ReproducedDocument, ...]
    notes: tuple[str, ...] = field(default=())


def parse_event(value: bytes, offset: int) -> dict[str, Any]:
    """Strictly parse one CloudEvent from the stream."""
    if len(value) > MAX_EVENT_BYTES:
        raise ArchiveIntegrityError(f"offset {offset}: event larger than {MAX_EVENT_BYTES} bytes")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ArchiveIntegrityError(f"offset {offset}: event is not JSON") from exc
    if not isinstance(event, dict):
        raise ArchiveIntegrityError(f"offset {offset}: event is not a JSON object")
    for name in ("id", "type", "transactieid", "time"):
        if not isinstance(event.get(name), str):
            raise ArchiveIntegrityError(f"offset {offset}: event lacks the string {name!r}")
    if not isinstance(event.get("data"), dict):
        raise ArchiveIntegrityError(f"offset {offset}: event lacks its data object")
    return event


def event_name(event: Mapping[str, Any]) -> str:
    """`nl.blauweknop.audit.<name>.v1` → `<name>`; other types give ''."""
    kind = str(event.get("type", ""))
    if kind.startswith(_TYPE_PREFIX) and kind.endswith(".v1"):
        return kind[len(_TYPE_PREFIX) : -len(".v1")]
    return ""


def reproduce(
    events: Iterable[StoredEvent],
    transactie_id: str,
    key: ArchivistPrivateKey,
    trust: Trust,
    *,
    documents: DocumentTrust | None = None,
    scanned: int | None = None,
) -> Reproduction:
    """The byte-exact documents of one transaction, with every hash and signature checked.

    Raises ArchiveError (or a subclass) on the first problem: no such transaction, an issued
    format without archived bytes, a wrong key, a ciphertext that does not decrypt, a hash that
    differs, or a signature that fails.
    """
    if not _TRANSACTIE_ID.fullmatch(transactie_id):
        raise ArchiveError(f"{transactie_id!r} is not a transaction id")
    wanted = transactie_id.encode()
    seen: dict[str, bytes] = {}
    archived: dict[str, tuple[int, SealedDocument]] = {}
    issued: tuple[int, dict[str, Any]] | None = None
    notes: list[str] = []
    count = 0
    for stored in events:
        count += 1
        if stored.key is not None and stored.key != wanted:
            continue
        if stored.key is None and wanted not in stored.value:
            continue
        event = parse_event(stored.value, stored.offset)
        if event["transactieid"] != transactie_id:
            if stored.key is not None:
                raise ArchiveIntegrityError(
                    f"offset {stored.offset}: keyed {transactie_id} but its transactieid differs"
                )
            continue
        previous = seen.get(event["id"])
        if previous is not None:
            if previous != stored.value:
                raise ArchiveIntegrityError(
                    f"offset {stored.offset}: event {event['id']} appears twice with different "
                    "bytes"
                )
            notes.append(f"offset {stored.offset}: identical redelivery of {event['id']}")
            continue
        seen[event["id"]] = stored.value
        name = event_name(event)
        if name == EVENT_ARCHIVED:
            sealed = SealedDocument.from_event_data(event["data"])
            if sealed.formaat in archived:
                raise ArchiveIntegrityError(
                    f"offset {stored.offset}: a second {sealed.formaat} document for "
                    f"{transactie_id} (first at offset {archived[sealed.formaat][0]})"
                )
            archived[sealed.formaat] = (stored.offset, sealed)
        elif name == EVENT_ISSUED:
            if issued is not None:
                raise ArchiveIntegrityError(
                    f"offset {stored.offset}: a second bundel.uitgegeven for {transactie_id}"
                )
            issued = (stored.offset, event)
    if issued is None and not archived:
        raise ArchiveError(
            f"no events of transaction {transactie_id} among the {scanned or count} read; "
            "check the id "
            "(the X-Transactie-Id of the download) and that the stream still holds that day"
        )
    if issued is None:
        raise ArchiveIntegrityError(
            f"transaction {transactie_id} has archived documents but no bundel.uitgegeven event"
        )
    issued_data = issued[1]["data"]
    formaten = issued_data.get("formaten")
    if not isinstance(formaten, dict) or not formaten:
        raise ArchiveIntegrityError(f"offset {issued[0]}: bundel.uitgegeven lacks its formaten")
    if missing := sorted(set(formaten) - set(archived)):
        raise ArchiveIntegrityError(
            f"transaction {transactie_id} issued {', '.join(missing)} without archived bytes"
        )
    if extra := sorted(set(archived) - set(formaten)):
        raise ArchiveIntegrityError(
            f"transaction {transactie_id} archived {', '.join(extra)}, which bundel.uitgegeven "
            "does not list"
        )
    reproduced = []
    for formaat in sorted(archived):
        offset, sealed = archived[formaat]
        plaintext = open_document(sealed, transactie_id, key)
        if formaten[formaat] != sealed.sha256:
            raise ArchiveIntegrityError(
                f"offset {offset}: the {formaat} document's SHA-256 differs from the one in "
                f"bundel.uitgegeven (offset {issued[0]})"
            )
        reproduced.append(_verify(sealed, plaintext, issued, trust, documents, transactie_id))
    return Reproduction(
        transactie_id=transactie_id,
        bundel_id=str(issued_data.get("bundel_id")),
        issued_at=str(issued[1]["time"]),
        documents=tuple(reproduced),
        notes=tuple(notes),
    )


def _verify(
    sealed: SealedDocument,
    plaintext: bytes,
    issued_event: tuple[int, dict[str, Any]],
    trust: Trust,
    documents: DocumentTrust | None,
    transactie_id: str,
) -> ReproducedDocument:
    issued = issued_event[1]["data"]
    verifier = VERIFIERS.get(sealed.mediatype)
    if verifier is None and sealed.mediatype not in CERTIFIED:
        raise ArchiveIntegrityError(
            f"no verifier for media type {sealed.mediatype} (format {sealed.formaat}); "
            "this version cannot check that document's signatures"
        )
    try:
        if verifier is not None:
            verdict = verifier(plaintext, trust)
        else:
            verdict = _verify_certified(plaintext, documents, issued_event[1]["time"])
    except VerificationError as exc:
        raise ArchiveIntegrityError(
            f"the {sealed.formaat} document of transaction {transactie_id} decrypts, but its "
            f"signatures do not verify: {exc}"
        ) from exc
    if unchecked := [s.code for s in verdict.sources if s.provenance == "not checked"]:
        raise ArchiveIntegrityError(
            f"no trusted certificate to re-verify the source(s) {', '.join(unchecked)}; "
            "configure those organisations (their trust_cert) and try again"
        )
    try:
        canonical_sha256 = hashlib.sha256(canonicalize(verdict.document)).hexdigest()
    except CanonicalizationError as exc:  # verify already canonicalised it; defence in depth
        raise ArchiveIntegrityError(str(exc)) from exc
    if canonical_sha256 != issued.get("bundel_sha256"):
        raise ArchiveIntegrityError(
            f"the {sealed.formaat} document holds a bundle whose canonical SHA-256 differs "
            "from bundel.uitgegeven"
        )
    if verdict.document.get("transactie_id") != transactie_id or verdict.document.get(
        "bundel_id"
    ) != issued.get("bundel_id"):
        raise ArchiveIntegrityError(
            f"the {sealed.formaat} document belongs to another transaction or bundle"
        )
    return ReproducedDocument(sealed.formaat, sealed.mediatype, sealed.sha256, plaintext, verdict)
