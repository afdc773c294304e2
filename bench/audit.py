"""The cost of auditing: bundle throughput with auditing on divided by throughput with it off.

One run, side by side: the four sandboxes in one process, and two gateways in two more, both
reaching the same sandboxes:

* **on**: the real thing. Every bundle's events (and its encrypted document) are synced to the
  SQLite outbox before the bundle goes out, and the relay publishes them to an embedded Kafka
  broker (Tansu, started by this benchmark) in the background;
* **off**: `[audit] disabled_for_benchmark = true`, a sandbox-only setting that production
  refuses: no outbox, no relay.

16 clients ask for bundles back to back, in rounds of pairs (on-off, then off-on, …) so that
drift on a shared machine hits both alike; the report gives the total ratio, the median of
the per-pair ratios, and their mean with a 95 % margin (more `--rounds` narrow it).
Afterwards the benchmark waits until the relay has published everything and checks the count
on the topic.

    .venv/bin/python -m bench.audit [--quick] [--rounds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.fanout import closed_loop, process_cpu_seconds, wait_for
from gateway.audit import EVENTS_TOPIC
from gateway.audit.broker import start_broker
from gateway.audit.stream import read_topic
from gateway.config import load_settings
from gateway.connector import client_tls
from gateway.pki import DevPki

CITIZEN = "999990020"  # data everywhere
SANDBOX_BASE_PORT = 19201
PORTS = {"on": 18091, "off": 18092}
CLIENTS = 16


@contextlib.asynccontextmanager
async def processes(
    commands: list[tuple[list[str], dict[str, str]]],
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    blauweknop = str(Path(sys.executable).with_name("blauweknop"))
    procs = [
        await asyncio.create_subprocess_exec(blauweknop, *args, env=env, stdout=subprocess.DEVNULL)
        for args, env in commands
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.wait()


def gateway_env(base: dict[str, str], state: Path, port: int, **extra: str) -> dict[str, str]:
    state.mkdir(parents=True, exist_ok=True)
    if not (state / "pki").exists():
        (state / "pki").symlink_to(Path(base["BLAUWEKNOP_STATE_DIR"]) / "pki")
    return {**base, "BLAUWEKNOP_STATE_DIR": str(state), "BLAUWEKNOP_PORT": str(port), **extra}


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as response:
        for line in (await response.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise RuntimeError(f"{name} not in {url}/metrics")


async def run(quick: bool, rounds: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bk-bench-audit-"))
    base = {
        **os.environ,
        "BLAUWEKNOP_STATE_DIR": str(root / "sandboxes"),
        "BLAUWEKNOP_SANDBOX_BASE_PORT": str(SANDBOX_BASE_PORT),
        "BLAUWEKNOP_LOG_LEVEL": "WARNING",
    }
    DevPki(root / "sandboxes" / "pki").ensure()
    broker = await start_broker()
    envs = {
        "on": gateway_env(
            base,
            root / "on",
            PORTS["on"],
            BLAUWEKNOP_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
            BLAUWEKNOP_KAFKA__IDEMPOTENCE="false",
        ),
        "off": gateway_env(
            base, root / "off", PORTS["off"], BLAUWEKNOP_AUDIT__DISABLED_FOR_BENCHMARK="true"
        ),
    }
    settings = load_settings(None, base)
    urls = {mode: f"http://127.0.0.1:{port}" for mode, port in PORTS.items()}
    report: dict[str, Any] = {"clients": CLIENTS, "citizen": CITIZEN}
    rounds, per_round = (2, 200) if quick else (rounds, 400)
    commands = [(["sandbox", "serve"], base), (["serve"], envs["on"]), (["serve"], envs["off"])]
    connector = aiohttp.TCPConnector(limit=256)
    try:
        async with (
            processes(commands) as procs,
            aiohttp.ClientSession(connector=connector) as session,
        ):
            pids = {
                "sandboxes": procs[0].pid,
                "gateway_on": procs[1].pid,
                "gateway_off": procs[2].pid,
                "broker": broker.pid,
            }
            for org in settings.organisations:
                await wait_for(
                    f"{org.settings.base_url}/_sandbox/health", session, client_tls(org.settings)
                )
            for url in urls.values():
                await wait_for(f"{url}/readyz", session)

            def bundle_call(url: str) -> Any:
                async def bundle() -> None:
                    async with session.post(
                        f"{url}/v1/sandbox/bundel", json={"bsn": CITIZEN}
                    ) as response:
                        response.raise_for_status()
                        await response.read()

                return bundle

            seconds = {"on": 0.0, "off": 0.0}
            per_round_rates: dict[str, list[float]] = {"on": [], "off": []}
            for mode in urls:
                await closed_loop(CLIENTS, CLIENTS * 8, bundle_call(urls[mode]))  # warm up
            pair_ratios: list[float] = []
            cpu_before = process_cpu_seconds(pids)
            for i in range(rounds):
                # on-off, then off-on: a trend in the machine's load cancels out in pairs.
                rates: dict[str, float] = {}
                for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                    _, _, took = await closed_loop(CLIENTS, per_round, bundle_call(urls[mode]))
                    seconds[mode] += took
                    rates[mode] = per_round / took
                    per_round_rates[mode].append(round(rates[mode], 1))
                pair_ratios.append(rates["on"] / rates["off"])
            for mode in urls:
                report[f"bundles_per_s_{mode}"] = round(rounds * per_round / seconds[mode], 1)
                report[f"rounds_per_s_{mode}"] = per_round_rates[mode]
            # CPU time is what auditing really costs; unlike rates it hardly moves with other
            # work on the machine. The relay and broker work of the "on" bundles is charged
            # to them even when it happens during an "off" round.
            cpu_after = process_cpu_seconds(pids)
            bundles = rounds * per_round
            per_mode = {"gateway_on": bundles, "gateway_off": bundles, "broker": bundles}
            report["cpu_ms_per_bundle"] = {
                name: round(
                    (cpu_after[name] - cpu_before[name]) * 1000 / per_mode.get(name, 2 * bundles),
                    2,
                )
                for name in pids
            }
            report["ratio_on_off"] = round(
                report["bundles_per_s_on"] / report["bundles_per_s_off"], 3
            )
            report["pair_ratios"] = [round(r, 3) for r in pair_ratios]
            report["median_pair_ratio"] = round(statistics.median(pair_ratios), 3)
            if len(pair_ratios) > 1:
                # On a shared machine single pairs scatter by several per cent; the mean of many
                # pairs, with its margin (two standard errors), says where the cost really lies.
                mean = statistics.fmean(pair_ratios)
                margin = 2 * statistics.stdev(pair_ratios) / len(pair_ratios) ** 0.5
                report["mean_pair_ratio"] = round(mean, 3)
                report["mean_pair_ratio_95"] = [round(mean - margin, 3), round(mean + margin, 3)]
            report["issued_unaudited_by_off"] = await metric(
                session, urls["off"], 'blauweknop_bundles_total{outcome="issued_unaudited"}'
            )

            started = time.perf_counter()
            for _ in range(600):  # at most a minute
                if await metric(session, urls["on"], "blauweknop_audit_outbox_backlog") == 0:
                    break
                await asyncio.sleep(0.1)
            report["relay_drain_after_load_s"] = round(time.perf_counter() - started, 2)
            report["events_published"] = await metric(
                session, urls["on"], "blauweknop_audit_events_published_total"
            )
        async with contextlib.aclosing(read_topic(broker.kafka_config(), EVENTS_TOPIC)) as records:
            report["events_on_topic"] = sum([1 async for _ in records])
    finally:
        await broker.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument(
        "--rounds", type=int, default=8, help="pairs of on/off rounds of 400 bundles each"
    )
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    report = asyncio.run(run(args.quick, args.rounds))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
