"""The archive's encryption: RFC 9180 HPKE, checked against the RFC and an independent decrypter.

`_Hpke` below is a second implementation of RFC 9180 base mode written from the RFC with plain
primitives (X25519, HMAC-SHA256, AES-GCM). It reproduces the RFC's own test vector, decrypts
what the gateway archives, and encrypts what the archivist's code must open: so the documented
suite and `info` layout are enough for anyone to decrypt the archive without our code. The
`zstd` command-line tool does the same for the compression of text documents.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import subprocess
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.audit.archive import (
    HPKE_SUITE_NAME,
    ArchiveError,
    ArchiveIntegrityError,
    ArchiveKeyError,
    ArchivistPrivateKey,
    ArchivistPublicKey,
    IssuedDocument,
    SealedDocument,
    context_info,
    open_document,
    seal_document,
    seal_documents,
    write_key_pair,
)
from gateway.errors import ConfigError

TX = "5b4a1f0e-3c2d-4e5f-8a9b-0c1d2e3f4a5b"


class _Hpke:
    """RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256) and HKDF-SHA256, from the RFC text."""

    def __init__(self, aead_id: int, key_bytes: int) -> None:
        self.kem_suite = b"KEM" + (0x0020).to_bytes(2, "big")
        self.suite = b"HPKE" + b"".join(i.to_bytes(2, "big") for i in (0x0020, 0x0001, aead_id))
        self.key_bytes = key_bytes

    @staticmethod
    def _extract(salt: bytes, ikm: bytes) -> bytes:
        return hmac.new(salt, ikm, hashlib.sha256).digest()

    @staticmethod
    def _expand(prk: bytes, info: bytes, length: int) -> bytes:
        out, block, counter = b"", b"", 1
        while len(out) < length:
            block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
            out, counter = out + block, counter + 1
        return out[:length]

    def _labeled_extract(self, suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
        return self._extract(salt, b"HPKE-v1" + suite + label + ikm)

    def _labeled_expand(
        self, suite: bytes, prk: bytes, label: bytes, info: bytes, length: int
    ) -> bytes:
        labeled = length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info
        return self._expand(prk, labeled, length)

    def _key_nonce(self, dh: bytes, enc: bytes, pk_r: bytes, info: bytes) -> tuple[bytes, bytes]:
        eae_prk = self._labeled_extract(self.kem_suite, b"", b"eae_prk", dh)
        shared = self._labeled_expand(self.kem_suite, eae_prk, b"shared_secret", enc + pk_r, 32)
        psk_id_hash = self._labeled_extract(self.suite, b"", b"psk_id_hash", b"")
        info_hash = self._labeled_extract(self.suite, b"", b"info_hash", info)
        context = b"\x00" + psk_id_hash + info_hash
        secret = self._labeled_extract(self.suite, shared, b"secret", b"")
        key = self._labeled_expand(self.suite, secret, b"key", context, self.key_bytes)
        nonce = self._labeled_expand(self.suite, secret, b"base_nonce", context, 12)
        return key, nonce

    def open(self, sk_r: bytes, enc: bytes, ct: bytes, info: bytes, aad: bytes = b"") -> bytes:
        private = x25519.X25519PrivateKey.from_private_bytes(sk_r)
        pk_r = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        dh = private.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
        key, nonce = self._key_nonce(dh, enc, pk_r, info)
        return AESGCM(key).decrypt(nonce, ct, aad)

    def seal(self, pk_r: bytes, sk_e: bytes, pt: bytes, info: bytes) -> tuple[bytes, bytes]:
        ephemeral = x25519.X25519PrivateKey.from_private_bytes(sk_e)
        enc = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        dh = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(pk_r))
        key, nonce = self._key_nonce(dh, enc, pk_r, info)
        return enc, AESGCM(key).encrypt(nonce, pt, b"")


def _raw(key: x25519.X25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@pytest.fixture
def keys(tmp_path: Path) -> tuple[ArchivistPublicKey, ArchivistPrivateKey]:
    public = write_key_pair(tmp_path / "archivist.key", tmp_path / "archivist.pub")
    return public, ArchivistPrivateKey.from_file(tmp_path / "archivist.key")


def test_the_independent_decrypter_reproduces_rfc_9180_a_1_1() -> None:
    # RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode,
    # first encryption (sequence 0). The suites differ only in the AEAD key length.
    rfc = _Hpke(aead_id=0x0001, key_bytes=16)
    info = bytes.fromhex("4f6465206f6e2061204772656369616e2055726e")
    sk_r = bytes.fromhex("4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8")
    enc = bytes.fromhex("37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431")
    ct = bytes.fromhex(
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a"
    )
    pt = rfc.open(sk_r, enc, ct, info, aad=bytes.fromhex("436f756e742d30"))
    assert pt == b"Beauty is truth, truth beauty"


def _zstd(*args: str, data: bytes) -> bytes:
    """The zstd command-line tool: an implementation of RFC 8878 that is not ours."""
    done = subprocess.run(["zstd", "-q", *args], input=data, capture_output=True, check=True)
    return done.stdout


def test_archive_ciphertexts_open_with_the_documented_suite_and_info(
    keys: tuple[ArchivistPublicKey, ArchivistPrivateKey], tmp_path: Path
) -> None:
    public, private = keys
    document = IssuedDocument("json", "application/json", b'{"bundel":{},"jws":"x"}' * 50)
    sealed = seal_document(document, TX, public)
    data = sealed.event_data()
    assert data["hpke"] == HPKE_SUITE_NAME
    assert data["compressie"] == "zstd", "text is compressed before it is sealed"
    info = (
        f"blauweknop.archief.v1\n{TX}\njson\napplication/json\n{document.sha256}\n"
        f"{len(document.content)}\n{public.key_id}\nzstd"
    ).encode()
    size = len(document.content)
    assert (
        context_info(TX, "json", "application/json", document.sha256, size, public.key_id, "zstd")
        == info
    )
    independent = _Hpke(aead_id=0x0002, key_bytes=32)
    compressed = independent.open(
        _raw(private.private_key),
        base64.b64decode(data["enc"]),
        base64.b64decode(data["ciphertext"]),
        info,
    )
    assert len(compressed) < size // 10
    assert _zstd("-d", "-c", data=compressed) == document.content
    # And the other way round: what an independent sender compresses and seals, the
    # archivist's code opens. (From a file, so that zstd records the size in the frame.)
    plain = tmp_path / "document.json"
    plain.write_bytes(document.content)
    frame = subprocess.run(["zstd", "-q", "-c", str(plain)], capture_output=True, check=True)
    raw_public = public.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    enc, ct = independent.seal(raw_public, os.urandom(32), frame.stdout, info)
    rebuilt = SealedDocument.from_event_data(
        {**data, "enc": base64.b64encode(enc).decode(), "ciphertext": base64.b64encode(ct).decode()}
    )
    assert open_document(rebuilt, TX, private) == document.content


def test_a_pdf_is_sealed_as_it_is_with_the_seven_line_info(
    keys: tuple[ArchivistPublicKey, ArchivistPrivateKey],
) -> None:
    public, private = keys
    document = IssuedDocument("pdf", "application/pdf", b"%PDF-1.7 " * 40)
    data = seal_document(document, TX, public).event_data()
    assert "compressie" not in data, "a PDF's streams are compressed already"
    info = context_info(TX, "pdf", "application/pdf", document.sha256, 360, public.key_id)
    assert info.count(b"\n") == 6
    plaintext = _Hpke(aead_id=0x0002, key_bytes=32).open(
        _raw(private.private_key),
        base64.b64decode(data["enc"]),
        base64.b64decode(data["ciphertext"]),
        info,
    )
    assert plaintext == document.content
    assert len(base64.b64decode(data["ciphertext"])) == 360 + 16


@pytest.mark.parametrize(
    ("frame", "grootte", "message"),
    [
        # A bomb: a few hundred bytes that claim, and would inflate to, 64 MiB.
        (zstandard.ZstdCompressor().compress(bytes(64 * 1024 * 1024)), 100, "another size"),
        # A frame that does not say its size is never inflated on trust.
        (
            zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 100),
            100,
            "does not record its size",
        ),
        # Trailing bytes after the frame.
        (zstandard.ZstdCompressor().compress(b"x" * 100) + b"tail", 100, "does not decompress"),
        (b"not a zstd frame at all", 100, "does not decompress"),
    ],
)
def test_hostile_compressed_plaintext_is_refused_before_it_is_inflated(
    keys: tuple[ArchivistPublicKey, ArchivistPrivateKey], frame: bytes, grootte: int, message: str
) -> None:
    """Even a sender holding the archivist's public key cannot make reproduce inflate more."""
    public, private = keys
    sha256 = hashlib.sha256(b"x" * grootte).hexdigest()
    info = context_info(TX, "json", "application/json", sha256, grootte, public.key_id, "zstd")
    raw_public = public.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    enc, ct = _Hpke(aead_id=0x0002, key_bytes=32).seal(raw_public, os.urandom(32), frame, info)
    sealed = SealedDocument(
        "json", "application/json", sha256, grootte, public.key_id, enc, ct, "zstd"
    )
    if len(ct) > grootte + 200:  # the event parser already refuses a ciphertext this long
        with pytest.raises(ArchiveIntegrityError, match="oversized 'ciphertext'"):
            SealedDocument.from_event_data(sealed.event_data())
    with pytest.raises(ArchiveIntegrityError, match=message):
        open_document(sealed, TX, private)


