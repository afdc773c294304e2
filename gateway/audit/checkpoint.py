"""Signed checkpoints of the audit log: C2SP tlog-checkpoint text in a C2SP signed note.

    <origin>\\n<tree size>\\n<base64 root hash>\\n          <- the checkpoint (note text)
    \\n
    — <key name> base64(4-byte key id || Ed25519 signature over the note text)\\n

The key id is SHA-256(key name || 0x0A || 0x01 || 32-byte public key)[:4] (c2sp.org/signed-note,
as golang.org/x/mod/sumdb/note computes it). Verifier keys are written the way that package
writes them, `<name>+<key id hex>+<base64(0x01 || public key)>`, so Go tooling can check our notes.

On the checkpoints topic each checkpoint is one JSON record (`CheckpointRecord`) that adds an
RFC 3161 time-stamp response over the note text and the leaf hashes of the range the
checkpoint adds, which lets `audit verify` name an altered event by its offset. Everything read
back is parsed strictly with size limits: the topic may be hostile.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit._internal.merkle import HASH_SIZE, MAX_TREE_SIZE
from gateway.config import Settings
from gateway.errors import ConfigError, VerificationError
from gateway.tsa import TsaTrust

ED25519_TYPE = 0x01
MAX_NOTE_BYTES = 16 * 1024
MAX_SIGNATURES = 16
RECORD_TYPE = "nl.blauweknop.audit.checkpoint.v1"
# 100,000 leaf hashes (3.2 MB, 4.3 MB in base64) fit the topic's 8 MiB message size.
MAX_RANGE = 100_000
MAX_RECORD_BYTES = 8 * 1024 * 1024
_KEY_NAME = re.compile(r"[^\s+]+")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


class CheckpointError(VerificationError):
    """A checkpoint, its signed note or its record is malformed or does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    if not _B64.fullmatch(text):
        raise CheckpointError(f"{what} is not standard base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"{what} is not valid base64: {exc}") from exc


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519_TYPE]) + public_key).digest()[:4]


def _check_key_name(name: str) -> None:
    if not _KEY_NAME.fullmatch(name):
        raise ConfigError(f"a note key name must be non-empty without spaces or '+': {name!r}")


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    name: str
    key_id: bytes
    public_key: ed25519.Ed25519PublicKey

    @property
    def public_bytes(self) -> bytes:
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def __str__(self) -> str:
        """The verifier key as golang.org/x/mod/sumdb/note writes it."""
        encoded = base64.b64encode(bytes([ED25519_TYPE]) + self.public_bytes).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> NoteVerifier:
        """Read `<name>+<8 hex digits>+<base64(0x01 || 32-byte Ed25519 key)>`."""
        parts = text.strip().split("+", 2)  # the base64 key may itself hold '+'s
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise ConfigError(
                "a checkpoint verifier key looks like <name>+<8 hex digits>+<base64 key>; "
                f"got {text.strip()[:80]!r}"
            )
        name, hex_id, encoded = parts
        _check_key_name(name)
        try:
            raw = _b64decode(encoded, "the verifier key")
        except CheckpointError as exc:
            raise ConfigError(str(exc)) from exc
        if len(raw) != 33 or raw[0] != ED25519_TYPE:
            raise ConfigError("the checkpoint verifier key is not an Ed25519 note key")
        if key_id(name, raw[1:]) != bytes.fromhex(hex_id):
            raise ConfigError("the checkpoint verifier key's id does not match its name and key")
        return cls(name, bytes.fromhex(hex_id), ed25519.Ed25519PublicKey.from_public_bytes(raw[1:]))

    def verify(self, note: str) -> str:
        """The note text if a signature by this key verifies; CheckpointError otherwise."""
        text, signatures = split_note(note)
        found = False
        for name, signature in signatures:
            if name != self.name or signature[:4] != self.key_id:
                continue  # c2sp.org/signed-note: ignore signatures by unknown keys
            try:
                self.public_key.verify(signature[4:], text.encode())
            except InvalidSignature as exc:
                raise CheckpointError(
                    f"the signature of {self.name} on the checkpoint does not verify"
                ) from exc
            found = True
        if not found:
            raise CheckpointError(
                f"the checkpoint is not signed by the configured key {self.name} "
                f"(key id {self.key_id.hex()})"
            )
        return text


