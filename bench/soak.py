"""Soak: the gateway at half its measured capacity for a long while; does anything creep?

Runs the four sandboxes in one process and the gateway in another (as bench.fanout does), then:

1. capacity: 16 clients back to back for `--capacity-seconds`; signed bundles per second;
2. soak: after `--settle-seconds` at the soak rate (not measured), an open loop (requests sent
   on a fixed schedule, not waiting for answers) at half that rate for `--minutes`, sampling
   the gateway process's resident memory and open file descriptors every 5 s from /proc.

Pass criteria (exit status 1 if one fails): memory growth ≤ 5 % (median RSS of the last minute
against the first minute's), no file-descriptor growth (the last minute's median count of open
descriptors not above the first minute's), p99 latency of the last minute within 20 % of the
first minute's, and no failed request. The report lists the machine's load average per minute:
other work on the machine moves latency and concurrency.

    .venv/bin/python -m bench.soak --minutes 10        # the full soak
    .venv/bin/python -m bench.soak --minutes 2         # a shorter one
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.fanout import CITIZEN, bench_env, closed_loop, percentile, services, wait_until_up
from gateway.config import load_settings

GATEWAY_PORT = 18180
SANDBOX_BASE_PORT = 19201
SAMPLE_SECONDS = 5.0


@dataclass
class Samples:
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds)
    failures: list[str] = field(default_factory=list)
    resources: list[tuple[float, int, int]] = field(default_factory=list)  # (t, rss kB, fds)
    load: list[tuple[float, float]] = field(default_factory=list)  # (t, 1-minute load average)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    env = bench_env("bk-soak-", GATEWAY_PORT, SANDBOX_BASE_PORT)
    settings = load_settings(None, env)
    load_before = os.getloadavg()[0]  # other work on the machine skews latency: say so
    gateway_url = f"http://127.0.0.1:{GATEWAY_PORT}"
    connector = aiohttp.TCPConnector(limit=512)
    samples = Samples()
    async with services(env) as pids, aiohttp.ClientSession(connector=connector) as session:
        await wait_until_up(session, settings, gateway_url)
        gateway = pids["gateway"]

        async def bundle() -> None:
            async with session.post(
                f"{gateway_url}/v1/sandbox/bundel", json={"bsn": CITIZEN}
            ) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}: {body[:200]!r}")
                orjson.loads(body)

        await closed_loop(16, 64, bundle)  # warm up
        started = time.perf_counter()
        count = 0
        while time.perf_counter() - started < args.capacity_seconds:
            await closed_loop(16, 64, bundle)
            count += 64
        capacity = count / (time.perf_counter() - started)
        rate = capacity * args.load
        print(f"capacity {capacity:.1f} bundles/s; soaking at {rate:.1f}/s for {args.minutes} min")

        # Settle at the soak rate first, so the first minute measured is not the tail of the
        # capacity phase (queues draining, pools shrinking).
        settle_end = time.monotonic() + args.settle_seconds
        while time.monotonic() < settle_end:
            await asyncio.gather(bundle(), asyncio.sleep(1 / rate))

        duration = args.minutes * 60
        t0 = time.monotonic()
        in_flight: set[asyncio.Task[None]] = set()

        async def one(sent: float) -> None:
            try:
                await bundle()
                samples.latencies.append((sent - t0, time.monotonic() - sent))
            except Exception as exc:
                samples.failures.append(f"{sent - t0:.1f}s {exc}")

        async def sampler() -> None:
            while time.monotonic() - t0 < duration:
                samples.resources.append(
                    (time.monotonic() - t0, rss_kb(gateway), open_fds(gateway))
                )
                samples.load.append((time.monotonic() - t0, os.getloadavg()[0]))
                await asyncio.sleep(SAMPLE_SECONDS)
            samples.resources.append((time.monotonic() - t0, rss_kb(gateway), open_fds(gateway)))

        sampling = asyncio.create_task(sampler())
        i = 0
        while True:
            due = t0 + i / rate
            if due - t0 >= duration:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(due))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            i += 1
        await asyncio.gather(*in_flight)
        await sampling
    report = evaluate(samples, capacity, rate, args.minutes)
    report["load_average_before"] = round(load_before, 2)
    return report


def evaluate(samples: Samples, capacity: float, rate: float, minutes: float) -> dict[str, Any]:
    end = minutes * 60
    first = [s for t, s in samples.latencies if t < 60]
    last = [s for t, s in samples.latencies if t >= end - 60]
    res_first = [(rss, fds) for t, rss, fds in samples.resources if t <= 60]
    res_last = [(rss, fds) for t, rss, fds in samples.resources if t >= end - 60]
    rss_first = statistics.median(r for r, _ in res_first)
    rss_last = statistics.median(r for r, _ in res_last)
    # Open descriptors follow concurrency (one connection per request in flight), which a burst
    # of other work on the machine raises for a moment: compare medians, report peaks too.
    fds_first = statistics.median(f for _, f in res_first)
    fds_last = statistics.median(f for _, f in res_last)
    p99_first, p99_last = percentile(first, 99), percentile(last, 99)
    report: dict[str, Any] = {
        "minutes": minutes,
        "capacity_per_s": round(capacity, 1),
        "rate_per_s": round(rate, 1),
        "requests": len(samples.latencies) + len(samples.failures),
        "failures": len(samples.failures),
        "rss_first_minute_mib": round(rss_first / 1024, 1),
        "rss_last_minute_mib": round(rss_last / 1024, 1),
        "rss_growth_pct": round((rss_last / rss_first - 1) * 100, 2),
        "fds_first_minute_median": fds_first,
        "fds_last_minute_median": fds_last,
        "fds_first_minute_peak": max(f for _, f in res_first),
        "fds_last_minute_peak": max(f for _, f in res_last),
        "p50_first_minute_ms": round(statistics.median(first) * 1000, 1),
        "p50_last_minute_ms": round(statistics.median(last) * 1000, 1),
        "p99_first_minute_ms": round(p99_first * 1000, 1),
        "p99_last_minute_ms": round(p99_last * 1000, 1),
        "p99_change_pct": round((p99_last / p99_first - 1) * 100, 1),
    }
    report["p99_by_minute_ms"] = [
        round(
            percentile([s for t, s in samples.latencies if m * 60 <= t < (m + 1) * 60], 99) * 1000,
            1,
        )
        for m in range(int(minutes))
    ]
    report["rss_by_minute_mib"] = [
        round(max(r for t, r, _ in samples.resources if m * 60 <= t <= (m + 1) * 60) / 1024, 1)
        for m in range(int(minutes))
    ]
    report["load_average_by_minute"] = [
        round(max(v for t, v in samples.load if m * 60 <= t <= (m + 1) * 60), 2)
        for m in range(int(minutes))
    ]
    report["pass"] = {
        "memory_growth_le_5pct": report["rss_growth_pct"] <= 5.0,
        "no_fd_growth": fds_last <= fds_first,
        "p99_within_20pct": abs(report["p99_change_pct"]) <= 20.0,
        "no_failures": not samples.failures,
    }
    if samples.failures:
        report["first_failures"] = samples.failures[:5]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument(
        "--load", type=float, default=0.5, help="share of measured capacity (default 0.5)"
    )
    parser.add_argument("--capacity-seconds", type=float, default=20.0)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=30.0,
        help="run at the soak rate this long before measuring (default 30)",
    )
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error("--minutes must be at least 2: the first and last minute are compared")
    report = asyncio.run(soak(args))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if all(report["pass"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
