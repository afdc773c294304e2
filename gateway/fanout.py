"""Ask every organisation at once, under one deadline, and record why any is missing.

A slow or broken organisation never delays the others past the deadline and never fails the
whole bundle: its entry says what happened, in Dutch, with the organisation's contact options.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from gateway.breaker import CircuitBreaker
from gateway.connector import Connector, FetchRequest, SourceData
from gateway.errors import SchemaViolation, SourceError
from gateway.metrics import Metrics
from gateway.models import Bron, BronStatus, Organisatie
from gateway.schema import validate_gegevens

log = logging.getLogger(__name__)

# Failures that say the organisation is down, as opposed to answering wrongly.
_BREAKER_STATUSES: frozenset[BronStatus] = frozenset({"onbereikbaar", "time-out"})


def toelichting(status: BronStatus, org: Organisatie) -> str | None:
    """What the citizen reads about a source, in Dutch."""
    name = org.naam
    return {
        "ok": None,
        "geen_gegevens": f"{name} heeft geen gegevens over u.",
        "niet_opgevraagd": f"{name} is niet gevraagd, omdat u of het doel dat niet toestaat.",
        "onbereikbaar": f"{name} was niet bereikbaar. Probeer het later opnieuw.",
        "time-out": f"{name} antwoordde niet op tijd. Probeer het later opnieuw.",
        "ongeldig": (
            f"Het antwoord van {name} kon niet worden gecontroleerd en is daarom weggelaten."
        ),
    }[status]


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    failure_threshold: int = 5
    reset_after: float = 30.0


class Fanout:
    def __init__(
        self,
        connectors: Sequence[Connector],
        *,
        deadline: float,
        metrics: Metrics,
        breaker: BreakerSettings = BreakerSettings(),
    ) -> None:
        self.deadline = deadline
        self.metrics = metrics
        self._breaker_settings = breaker
        self.breakers: dict[str, CircuitBreaker] = {}
        self.replace_connectors(connectors)

    def replace_connectors(self, connectors: Sequence[Connector]) -> None:
        """Swap in a new set of connectors (the registry changed); breakers of known codes stay.

        Requests already collecting keep the set they started with.
        """
        self.connectors = tuple(connectors)
        for c in self.connectors:
            if c.organisatie.code not in self.breakers:
                self.breakers[c.organisatie.code] = CircuitBreaker(
                    self._breaker_settings.failure_threshold, self._breaker_settings.reset_after
                )

    async def collect(
        self,
        *,
        bsn: str,
        transactie_id: str,
        session: aiohttp.ClientSession,
        selected: Collection[str] | None = None,
        among: Collection[str] | None = None,
        admit: Callable[[str], Awaitable[bool]] | None = None,
    ) -> tuple[Bron, ...]:
        """One `Bron` per connector, in configuration order; `selected` limits who is asked.

        `among`, when given, leaves every other organisation out of the bundle altogether
        (another municipality than the citizen's own is not "not asked": it does not concern
        them); `selected` organisations outside it are not asked either. `admit` does the same
        per organisation code, asynchronously and concurrently with the calls to the others
        (the BRP lookup that says which municipality is the citizen's runs alongside them).
        """
        request = FetchRequest(bsn, transactie_id, session)
        deadline = asyncio.get_running_loop().time() + self.deadline
        connectors = [c for c in self.connectors if among is None or c.organisatie.code in among]
        bronnen = await asyncio.gather(
            *(self._admitted(c, request, deadline, selected, admit) for c in connectors)
        )
        return tuple(b for b in bronnen if b is not None)

    async def _admitted(
        self,
        connector: Connector,
        request: FetchRequest,
        deadline: float,
        selected: Collection[str] | None,
        admit: Callable[[str], Awaitable[bool]] | None,
    ) -> Bron | None:
        if admit is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    if not await admit(connector.organisatie.code):
                        return None
            except TimeoutError:
                return None
        return await self._one(connector, request, deadline, selected)

    async def _one(
        self,
        connector: Connector,
        request: FetchRequest,
        deadline: float,
        selected: Collection[str] | None,
    ) -> Bron:
        org = connector.organisatie
        if selected is not None and org.code not in selected:
            return _bron(connector, "niet_opgevraagd")
        breaker = self.breakers[org.code]
        if not breaker.allow():
            self.metrics.source_outcomes.labels(org.code, "onbereikbaar").inc()
            log.info("circuit open, not calling", extra={"org": org.code})
            return _bron(connector, "onbereikbaar")
        loop = asyncio.get_running_loop()
        started = loop.time()
        data: SourceData | None = None
        try:
            async with asyncio.timeout_at(deadline):
                data = await connector.fetch(request)
            # One organisation's odd data must cost only that source, not the whole bundle.
            validate_gegevens(orjson.loads(orjson.dumps(data.gegevens)))
            status: BronStatus = "geen_gegevens" if data.gegevens.is_empty else "ok"
        except TimeoutError:
            status = "time-out"
            log.warning("source missed the deadline", extra={"org": org.code})
        except SourceError as exc:
            status = exc.status
            log.warning("source failed: %s", exc, extra={"org": org.code, "status": status})
        except SchemaViolation as exc:
            status, data = "ongeldig", None
            log.error("connector mapped to invalid data: %s", exc, extra={"org": org.code})
        except Exception:
            # A bug in one connector must not cost the citizen the other organisations' data.
            status = "ongeldig"
            log.exception("connector crashed", extra={"org": org.code})
        elapsed = loop.time() - started
        self._record(org.code, status, elapsed, breaker)
        if data is None:
            return _bron(connector, status)
        return Bron(
            organisatie=org,
            status=status,
            toelichting=toelichting(status, org),
            opgehaald_op=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            duur_ms=round(elapsed * 1000),
            herkomst=data.herkomst,
            contactopties=connector.contactopties,
            gegevens=data.gegevens,
        )

    def _record(
        self, org: str, status: BronStatus, elapsed: float, breaker: CircuitBreaker
    ) -> None:
        self.metrics.source_latency.labels(org).observe(elapsed)
        self.metrics.source_outcomes.labels(org, status).inc()
        if status in _BREAKER_STATUSES:
            breaker.record_failure()
        else:
            breaker.record_success()
        self.metrics.circuit_open.labels(org).set(1 if breaker.state == "open" else 0)


def _bron(connector: Connector, status: BronStatus) -> Bron:
    return Bron(
        organisatie=connector.organisatie,
        status=status,
        toelichting=toelichting(status, connector.organisatie),
        opgehaald_op=None,
        duur_ms=None,
        herkomst=None,
        contactopties=connector.contactopties,
    )
