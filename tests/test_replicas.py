"""Several gateway processes on one PostgreSQL store: what one replica issues, the other honours.

Each replica is a real `blauweknop serve` process; the sandboxes, the stand-in DigiD and the
portal's back-end (the test, through PortalClient) talk to them over real sockets.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import settings_from_mapping
from gateway.demo.digid import start_digid
from gateway.demo.journey import Browser, LoopbackCookieJar, fill_consent_form, fill_login_form
from gateway.demo.portal.keys import new_client_key
from gateway.demo.portal.oauth import PortalClient, Started, Token
from gateway.errors import OAuthError
from gateway.pki import DevPki
from gateway.serve import start_sandboxes
from tests.portalstack import TEST_REDIRECT, write_policies
from tests.postgres import PostgresServer
from tests.replicas import Replica, replica_config, start_replica

EVERYWHERE = "999990020"


@dataclass
class Cluster:
    """Two gateway processes (a, b) on one PostgreSQL database, and what they talk to."""

    a: Replica
    b: Replica
    client_a: PortalClient
    client_b: PortalClient
    session: aiohttp.ClientSession
    postgres: PostgresServer
    database: str
    config: dict[str, Any]
    workdir: Path
    sandbox_urls: dict[str, str]
    cleanup: list[Any] = field(default_factory=list)

    def outbox_events(self) -> list[dict[str, Any]]:
        with psycopg.connect(
            self.postgres.url(self.database), password=self.postgres.password, autocommit=True
        ) as conn:
            rows = conn.execute("SELECT payload FROM blauweknop_outbox ORDER BY seq").fetchall()
        return [orjson.loads(bytes(r[0])) for r in rows]


@pytest.fixture
async def cluster(
    state_dir: Path, pki: DevPki, postgres: PostgresServer, tmp_path: Path
) -> AsyncIterator[Cluster]:
    base = settings_from_mapping({"state_dir": str(state_dir)})
    sandboxes = {s.org: s for s in await start_sandboxes(base, any_port=True)}
    digid = await start_digid()
    test_key = new_client_key()
    policies = write_policies(tmp_path / "policies", test_key, new_client_key())
    database = postgres.create_database()
    config = replica_config(
        state_dir, pki, postgres, database, {org: s.url for org, s in sandboxes.items()}
    ) | {
        "policies_dir": str(policies),
        "shutdown_grace_seconds": 10.0,
        "oidc": {"issuer": digid.url},
    }
    a, b = await asyncio.gather(
        start_replica("a", config, tmp_path), start_replica("b", config, tmp_path)
    )
    session = aiohttp.ClientSession()
    registration = {
        "redirect_uris": [f"{r.url}/login/callback" for r in (a, b)],
        "jwks_uri": f"{a.url}/login/jwks.json",
        "id_token_encrypted_response_alg": "RSA-OAEP-256",
    }
    async with session.put(
        f"{digid.url}/_sandbox/clients/blauweknop-gateway", json=registration
    ) as response:
        assert response.status == 200, await response.text()
    client_a = PortalClient(a.url, "test-portaal", test_key, TEST_REDIRECT)
    made = Cluster(
        a,
        b,
        client_a,
        replace(client_a, gateway_url=b.url),
        session,
        postgres,
        database,
        config,
        tmp_path,
        {org: s.url for org, s in sandboxes.items()},
        [digid.runner, *(s.runner for s in sandboxes.values())],
    )
    yield made
    a.stop()
    b.stop()
    await session.close()
    for runner in made.cleanup:
        await runner.cleanup()


async def consent_at(client: PortalClient, session: aiohttp.ClientSession) -> tuple[str, Started]:
    """Push, log in and consent, all at the client's replica: the code and the started request."""
    started = await client.push(session, purpose_id="inzage-avg", scopes=["financiele-zaken"])
    async with aiohttp.ClientSession(cookie_jar=LoopbackCookieJar()) as browser_session:
        browser = Browser(browser_session)
        page = await browser.open("authorize", "GET", started.authorize_url)
        form, pairs = fill_login_form(page.html, EVERYWHERE, "substantieel")
        page = await browser.send_form("login", page.url, form, pairs)
        assert page.url.startswith(client.gateway_url)
        form, pairs = fill_consent_form(page.html)
        back = await browser.send_form(
            "consent", page.url, form, pairs, stop_at=client.redirect_uri
        )
    return parse_qs(urlsplit(back.url).query)["code"][0], started


