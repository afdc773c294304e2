"""Fan-out overhead and throughput of the gateway, measured side by side in one run.

Runs the four sandboxes in one process and the gateway in another, then drives load from
this process:

* overhead: every organisation at 50 ms added latency; gateway p50 (and p99) divided by the
  p50 (p99) of the slowest organisation as the gateway measured it, at 1 and 16 clients; beside
  it the same load from a bare client (no gateway), whose rise from 1 to 16 clients shows how
  much of the machine the sandboxes and the calls alone take;
* throughput: no added latency, 16 clients; signed bundles per second through the gateway
  divided by the rate of a bare aiohttp client making the same four organisation calls itself
  and verifying their signatures (with the same connector code, in this process);
* CPU time per call of the gateway, the sandboxes and this load generator during the
  throughput runs: the cost of a bundle, which a busy machine hardly disturbs.

    .venv/bin/python -m bench.fanout [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from gateway.config import Settings, connector_factory, load_settings
from gateway.connector import Connector, FetchRequest, client_tls

CITIZEN = "999990020"  # data everywhere
GATEWAY_PORT = 18080
SANDBOX_BASE_PORT = 19101


def _ticks(path: str) -> float:
    # utime and stime are fields 14 and 15 of /proc/.../stat, counted in clock ticks.
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def event_loop_cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process's main thread (a gateway's event loop)."""
    return _ticks(f"/proc/{pid}/task/{pid}/stat")


def machine_idle() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs since boot: differences give the idle share."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait


def tree_cpu_seconds(pid: int) -> float:
    """CPU time used so far by a process and the processes it started (an audit writer)."""
    total = _ticks(f"/proc/{pid}/stat")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(FileNotFoundError):
                    total += tree_cpu_seconds(int(child))
    return total


def process_cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) used so far by each process."""
    return {name: _ticks(f"/proc/{pid}/stat") for name, pid in pids.items()}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU time used so far by each process, and by this load generator.

    Also the gateway's main thread alone: its event loop is what one gateway process can do
    at most one core of, whatever its worker threads add beside it.
    """
    gateway = pids["gateway"]
    return {
        "load_generator": time.process_time(),
        **process_cpu_seconds(pids),
        "gateway_event_loop": event_loop_cpu_seconds(gateway),
    }


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def wait_for(
    url: str, session: aiohttp.ClientSession, tls: ssl.SSLContext | None = None
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url, ssl=tls or True) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def bench_env(prefix: str, gateway_port: int, sandbox_base_port: int) -> dict[str, str]:
    """The environment of a benchmark's services: a fresh state directory, its own ports.

    Each benchmark has its own ports, so that one can run beside another or beside the demo.
    """
    return {
        **os.environ,
        "BLAUWEKNOP_STATE_DIR": tempfile.mkdtemp(prefix=prefix),
        "BLAUWEKNOP_PORT": str(gateway_port),
        "BLAUWEKNOP_SANDBOX_BASE_PORT": str(sandbox_base_port),
        "BLAUWEKNOP_LOG_LEVEL": "WARNING",
    }


async def wait_until_up(session: aiohttp.ClientSession, settings: Settings, gateway: str) -> None:
    """Wait for every sandbox's health check, then the gateway's."""
    for org in settings.organisations:
        await wait_for(
            f"{org.settings.base_url}/_sandbox/health", session, client_tls(org.settings)
        )
    await wait_for(f"{gateway}/healthz", session)


@contextlib.asynccontextmanager
async def services(
    env: dict[str, str], gateway_log: Path | None = None
) -> AsyncIterator[dict[str, int]]:
    """Run the four sandboxes in one process and the gateway in another; yields their pids.

    With `gateway_log`, the gateway's log (its stderr) goes to that file.
    """
    blauweknop = str(Path(sys.executable).with_name("blauweknop"))
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(gateway_log.open("wb")) if gateway_log else None
        procs = [
            await asyncio.create_subprocess_exec(
                blauweknop, *args, env=env, stdout=subprocess.DEVNULL, stderr=stderr
            )
            for args, stderr in ((("sandbox", "serve"), None), (("serve",), log))
        ]
        try:
            yield {"sandboxes": procs[0].pid, "gateway": procs[1].pid}
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await proc.wait()


async def closed_loop(
    clients: int, count: int, call: Callable[[], Awaitable[Any]]
) -> tuple[list[float], list[Any], float]:
    """`clients` workers issue `count` calls back to back; returns latencies, results, seconds."""
    latencies: list[float] = []
    results: list[Any] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            results.append(await call())
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, results, time.perf_counter() - started


