"""What one client may cost the gateway: header size, time, concurrency (docs/hostile-input.md).

Two layers. Below the application, `GatewayRunner` serves the app with aiohttp's own header
limits, a clock on slowly sent headers, and a protocol handler that answers the requests
aiohttp's HTTP parser rejects (bad request line, header too long, bad Content-Length, a NUL in a
header) as RFC 9457 problem details instead of aiohttp's `text/plain` that echoes the offending
bytes. Inside the application, `limits_middleware` bounds the time to receive a body, the time
a request may take in all, and how many requests one client may have in flight at once.

The protocol layer subclasses aiohttp 3.x internals (`RequestHandler`, `Server`), which have no
public extension point for this; tests/test_limits.py crosses every limit over a real socket, so
an aiohttp upgrade that changes them fails there, not in production.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.typedefs import Handler, Middleware
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """`[limits]`: bounds on what one request and one client may take.

    Header sizes go to aiohttp's parser. `header_seconds` runs from a request's first byte to its
    last header byte, `body_seconds` from there to the body's last byte, `request_seconds` until
    the answer is ready; `idle_seconds` closes a connection that sends nothing (keep it longer
    than a load balancer's idle timeout); `send_seconds` resets one that stops taking our answer
    (a slow reader holds the answer in memory). `concurrent_per_client` counts requests in
    flight per peer address (a portal's back-end asks for many citizens at once: not too few).
    """

    max_line_bytes: int = 8190
    max_field_bytes: int = 8190
    max_headers: int = 64
    header_seconds: float = 10.0
    body_seconds: float = 30.0
    request_seconds: float = 60.0
    idle_seconds: float = 75.0
    send_seconds: float = 30.0
    concurrent_per_client: int = 64


def problem_body(status: int, title: str, detail: str) -> bytes:
    return orjson.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})


def _problem(status: int, title: str, detail: str) -> web.Response:
    return web.Response(
        status=status, body=problem_body(status, title, detail), content_type=PROBLEM_JSON
    )


# --- inside the application ------------------------------------------------------------------


class BodyTooSlow(TimeoutError):
    """Set on a request's body stream when it has not fully arrived within `body_seconds`.

    A TimeoutError, so that aiohttp, draining an unread body after the answer, closes the
    connection quietly instead of logging an unhandled exception.
    """


def limits_middleware(limits: ServerLimits) -> Middleware:
    """Body time, total request time and requests in flight per client, as problem details."""
    in_flight: Counter[str] = Counter()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        client = request.remote or "unknown"
        if in_flight[client] >= limits.concurrent_per_client:
            response = _problem(
                429,
                "Te veel gelijktijdige verzoeken",
                f"At most {limits.concurrent_per_client} requests from one client may be in "
                "progress at a time; wait for an answer before sending the next request.",
            )
            response.headers["Retry-After"] = "1"
            return response
        in_flight[client] += 1
        body = request.content
        loop = asyncio.get_running_loop()

        def body_too_slow() -> None:
            if not body.is_eof():
                body.set_exception(BodyTooSlow())

        clock = loop.call_later(limits.body_seconds, body_too_slow)
        try:
            async with asyncio.timeout(limits.request_seconds) as deadline:
                return await handler(request)
        except BodyTooSlow:
            response = _problem(
                408,
                "Verzoek te traag ontvangen",
                f"The request body did not arrive within {limits.body_seconds:g} s; "
                "send it again over a faster connection.",
            )
            response.force_close()  # the rest of the body may still come: not a next request
            return response
        except TimeoutError:
            if not deadline.expired():
                raise
            response = _problem(
                503,
                "Verzoek duurde te lang",
                f"The request was not answered within {limits.request_seconds:g} s and "
                "was stopped; try again later.",
            )
            # A connection this slow is not worth keeping, nor the rest of its body waiting for.
            response.force_close()
            if not body.is_eof():
                body.set_exception(BodyTooSlow())
            return response
        finally:
            clock.cancel()
            in_flight[client] -= 1
            if not in_flight[client]:
                del in_flight[client]  # the counter holds only clients with requests in flight

    return middleware


# --- below the application -------------------------------------------------------------------


class HeadersTooSlow(Exception):
    """A request's headers did not all arrive within `header_seconds`."""


class _AppPrepared(web.Response):
    """A response made below the application that still gets the app's response headers.

    aiohttp runs `on_response_prepare` only for requests the router matched; a request its
    parser rejected never was, so the security headers and `Server` would be missing.
    """

    def __init__(self, app: web.Application, status: int, body: bytes) -> None:
        super().__init__(status=status, body=body, content_type=PROBLEM_JSON)
        self._app = app

    async def prepare(self, request: BaseRequest) -> Any:
        if isinstance(request, web.Request):  # it is: the app's request factory made it
            await self._app.on_response_prepare.send(request, self)
        return await super().prepare(request)


class _Handler(RequestHandler):
    """aiohttp's protocol handler with problem details for its own errors and a header clock."""

    def __init__(
        self, manager: web.Server, *, app: web.Application, limits: ServerLimits, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._app = app
        self._limits = limits
        self._header_clock: asyncio.TimerHandle | None = None
        self._send_clock: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # `_waiter` is pending while the connection waits for a request's headers: bytes that
        # arrive then are a request under way, and its headers must be complete in time.
        waiting = self._waiter is not None and not self._waiter.done()
        if not waiting:
            self._stop_header_clock()
        elif data and self._header_clock is None:
            self._header_clock = self._loop.call_later(
                self._limits.header_seconds, self._headers_too_slow
            )

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_clock()
        self._stop_send_clock()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        # The client is not taking our answer as fast as we write it. It may resume; if it
        # does not within send_seconds, the answer is abandoned.
        super().pause_writing()
        if self._send_clock is None:
            self._send_clock = self._loop.call_later(self._limits.send_seconds, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_send_clock()

    def _stop_send_clock(self) -> None:
        if self._send_clock is not None:
            self._send_clock.cancel()
            self._send_clock = None

    def _send_stalled(self) -> None:
        self._send_clock = None
        if self.transport is not None:
            log.info("client stopped reading the answer for %g s: reset", self._limits.send_seconds)
            # abort, not close: close would wait for the buffer to drain, which is the problem.
            self.transport.abort()

    def _stop_header_clock(self) -> None:
        if self._header_clock is not None:
            self._header_clock.cancel()
            self._header_clock = None

    def _headers_too_slow(self) -> None:
        self._header_clock = None
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        # Queue a 408 as aiohttp queues its own parse errors, and read nothing more: the
        # answer closes the connection.
        error = HeadersTooSlow()
        self._messages.append((_ErrInfo(status=408, exc=error, message=""), EMPTY_PAYLOAD))
        self._close = True
        waiter.set_result(None)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Problem details without the offending bytes; aiohttp's text echoes part of them."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error instead")
        limits = self._limits
        if isinstance(exc, HeadersTooSlow):
            title = "Verzoek te traag ontvangen"
            detail = (
                f"The request headers did not arrive within {limits.header_seconds:g} s; "
                "send the request again over a faster connection."
            )
        elif isinstance(exc, LineTooLong):
            status = 431
            title = "Kopregels te groot"
            detail = (
                f"The request line may be at most {limits.max_line_bytes} bytes and each header "
                f"at most {limits.max_field_bytes} bytes; send shorter headers."
            )
        elif status == 400:
            title = "Ongeldig verzoek"
            detail = (
                "The request is not valid HTTP/1.1: check the request line, the header names "
                f"and values (at most {limits.max_headers} headers, no control characters), "
                "Content-Length and Transfer-Encoding."
            )
        elif status == 504:
            title = "Verzoek duurde te lang"
            detail = "The request was not answered in time; try again later."
        else:
            status = 500
            title = "Interne fout"
            detail = "Something went wrong; try again later."
        if status >= 500:
            log.error("error below the application: %s", type(exc).__name__, exc_info=exc)
        else:
            # The peer's bytes stay out of the log too: they may be anything.
            log.info("request refused by the HTTP parser: %s %s", status, type(exc).__name__)
        response = _AppPrepared(self._app, status, problem_body(status, title, detail))
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, making `_Handler`s instead of plain `RequestHandler`s."""

    def __init__(
        self, made: web.Server, app: web.Application, limits: ServerLimits, kwargs: dict[str, Any]
    ) -> None:
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **kwargs,
        )
        self._app = app
        self._limits = limits

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, app=self._app, limits=self._limits, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections carry the `[limits]` below the application."""

    __slots__ = ("_limits",)

    def __init__(self, app: web.Application, limits: ServerLimits, **kwargs: Any) -> None:
        super().__init__(
            app,
            max_line_size=limits.max_line_bytes,
            max_field_size=limits.max_field_bytes,
            max_headers=limits.max_headers,
            keepalive_timeout=limits.idle_seconds,
            **kwargs,
        )
        self._limits = limits

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()
        return _Server(made, self.app, self._limits, made._kwargs)


async def serve_gateway(
    app: web.Application,
    limits: ServerLimits,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 0.5,
) -> tuple[web.AppRunner, int]:
    """Serve the gateway on a real socket with its limits; port 0 picks a free one."""
    runner = GatewayRunner(
        app, limits, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server  # aiohttp keeps the bound socket here; no public accessor
    assert server is not None
    bound_port: int = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, bound_port
