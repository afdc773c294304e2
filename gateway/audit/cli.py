"""`blauweknop audit`: the auditor's commands on the Kafka audit stream.

Each command module adds its sub-commands with one `add_commands(sub, resolve)` function; this
module makes the group, knows where Kafka is, and adds `tail` and `find` itself:

    blauweknop audit tail [--from-beginning] [--json] [--limit N]
    blauweknop audit find --bsn BSN --from DATE --to DATE [--key FILE] [--json]

Kafka is `[kafka]` of the configuration, `--bootstrap-server` (before the action), or, when
neither is given, the embedded broker of a running demo stack (`blauweknop up` writes its
address to `state_dir/kafka-bootstrap`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from gateway.audit import EVENT_TYPE_PREFIX, EVENTS_TOPIC, PseudonymKey
from gateway.audit.stream import Start, StreamRecord, read_topic
from gateway.bsn import is_bsn
from gateway.config import KafkaConfig, Settings, load_settings
from gateway.errors import ConfigError

KAFKA_ADDRESS_FILE = "kafka-bootstrap"
_SHORT = 72  # longest string value `tail` prints in full


def demo_address_file(settings: Settings) -> Path:
    return settings.state_dir / KAFKA_ADDRESS_FILE


def resolve(args: argparse.Namespace) -> tuple[Settings, KafkaConfig | None]:
    """The configuration, and the Kafka cluster the audit commands read from (None: unknown)."""
    settings = load_settings(getattr(args, "config", None), os.environ)
    override = getattr(args, "bootstrap_server", None)
    if override:
        servers = tuple(s.strip() for s in override.split(",") if s.strip())
        base = settings.kafka or KafkaConfig(bootstrap_servers=servers, idempotence=False)
        return settings, replace(base, bootstrap_servers=servers)
    if settings.kafka is not None:
        return settings, settings.kafka
    address = demo_address_file(settings)
    if settings.mode == "sandbox" and address.is_file():
        servers = (address.read_text().strip(),)
        return settings, KafkaConfig(bootstrap_servers=servers, idempotence=False)
    return settings, None


def require_kafka(args: argparse.Namespace) -> tuple[Settings, KafkaConfig]:
    settings, kafka = resolve(args)
    if kafka is None:
        raise ConfigError(
            "no Kafka to read from: configure [kafka] bootstrap_servers, pass "
            "`blauweknop audit --bootstrap-server HOST:PORT ...`, or start the demo stack "
            "(`blauweknop up`) with the same state_dir"
        )
    return settings, kafka


def add_audit_group(sub: Any) -> None:
    """The `audit` command group of `blauweknop` (gateway/cli.py calls this)."""
    audit = sub.add_parser(
        "audit",
        help="the auditor's commands on the Kafka audit stream",
        description="Read, verify and search the audit stream; see docs/audit.md.",
    )
    audit.add_argument(
        "--bootstrap-server",
        metavar="HOST:PORT",
        help="Kafka to read from (default: [kafka] bootstrap_servers, or the demo stack's)",
    )
    actions = audit.add_subparsers(metavar="ACTION", required=True)
    _add_tail(actions)
    _add_find(actions)
    for add_commands in _command_modules():
        add_commands(actions, resolve)


def _command_modules() -> Iterable[Callable[[Any, Any], None]]:
    """The other modules' `add_commands(sub, resolve)`, each adding its own sub-commands."""
    from gateway.audit import archive_cli, log_cli

    yield archive_cli.add_commands
    yield log_cli.add_commands  # checkpointer, verify, prove, verify-proof, checkpoint-key


# -- tail ----------------------------------------------------------------------------------


