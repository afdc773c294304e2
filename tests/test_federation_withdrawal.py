"""Withdrawing, suspending and reinstating an organisation, end to end on real sockets.

The change is a signed registry request (by the organisation itself or the federation
administrator), versioned and audited like any other; the running gateway drops the
organisation from bundles without a restart, and a reinstatement brings it back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from connectors._sandbox.runner import RunningSandbox, start_sandbox
from connectors.svb.sandbox import signing_key
from gateway.federation.client import (
    admin_request,
    organisation_request,
    send,
    withdrawal_request,
)
from gateway.federation.keys import development_admin_key
from gateway.pki import DevPki
from tests.conftest import Stack, fresh_state, start_stack
from tests.test_federation import (
    EVERYWHERE,
    SVB_OIN,
    audit_events,
    eventually,
    register_and_approve,
    run_cli,
    statuses,
    svb_entry,
)


@pytest.fixture
async def svb(tmp_path: Path, pki: DevPki) -> AsyncIterator[tuple[Stack, Path]]:
    """A gateway on its own state with the SVB registered and approved (version 2)."""
    state = fresh_state(tmp_path, pki)
    stack, runners = await start_stack(state, pki, federation={"poll_seconds": 0.1})
    sandbox: RunningSandbox = await start_sandbox("svb", pki)
    await register_and_approve(stack, state, signing_key(pki), svb_entry(sandbox.url, pki))
    await eventually(lambda: in_bundle(stack))
    yield stack, state
    await stack.session.close()
    for runner in [*runners, sandbox.runner]:
        await runner.cleanup()


async def in_bundle(stack: Stack) -> bool:
    return statuses(await stack.bundle(EVERYWHERE)).get("svb") == "ok"


async def not_in_bundle(stack: Stack) -> bool:
    return "svb" not in statuses(await stack.bundle(EVERYWHERE))


async def history(stack: Stack) -> list[tuple[str, str | None]]:
    async with stack.session.get(f"{stack.url}/v1/federatie/organisaties/{SVB_OIN}") as r:
        return [(v["status"], v.get("reden")) for v in (await r.json())["versies"]]


async def test_an_organisation_withdraws_itself_and_the_administrator_reinstates_it(
    svb: tuple[Stack, Path], pki: DevPki
) -> None:
    stack, state = svb
    key = signing_key(pki)
    intruder = ec.generate_private_key(ec.SECP256R1())
    status, body = await send(stack.session, stack.url, withdrawal_request(intruder, SVB_OIN))
    assert status == 401, body  # only the organisation's registered key withdraws it
    # Claiming to be the administrator does not help: the admin key is checked then.
    status, body = await send(
        stack.session, stack.url, admin_request(intruder, "intrekken", SVB_OIN)
    )
    assert status == 401, body
    assert await in_bundle(stack)

    status, body = await send(
        stack.session, stack.url, withdrawal_request(key, SVB_OIN, reden="Fusie met UWV")
    )
    assert (status, body["status"], body["versie"]) == (200, "ingetrokken", 3), body
    await eventually(lambda: not_in_bundle(stack))
    # Withdrawn: it cannot change its entry, nor withdraw twice, until reinstated.
    svb_url = body["inschrijving"]["url"]
    token = organisation_request(key, "wijzigen", svb_entry(svb_url, pki, naam="SVB 2"))
    status, body = await send(stack.session, stack.url, token)
    assert status == 409, body
    assert "herstellen" in body["detail"]

    admin, _ = development_admin_key(state)
    status, body = await send(
        stack.session, stack.url, admin_request(admin, "herstellen", SVB_OIN, versie=2)
    )
    assert status == 409, body  # reinstate the version reviewed, which is 3
    status, body = await send(
        stack.session, stack.url, admin_request(admin, "herstellen", SVB_OIN, versie=3)
    )
    assert (status, body["status"]) == (200, "goedgekeurd"), body
    await eventually(lambda: in_bundle(stack))

    assert await history(stack) == [
        ("aangemeld", None),
        ("goedgekeurd", None),
        ("ingetrokken", "Fusie met UWV"),
        ("goedgekeurd", None),
    ]
    changes = await audit_events(stack, "registratie.gewijzigd")
    assert [(c["actie"], c["door"], c["status"]) for c in changes][2:] == [
        ("intrekken", SVB_OIN, "ingetrokken"),
        ("herstellen", "federatie-beheer", "goedgekeurd"),
    ]


async def test_the_administrator_suspends_reinstates_and_withdraws_with_the_cli(
    svb: tuple[Stack, Path],
) -> None:
    stack, state = svb
    admin_key = str(state / "federation" / "admin.key.pem")
    common = ("--admin-key", admin_key, "--gateway", stack.url)
    code, out = await run_cli("org", "suspend", SVB_OIN, "--reden", "Storing", *common)
    assert code == 0, out
    assert '"status": "geschorst"' in out
    await eventually(lambda: not_in_bundle(stack))
    # A suspended organisation is not approved again, it is reinstated.
    code, out = await run_cli("org", "approve", SVB_OIN, "--versie", "3", *common)
    assert code == 1, out
    code, out = await run_cli("org", "reinstate", SVB_OIN, "--versie", "3", *common)
    assert code == 0, out
    await eventually(lambda: in_bundle(stack))
    code, out = await run_cli("org", "withdraw", SVB_OIN, "--reden", "Misbruik", *common)
    assert code == 0, out
    assert '"status": "ingetrokken"' in out
    await eventually(lambda: not_in_bundle(stack))
    code, out = await run_cli("org", "list", "--gateway", stack.url)
    assert "ingetrokken" in out
    assert [s for s, _ in await history(stack)][2:] == ["geschorst", "goedgekeurd", "ingetrokken"]