async def test_code_from_one_process_is_redeemed_once_at_the_other(cluster: Cluster) -> None:
    code, started = await consent_at(cluster.client_a, cluster.session)
    key = ec.generate_private_key(ec.SECP256R1())
    redeemed = await cluster.client_b.redeem(
        cluster.session, code=code, verifier=started.pkce.verifier, dpop_key=key
    )
    token = redeemed.access_token
    download = await cluster.client_b.download(cluster.session, access_token=token, dpop_key=key)
    assert orjson.loads(download.body)["bundel"]["bsn"] == EVERYWHERE
    for client in (cluster.client_b, cluster.client_a):
        with pytest.raises(OAuthError, match="invalid_grant"):
            await client.redeem(
                cluster.session, code=code, verifier=started.pkce.verifier, dpop_key=key
            )
    # The replay revoked the grant: its token is refused at both replicas.
    for client in (cluster.client_a, cluster.client_b):
        with pytest.raises(OAuthError, match="invalid_token"):
            await client.download(cluster.session, access_token=token, dpop_key=key)


async def test_one_code_redeemed_at_both_at_once_is_honoured_once(cluster: Cluster) -> None:
    code, started = await consent_at(cluster.client_b, cluster.session)
    key = ec.generate_private_key(ec.SECP256R1())
    outcomes = await asyncio.gather(
        *(
            client.redeem(cluster.session, code=code, verifier=started.pkce.verifier, dpop_key=key)
            for client in (cluster.client_a, cluster.client_b)
        ),
        return_exceptions=True,
    )
    tokens = [o for o in outcomes if isinstance(o, Token)]
    refusals = [o for o in outcomes if isinstance(o, OAuthError)]
    assert len(tokens) == 1, outcomes
    assert len(refusals) == 1
    assert refusals[0].error == "invalid_grant"


@dataclass
class LoadResult:
    ok: list[tuple[str, str, float]] = field(default_factory=list)  # replica, bundel_id, t
    lost: list[tuple[str, float]] = field(default_factory=list)  # replica, started at
    rerouted: int = 0
    other: list[str] = field(default_factory=list)


