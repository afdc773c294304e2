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

    demo = sub.add_parser(
        "demo",
        help="walk the whole citizen journey headlessly (portal, PAR, DigiD, consent, DPoP) "
        "and save the verified download",
    )
    demo.add_argument("--citizen", required=True, metavar="BSN", help="a test citizen's BSN")
    demo.add_argument(
        "--format",
        default="json",
        choices=("json", "jws", "xml", "pdf"),
        help="json (with a detached JWS), jws (compact), xml (XAdES) or pdf (PAdES, PDF/A-3)",
    )
    demo.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    demo.add_argument("--portal", help="the demo portal's URL (default: the demo stack's)")
    demo.add_argument(
        "--start", action="store_true", help="start a demo stack of its own, on free ports"
    )
    demo.add_argument(
        "--level",
        default="substantieel",
        choices=("basis", "midden", "substantieel", "hoog"),
        help="the DigiD level to log in with at the stand-in DigiD",
    )
    demo.set_defaults(run=_demo)

    sandbox = sub.add_parser("sandbox", help="the organisations' sandbox services")
    sandbox_sub = sandbox.add_subparsers(metavar="ACTION", required=True)
    s_serve = sandbox_sub.add_parser("serve", help="run sandbox services on their default ports")
    s_serve.add_argument("--org", action="append", choices=SANDBOX_ORGS, help="default: all four")
    s_serve.add_argument(
        "--digid-for",
        action="append",
        metavar="GATEWAY_URL",
        help="also run the stand-in DigiD, with the gateway at this base URL registered "
        "(repeat for replicas; deploy/compose.yaml)",
    )
    s_serve.set_defaults(run=_sandbox_serve)
    s_citizens = sandbox_sub.add_parser("citizens", help="list the test citizens")
    s_citizens.add_argument("--json", action="store_true", help="machine-readable output")
    s_citizens.set_defaults(run=_sandbox_citizens)

    from gateway.federation.cli import add_commands as add_federation_commands

    add_federation_commands(sub)

    verify = sub.add_parser(
        "verify", help="check a downloaded .json, .jws, .xml or .pdf offline (Dutch; --lang en)"
    )
    verify.add_argument("file", type=Path, help="the document to check")
    verify.add_argument(
        "--trust-root",
        type=Path,
        action="append",
        help="root CA certificate(s) (PEM) to trust; default: [documents] trust_roots, or in "
        "sandbox mode the development root",
    )
    verify.add_argument("--lang", choices=("nl", "en"), default="nl", help="language of the report")
    verify.add_argument("--json", action="store_true", help="machine-readable result")
    verify.add_argument("--at", help="validate as at this moment (RFC 3339), e.g. years from now")
    verify.set_defaults(run=_verify)

    keys = sub.add_parser("keys", help="the development PKI's seal keys")
    keys_sub = keys.add_subparsers(metavar="ACTION", required=True)
    keys_sub.add_parser("rotate", help="make a new seal key that signs from now on").set_defaults(
        run=_keys_rotate
    )
    keys_sub.add_parser("list", help="list the seal keys, newest last").set_defaults(run=_keys_list)

    add_audit_group(sub)  # blauweknop audit …: gateway/audit/cli.py

    config = sub.add_parser("config", help="the configuration")
    config_sub = config.add_subparsers(metavar="ACTION", required=True)
    c_reference = config_sub.add_parser(
        "reference", help="print the configuration reference (docs/configuration.md)"
    )
    c_reference.add_argument("-o", "--output", type=Path, metavar="FILE", help="write it here")
    c_reference.set_defaults(run=_config_reference)
    c_check = config_sub.add_parser(
        "check", help="load the configuration as the gateway would, and say what is wrong"
    )
    c_check.set_defaults(run=_config_check)
    return parser


def _config_reference(args: argparse.Namespace) -> int:
    from gateway.config_reference import reference

    text = reference()
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}")
    return 0


def _config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    load_keys(settings)
    store = "PostgreSQL" if settings.store.postgres is not None else f"SQLite {settings.store_path}"
    print(f"configuration is valid: {settings.mode} mode, store {store}")
    return 0


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
    asyncio.run(run_sandboxes(settings, args.org or SANDBOX_ORGS, args.digid_for or ()))
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


def _verify(args: argparse.Namespace) -> int:
    """Exit 0 only when the seal, its chain, the time-stamp and every source verify."""
    import datetime as dt
    from dataclasses import replace

    from gateway.documents.report import report
    from gateway.documents.service import document_trust
    from gateway.documents.verify import verify_file

    settings = _settings(args)
    if args.trust_root:
        settings = replace(
            settings, documents=replace(settings.documents, trust_roots=tuple(args.trust_root))
        )
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        print(f"blauweknop: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    at = dt.datetime.fromisoformat(args.at) if args.at else None
    verdict = verify_file(data, document_trust(settings), name=args.file.name, at=at)
    if args.json:
        sys.stdout.write(orjson.dumps(verdict.as_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        print(report(verdict, args.lang, str(args.file)))
    return 0 if verdict.ok else 1


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


def _demo(args: argparse.Namespace) -> int:
    if args.citizen not in {c.bsn for c in CITIZENS}:
        print(
            "blauweknop demo: --citizen must be a test citizen; see: blauweknop sandbox citizens",
            file=sys.stderr,
        )
        return 2
    settings = _settings(args)
    if settings.mode != "sandbox":
        print("blauweknop demo walks the demo stack, which needs sandbox mode", file=sys.stderr)
        return 2
    if (
        not args.start
        and not settings.documents.trust_roots
        and not settings.dev_pki.root_cert.exists()
    ):
        # The stack makes its development PKI on first start; the journey checks files against it.
        print(
            f"blauweknop demo: no demo stack has run with state directory {settings.state_dir}. "
            "Start it there (make demo / blauweknop up), or let the journey start its own: --start",
            file=sys.stderr,
        )
        return 1
    _event_loop_policy()
    return asyncio.run(_demo_journey(args, settings))


async def _demo_journey(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.demo.journey import run_journey
    from gateway.demo.stack import start_demo_stack
    from gateway.documents.service import document_trust
    from gateway.serve import demo_portal_url

    stack = await start_demo_stack(settings.state_dir) if args.start else None
    try:
        portal = args.portal or (stack.portal_url if stack else demo_portal_url(settings))
        print(f"journey for test citizen {args.citizen[:2]}*****{args.citizen[-2:]} at {portal}")
        # The demo's trust roots (its development PKI) and each organisation's certificate.
        trust = document_trust(settings)
        result = await run_journey(
            portal, bsn=args.citizen, trust=trust, fmt=args.format, level=args.level
        )
    finally:
        if stack is not None:
            await stack.stop()
    for step in result.steps:
        print(f"  {step.status}  {step.name:9} {step.url.split('?')[0]}")
    args.output.write_bytes(result.body)
    print(f"signature verified (key {result.kid})")
    if result.certified is not None:
        print(f"  seal certificate {result.certified.signer}")
        if result.certified.timestamp_time is not None:
            print(
                f"  time-stamp {result.certified.timestamp_time.isoformat()} "
                f"by {result.certified.timestamp_authority}"
            )
    print("sources:")
    for source in result.sources:
        print(f"  {source.code:7} {source.status:15} provenance {source.provenance}")
    print(f"wrote {args.output} ({len(result.body)} bytes, {result.media_type})")
    return 0
