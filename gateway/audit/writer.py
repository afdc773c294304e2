"""The audit writer: issued bundles sealed, appended and relayed in a process of their own.

A busy gateway is bound by its event-loop thread and the GIL before it is bound by the machine's
cores (docs/performance.md, session 6): whatever the audit does inside the gateway process
competes with the fan-out and the signing for that one thread. With `[audit] writer =
"process"` the gateway starts this writer beside itself (and again whenever it dies), sends it
each issued bundle's audit material over a private Unix socket (one frame: a JSON header with
the transaction, the citizen's pseudonym, the hashes and the organisations' outcomes, then the
documents' bytes), and releases the bundle only once the writer has answered, which it does
only after the group commit that holds the bundle's events. Any failure (the writer down or
restarting, the connection lost, an error answer, no answer in time) is `StoreUnavailable`, so
the gateway answers 503 and releases nothing. A commit whose answer was lost leaves events for a
bundle that was withheld: more evidence than needed, never less.

The writer seals the documents, builds the events and appends them to the same outbox as the
gateway's other events (login, consent, policy decisions, registry changes), and runs the relay
to Kafka; the gateway's `/metrics` and `/readyz` ask it for the relay's state. It exits when the
gateway does, also when the gateway was killed (it watches its parent).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import shutil
import signal
import struct
import tempfile
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import generate_latest

from gateway import logs
from gateway.audit.archive import MAX_DOCUMENT_BYTES, IssuedDocument
from gateway.audit.events import AuditTrail, OrganisatieBevraagd
from gateway.audit.relay import Relay
from gateway.config import Settings
from gateway.errors import BlauweKnopError
from gateway.metrics import Metrics
from gateway.store import StoreUnavailable

log = logging.getLogger(__name__)

_LENGTHS = struct.Struct("!II")  # header bytes, body bytes
_MAX_HEADER = 1024 * 1024
_MAX_DOCUMENTS = 8
_START_SECONDS = 30.0  # a writer not listening by then failed to start
_ANSWER_SECONDS = 30.0  # a synced append answered later than this counts as failed
_STOP_SECONDS = 15.0  # the writer's own drain (relay 5 s) and a margin, then it is killed
_FIRST_BACKOFF = 0.2
_MAX_BACKOFF = 5.0
_PARENT_CHECK_SECONDS = 0.5
_WRITE_BUFFER = 16 * 1024 * 1024


class WriterProtocolError(BlauweKnopError):
    """A frame between the gateway and its audit writer is malformed or too large."""


def _frame(header: dict[str, Any], body_size: int = 0) -> bytes:
    """A frame's lengths and header; `body_size` bytes of body follow it."""
    head = orjson.dumps(header)
    return _LENGTHS.pack(len(head), body_size) + head


async def _read_frame(reader: asyncio.StreamReader, max_body: int) -> tuple[dict[str, Any], bytes]:
    head_size, body_size = _LENGTHS.unpack(await reader.readexactly(_LENGTHS.size))
    if head_size > _MAX_HEADER or body_size > max_body:
        raise WriterProtocolError(f"frame of {head_size} + {body_size} bytes is too large")
    try:
        header = orjson.loads(await reader.readexactly(head_size))
    except orjson.JSONDecodeError as exc:
        raise WriterProtocolError("frame header is not JSON") from exc
    if not isinstance(header, dict):
        raise WriterProtocolError("frame header is not a JSON object")
    return header, await reader.readexactly(body_size)


# -- the gateway's side ------------------------------------------------------------------------


