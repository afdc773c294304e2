"""The Merkle-log commands of `blauweknop audit`: checkpointer, verify, prove, verify-proof.

blauweknop audit checkpointer                  # build the tree, publish signed checkpoints
blauweknop audit verify [--since CHECKPOINT]   # recompute and check everything; exit 1 if not
blauweknop audit prove TXID [--checkpoint OLD] # inclusion proofs (JSON) for a transaction
blauweknop audit verify-proof FILE             # check such a proof offline
blauweknop audit checkpoint-key FILE           # make a production checkpoint signing key
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from gateway.audit import CHECKPOINTS_TOPIC, EVENTS_TOPIC
from gateway.audit.archive_cli import (
    Resolve,
    add_verify_options,
    resolve_settings,
    verify_archive_option,
)
from gateway.audit.checkpoint import (
    NoteSigner,
    NoteVerifier,
    checkpoint_verifier,
    log_origin,
    tsa_trust,
    write_signing_key,
)
from gateway.audit.checkpointer import Checkpointer, CheckpointerSettings, serve_metrics
from gateway.audit.prove import check_proof_document, prove_transaction
from gateway.audit.verify import read_since_file, verify_log
from gateway.config import KafkaConfig, Settings
from gateway.errors import ConfigError
from gateway.tsa import TsaTrust


def add_commands(audit: Any, resolve: Resolve = resolve_settings) -> None:
    """Add the Merkle-log commands to the `blauweknop audit` sub-parsers."""
    cp = audit.add_parser(
        "checkpointer",
        help="build the Merkle tree of the events and publish signed, time-stamped checkpoints",
        description=(
            "Consume the events topic, build the RFC 9162 Merkle tree (leaf = record value), and "
            "publish a C2SP checkpoint signed with the log key and time-stamped (RFC 3161) to "
            f"{CHECKPOINTS_TOPIC} after [audit] checkpoint_every_events events or "
            "checkpoint_every_seconds seconds. Run several for fail-over: a Kafka consumer group "
            "keeps exactly one active."
        ),
    )
    cp.set_defaults(run=lambda args: _checkpointer(args, resolve))

    ver = audit.add_parser(
        "verify",
        help="recompute the Merkle log, check every checkpoint, name every tampered event",
        description=(
            "Read both audit topics from the beginning, recompute the tree, check every "
            "checkpoint's signature ([audit] checkpoint_verifier_key) and RFC 3161 time-stamp "
            "([audit] tsa_ca_file), and report every altered, removed, duplicated or reordered "
            "event by its offset. Exit code 1 on any problem. With --since, the checkpoint you "
            "kept must be consistent with the newest (RFC 9162 consistency proof), and events "
            "are read from it on."
        ),
    )
    ver.add_argument(
        "--since",
        type=Path,
        metavar="CHECKPOINT_FILE",
        help="a checkpoint you kept (signed note, checkpoint record or proof JSON)",
    )
    ver.add_argument("--json", action="store_true", help="machine-readable report")
    _topic_options(ver)
    add_verify_options(ver)
    ver.set_defaults(run=lambda args: _verify(args, resolve))

    prove = audit.add_parser(
        "prove",
        help="inclusion proofs for every event of a transaction, as JSON to check offline",
    )
    prove.add_argument("transactie_id", metavar="TXID")
    prove.add_argument(
        "--checkpoint",
        type=Path,
        metavar="OLD",
        help="also prove consistency from this checkpoint you kept to the newest",
    )
    prove.add_argument("-o", "--output", type=Path, help="write the proof here (default: stdout)")
    _topic_options(prove)
    prove.set_defaults(run=lambda args: _prove(args, resolve))

    check = audit.add_parser(
        "verify-proof",
        help="check a proof from `audit prove` offline: signature, time-stamp, Merkle proofs",
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument(
        "--verifier-key",
        help="the log's key <name>+<id>+<base64>; default: [audit] checkpoint_verifier_key",
    )
    check.add_argument(
        "--tsa-ca",
        type=Path,
        metavar="PEM",
        help="the time-stamping authority's CA certificate; default: [audit] tsa_ca_file",
    )
    check.set_defaults(run=lambda args: _verify_proof(args, resolve))

    key = audit.add_parser(
        "checkpoint-key",
        help="make an Ed25519 checkpoint signing key (PEM) and print its verifier key",
    )
    key.add_argument("file", type=Path, metavar="FILE")
    key.set_defaults(run=lambda args: _checkpoint_key(args, resolve))


def _topic_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events-topic", default=EVENTS_TOPIC, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoints-topic", default=CHECKPOINTS_TOPIC, help=argparse.SUPPRESS)


def _kafka(settings: Settings, kafka: KafkaConfig | None) -> KafkaConfig:
    if kafka is None:
        raise ConfigError(
            "no Kafka to read from: configure [kafka] bootstrap_servers, pass "
            "`blauweknop audit --bootstrap-server HOST:PORT ...`, or start the demo stack "
            "(`blauweknop up`) with the same state_dir"
        )
    return kafka


def _checkpointer(args: argparse.Namespace, resolve: Resolve) -> int:
    settings, kafka = resolve(args)
    config = CheckpointerSettings.from_settings(replace(settings, kafka=_kafka(settings, kafka)))
    print(f"checkpointer for {config.origin}; verifier key: {config.signer.verifier}", flush=True)
    asyncio.run(run_checkpointer(config))
    return 0


async def run_checkpointer(config: CheckpointerSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    checkpointer = Checkpointer(config)
    if config.metrics_port is None:
        await checkpointer.run(stop)
        return
    async with serve_metrics(checkpointer.metrics, config.metrics_host, config.metrics_port) as url:
        print(f"checkpointer metrics at {url}/metrics", flush=True)
        await checkpointer.run(stop)


def _verify(args: argparse.Namespace, resolve: Resolve) -> int:
    settings, kafka = resolve(args)
    since = read_since_file(args.since.read_text()) if args.since else None
    report = asyncio.run(
        verify_log(
            _kafka(settings, kafka),
            origin=log_origin(settings),
            verifier=checkpoint_verifier(settings),
            trust=tsa_trust(settings),
            since_note=since,
            events_topic=args.events_topic,
            checkpoints_topic=args.checkpoints_topic,
        )
    )
    if args.json:
        sys.stdout.write(
            orjson.dumps(
                {
                    "ok": report.ok,
                    "events": report.events,
                    "covered": report.covered,
                    "checkpoints": len(report.checkpoints),
                    "newest_checkpoint": report.checkpoints[-1].note
                    if report.checkpoints
                    else None,
                    "findings": [
                        {
                            "severity": f.severity,
                            "kind": f.kind,
                            "topic": f.topic,
                            "offset": f.offset,
                            "message": f.message,
                        }
                        for f in report.findings
                    ],
                },
                option=orjson.OPT_INDENT_2,
            ).decode()
            + "\n"
        )
    else:
        for finding in report.findings:
            print(finding)
        print(report.summary())
        if report.newest:
            print("Keep the newest checkpoint to check consistency next time (--since):")
            print(report.newest.note, end="")
    archive_errors = verify_archive_option(args)
    return 0 if report.ok and not archive_errors else 1


def _prove(args: argparse.Namespace, resolve: Resolve) -> int:
    settings, kafka = resolve(args)
    old = read_since_file(args.checkpoint.read_text()) if args.checkpoint else None
    document = asyncio.run(
        prove_transaction(
            _kafka(settings, kafka),
            args.transactie_id,
            origin=log_origin(settings),
            verifier=checkpoint_verifier(settings),
            trust=tsa_trust(settings),
            old_note=old,
            events_topic=args.events_topic,
            checkpoints_topic=args.checkpoints_topic,
        )
    )
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n"
    if args.output:
        args.output.write_text(text)
        print(f"proof for {len(document['events'])} event(s) written to {args.output}")
    else:
        sys.stdout.write(text)
    if document["not_yet_checkpointed"]:
        print(
            f"not yet in a checkpoint: offsets {document['not_yet_checkpointed']}; "
            "run prove again after the next checkpoint",
            file=sys.stderr,
        )
    return 0


def _verify_proof(args: argparse.Namespace, resolve: Resolve) -> int:
    settings, _ = resolve(args)
    verifier = (
        NoteVerifier.parse(args.verifier_key)
        if args.verifier_key
        else checkpoint_verifier(settings)
    )
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {args.file}: {exc}") from exc
    trust = TsaTrust.from_files(args.tsa_ca) if args.tsa_ca else tsa_trust(settings)
    result = check_proof_document(raw, verifier, trust)
    for line in result.lines:
        print(f"OK      {line}")
    for problem in result.problems:
        print(f"PROBLEM {problem}")
    print("proof verifies" if result.ok else "proof does NOT verify")
    return 0 if result.ok else 1


def _checkpoint_key(args: argparse.Namespace, resolve: Resolve) -> int:
    settings, _ = resolve(args)
    try:
        write_signing_key(args.file)
    except FileExistsError as exc:
        raise ConfigError(f"{args.file} exists; refusing to overwrite a signing key") from exc
    signer = NoteSigner.from_file(log_origin(settings), args.file)
    print(f"[audit] checkpoint_key_file = {str(args.file)!r}")
    print(f"[audit] checkpoint_verifier_key = {str(signer.verifier)!r}")
    return 0