def test_the_info_binds_the_compression(
    keys: tuple[ArchivistPublicKey, ArchivistPrivateKey],
) -> None:
    public, private = keys
    document = IssuedDocument("json", "application/json", b"{}" * 100)
    data = seal_document(document, TX, public).event_data()
    stripped = {k: v for k, v in data.items() if k != "compressie"}
    with pytest.raises(ArchiveIntegrityError, match="length does not fit"):
        SealedDocument.from_event_data(stripped)  # uncompressed, the size would be exact
    sealed = SealedDocument.from_event_data(data)
    with pytest.raises(ArchiveIntegrityError, match="does not decrypt"):
        open_document(_replace(sealed, compressie=None), TX, private)
    with pytest.raises(ArchiveIntegrityError, match="unknown compression"):
        SealedDocument.from_event_data({**data, "compressie": "gzip"})


def test_key_ids_files_and_the_development_key(tmp_path: Path) -> None:
    public = ArchivistPublicKey.development(tmp_path)
    again = ArchivistPublicKey.development(tmp_path)
    assert public.key_id == again.key_id, "made once, then reused"
    private_file = tmp_path / "archivist" / "archivist-DEVELOPMENT-ONLY.key"
    assert stat.S_IMODE(private_file.stat().st_mode) == 0o600
    assert ArchivistPrivateKey.from_file(private_file).key_id == public.key_id
    raw = public.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public.key_id == hashlib.sha256(raw).hexdigest()[:16]
    with pytest.raises(ConfigError, match="holds a private key"):
        ArchivistPublicKey.from_file(private_file)
    with pytest.raises(ArchiveKeyError, match="not an unencrypted PEM private key"):
        ArchivistPrivateKey.from_file(tmp_path / "archivist" / "archivist.pub")
    with pytest.raises(ArchiveKeyError, match="exists"):
        write_key_pair(private_file, tmp_path / "other.pub")


