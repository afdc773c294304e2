"""Issuing a bundle: collect from the organisations, assemble, validate and seal."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Collection

import aiohttp

from gateway.fanout import Fanout
from gateway.metrics import Metrics
from gateway.models import Bundel, Organisatie
from gateway.sign import KeyRing, SignedBundel, sign_bundel


class BundleIssuer:
    def __init__(
        self, fanout: Fanout, keys: KeyRing, uitgever: Organisatie, metrics: Metrics
    ) -> None:
        self.fanout = fanout
        self.keys = keys
        self.uitgever = uitgever
        self.metrics = metrics

    async def issue(
        self,
        *,
        bsn: str,
        transactie_id: str,
        session: aiohttp.ClientSession,
        selected: Collection[str] | None = None,
        among: Collection[str] | None = None,
        admit: Callable[[str], Awaitable[bool]] | None = None,
    ) -> SignedBundel:
        with self.metrics.bundle_latency.time():
            bronnen = await self.fanout.collect(
                bsn=bsn,
                transactie_id=transactie_id,
                session=session,
                selected=selected,
                among=among,
                admit=admit,
            )
            bundel = Bundel(
                bundel_id=str(uuid.uuid4()),
                transactie_id=transactie_id,
                uitgegeven_op=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                uitgever=self.uitgever,
                bsn=bsn,
                bronnen=bronnen,
            )
            return sign_bundel(bundel, self.keys)