def _add_tail(actions: Any) -> None:
    tail = actions.add_parser(
        "tail",
        help="decoded audit events as they arrive",
        description="Follow the events topic and print each event as it arrives (Ctrl-C stops).",
    )
    tail.add_argument(
        "--from-beginning", action="store_true", help="start with the oldest event still kept"
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--limit", type=int, metavar="N", help="stop after N events")
    tail.set_defaults(run=_tail)


def _tail(args: argparse.Namespace) -> int:
    _, kafka = require_kafka(args)
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    try:
        return asyncio.run(_tail_async(kafka, args))
    except BrokenPipeError:  # `blauweknop audit tail | head`: the reader has enough
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return 0


async def _tail_async(kafka: KafkaConfig, args: argparse.Namespace) -> int:
    shown = 0
    start: Start = "beginning" if args.from_beginning else "end"
    stream = read_topic(kafka, EVENTS_TOPIC, start=start, follow=True)
    async with contextlib.aclosing(stream) as records:
        async for record in records:
            line = _json_line(record) if args.json else _text_line(record)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            shown += 1
            if args.limit is not None and shown >= args.limit:
                break
    return 0


def _decode(record: StreamRecord) -> dict[str, Any] | None:
    try:
        event = orjson.loads(record.value)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _json_line(record: StreamRecord) -> str:
    event = _decode(record)
    out = {"offset": record.offset, "timestamp": record.time.isoformat(), "event": event}
    if event is None:
        out["undecodable_bytes"] = len(record.value)
    return orjson.dumps(out).decode()


def _text_line(record: StreamRecord) -> str:
    event = _decode(record)
    if event is None:
        size = len(record.value)
        return f"#{record.offset} {record.time:%Y-%m-%dT%H:%M:%S}Z ({size} bytes, not a CloudEvent)"
    kind = str(event.get("type", "?")).removeprefix(EVENT_TYPE_PREFIX).removesuffix(".v1")
    data = event.get("data")
    if not isinstance(data, dict):
        data = {}
    fields = " ".join(f"{k}={_short(v)}" for k, v in data.items())
    return (
        f"#{record.offset} {event.get('time', '?')} {kind} "
        f"tx={event.get('transactieid', '?')} id={event.get('id', '?')} {fields}"
    )


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if len(text) <= _SHORT:
        return text
    return f"{text[:24]}…({len(text)} chars)"


# -- find ----------------------------------------------------------------------------------


def _add_find(actions: Any) -> None:
    find = actions.add_parser(
        "find",
        help="what was provided about one citizen in a period",
        description=(
            "Compute the citizen's pseudonym with the pseudonym key (HMAC-SHA256 of the BSN) "
            "and list every transaction about them in the period: time, organisations and "
            "their statuses, the bundle's hash and the formats issued. The BSN itself is "
            "never printed."
        ),
    )
    find.add_argument("--bsn", required=True, help="the citizen's BSN (9 digits, 11-proef)")
    find.add_argument(
        "--from", dest="start", required=True, metavar="DATE", help="YYYY-MM-DD or RFC 3339"
    )
    find.add_argument(
        "--to", dest="end", required=True, metavar="DATE", help="YYYY-MM-DD (inclusive) or RFC 3339"
    )
    find.add_argument(
        "--key",
        type=Path,
        action="append",
        metavar="FILE",
        help="pseudonym key file; repeat for rotated keys (default: [audit] "
        "pseudonym_key_file, or the sandbox's development key)",
    )
    find.add_argument("--json", action="store_true", help="machine-readable output")
    find.set_defaults(run=_find)


@dataclass
class Provision:
    """One transaction about the citizen, gathered from its events."""

    transactie_id: str
    time: str = ""
    bundel_id: str | None = None
    bundel_sha256: str | None = None
    formaten: dict[str, str] = field(default_factory=dict)
    organisaties: dict[str, dict[str, Any]] = field(default_factory=dict)
    event_types: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "transactie_id": self.transactie_id,
            "time": self.time,
            "bundel_id": self.bundel_id,
            "bundel_sha256": self.bundel_sha256,
            "formaten": self.formaten,
            "organisaties": self.organisaties,
            "event_types": self.event_types,
            "offsets": self.offsets,
        }


