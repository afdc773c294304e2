"""`blauweknop audit reproduce` and `blauweknop audit archive`: the archivist's commands.

`reproduce TXID --key FILE` is the "time travel": it reads the events topic (or an archive
directory), decrypts the documents of one transaction with the archivist's private key, checks
every hash and signature, and writes the documents byte for byte as they were issued.

`archive --dir DIR` keeps the audit topics in sealed daily files (gateway.audit.archive_files).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit import EVENTS_TOPIC
from gateway.audit.archive import (
    ArchiveError,
    ArchivistPrivateKey,
    Reproduction,
    StoredEvent,
    reproduce,
)
from gateway.audit.archive_files import (
    ArchiveFileError,
    development_signing_key,
    load_signing_key,
    load_trusted_key,
    read_archive,
    run_archiver,
    verify_archive,
)
from gateway.config import (
    KafkaConfig,
    Settings,
    load_keys,
    load_settings,
    verification_connectors,
)
from gateway.documents.service import document_trust
from gateway.errors import ConfigError
from gateway.sign import jwk_thumbprint
from gateway.verify import Trust

# (args) -> (settings, Kafka settings or None): how the `audit` group reads its configuration.
Resolve = Callable[[argparse.Namespace], tuple[Settings, KafkaConfig | None]]
MAX_JWKS_BYTES = 1024 * 1024


def resolve_settings(args: argparse.Namespace) -> tuple[Settings, KafkaConfig | None]:
    """The configuration file (`--config`) and `BLAUWEKNOP_*` variables; Kafka from `[kafka]`."""
    settings = load_settings(getattr(args, "config", None), os.environ)
    return settings, settings.kafka


def add_commands(audit: Any, resolve: Resolve = resolve_settings) -> None:
    """Add `reproduce` and `archive` to the `blauweknop audit` sub-parsers."""
    rep = audit.add_parser(
        "reproduce",
        help="the byte-exact documents of a transaction as issued, signatures verified",
        description=(
            "Find a transaction's archived documents on the events topic (or in an archive "
            "directory), decrypt them with the archivist's private key, check every hash "
            "against the audit events and every signature (the gateway's seal and each "
            "organisation's own), and write the documents byte for byte."
        ),
    )
    rep.add_argument("transactie_id", metavar="TXID", help="the X-Transactie-Id of the download")
    rep.add_argument(
        "--key", type=Path, required=True, help="the archivist's X25519 private key (PEM)"
    )
    rep.add_argument(
        "-o", "--output", type=Path, default=Path("."), help="folder for the documents (.)"
    )
    rep.add_argument(
        "--archive",
        type=Path,
        metavar="DIR",
        help="read a verified archive directory (`audit archive`) instead of Kafka",
    )
    rep.add_argument(
        "--jwks",
        type=Path,
        help="the gateway's JWKS (saved /.well-known/jwks.json) to trust for the seal; "
        "default: the seal certificates in the configuration",
    )
    rep.set_defaults(run=lambda args: _reproduce(args, resolve))

    arc = audit.add_parser(
        "archive",
        help="keep the audit topics in sealed, chained daily files",
        description=(
            "Consume both audit topics into one file per UTC day, each chained to the one "
            "before by SHA-256 and sealed with the archiver's Ed25519 key. Resumes where it "
            "stopped. Runs until stopped (Ctrl-C), or with --once until it has caught up."
        ),
    )
    arc.add_argument("--dir", type=Path, required=True, help="the archive directory")
    arc.add_argument(
        "--signing-key",
        type=Path,
        help="the archiver's Ed25519 private key (PEM); sandbox default: a development key",
    )
    arc.add_argument("--once", action="store_true", help="stop once caught up")
    arc.set_defaults(run=lambda args: _archive(args, resolve))


def add_verify_options(parser: argparse.ArgumentParser) -> None:
    """`audit verify --archive DIR [--archive-key FILE]`."""
    parser.add_argument(
        "--archive", type=Path, metavar="DIR", help="also verify this archive directory"
    )
    parser.add_argument(
        "--archive-key",
        type=Path,
        action="append",
        metavar="FILE",
        help="the archiver's Ed25519 public key (PEM) to pin; may repeat",
    )


def verify_archive_option(args: argparse.Namespace) -> int:
    """Run the archive check for `audit verify --archive`; returns the number of errors."""
    if getattr(args, "archive", None) is None:
        return 0
    pinned = [load_trusted_key(p) for p in args.archive_key] if args.archive_key else None
    findings = verify_archive(args.archive, pinned)
    # Beside a --json report on stdout, the archive's lines go to stderr.
    out = sys.stderr if getattr(args, "json", False) else sys.stdout
    for finding in findings:
        print(f"archive {finding}", file=out)
    return sum(1 for f in findings if f.severity == "error")


def _reproduce(args: argparse.Namespace, resolve: Resolve) -> int:
    settings, kafka = resolve(args)
    key = ArchivistPrivateKey.from_file(args.key)
    trust = _trust(settings, args.jwks)
    if args.archive is not None:
        findings = verify_archive(args.archive)
        if problems := [str(f) for f in findings if f.severity == "error"]:
            raise ArchiveFileError(
                "the archive does not verify, so it cannot be trusted:\n  " + "\n  ".join(problems)
            )
        records: list[StoredEvent] = list(read_archive(args.archive, EVENTS_TOPIC))
        scanned = len(records)
    else:
        if kafka is None:
            raise ConfigError("no Kafka configured: set [kafka] bootstrap_servers, or --archive")
        records, scanned = asyncio.run(_transaction_records(kafka, args.transactie_id))
    result = reproduce(
        records,
        args.transactie_id,
        key,
        trust,
        documents=document_trust(settings),
        scanned=scanned,
    )
    _write(result, args.output)
    return 0


async def _transaction_records(kafka: KafkaConfig, transactie_id: str) -> tuple[Any, int]:
    from gateway.audit.stream import read_topic

    wanted = transactie_id.encode()
    found = []
    scanned = 0
    async with contextlib.aclosing(read_topic(kafka, EVENTS_TOPIC)) as records:
        async for record in records:
            scanned += 1
            if record.key == wanted or (record.key is None and wanted in record.value):
                found.append(record)
    return found, scanned


def _write(result: Reproduction, output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    print(
        f"transaction {result.transactie_id}: bundle {result.bundel_id}, issued {result.issued_at}"
    )
    for document in result.documents:
        path = output / document.filename
        if path.exists() and path.read_bytes() != document.content:
            raise ArchiveError(f"{path} exists with other content; choose another --output")
        path.write_bytes(document.content)
        sources = ", ".join(f"{s.code} {s.provenance}" for s in document.verdict.sources)
        print(
            f"  {document.formaat:5} {document.mediatype:18} {len(document.content):>9} bytes  "
            f"sha256 {document.sha256}\n"
            f"        seal {document.verdict.kid} verified; sources: {sources}\n"
            f"        written to {path}"
        )
    for note in result.notes:
        print(f"  note: {note}")


def _trust(settings: Settings, jwks_file: Path | None) -> Trust:
    connectors, problems = verification_connectors(settings)
    if problems:
        raise ConfigError("; ".join(problems))
    if jwks_file is not None:
        try:
            data = jwks_file.read_bytes()
            if len(data) > MAX_JWKS_BYTES:
                raise ConfigError(f"{jwks_file} is larger than {MAX_JWKS_BYTES} bytes")
            document = orjson.loads(data)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the JWKS {jwks_file}: {exc}") from exc
        if not isinstance(document, Mapping):
            raise ConfigError(f"{jwks_file} is not a JWKS document")
        return Trust.from_jwks(document, connectors)
    return Trust(_seal_keys(settings), connectors)


def _seal_keys(settings: Settings) -> dict[str, ec.EllipticCurvePublicKey]:
    """The seal certificates of the configuration: the public side only, no private key."""
    if settings.signing is None:
        if settings.mode != "sandbox":
            raise ConfigError("give --jwks, or configure [signing] chain and retired")
        return {kid: key.public_key for kid, key in load_keys(settings).all.items()}
    from cryptography import x509

    keys: dict[str, ec.EllipticCurvePublicKey] = {}
    for path in (settings.signing.chain, *settings.signing.retired):
        try:
            certificate = x509.load_pem_x509_certificates(path.read_bytes())[0]
        except (OSError, ValueError, IndexError) as exc:
            raise ConfigError(f"cannot read the seal certificate {path}: {exc}") from exc
        public = certificate.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            keys[jwk_thumbprint(public)] = public
    return keys


def _archive(args: argparse.Namespace, resolve: Resolve) -> int:
    settings, kafka = resolve(args)
    if kafka is None:
        raise ConfigError("no Kafka configured: set [kafka] bootstrap_servers")
    if args.signing_key is not None:
        key_path = args.signing_key
    elif settings.mode == "sandbox":
        key_path = development_signing_key(settings.state_dir)
    else:
        raise ConfigError("production: give --signing-key, the archiver's Ed25519 key (PEM)")
    signing_key = load_signing_key(key_path)
    run = asyncio.run(_run_archive(kafka, args.dir, signing_key, follow=not args.once))
    sealed = ", ".join(run.sealed) or "none"
    print(
        f"archived {run.written} record(s) to {args.dir} ({run.skipped} already held); "
        f"sealed: {sealed}; open: {run.open_file or 'none'}"
    )
    return 0


async def _run_archive(kafka: KafkaConfig, directory: Path, key: Any, *, follow: bool) -> Any:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(RuntimeError, NotImplementedError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    if follow:
        print(f"archiving to {directory}; stop with Ctrl-C", file=sys.stderr, flush=True)
    return await run_archiver(kafka, directory, key, follow=follow, stop=stop)
