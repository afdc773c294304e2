"""Request bodies from outside, read so that every way of breaking one gives one clean error.

aiohttp parses forms and multipart bodies lazily and signals a broken one with whatever the
failing step raises: ValueError (no or a bad boundary, undecodable text), LookupError (an
unknown charset), RuntimeError (an unknown Content-Transfer-Encoding) or its own
HttpProcessingError (bad part headers). Without this module each of those became a 500.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDictProxy

from gateway.errors import MalformedRequest

_BROKEN_BODY = (ValueError, LookupError, RuntimeError, HttpProcessingError)


async def read_form(
    request: web.Request,
) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The form fields of a urlencoded or multipart body; MalformedRequest if it is broken."""
    async with parsing_body():
        return await request.post()


@asynccontextmanager
async def parsing_body() -> AsyncIterator[None]:
    """Around code that reads a body part by part: turns a broken body into MalformedRequest.

    A body over the size limit still raises aiohttp's 413, which is no parse error.
    """
    try:
        yield
    except _BROKEN_BODY as exc:
        raise MalformedRequest(
            "The request body is not a well-formed form or multipart body."
        ) from exc