def _find(args: argparse.Namespace) -> int:
    settings, kafka = require_kafka(args)
    if not is_bsn(args.bsn):
        raise ConfigError("--bsn must be 9 digits that pass the 11-proef")
    start, end = parse_moment(args.start, end=False), parse_moment(args.end, end=True)
    if end < start:
        raise ConfigError("--to lies before --from")
    keys = _pseudonym_keys(settings, args.key)
    pseudonyms = {k.key_id: k.pseudonym(args.bsn) for k in keys}
    found, unknown_keys = asyncio.run(find_provisions(kafka, pseudonyms, start, end))
    if args.json:
        report = {
            "pseudonym_key_ids": sorted(pseudonyms),
            "from": start.isoformat(),
            "to": end.isoformat(),
            "transactions": [p.as_json() for p in found],
            "events_with_other_keys": unknown_keys,
        }
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"{len(found)} transaction(s) from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    for p in found:
        orgs = ", ".join(f"{code}: {o['status']}" for code, o in sorted(p.organisaties.items()))
        formats = ", ".join(f"{name} sha256:{digest}" for name, digest in p.formaten.items())
        print(f"{p.time}  tx {p.transactie_id}")
        print(f"    organisations: {orgs or '-'}")
        print(f"    bundle {p.bundel_id or '-'} sha256:{p.bundel_sha256 or '-'}")
        print(f"    formats: {formats or '-'}")
    if unknown_keys:
        print(
            f"note: {unknown_keys} event(s) in the period use another pseudonym key; "
            "pass that key too (--key) to search them"
        )
    return 0


async def find_provisions(
    kafka: KafkaConfig, pseudonyms: dict[str, str], start: dt.datetime, end: dt.datetime
) -> tuple[list[Provision], int]:
    """Transactions whose events name one of the pseudonyms (key id → pseudonym), by time."""
    by_tx: dict[str, Provision] = {}
    seen: set[str] = set()
    other_keys = 0
    async with contextlib.aclosing(read_topic(kafka, EVENTS_TOPIC)) as records:
        async for record in records:
            event = _decode(record)
            if event is None or event.get("id") in seen:
                continue  # not an event (verify reports it), or a redelivery
            seen.add(str(event.get("id")))
            moment = _event_time(event)
            if moment is None or not start <= moment <= end:
                continue
            data = event.get("data")
            if not isinstance(data, dict) or "burger" not in data:
                continue
            key_id = event.get("pseudonymkeyid")
            if key_id not in pseudonyms:
                other_keys += 1
                continue
            if data["burger"] != pseudonyms[key_id]:
                continue
            tx = str(event.get("transactieid"))
            provision = by_tx.setdefault(tx, Provision(tx, time=str(event.get("time", ""))))
            _add_event(provision, event, data, record.offset)
    return sorted(by_tx.values(), key=lambda p: p.time), other_keys


def _add_event(p: Provision, event: dict[str, Any], data: dict[str, Any], offset: int) -> None:
    kind = str(event.get("type", "")).removeprefix(EVENT_TYPE_PREFIX)
    p.event_types.append(kind)
    p.offsets.append(offset)
    if kind.startswith("organisatie.bevraagd"):
        org = data.get("organisatie") or {}
        p.organisaties[str(org.get("code"))] = {
            "oin": org.get("oin"),
            "status": data.get("status"),
            "antwoord_sha256": data.get("antwoord_sha256"),
        }
    elif kind.startswith("bundel.uitgegeven"):
        p.time = str(event.get("time", p.time))
        p.bundel_id = data.get("bundel_id")
        p.bundel_sha256 = data.get("bundel_sha256")
        p.formaten.update(data.get("formaten") or {})
        for code, status in (data.get("organisaties") or {}).items():
            p.organisaties.setdefault(code, {"status": status})


def _event_time(event: dict[str, Any]) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(str(event.get("time")))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_moment(text: str, *, end: bool) -> dt.datetime:
    """A date (the whole day, UTC) or an RFC 3339 date-time."""
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day, dt.time.max if end else dt.time.min, dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not a date (YYYY-MM-DD) or RFC 3339 date-time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _pseudonym_keys(settings: Settings, files: list[Path] | None) -> list[PseudonymKey]:
    try:
        if files:
            return [PseudonymKey.from_file(f) for f in files]
        if settings.pseudonym_key_file is not None:
            return [PseudonymKey.from_file(settings.pseudonym_key_file)]
        development = settings.state_dir / "audit-pseudonym.key"
        if settings.mode == "sandbox" and development.is_file():
            return [PseudonymKey.from_file(development)]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"pseudonym key: {exc}") from exc
    raise ConfigError("give the pseudonym key file with --key FILE")