def test_wrong_key_tampering_and_swapping_fail_clearly(
    keys: tuple[ArchivistPublicKey, ArchivistPrivateKey], tmp_path: Path
) -> None:
    public, private = keys
    a = seal_document(IssuedDocument("json", "application/json", b"A" * 100), TX, public)
    other_tx = "00000000-1111-2222-3333-444444444444"
    b = seal_document(IssuedDocument("json", "application/json", b"B" * 100), other_tx, public)
    assert open_document(a, TX, private) == b"A" * 100

    write_key_pair(tmp_path / "wrong.key", tmp_path / "wrong.pub")
    wrong = ArchivistPrivateKey.from_file(tmp_path / "wrong.key")
    with pytest.raises(ArchiveKeyError, match=f"encrypted to archivist key {public.key_id}"):
        open_document(a, TX, wrong)

    flipped = bytearray(a.ciphertext)
    flipped[10] ^= 0x01
    with pytest.raises(ArchiveIntegrityError, match="does not decrypt"):
        open_document(_replace(a, ciphertext=bytes(flipped)), TX, private)
    # The same size and format, another transaction: the info binds it, so it does not open.
    with pytest.raises(ArchiveIntegrityError, match="does not decrypt"):
        open_document(_replace(a, enc=b.enc, ciphertext=b.ciphertext), TX, private)
    with pytest.raises(ArchiveIntegrityError, match="does not decrypt"):
        open_document(a, other_tx, private)
    # An event whose hash was edited to match other bytes no longer decrypts either.
    with pytest.raises(ArchiveIntegrityError, match="does not decrypt"):
        open_document(_replace(a, sha256=hashlib.sha256(b"B" * 100).hexdigest()), TX, private)


