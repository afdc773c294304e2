"""`blauweknop org register|update|withdraw|list|approve|suspend|reinstate`, `policy test`,
`provider-check`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import DEFAULT_POLICIES_DIR
from gateway.federation.client import (
    admin_request,
    approval_request,
    mtls_context,
    organisation_request,
    send,
    send_mtls,
    withdrawal_request,
)
from gateway.federation.keys import development_admin_key, load_private_key

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


def add_commands(sub: Any) -> None:
    org = sub.add_parser("org", help="the organisation registry (docs/federation.md)")
    org_sub = org.add_subparsers(metavar="ACTION")
    for name, text in (("register", "register an organisation"), ("update", "update its entry")):
        p = org_sub.add_parser(
            name, help=f"{text}: signed with the organisation's key, or sent over mTLS"
        )
        p.add_argument("entry", type=Path, help="the entry as JSON (docs/federation.md)")
        _organisation_credentials(p)
        p.add_argument("--versie", type=int, help="update: the version the change builds on")
        p.set_defaults(run=_org_send, actie="aanmelden" if name == "register" else "wijzigen")
    withdraw = org_sub.add_parser(
        "withdraw",
        help="withdraw an organisation: by itself (--key, or --cert over mTLS) or by an "
        "administrator (--admin-key; sandbox: the development key)",
    )
    withdraw.add_argument("oin")
    _organisation_credentials(withdraw)
    withdraw.add_argument("--admin-key", type=Path, help="withdraw as the administrator")
    withdraw.add_argument("--versie", type=int, help="the version the withdrawal builds on")
    withdraw.add_argument("--reden", help="why (kept in the registry and the audit trail)")
    withdraw.set_defaults(run=_org_withdraw)
    for name, actie, text in (
        ("approve", "goedkeuren", "approve a registered organisation"),
        ("suspend", "schorsen", "suspend an organisation: it is not asked until reinstated"),
        ("reinstate", "herstellen", "reinstate a suspended or withdrawn organisation"),
    ):
        p = org_sub.add_parser(name, help=f"{text} (administrator)")
        p.add_argument("oin")
        p.add_argument(
            "--versie",
            type=int,
            required=actie != "schorsen",
            help="the version you reviewed",
        )
        p.add_argument(
            "--admin-key", type=Path, help="administrator key (default: sandbox development key)"
        )
        if actie != "goedkeuren":
            p.add_argument("--reden", help="why (kept in the registry and the audit trail)")
        p.add_argument("--gateway", default=DEFAULT_GATEWAY)
        p.set_defaults(run=_org_admin, actie=actie)
    listing = org_sub.add_parser("list", help="list registered organisations")
    listing.add_argument("--gateway", default=DEFAULT_GATEWAY)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_org_list)

    policy = sub.add_parser("policy", help="the federation's policies (policies/*.cedar)")
    policy_sub = policy.add_subparsers(metavar="ACTION")
    test = policy_sub.add_parser("test", help="run the policy test cases in policies/tests/")
    test.add_argument("--policies", type=Path, default=DEFAULT_POLICIES_DIR)
    test.set_defaults(run=_policy_test)

    check = sub.add_parser(
        "provider-check", help="check an implementation of docs/provider-api.yaml"
    )
    check.add_argument("url", help="the provider's base URL")
    check.add_argument("--oin", help="the OIN it will register (default: as the document says)")
    check.add_argument("--code", help="its organisation code (default: as the document says)")
    check.add_argument(
        "--x509", type=Path, help="the X.509 anchors (PEM) it registers, to check x5c chains"
    )
    check.set_defaults(run=_provider_check)


def _organisation_credentials(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", type=Path, help="the organisation's EC P-256 signing key")
    parser.add_argument(
        "--cert",
        type=Path,
        help="instead of --key: the organisation's TLS client certificate (PEM, chain), sent "
        "over mTLS to the gateway's [federation] mtls_port (give --gateway https://host:port)",
    )
    parser.add_argument("--cert-key", type=Path, help="the private key of --cert")
    parser.add_argument("--ca", type=Path, help="CA file to check the gateway's TLS server with")
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY)


def _org_send(args: argparse.Namespace) -> int:
    entry = orjson.loads(args.entry.read_bytes())
    request = {"actie": args.actie, "oin": entry.get("oin"), "inschrijving": entry}
    if args.versie is not None:
        request["versie"] = args.versie
    if args.cert is not None:
        return _over_mtls(args, request)
    if args.key is None:
        raise SystemExit("give --key (a signed request) or --cert and --cert-key (mTLS)")
    token = organisation_request(load_private_key(args.key), args.actie, entry, versie=args.versie)
    return asyncio.run(_send(args.gateway, token))


def _org_withdraw(args: argparse.Namespace) -> int:
    if args.cert is not None:
        request: dict[str, Any] = {"actie": "intrekken", "oin": args.oin}
        request.update({k: v for k in ("versie", "reden") if (v := getattr(args, k)) is not None})
        return _over_mtls(args, request)
    if args.key is not None:
        token = withdrawal_request(
            load_private_key(args.key), args.oin, versie=args.versie, reden=args.reden
        )
        return asyncio.run(_send(args.gateway, token))
    token = admin_request(
        _admin_key(args), "intrekken", args.oin, versie=args.versie, reden=args.reden
    )
    return asyncio.run(_send(args.gateway, token))


def _org_admin(args: argparse.Namespace) -> int:
    key = _admin_key(args)
    if args.actie == "goedkeuren":
        token = approval_request(key, args.oin, args.versie)
    else:
        token = admin_request(key, args.actie, args.oin, versie=args.versie, reden=args.reden)
    return asyncio.run(_send(args.gateway, token))


def _admin_key(args: argparse.Namespace) -> ec.EllipticCurvePrivateKey:
    if args.admin_key is not None:
        return load_private_key(args.admin_key)
    from gateway.cli import _settings

    key, _ = development_admin_key(_settings(args).state_dir)
    return key


def _over_mtls(args: argparse.Namespace, request: dict[str, Any]) -> int:
    if args.cert_key is None:
        raise SystemExit("--cert needs --cert-key: the private key of the client certificate")
    context = mtls_context(args.cert, args.cert_key, args.ca)

    async def run() -> int:
        async with aiohttp.ClientSession() as session:
            status, body = await send_mtls(session, args.gateway, request, context)
        print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return 0 if status == 200 else 1

    return asyncio.run(run())


async def _send(gateway: str, token: str) -> int:
    async with aiohttp.ClientSession() as session:
        status, body = await send(session, gateway, token)
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    return 0 if status == 200 else 1


def _org_list(args: argparse.Namespace) -> int:
    async def fetch() -> dict[str, Any]:
        url = args.gateway.rstrip("/") + "/v1/federatie/organisaties"
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            result: dict[str, Any] = await r.json()
            return result

    data = asyncio.run(fetch())
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return 0
    for item in data["organisaties"]:
        entry = item["inschrijving"]
        print(
            f"{entry['oin']}  {entry['code']:7} v{item['versie']:<3} {item['status']:12} "
            f"{entry['connector']:9} {entry['naam']}"
        )
    print(f"active: {', '.join(data['actief'])}")
    return 0


def _policy_test(args: argparse.Namespace) -> int:
    from gateway.federation.policytest import run_policy_tests

    report = run_policy_tests(args.policies)
    print(report.text())
    return 0 if report.passed else 1


def _provider_check(args: argparse.Namespace) -> int:
    from gateway.federation.certs import load_anchors
    from gateway.federation.conformance import check_provider

    anchors = load_anchors(args.x509.read_text()) if args.x509 else ()

    async def run() -> int:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            report = await check_provider(
                args.url, session, oin=args.oin, code=args.code, anchors=anchors
            )
        print(report.text())
        return 0 if report.conforms else 1

    return asyncio.run(run())
