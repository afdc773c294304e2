"""The `blauweknop` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from connectors._sandbox import CITIZENS
from gateway import logs
from gateway.audit.cli import add_audit_group
from gateway.config import SANDBOX_ORGS, Settings, load_keys, load_settings
from gateway.errors import BlauweKnopError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
    except BlauweKnopError as exc:
        print(f"blauweknop: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blauweknop",
        description="Blauwe Knop gateway: one certified overview of a citizen's data.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=_env_path("BLAUWEKNOP_CONFIG"),
        help="TOML configuration file (default: $BLAUWEKNOP_CONFIG); BLAUWEKNOP_* overrides",
    )
    sub = parser.add_subparsers(metavar="COMMAND")

    up = sub.add_parser("up", help="run the demo stack: the four sandboxes and the gateway")
    up.set_defaults(run=_up)
    serve = sub.add_parser("serve", help="run the gateway only")
    serve.set_defaults(run=_serve)

    sandbox = sub.add_parser("sandbox", help="the organisations' sandbox services")
    sandbox_sub = sandbox.add_subparsers(metavar="ACTION", required=True)
    s_serve = sandbox_sub.add_parser("serve", help="run sandbox services on their default ports")
    s_serve.add_argument("--org", action="append", choices=SANDBOX_ORGS, help="default: all four")
    s_serve.set_defaults(run=_sandbox_serve)
    s_citizens = sandbox_sub.add_parser("citizens", help="list the test citizens")
    s_citizens.add_argument("--json", action="store_true", help="machine-readable output")
    s_citizens.set_defaults(run=_sandbox_citizens)

    keys = sub.add_parser("keys", help="the development PKI's seal keys")
    keys_sub = keys.add_subparsers(metavar="ACTION", required=True)
    keys_sub.add_parser("rotate", help="make a new seal key that signs from now on").set_defaults(
        run=_keys_rotate
    )
    keys_sub.add_parser("list", help="list the seal keys, newest last").set_defaults(run=_keys_list)

    add_audit_group(sub)  # blauweknop audit …: gateway/audit/cli.py
    return parser


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config, os.environ)
    logs.configure(settings.log_level)
    return settings


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _up(args: argparse.Namespace) -> int:
    from gateway.serve import run_gateway

    settings = _settings(args)
    if settings.mode != "sandbox":
        print("blauweknop up runs the demo stack, which needs sandbox mode", file=sys.stderr)
        return 2
    _event_loop_policy()
    asyncio.run(run_gateway(settings, with_sandboxes=True))
    return 0


def _serve(args: argparse.Namespace) -> int:
    from gateway.serve import run_gateway

    settings = _settings(args)
    _event_loop_policy()
    asyncio.run(run_gateway(settings, with_sandboxes=False))
    return 0


def _sandbox_serve(args: argparse.Namespace) -> int:
    from gateway.serve import run_sandboxes

    settings = _settings(args)
    _event_loop_policy()
    asyncio.run(run_sandboxes(settings, args.org or SANDBOX_ORGS))
    return 0


def _sandbox_citizens(args: argparse.Namespace) -> int:
    if args.json:
        rows = [
            {
                "bsn": c.bsn,
                "naam": c.naam,
                "scenario": c.scenario,
                "scenario_en": c.scenario_en,
                "organisaties": sorted(c.holders),
            }
            for c in CITIZENS
        ]
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    for c in CITIZENS:
        holders = ", ".join(sorted(c.holders)) or "-"
        print(
            f"{c.bsn}  {c.naam:17} [{holders}]\n           {c.scenario}\n           {c.scenario_en}"
        )
    return 0


def _keys_rotate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.mode != "sandbox":
        print("in production, rotate by configuring [signing] key/chain/retired", file=sys.stderr)
        return 2
    identity = settings.dev_pki.rotate_seal()
    print(f"new seal key {identity.name}; restart the gateway to sign with it")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    ring = load_keys(_settings(args))
    for key in (*ring.retired[::-1], ring.active):
        cert = key.chain[0]
        role = "active " if key is ring.active else "retired"
        print(
            f"{role} {key.kid}  {cert.subject.rfc4514_string()}"
            f"  until {cert.not_valid_after_utc:%Y-%m-%d}"
        )
    return 0