def _replace(sealed: SealedDocument, **changes: object) -> SealedDocument:
    from dataclasses import replace

    return replace(sealed, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hpke": "DHKEM(P-256)/HKDF-SHA256/AES-128-GCM"}, "HPKE suite"),
        ({"enc": "not base64!"}, "'enc' is not base64"),
        ({"ciphertext": base64.b64encode(b"short").decode()}, "length does not fit"),
        ({"grootte": -1}, "malformed 'grootte'"),
        ({"grootte": True}, "malformed 'grootte'"),
        ({"sha256": "ABC"}, "malformed 'sha256'"),
        ({"formaat": "json\nx"}, "malformed 'formaat'"),
        ({"archiefsleutel": None}, "malformed 'archiefsleutel'"),
        ({"extra": 1}, "unknown fields"),
        ({"ciphertext": "A" * (90 * 1024 * 1024)}, "oversized 'ciphertext'"),
    ],
)
def test_event_data_is_parsed_strictly(
    keys: tuple[ArchivistPublicKey, ArchivistPrivateKey], change: dict[str, object], message: str
) -> None:
    public, _ = keys
    data = seal_document(IssuedDocument("jws", "application/jose", b"x.y.z"), TX, public)
    with pytest.raises(ArchiveIntegrityError, match=message):
        SealedDocument.from_event_data({**data.event_data(), **change})


def test_names_are_checked_before_they_enter_the_info() -> None:
    with pytest.raises(ArchiveError, match="format name"):
        IssuedDocument("JSON", "application/json", b"")
    with pytest.raises(ArchiveError, match="media type"):
        IssuedDocument("json", "application/json; charset=utf-8", b"")
    with pytest.raises(ArchiveError, match="transaction id"):
        context_info("tx\nevil", "json", "application/json", "0" * 64, 0, "0" * 16)


async def test_megabyte_documents_seal_and_open(
    keys: tuple[ArchivistPublicKey, ArchivistPrivateKey],
) -> None:
    public, private = keys
    big = IssuedDocument("pdf", "application/pdf", os.urandom(5 * 1024 * 1024))
    small = IssuedDocument("json", "application/json", b"{}")
    sealed = await seal_documents([big, small], TX, public)
    assert [s.formaat for s in sealed] == ["pdf", "json"]
    assert open_document(sealed[0], TX, private) == big.content
    assert sealed[0].grootte == len(big.content)


def test_the_development_key_is_made_once_when_gateways_start_together(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for attempt in range(5):
        state = tmp_path / str(attempt)
        with ThreadPoolExecutor(4) as pool:
            keys = list(pool.map(ArchivistPublicKey.development, [state] * 4))
        assert len({k.key_id for k in keys}) == 1
        private = ArchivistPrivateKey.from_file(
            state / "archivist" / "archivist-DEVELOPMENT-ONLY.key"
        )
        assert private.key_id == keys[0].key_id