async def test_sigkill_of_one_replica_under_load_loses_only_requests_in_flight(
    cluster: Cluster,
) -> None:
    """Like a load balancer: round robin over live replicas; a refused connection (the request
    never reached a gateway) goes to the next replica. Only requests that were being served by
    the killed process may fail, at most one per client; every released bundle is audited."""
    replicas = {"a": cluster.a, "b": cluster.b}
    alive = ["a", "b"]
    result = LoadResult()
    workers = 6
    killed_at: list[float] = []
    stop_at = time.monotonic() + 6.0
    turn = 0

    async def worker() -> None:
        nonlocal turn
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < stop_at:
                turn += 1
                name = alive[turn % len(alive)]
                started = time.monotonic()
                in_flight[name] += 1
                if name == "a" and killed_at and len(killed_at) == 1:
                    sent_while_dying.append(started)
                try:
                    async with session.post(
                        f"{replicas[name].url}/v1/sandbox/bundel", json={"bsn": EVERYWHERE}
                    ) as response:
                        body = await response.read()
                        if response.status != 200:
                            result.other.append(f"{name} {response.status} {body[:200]!r}")
                            continue
                        bundel_id = orjson.loads(body)["bundel"]["bundel_id"]
                        result.ok.append((name, bundel_id, time.monotonic()))
                except aiohttp.ClientConnectorError:
                    result.rerouted += 1  # never reached a gateway: retried elsewhere
                    if name in alive and len(alive) > 1:
                        alive.remove(name)
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                    result.lost.append((name, started))
                    if name in alive and len(alive) > 1:
                        alive.remove(name)
                finally:
                    in_flight[name] -= 1

    in_flight = {"a": 0, "b": 0}
    sent_while_dying: list[float] = []
    in_flight_at_kill: list[int] = []

    async def killer() -> None:
        await asyncio.sleep(2.0)
        in_flight_at_kill.append(in_flight["a"])
        killed_at.append(time.monotonic())
        await asyncio.to_thread(cluster.a.kill)
        killed_at.append(time.monotonic())  # the process is gone (reaped)

    await asyncio.gather(killer(), *(worker() for _ in range(workers)))

    assert killed_at, "the replica was killed"
    assert not result.other, result.other[:5]
    assert all(name == "a" for name, _ in result.lost), "the surviving replica lost nothing"
    assert len(result.lost) <= workers, "at most one per client"
    assert len(result.lost) <= in_flight_at_kill[0] + len(sent_while_dying), (
        "only the requests being served by the killed process are lost",
        result.lost,
        in_flight_at_kill,
        sent_while_dying,
    )
    assert all(started <= killed_at[1] for _, started in result.lost), (
        "only requests sent before the process was gone are lost",
        killed_at,
        result.lost,
    )
    served_before = [r for r in result.ok if r[2] < killed_at[0]]
    served_after = [r for r in result.ok if r[2] > killed_at[1]]
    assert {name for name, _, _ in served_before} == {"a", "b"}, "both served before the kill"
    assert len(served_after) >= 10, "the other replica kept serving"
    assert {name for name, _, _ in served_after} == {"b"}
    # Evidence first: every bundle a client received has its audit event in the shared outbox.
    audited = {
        e["data"]["bundel_id"]
        for e in cluster.outbox_events()
        if e["type"].endswith("bundel.uitgegeven.v1")
    }
    assert {bundel_id for _, bundel_id, _ in result.ok} <= audited
    async with cluster.session.get(f"{cluster.b.url}/readyz") as response:
        assert response.status == 200


async def test_sigterm_finishes_in_flight_requests_flushes_and_exits_cleanly(
    cluster: Cluster,
) -> None:
    """SIGTERM: /readyz turns 503 while draining, the request already in flight is answered and
    audited, new connections are refused once the listener closes, the process exits 0."""
    replica = await start_replica(
        "c", {**cluster.config, "shutdown_drain_seconds": 1.0}, cluster.workdir
    )
    try:
        async with cluster.session.put(
            f"{cluster.sandbox_urls['duo']}/_sandbox/faults", json={"latency_ms": 2000}
        ) as response:
            assert response.status == 200
        in_flight = asyncio.ensure_future(
            cluster.session.post(f"{replica.url}/v1/sandbox/bundel", json={"bsn": EVERYWHERE})
        )
        await asyncio.sleep(0.5)
        assert not in_flight.done()
        replica.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        async with cluster.session.get(f"{replica.url}/readyz") as response:
            assert response.status == 503
            body = await response.json()
            assert body["ready"] is False
            assert "draining" in body["checks"]["lifecycle"]
        response = await in_flight
        assert response.status == 200, await response.text()
        bundel_id = orjson.loads(await response.read())["bundel"]["bundel_id"]
        response.release()
        exit_code = await asyncio.to_thread(replica.process.wait, 30)
        assert exit_code == 0
        with pytest.raises(aiohttp.ClientConnectorError):
            async with cluster.session.get(f"{replica.url}/healthz"):
                pass
        audited = [
            e
            for e in cluster.outbox_events()
            if e["type"].endswith("bundel.uitgegeven.v1") and e["data"]["bundel_id"] == bundel_id
        ]
        assert len(audited) == 1
        log = replica.log.read_text()
        assert "stopped" in log.splitlines()[-1]
    finally:
        replica.stop()
        async with cluster.session.delete(f"{cluster.sandbox_urls['duo']}/_sandbox/faults"):
            pass