async def run(quick: bool) -> dict[str, Any]:
    env = bench_env("bk-bench-", GATEWAY_PORT, SANDBOX_BASE_PORT)
    settings = load_settings(None, env)
    gateway = f"http://127.0.0.1:{GATEWAY_PORT}"
    sandboxes = [o.settings for o in settings.organisations]
    report: dict[str, Any] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with services(env) as pids, aiohttp.ClientSession(connector=connector) as session:
        await wait_until_up(session, settings, gateway)

        async def set_latency(ms: int) -> None:
            for org in sandboxes:
                async with session.put(
                    f"{org.base_url}/_sandbox/faults",
                    json={"latency_ms": ms},
                    ssl=client_tls(org) or True,
                ) as response:
                    response.raise_for_status()

        async def bundle() -> dict[str, Any]:
            async with session.post(
                f"{gateway}/v1/sandbox/bundel", json={"bsn": CITIZEN}
            ) as response:
                response.raise_for_status()
                result: dict[str, Any] = orjson.loads(await response.read())
                return result

        connectors = [connector_factory(o.connector)(o.settings) for o in settings.organisations]
        bare_slowest: list[float] = []  # per call set, the slowest organisation's time

        async def timed(connector: Connector, request: FetchRequest) -> float:
            started = time.perf_counter()
            await connector.fetch(request)
            return time.perf_counter() - started

        async def bare_client() -> None:
            request = FetchRequest(CITIZEN, "bench-bare-client", session)
            durations = await asyncio.gather(*(timed(c, request) for c in connectors))
            bare_slowest.append(max(durations))

        await set_latency(50)
        for clients, count in ((1, 100 if quick else 400), (16, 400 if quick else 2000)):
            await closed_loop(clients, clients * 4, bundle)  # warm up
            latencies, results, _ = await closed_loop(clients, count, bundle)
            per_org: dict[str, list[float]] = {}
            for result in results:
                for bron in result["bundel"]["bronnen"]:
                    assert bron["status"] == "ok", bron["status"]
                    per_org.setdefault(bron["organisatie"]["code"], []).append(
                        bron["duur_ms"] / 1000
                    )
            org_p50 = max(statistics.median(v) for v in per_org.values())
            org_p99 = max(percentile(v, 99) for v in per_org.values())
            gw_p50, gw_p99 = statistics.median(latencies), percentile(latencies, 99)
            report[f"overhead_c{clients}"] = {
                "requests": count,
                "gateway_p50_ms": round(gw_p50 * 1000, 1),
                "gateway_p99_ms": round(gw_p99 * 1000, 1),
                "slowest_org_p50_ms": round(org_p50 * 1000, 1),
                "slowest_org_p99_ms": round(org_p99 * 1000, 1),
                "ratio_p50": round(gw_p50 / org_p50, 3),
                "ratio_p99": round(gw_p99 / org_p99, 3),
            }
            # The same load without any gateway: this process makes the four calls and checks
            # the signatures itself. How far its own latency rises from 1 to 16 clients shows
            # how much of the machine the organisations and the calls alone already take.
            await closed_loop(clients, clients * 4, bare_client)
            bare_slowest.clear()
            bare_latencies, _, _ = await closed_loop(clients, count, bare_client)
            report[f"bare_client_c{clients}"] = {
                "p50_ms": round(statistics.median(bare_latencies) * 1000, 1),
                "p99_ms": round(percentile(bare_latencies, 99) * 1000, 1),
                "slowest_org_p50_ms": round(statistics.median(bare_slowest) * 1000, 1),
            }
        report["bare_client_p50_c16_over_c1"] = round(
            report["bare_client_c16"]["p50_ms"] / report["bare_client_c1"]["p50_ms"], 3
        )
        report["gateway_p50_c16_over_c1"] = round(
            report["overhead_c16"]["gateway_p50_ms"] / report["overhead_c1"]["gateway_p50_ms"], 3
        )

        await set_latency(0)

        total = 500 if quick else 3000
        for name, call in (("gateway", bundle), ("bare_client", bare_client)):
            await closed_loop(16, 64, call)  # warm up
            cpu_before = cpu_seconds(pids)
            _, _, seconds = await closed_loop(16, total, call)
            cpu_after = cpu_seconds(pids)
            report[f"throughput_{name}_per_s"] = round(total / seconds, 1)
            # CPU time, unlike wall time, hardly depends on what else runs on the machine.
            report[f"cpu_ms_per_call_{name}"] = {
                process: round((cpu_after[process] - cpu_before[process]) / total * 1000, 2)
                for process in cpu_before
            }
        report["throughput_ratio"] = round(
            report["throughput_gateway_per_s"] / report["throughput_bare_client_per_s"], 3
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, for a smoke run")
    args = parser.parse_args()
    report = asyncio.run(run(args.quick))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