class AuditWriter:
    """Starts the writer process, hands it issued bundles, and restarts it when it dies."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # A private directory (0700) with a short path: AF_UNIX paths are limited to ~100 bytes.
        self._dir = Path(tempfile.mkdtemp(prefix="bk-audit-writer-"))
        self._socket = self._dir / "writer.sock"
        self._process: BaseProcess | None = None
        self._stream: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._stopping = False

    async def start(self) -> None:
        """Start the writer; raises StoreUnavailable when it does not come up."""
        await self._launch()
        self._supervisor = asyncio.create_task(self._supervise(), name="audit-writer-supervisor")

    async def stop(self) -> None:
        """Let the writer finish what it holds (its relay publishes for up to 5 s), then stop."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._reap(gracefully=True)
        shutil.rmtree(self._dir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def bundle_issued(
        self,
        *,
        transactie_id: str,
        burger: str,
        bundel_id: str,
        canonical_sha256: str,
        documents: Sequence[IssuedDocument],
        bevragingen: Sequence[OrganisatieBevraagd],
    ) -> None:
        """As `AuditTrail.bundle_issued`, in the writer: durable when this returns."""
        header = {
            "op": "bundel",
            "transactie_id": transactie_id,
            "burger": burger,
            "bundel_id": bundel_id,
            "canonical_sha256": canonical_sha256,
            "documenten": [
                {"formaat": d.formaat, "mediatype": d.mediatype, "grootte": len(d.content)}
                for d in documents
            ],
            "bevragingen": [
                [b.oin, b.code, b.status, b.duur_ms, b.antwoord_sha256] for b in bevragingen
            ],
        }
        await self._ask(header, [d.content for d in documents])

    async def status(self) -> dict[str, Any]:
        """The relay's state and metrics (Prometheus text) from the writer."""
        return await self._ask({"op": "status"}, [])

    async def _ask(self, header: dict[str, Any], bodies: Sequence[bytes]) -> dict[str, Any]:
        stream = self._stream
        if stream is None or stream.is_closing():
            raise StoreUnavailable("the audit writer is not running (it is being restarted)")
        number = next(self._ids)
        header["id"] = number
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[number] = answer
        try:
            stream.writelines([_frame(header, sum(len(b) for b in bodies)), *bodies])
            await stream.drain()
            async with asyncio.timeout(_ANSWER_SECONDS):
                reply = await answer
        except (ConnectionError, TimeoutError) as exc:
            raise StoreUnavailable(f"the audit writer did not answer: {exc!r}") from exc
        finally:
            self._answers.pop(number, None)
        if "error" in reply:
            raise StoreUnavailable(f"the audit writer could not store the events: {reply['error']}")
        return reply

    async def _launch(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._socket.unlink()
        context = multiprocessing.get_context("spawn")  # no threads or sockets inherited
        process = context.Process(
            target=_main,
            args=(self._settings, str(self._socket), os.getpid()),
            name="blauweknop-audit-writer",
        )
        await asyncio.to_thread(process.start)
        self._process = process
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_SECONDS
        while True:
            if not process.is_alive():
                raise StoreUnavailable(
                    f"the audit writer exited while starting (exit code {process.exitcode}); "
                    "its log lines above say why"
                )
            try:
                reader, stream = await asyncio.open_unix_connection(str(self._socket))
                break
            except OSError:
                if loop.time() > deadline:
                    raise StoreUnavailable(
                        f"the audit writer did not listen within {_START_SECONDS:.0f} s"
                    ) from None
                await asyncio.sleep(0.05)
        # Whole documents go through; the gateway's request limits bound how many at once, so
        # the buffer may hold them rather than make every request wait for the writer to read.
        stream.transport.set_write_buffer_limits(high=_WRITE_BUFFER)
        self._stream = stream
        self._reading = asyncio.create_task(self._read_answers(reader), name="audit-writer-answers")
        log.info("audit writer started (pid %s)", process.pid)

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header, _ = await _read_frame(reader, 0)
                answer = self._answers.get(header.get("id", -1))
                if answer is not None and not answer.done():
                    answer.set_result(header)
        except (asyncio.IncompleteReadError, ConnectionError, WriterProtocolError) as exc:
            if not self._stopping:
                log.error("lost the audit writer: %r", exc)
        finally:
            if self._stream is not None:
                self._stream.close()
            self._stream = None
            gone = StoreUnavailable("the audit writer stopped before it answered")
            for answer in self._answers.values():
                if not answer.done():
                    answer.set_exception(gone)

    async def _supervise(self) -> None:
        backoff = _FIRST_BACKOFF
        while True:
            if self._reading is not None:
                await asyncio.wait({self._reading})
            await self._reap(gracefully=False)
            await asyncio.sleep(backoff)
            try:
                await self._launch()
                backoff = _FIRST_BACKOFF
            except StoreUnavailable:
                log.exception("audit writer did not restart; trying again in %.1f s", backoff)
                self._reading = None
                backoff = min(2 * backoff, _MAX_BACKOFF)

    async def _reap(self, *, gracefully: bool) -> None:
        process, self._process = self._process, None
        if self._stream is not None:
            self._stream.close()
        if self._reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        if process is None:
            return
        if process.is_alive():
            if gracefully:
                process.terminate()  # SIGTERM: the writer drains and exits
                await asyncio.to_thread(process.join, _STOP_SECONDS)
            if process.is_alive():
                process.kill()
        await asyncio.to_thread(process.join)
        if not gracefully or process.exitcode:
            log.warning("audit writer (pid %s) ended: exit code %s", process.pid, process.exitcode)


# -- the writer's side -------------------------------------------------------------------------


def _main(settings: Settings, socket_path: str, parent: int) -> None:
    """The writer process's entry point (multiprocessing, spawn)."""
    logs.configure(settings.log_level)
    try:
        import uvloop
    except ImportError:  # as in the gateway: uvloop where the platform has it
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(_serve(settings, Path(socket_path), parent))


async def _serve(settings: Settings, socket: Path, parent: int) -> None:
    trail = await AuditTrail.open(settings)
    metrics = Metrics()
    relay = None
    if settings.kafka is not None:
        relay = Relay(
            trail.store,
            settings.kafka,
            metrics,
            keep_sent_seconds=settings.outbox_keep_sent_seconds,
        )
        relay.start()
    # SIGTERM or SIGINT may reach the whole process group (a terminal's Ctrl-C, an init that
    # signals every process): the writer then goes on serving its gateway until that gateway
    # closes the connection, which it does last, after its own in-flight requests.
    stop, wake = asyncio.Event(), asyncio.Event()

    def stop_when_alone() -> None:
        stop.set()
        wake.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop_when_alone)
    busy: set[asyncio.Task[None]] = set()
    sessions: set[asyncio.StreamWriter] = set()

    async def session(reader: asyncio.StreamReader, stream: asyncio.StreamWriter) -> None:
        sessions.add(stream)
        try:
            while True:
                header, body = await _read_frame(reader, _MAX_DOCUMENTS * MAX_DOCUMENT_BYTES)
                task = asyncio.create_task(_answer(trail, relay, metrics, header, body, stream))
                busy.add(task)
                task.add_done_callback(busy.discard)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the gateway closed the connection
        except WriterProtocolError:
            log.exception("malformed frame from the gateway; closing the connection")
        finally:
            sessions.discard(stream)
            stream.close()
            wake.set()

    server = await asyncio.start_unix_server(session, path=str(socket))
    os.chmod(socket, 0o600)
    log.info("audit writer listening (pid %s)", os.getpid())
    try:
        while os.getppid() == parent and not (stop.is_set() and not sessions):
            wake.clear()
            with contextlib.suppress(TimeoutError):  # the parent is looked at every so often
                await asyncio.wait_for(wake.wait(), _PARENT_CHECK_SECONDS)
    finally:
        server.close()
        if busy:
            await asyncio.wait(busy)  # appends already under way finish and are answered
        if relay is not None:
            await relay.stop(drain_seconds=5.0)
        await trail.store.close()
        log.info("audit writer stopped")


async def _answer(
    trail: AuditTrail,
    relay: Relay | None,
    metrics: Metrics,
    header: dict[str, Any],
    body: bytes,
    stream: asyncio.StreamWriter,
) -> None:
    answer: dict[str, Any] = {"id": header.get("id")}
    try:
        if header.get("op") == "bundel":
            await trail.bundle_issued(**_bundel(header, body))
        elif header.get("op") == "status":
            answer["relay_running"] = relay.running if relay is not None else None
            answer["metrics"] = generate_latest(metrics.audit_registry).decode()
        else:
            raise WriterProtocolError(f"unknown operation {header.get('op')!r}")
    except Exception as exc:  # the gateway answers 503 on any failure; this log says why
        log.exception("audit writer could not handle %s", header.get("op"))
        answer["error"] = f"{type(exc).__name__}: {exc}"
    if not stream.is_closing():
        stream.write(_frame(answer))


def _bundel(header: dict[str, Any], body: bytes) -> dict[str, Any]:
    """The arguments of `AuditTrail.bundle_issued` from a frame; strict about every field."""

    def text(data: dict[str, Any], name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str):
            raise WriterProtocolError(f"frame field {name!r} is not a string")
        return value

    documents, offset = [], 0
    for entry in header.get("documenten") or []:
        size = entry.get("grootte") if isinstance(entry, dict) else None
        if not isinstance(size, int) or size < 0 or offset + size > len(body):
            raise WriterProtocolError("frame documents do not add up to its body")
        content = body[offset : offset + size]
        documents.append(IssuedDocument(text(entry, "formaat"), text(entry, "mediatype"), content))
        offset += size
    if offset != len(body) or len(documents) > _MAX_DOCUMENTS:
        raise WriterProtocolError("frame documents do not add up to its body")
    bevragingen = []
    for entry in header.get("bevragingen") or []:
        if not (isinstance(entry, list) and len(entry) == 5):
            raise WriterProtocolError("frame organisation call is not a list of five")
        oin, code, status, duur_ms, antwoord_sha256 = entry
        if not all(isinstance(v, str) for v in (oin, code, status)) or not (
            (duur_ms is None or isinstance(duur_ms, int))
            and (antwoord_sha256 is None or isinstance(antwoord_sha256, str))
        ):
            raise WriterProtocolError("frame organisation call has a field of the wrong type")
        bevragingen.append(OrganisatieBevraagd(oin, code, status, duur_ms, antwoord_sha256))
    return {
        "transactie_id": text(header, "transactie_id"),
        "burger": text(header, "burger"),
        "bundel_id": text(header, "bundel_id"),
        "canonical_sha256": text(header, "canonical_sha256"),
        "documents": documents,
        "bevragingen": bevragingen,
    }
