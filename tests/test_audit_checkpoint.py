"""Checkpoints: C2SP signed notes (checked against the Go sumdb/note vector) and records."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.audit._internal.merkle import MerkleTree
from gateway.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointRecord,
    NoteSigner,
    NoteVerifier,
    checkpoint_signer,
    checkpoint_verifier,
    tsa_trust,
    tsa_url,
    verify_checkpoint_note,
    write_signing_key,
)
from gateway.config import checkpoint_config, settings_from_mapping
from gateway.errors import ConfigError

# golang.org/x/mod/sumdb/note's documented example: key, text and signed note.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY_SEED = base64.b64decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")[1:]
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT
    + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqf"
    "qdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_go_note_vector() -> None:
    signer = NoteSigner("PeterNeumann", ed25519.Ed25519PrivateKey.from_private_bytes(GO_SKEY_SEED))
    assert str(signer.verifier) == GO_VKEY
    assert signer.sign(GO_TEXT) == GO_NOTE
    verifier = NoteVerifier.parse(GO_VKEY)
    assert verifier.verify(GO_NOTE) == GO_TEXT
    with pytest.raises(CheckpointError, match="does not verify"):
        verifier.verify(GO_NOTE.replace("cryptography", "cryptographY"))


def test_verifier_keys_whose_base64_holds_a_plus() -> None:
    # transparency-dev/formats note tests: a type-0x01 key whose base64 contains '+'.
    verifier = NoteVerifier.parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    assert verifier.name == "TEST"
    assert str(verifier) == "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"


def test_unknown_signatures_are_ignored_but_one_known_is_needed() -> None:
    ours = NoteSigner("example.org/log", ed25519.Ed25519PrivateKey.generate())
    other = NoteSigner("witness.example", ed25519.Ed25519PrivateKey.generate())
    note = ours.sign("a\n")
    cosigned = note + other.sign("a\n").split("\n\n")[1]
    assert ours.verifier.verify(cosigned) == "a\n"
    with pytest.raises(CheckpointError, match="not signed by the configured key"):
        ours.verifier.verify(other.sign("a\n"))
    # Same name, another key: ignored (different key id), so still not signed by ours.
    impostor = NoteSigner("example.org/log", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(CheckpointError, match="not signed"):
        ours.verifier.verify(impostor.sign("a\n"))


@pytest.mark.parametrize(
    "bad",
    [
        "no signature\n",
        "text\n\n",
        "text\n\n— name !!!!\n",
        "text\n\n— name AAAA\n",
        "text\n\n-- name AAAAAAAA\n",
        "te\x01xt\n\n— name AAAAAAAA\n",
        "text\n\n— name AAAAAAAA",
        "text\n\n" + "— n AAAAAAAA\n" * 17,
        "x" * 20_000 + "\n\n— n AAAAAAAA\n",
    ],
)
def test_malformed_notes_fail(bad: str) -> None:
    verifier = NoteVerifier.parse(GO_VKEY)
    with pytest.raises(CheckpointError):
        verifier.verify(bad)


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpjZA==",
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(ConfigError):
        NoteVerifier.parse(vkey)


def test_checkpoint_text_round_trip_and_strictness() -> None:
    tree = MerkleTree()
    for i in range(5):
        tree.append(bytes([i]))
    cp = Checkpoint("00000099000000099000/blauweknop/audit", 5, tree.root())
    assert cp.text().split("\n")[:2] == ["00000099000000099000/blauweknop/audit", "5"]
    assert Checkpoint.parse(cp.text()) == cp
    root = base64.b64encode(tree.root()).decode()
    for text in (
        f"o\n05\n{root}\n",
        f"o\n-1\n{root}\n",
        f"o\n5\n{root}",
        f"o\n5\n{root}\nextension\n",
        "o\n5\nAAAA\n",
        f"o o\n5\n{root}\n",
        f"\n5\n{root}\n",
    ):
        with pytest.raises(CheckpointError):
            Checkpoint.parse(text)


def test_checkpoint_note_checks_origin() -> None:
    signer = NoteSigner("o/log", ed25519.Ed25519PrivateKey.generate())
    note = signer.sign(Checkpoint("o/log", 0, MerkleTree().root()).text())
    assert verify_checkpoint_note(note, signer.verifier, "o/log").size == 0
    with pytest.raises(CheckpointError, match="not 'other/log'"):
        verify_checkpoint_note(note, signer.verifier, "other/log")


def test_record_round_trip_and_strict_parsing() -> None:
    signer = NoteSigner("o/log", ed25519.Ed25519PrivateKey.generate())
    tree = MerkleTree()
    for i in range(3):
        tree.append(bytes([i]))
    note = signer.sign(Checkpoint("o/log", 3, tree.root()).text())
    record = CheckpointRecord(note, b"\x30\x00", 1, tree.leaf_hashes(1, 3))
    assert CheckpointRecord.parse(record.to_json()) == record
    wrong_range = CheckpointRecord(note, b"\x30\x00", 0, tree.leaf_hashes(1, 3))
    with pytest.raises(CheckpointError, match="cover"):
        CheckpointRecord.parse(wrong_range.to_json())
    for value in (
        b"not json",
        b"[]",
        b'{"type": "other"}',
        record.to_json().replace(b'"first_leaf":1', b'"first_leaf":true'),
        record.to_json().replace(b'"first_leaf":1', b'"first_leaf":1,"extra":1'),
        record.to_json()[:-1] + b',"leaf_hashes":"AAA="}',
    ):
        with pytest.raises(CheckpointError):
            CheckpointRecord.parse(value)


def test_configuration_of_the_log(tmp_path: Path) -> None:
    sandbox = settings_from_mapping({"state_dir": str(tmp_path / "state")})
    signer = checkpoint_signer(sandbox)
    assert signer.name == "00000099000000099000/blauweknop/audit"
    assert checkpoint_signer(sandbox).verifier == signer.verifier, "made once, then reused"
    assert (tmp_path / "state" / "audit-checkpoint.key").stat().st_mode & 0o077 == 0
    assert tsa_url(sandbox) == "http://127.0.0.1:9109/"

    key = tmp_path / "checkpoint.pem"
    write_signing_key(key)
    production = replace(
        sandbox,
        mode="production",
        checkpoints=checkpoint_config({"checkpoint_key_file": str(key)}),
    )
    assert checkpoint_signer(production).verifier == checkpoint_verifier(production)
    with pytest.raises(ConfigError, match="tsa_url"):
        tsa_url(production)
    with pytest.raises(ConfigError, match="tsa_ca_file"):
        tsa_trust(production)
    auditor = replace(production, checkpoints=checkpoint_config({}))
    with pytest.raises(ConfigError, match="checkpoint_verifier_key"):
        checkpoint_verifier(auditor)
    with pytest.raises(ConfigError, match="checkpoint_key_file"):
        checkpoint_signer(auditor)
    wrong_name = NoteSigner("other/log", ed25519.Ed25519PrivateKey.generate()).verifier
    with pytest.raises(ConfigError, match="named"):
        checkpoint_verifier(
            replace(
                auditor, checkpoints=checkpoint_config({"checkpoint_verifier_key": str(wrong_name)})
            )
        )
    for bad in ({"checkpoint_every_events": 0}, {"checkpoint_every_seconds": 0}):
        with pytest.raises(ConfigError):
            checkpoint_config(bad)
