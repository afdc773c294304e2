"""A deterministic, very long Wlz history in CAK's native format, for the sandbox.

Gerrit Mulder (999990068) has lived in a Wlz care home since the Wlz began on 1 January 2015.
Every month CAK fixes the eigen bijdrage, invoices it and receives the payment; now and then a
payment is late and a reminder goes out. The latest invoice is not due yet, so it is still open.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

DOSSIERNUMMER = "WLZ-2015-0068142"

_MAANDEN = (
    "januari", "februari", "maart", "april", "mei", "juni",
    "juli", "augustus", "september", "oktober", "november", "december",
)  # fmt: skip
_EERSTE_MAAND = 2015 * 12  # January 2015, counted in months since year 0
_AANTAL_MAANDEN = 142  # up to and including October 2026, invoiced in November 2026
_BEDRAG_2015 = 109_417  # hoge eigen bijdrage in cents per month; indexed yearly below
_INDEXATIE = 2_473
_TE_LAAT_ELKE = 23  # every 23rd month is paid only after a reminder


def wlz_history() -> dict[str, Any]:
    """Gerrit Mulder's CAK record: one Wlz dossier with more than 400 ledger entries."""
    mutaties: list[dict[str, Any]] = []

    def boek(soort: str, boekdatum: date, omschrijving: str, bedrag: int, **extra: Any) -> int:
        volgnummer = len(mutaties) + 1
        mutaties.append(
            {
                "volgnummer": volgnummer,
                "soort": soort,
                "boekdatum": boekdatum.isoformat(),
                "omschrijving": omschrijving,
                "bedrag": f"{bedrag // 100}.{bedrag % 100:02d}",
                **extra,
            }
        )
        return volgnummer

    for index in range(_AANTAL_MAANDEN):
        jaar, maand = divmod(_EERSTE_MAAND + index, 12)
        volgend_jaar, volgende_maand = divmod(_EERSTE_MAAND + index + 1, 12)
        periode = f"{_MAANDEN[maand]} {jaar}"
        bedrag = _BEDRAG_2015 + (jaar - 2015) * _INDEXATIE
        boekdatum = date(volgend_jaar, volgende_maand + 1, 5)
        vervaldatum = boekdatum + timedelta(days=30)
        vastgesteld = boek(
            "VASTSTELLING", boekdatum, f"Eigen bijdrage Wlz {periode} vastgesteld", bedrag
        )
        factuur = boek(
            "FACTUUR",
            boekdatum,
            f"Factuur eigen bijdrage Wlz {periode}",
            bedrag,
            vervaldatum=vervaldatum.isoformat(),
            betreftVolgnummer=vastgesteld,
        )
        if index == _AANTAL_MAANDEN - 1:
            continue  # the latest invoice is not due yet
        betaaldatum = boekdatum + timedelta(days=21)
        if index % _TE_LAAT_ELKE == _TE_LAAT_ELKE - 1:
            herinnering = vervaldatum + timedelta(days=14)
            boek(
                "HERINNERING",
                herinnering,
                f"Herinnering: de factuur eigen bijdrage Wlz {periode} is nog niet betaald",
                bedrag,
                vervaldatum=(herinnering + timedelta(days=14)).isoformat(),
                betreftVolgnummer=factuur,
            )
            betaaldatum = herinnering + timedelta(days=9)
        boek("BETALING", betaaldatum, "Betaling ontvangen", bedrag, betreftVolgnummer=factuur)

    return {
        "dossiers": [
            {
                "dossiernummer": DOSSIERNUMMER,
                "regeling": "WLZ",
                "omschrijving": "Eigen bijdrage Wlz (hoge eigen bijdrage), verblijf in "
                "zorginstelling sinds januari 2015",
                "mutaties": mutaties,
            }
        ],
        "betalingsregelingen": [],
    }
