"""Structured JSON logs with the transaction id, and a last line of defence for the BSN.

Code never passes a BSN to a logger. In case one slips through anyway (inside an exception
message from a library, say), every rendered line has 9-digit runs that pass the 11-proef
replaced before it is written.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import sys
from contextvars import ContextVar

import orjson

from gateway.bsn import is_bsn

transaction_id: ContextVar[str | None] = ContextVar("transaction_id", default=None)

_NINE_DIGITS = re.compile(r"(?<!\d)\d{9}(?!\d)")
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


def redact_bsns(text: str) -> str:
    return _NINE_DIGITS.sub(lambda m: "[bsn]" if is_bsn(m.group()) else m.group(), text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        tx = transaction_id.get()
        if tx is not None:
            entry["transactie_id"] = tx
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact_bsns(orjson.dumps(entry, default=str).decode())


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would write request lines we do not control.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