@dataclass(frozen=True, slots=True)
class NoteSigner:
    name: str
    private_key: ed25519.Ed25519PrivateKey

    def __post_init__(self) -> None:
        _check_key_name(self.name)

    @property
    def verifier(self) -> NoteVerifier:
        public = self.private_key.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return NoteVerifier(self.name, key_id(self.name, raw), public)

    def sign(self, text: str) -> str:
        _check_text(text)
        signature = self.verifier.key_id + self.private_key.sign(text.encode())
        return f"{text}\n— {self.name} {base64.b64encode(signature).decode()}\n"

    @classmethod
    def from_file(cls, name: str, path: Path) -> NoteSigner:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the checkpoint signing key {path}: {exc}") from exc
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{path}: the checkpoint signing key must be Ed25519 (PKCS#8 PEM)")
        return cls(name, key)

    @classmethod
    def development(cls, name: str, state_dir: Path) -> NoteSigner:
        """Made on first use in sandbox mode (`state_dir/audit-checkpoint.key`)."""
        path = state_dir / "audit-checkpoint.key"
        if not path.exists():
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(pem)
        return cls.from_file(name, path)


def write_signing_key(path: Path) -> None:
    """A new Ed25519 checkpoint key in PKCS#8 PEM, readable by its owner only."""
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise CheckpointError("a note text ends with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError("a note must not hold control characters other than newline")


def split_note(note: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The text and the (key name, key id || signature) pairs of a signed note, strictly."""
    if len(note.encode()) > MAX_NOTE_BYTES:
        raise CheckpointError(f"the signed note is larger than {MAX_NOTE_BYTES} bytes")
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("the signed note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    lines = block.split("\n")
    if lines[-1] != "" or len(lines) < 2:
        raise CheckpointError("the signed note has no signature lines")
    if len(lines) - 1 > MAX_SIGNATURES:
        raise CheckpointError(f"the signed note has more than {MAX_SIGNATURES} signatures")
    signatures: list[tuple[str, bytes]] = []
    for line in lines[:-1]:
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "—" or not _KEY_NAME.fullmatch(parts[1]):
            raise CheckpointError(f"malformed signature line in the note: {line[:80]!r}")
        signature = _b64decode(parts[2], "a note signature")
        if len(signature) < 5:
            raise CheckpointError("a note signature is too short to hold a key id")
        signatures.append((parts[1], signature))
    return text, signatures


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin, tree size and root hash (c2sp.org/tlog-checkpoint)."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        _check_text(text)
        lines = text.split("\n")[:-1]
        if len(lines) != 3:
            raise CheckpointError(
                f"a checkpoint has origin, size and root hash lines (no extensions); "
                f"found {len(lines)} lines"
            )
        origin, size, root = lines
        if not origin or not _KEY_NAME.fullmatch(origin):
            raise CheckpointError(f"the checkpoint origin {origin[:80]!r} is not valid")
        if not _DECIMAL.fullmatch(size) or int(size) > MAX_TREE_SIZE:
            raise CheckpointError(f"the checkpoint tree size {size[:30]!r} is not a valid size")
        raw = _b64decode(root, "the checkpoint root hash")
        if len(raw) != HASH_SIZE:
            raise CheckpointError(f"the checkpoint root hash has {len(raw)} bytes, not 32")
        return cls(origin, int(size), raw)


def verify_checkpoint_note(note: str, verifier: NoteVerifier, origin: str) -> Checkpoint:
    """Check the signature and the origin of a signed checkpoint; return the checkpoint."""
    checkpoint = Checkpoint.parse(verifier.verify(note))
    if checkpoint.origin != origin:
        raise CheckpointError(
            f"the checkpoint is for log {checkpoint.origin!r}, not {origin!r}: wrong log or "
            "wrong [audit] origin"
        )
    return checkpoint


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """One record on the checkpoints topic.

    `note` is the signed checkpoint; `timestamp` the RFC 3161 TimeStampResp (DER) over the note
    text; `leaf_hashes` the leaf hashes of [first_leaf, size), concatenated. They are
    authenticated by the signed root only together with all earlier ranges.
    """

    note: str
    timestamp: bytes
    first_leaf: int
    leaf_hashes: bytes

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "type": RECORD_TYPE,
                "checkpoint": self.note,
                "timestamp": base64.b64encode(self.timestamp).decode(),
                "first_leaf": self.first_leaf,
                "leaf_hashes": base64.b64encode(self.leaf_hashes).decode(),
            }
        )

    @property
    def text(self) -> str:
        return split_note(self.note)[0]

    @classmethod
    def parse(cls, value: bytes) -> CheckpointRecord:
        if len(value) > MAX_RECORD_BYTES:
            raise CheckpointError(f"the record is larger than {MAX_RECORD_BYTES} bytes")
        try:
            data = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"the record is not JSON: {exc}") from exc
        if not isinstance(data, Mapping) or data.get("type") != RECORD_TYPE:
            raise CheckpointError(f"the record is not a {RECORD_TYPE} object")
        expected = {"type", "checkpoint", "timestamp", "first_leaf", "leaf_hashes"}
        if set(data) != expected:
            raise CheckpointError(f"the record must have exactly the fields {sorted(expected)}")
        note = _field(data, "checkpoint", str)
        first = _field(data, "first_leaf", int)
        if isinstance(first, bool) or not 0 <= first <= MAX_TREE_SIZE:
            raise CheckpointError("first_leaf is not a valid leaf index")
        hashes = _b64decode(_field(data, "leaf_hashes", str), "leaf_hashes")
        if len(hashes) % HASH_SIZE or len(hashes) // HASH_SIZE > MAX_RANGE:
            raise CheckpointError(
                f"leaf_hashes must be whole 32-byte hashes, at most {MAX_RANGE} of them"
            )
        record = cls(note, _b64decode(_field(data, "timestamp", str), "timestamp"), first, hashes)
        size = Checkpoint.parse(record.text).size
        if first + len(hashes) // HASH_SIZE != size:
            raise CheckpointError(
                f"the record's leaf hashes cover [{first}, {first + len(hashes) // HASH_SIZE}), "
                f"but its checkpoint has tree size {size}"
            )
        return record


def _field(data: Mapping[str, Any], name: str, kind: type[Any]) -> Any:
    value = data.get(name)
    if not isinstance(value, kind):
        raise CheckpointError(f"the record's {name} must be a {kind.__name__}")
    return value


# --- from configuration to the objects the checkpointer and the auditor's commands need ------


def log_origin(settings: Settings) -> str:
    """The log's origin line: `[audit] origin`, by default `<gateway OIN>/blauweknop/audit`."""
    return settings.checkpoints.origin or f"{settings.uitgever.oin}/blauweknop/audit"


def checkpoint_signer(settings: Settings) -> NoteSigner:
    """The checkpointer's Ed25519 key: `[audit] checkpoint_key_file`, made in sandbox mode."""
    origin = log_origin(settings)
    if settings.checkpoints.key_file is not None:
        return NoteSigner.from_file(origin, settings.checkpoints.key_file)
    if settings.mode != "sandbox":
        raise ConfigError(
            "production mode needs [audit] checkpoint_key_file: the checkpointer's Ed25519 "
            "private key (PKCS#8 PEM); `blauweknop audit checkpoint-key FILE` makes one"
        )
    return NoteSigner.development(origin, settings.state_dir)


def checkpoint_verifier(settings: Settings) -> NoteVerifier:
    """The key checkpoints must be signed with: `[audit] checkpoint_verifier_key`."""
    if settings.checkpoints.verifier_key is not None:
        verifier = NoteVerifier.parse(settings.checkpoints.verifier_key)
        if verifier.name != log_origin(settings):
            raise ConfigError(
                f"[audit] checkpoint_verifier_key is named {verifier.name!r}, but the log's "
                f"origin is {log_origin(settings)!r}"
            )
        return verifier
    if settings.mode != "sandbox" and settings.checkpoints.key_file is None:
        raise ConfigError(
            "[audit] checkpoint_verifier_key is needed: the log's public key as "
            "<name>+<key id>+<base64 key> (the checkpointer prints it at start)"
        )
    return checkpoint_signer(settings).verifier


def tsa_url(settings: Settings) -> str:
    if settings.checkpoints.tsa_url:
        return settings.checkpoints.tsa_url
    if settings.mode != "sandbox":
        raise ConfigError("production mode needs [audit] tsa_url: an RFC 3161 time-stamping URL")
    return f"http://{settings.sandbox_host}:{settings.dev_tsa_port}/"


def tsa_trust(settings: Settings) -> TsaTrust:
    """What checkpoint time-stamps must chain to: `[audit] tsa_ca_file` (and `tsa_cert_file`)."""
    c = settings.checkpoints
    if c.tsa_ca_file is not None:
        return TsaTrust.from_files(c.tsa_ca_file, c.tsa_cert_file)
    if settings.mode != "sandbox":
        raise ConfigError(
            "production mode needs [audit] tsa_ca_file: the CA certificate of the "
            "time-stamping authority (PEM)"
        )
    settings.dev_pki.ensure()
    return TsaTrust.from_files(settings.dev_pki.root_cert, c.tsa_cert_file)
