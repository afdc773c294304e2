"""The cost of auditing: bundle throughput with auditing on divided by throughput with it off.

One run, side by side: the four sandboxes in one process, and two gateways in two more, both
reaching the same sandboxes:

* **on**: the real thing. Every bundle's events (and its encrypted document) are synced to the
  SQLite outbox before the bundle goes out, and the relay publishes them to an embedded Kafka
  broker (Tansu, started by this benchmark) in the background; by the audit writer process
  (`[audit] writer = "process"`, the default here) or, with `--writer inline`, by the gateway
  process itself;
* **off**: `[audit] disabled_for_benchmark = true`, a sandbox-only setting that production
  refuses: no outbox, no relay.

16 clients ask for bundles back to back, in rounds of pairs (on-off, then off-on, …) so that
drift on a shared machine hits both alike; the report gives the total ratio, the median of
the per-pair ratios, and their mean with a 95 % margin (more `--rounds` narrow it). Both
gateways are replaced by fresh processes every `--restart-every` pairs (default 4), after the
relay has published everything, so that the figure does not rest on one lucky or unlucky
process. At the end the number of events on the topic must match the outbox's.

Besides CPU per bundle, the report gives each gateway's event-loop thread (its CPU per bundle
and how busy it was) and how idle the machine was during each mode's rounds: at 16 clients a
gateway is bound by that one thread and the GIL before it is bound by the cores, so an audit
cost shows up there first (docs/performance.md, session 6).

    .venv/bin/python -m bench.audit [--quick] [--rounds 8] [--restart-every 4] [--writer inline]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
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

from bench.fanout import (
    closed_loop,
    event_loop_cpu_seconds,
    machine_idle,
    tree_cpu_seconds,
    wait_for,
)
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


async def run(quick: bool, rounds: int, restart_every: int, writer: str) -> dict[str, Any]:
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
            BLAUWEKNOP_AUDIT__WRITER=writer,
        ),
        "off": gateway_env(
            base, root / "off", PORTS["off"], BLAUWEKNOP_AUDIT__DISABLED_FOR_BENCHMARK="true"
        ),
    }
    settings = load_settings(None, base)
    urls = {mode: f"http://127.0.0.1:{port}" for mode, port in PORTS.items()}
    report: dict[str, Any] = {"clients": CLIENTS, "citizen": CITIZEN, "writer": writer}
    rounds, per_round = (2, 200) if quick else (rounds, 400)
    report["gateway_processes_per_mode"] = -(-rounds // restart_every)
    connector = aiohttp.TCPConnector(limit=256)
    seconds = {"on": 0.0, "off": 0.0}
    per_round_rates: dict[str, list[float]] = {"on": [], "off": []}
    pair_ratios: list[float] = []
    cpu = {"on": 0.0, "off": 0.0, "sandboxes": 0.0, "broker": 0.0}
    loop_cpu = {"on": 0.0, "off": 0.0}
    idle_ticks = {"on": [0, 0], "off": [0, 0]}
    issued_unaudited = 0.0
    drains: list[float] = []
    try:
        async with (
            processes([(["sandbox", "serve"], base)]) as [sandboxes],
            aiohttp.ClientSession(connector=connector) as session,
        ):
            for org in settings.organisations:
                await wait_for(
                    f"{org.settings.base_url}/_sandbox/health", session, client_tls(org.settings)
                )

            def bundle_call(url: str) -> Any:
                async def bundle() -> None:
                    async with session.post(
                        f"{url}/v1/sandbox/bundel", json={"bsn": CITIZEN}
                    ) as response:
                        response.raise_for_status()
                        await response.read()

                return bundle

            # Fresh gateway processes every `restart_every` pairs: one process can be a few per
            # cent faster or slower than the next for the whole of its life (where its memory
            # lies, which core it lands on), and a figure should not rest on one pair of them.
            for first in range(0, rounds, restart_every):
                commands = [(["serve"], envs["on"]), (["serve"], envs["off"])]
                async with processes(commands) as procs:
                    pids = {
                        "on": procs[0].pid,
                        "off": procs[1].pid,
                        "sandboxes": sandboxes.pid,
                        "broker": broker.pid,
                    }
                    for url in urls.values():
                        await wait_for(f"{url}/readyz", session)
                    for mode in urls:  # warm up
                        await closed_loop(CLIENTS, CLIENTS * 8, bundle_call(urls[mode]))
                    cpu_before = cpu_seconds(pids)
                    for i in range(first, min(first + restart_every, rounds)):
                        # on-off, then off-on: a trend in the machine's load cancels out in pairs.
                        rates: dict[str, float] = {}
                        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
                            call = bundle_call(urls[mode])
                            loop_before = event_loop_cpu_seconds(pids[mode])
                            idle_before = machine_idle()
                            _, _, took = await closed_loop(CLIENTS, per_round, call)
                            loop_cpu[mode] += event_loop_cpu_seconds(pids[mode]) - loop_before
                            idle_after = machine_idle()
                            idle_ticks[mode][0] += idle_after[0] - idle_before[0]
                            idle_ticks[mode][1] += idle_after[1] - idle_before[1]
                            seconds[mode] += took
                            rates[mode] = per_round / took
                            per_round_rates[mode].append(round(rates[mode], 1))
                        pair_ratios.append(rates["on"] / rates["off"])
                    cpu_after = cpu_seconds(pids)
                    issued_unaudited += await metric(
                        session, urls["off"], 'blauweknop_bundles_total{outcome="issued_unaudited"}'
                    )
                    # Published before the gateway stops, so that none of it is left to the
                    # next process's relay.
                    started = time.perf_counter()
                    for _ in range(600):  # at most a minute
                        backlog = await metric(
                            session, urls["on"], "blauweknop_audit_outbox_backlog"
                        )
                        if backlog == 0:
                            break
                        await asyncio.sleep(0.1)
                    drains.append(round(time.perf_counter() - started, 2))
                    # The broker's work for these rounds ends with the drain.
                    cpu_after["broker"] = tree_cpu_seconds(broker.pid)
                    for name in pids:
                        cpu[name] += cpu_after[name] - cpu_before[name]
        bundles = rounds * per_round
        for mode in urls:
            report[f"bundles_per_s_{mode}"] = round(bundles / seconds[mode], 1)
            report[f"rounds_per_s_{mode}"] = per_round_rates[mode]
        # CPU time is what auditing really costs; unlike rates it hardly moves with other work
        # on the machine. The sandboxes serve both gateways; the broker only the "on" one.
        report["cpu_ms_per_bundle"] = {
            "gateway_on": round(cpu["on"] * 1000 / bundles, 2),
            "gateway_off": round(cpu["off"] * 1000 / bundles, 2),
            "sandboxes": round(cpu["sandboxes"] * 1000 / (2 * bundles), 2),
            "broker": round(cpu["broker"] * 1000 / bundles, 2),
        }
        report["event_loop"] = {
            mode: {
                "cpu_ms_per_bundle": round(loop_cpu[mode] * 1000 / bundles, 2),
                "busy": round(loop_cpu[mode] / seconds[mode], 2),
            }
            for mode in urls
        }
        report["machine_idle"] = {
            mode: round(idle / total, 2) if total else None
            for mode, (idle, total) in idle_ticks.items()
        }
        report["ratio_on_off"] = round(report["bundles_per_s_on"] / report["bundles_per_s_off"], 3)
        report["pair_ratios"] = [round(r, 3) for r in pair_ratios]
        report["median_pair_ratio"] = round(statistics.median(pair_ratios), 3)
        if len(pair_ratios) > 1:
            # On a shared machine single pairs scatter by several per cent; the mean of many
            # pairs, with its margin (two standard errors), says where the cost really lies.
            mean = statistics.fmean(pair_ratios)
            margin = 2 * statistics.stdev(pair_ratios) / len(pair_ratios) ** 0.5
            report["mean_pair_ratio"] = round(mean, 3)
            report["mean_pair_ratio_95"] = [round(mean - margin, 3), round(mean + margin, 3)]
        report["issued_unaudited_by_off"] = issued_unaudited
        report["relay_drain_after_load_s"] = max(drains)
        report["events_in_outbox"], report["events_sent"] = await asyncio.to_thread(
            outbox_counts, load_settings(None, envs["on"]).store_path
        )
        async with contextlib.aclosing(read_topic(broker.kafka_config(), EVENTS_TOPIC)) as records:
            report["events_on_topic"] = sum([1 async for _ in records])
    finally:
        await broker.stop()
    return report


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time so far of each process with the ones it started (a gateway's audit writer)."""
    return {name: tree_cpu_seconds(pid) for name, pid in pids.items()}


def outbox_counts(db: Path) -> tuple[int, int]:
    """(events stored, events marked sent) in the outbox of the audited gateway."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT count(*), coalesce(sum(sent), 0) FROM outbox").fetchone()
    return int(row[0]), int(row[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    parser.add_argument(
        "--rounds", type=int, default=8, help="pairs of on/off rounds of 400 bundles each"
    )
    parser.add_argument(
        "--restart-every",
        type=int,
        default=4,
        help="pairs after which both gateways are replaced by fresh processes",
    )
    parser.add_argument(
        "--writer",
        choices=("process", "inline"),
        default="process",
        help="where the audited gateway seals, appends and relays ([audit] writer)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.restart_every < 1:
        parser.error("--rounds and --restart-every must be at least 1")
    report = asyncio.run(run(args.quick, args.rounds, args.restart_every, args.writer))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
