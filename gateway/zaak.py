"""Deriving a financial case's totals from its events, the one place that rule lives."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

import orjson

from gateway.models import FinancieleZaak, Gebeurtenis


def stable_kenmerk(prefix: str, *fields: object) -> str:
    """A deterministic event id for sources that have none: a hash of the other fields."""
    digest = hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{prefix}-{digest[:32]}"


def build_zaak(
    *,
    zaakkenmerk: str,
    omschrijving: str,
    verplichtingtype: str,
    juridische_grondslag: str,
    gebeurtenissen: Iterable[Gebeurtenis],
) -> FinancieleZaak:
    """Order the events in time and compute the case totals from them.

    A correction replaces the amount of the obligation it refers to; payment demands and their
    withdrawal ask for money already counted in the obligation, so they leave the totals alone.
    Raises ValueError when an event refers to an obligation that is not in the case.
    """
    events = tuple(sorted(gebeurtenissen, key=lambda g: datetime.fromisoformat(g.datumtijd)))
    obligations: dict[str, int] = {}
    paid = 0
    remitted = 0
    for event in events:
        amount = event.bedrag or 0
        match event.gebeurtenis_type:
            case "FinancieleVerplichtingOpgelegd":
                obligations[event.gebeurtenis_kenmerk] = amount
            case "FinancieleVerplichtingGecorrigeerd":
                if event.verwijst_naar not in obligations:
                    raise ValueError(
                        f"correction {event.gebeurtenis_kenmerk} refers to unknown obligation "
                        f"{event.verwijst_naar!r} in case {zaakkenmerk}"
                    )
                obligations[event.verwijst_naar] = amount
            case "BetalingVerwerkt":
                paid += amount
            case "FinancieleVerplichtingKwijtgescholden":
                remitted += amount
            case "BetalingsverplichtingOpgelegd" | "BetalingsverplichtingIngetrokken":
                pass
    owed = sum(obligations.values())
    return FinancieleZaak(
        zaakkenmerk=zaakkenmerk,
        omschrijving=omschrijving,
        verplichtingtype=verplichtingtype,
        juridische_grondslag=juridische_grondslag,
        totaal_financieel_verplicht=owed,
        totaal_financieel_vereffend=paid,
        totaal_financieel_kwijtgescholden=remitted,
        saldo=owed - paid - remitted,
        gebeurtenissen=events,
    )
