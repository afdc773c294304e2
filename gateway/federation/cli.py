"""`blauweknop org register|update|list|approve`, `blauweknop policy test`, `provider-check`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.config import DEFAULT_POLICIES_DIR
from gateway.federation.client import approval_request, organisation_request, send
from gateway.federation.keys import development_admin_key, load_private_key

DEFAULT_GATEWAY = "http://127.0.0.1:8080"


def add_commands(sub: Any) -> None:
    org = sub.add_parser("org", help="the organisation registry (docs/federation.md)")
    org_sub = org.add_subparsers(metavar="ACTION")
    for name, text in (("register", "register an organisation"), ("update", "update its entry")):
        p = org_sub.add_parser(name, help=f"{text}: a request signed with the organisation's key")
        p.add_argument("entry", type=Path, help="the entry as JSON (docs/federation.md)")
        p.add_argument("--key", type=Path, required=True, help="the organisation's EC P-256 key")
        p.add_argument("--versie", type=int, help="update: the version the change builds on")
        p.add_argument("--gateway", default=DEFAULT_GATEWAY)
        p.set_defaults(run=_org_send, actie="aanmelden" if name == "register" else "wijzigen")
    approve = org_sub.add_parser("approve", help="approve a registered organisation (admin)")
    approve.add_argument("oin")
    approve.add_argument("--versie", type=int, required=True, help="the version you reviewed")
    approve.add_argument(
        "--admin-key", type=Path, help="administrator key (default: sandbox development key)"
    )
    approve.add_argument("--gateway", default=DEFAULT_GATEWAY)
    approve.set_defaults(run=_org_approve)
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
    check.set_defaults(run=_provider_check)


def _org_send(args: argparse.Namespace) -> int:
    entry = orjson.loads(args.entry.read_bytes())
    token = organisation_request(load_private_key(args.key), args.actie, entry, versie=args.versie)
    return asyncio.run(_send(args.gateway, token))


def _org_approve(args: argparse.Namespace) -> int:
    if args.admin_key is not None:
        key = load_private_key(args.admin_key)
    else:
        from gateway.cli import _settings

        key, _ = development_admin_key(_settings(args).state_dir)
    return asyncio.run(_send(args.gateway, approval_request(key, args.oin, args.versie)))


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
    from gateway.federation.conformance import check_provider

    async def run() -> int:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            report = await check_provider(args.url, session, oin=args.oin, code=args.code)
        print(report.text())
        return 0 if report.conforms else 1

    return asyncio.run(run())
