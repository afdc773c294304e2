"""A deterministic, very long DUO history for the test citizen Gerrit Mulder.

Fifteen years of monthly repayments of an old-regime student loan ending in remission of the
rest, plus a lifelong-learning credit that is still being repaid: about 500 mutations, in the
same native shape as testdata.json, generated rather than stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeAlias

# The native answer as nested data: element name -> text, child elements, or repeated elements.
Native: TypeAlias = str | list["Native"] | dict[str, "Native"]

_MAANDEN = (
    "januari", "februari", "maart", "april", "mei", "juni",
    "juli", "augustus", "september", "oktober", "november", "december",
)  # fmt: skip

# Interest DUO added per calendar year, in percent (old regime and lifelong-learning credit).
_RENTE = {
    2010: "2.39", 2011: "1.50", 2012: "1.39", 2013: "0.60", 2014: "0.81", 2015: "0.12",
    2016: "0.01", 2023: "0.46", 2024: "2.56", 2025: "2.57",
}  # fmt: skip
_GRONDSLAG = "Wet studiefinanciering 2000"


def long_history() -> dict[str, Native]:
    return {"Vorderingen": {"Vordering": [_studielening(), _levenlanglerenkrediet()]}}


class _Vordering:
    """Collects one claim's mutations and keeps its running balance."""

    def __init__(self, nummer: str) -> None:
        self.nummer = nummer
        self.mutaties: list[Native] = []
        self.saldo = Decimal(0)

    def add(
        self,
        soort: str,
        datum: dt.date,
        bedrag: Decimal,
        omschrijving: str,
        vervaldatum: dt.date | None = None,
    ) -> None:
        mutatie: dict[str, Native] = {
            "Mutatienummer": f"{self.nummer}-{len(self.mutaties) + 1:04d}",
            "Mutatiesoort": soort,
            "Boekdatum": datum.isoformat(),
            "Bedrag": f"{bedrag:.2f}",
        }
        if vervaldatum is not None:
            mutatie["Vervaldatum"] = vervaldatum.isoformat()
        mutatie["Omschrijving"] = omschrijving
        self.mutaties.append(mutatie)
        if soort in ("Vaststelling", "Uitbetaling", "Rentebijschrijving"):
            self.saldo += bedrag
        elif soort in ("Betaling", "Kwijtschelding"):
            self.saldo -= bedrag

    def rente(self, year: int) -> None:
        percentage = _RENTE.get(year)
        if percentage is None or self.saldo <= 0:
            return
        bedrag = (self.saldo * Decimal(percentage) / 100).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_UP
        )
        self.add(
            "Rentebijschrijving",
            dt.date(year, 12, 31),
            bedrag,
            f"Rente {year} ({percentage.replace('.', ',')}%) bijgeschreven",
        )

    def maandtermijnen(self, months: Iterator[tuple[int, int]], termijn: Decimal) -> None:
        """Monthly payment requests by acceptgiro; now and then paid late after a reminder."""
        for year, month in months:
            naam = f"{_MAANDEN[month - 1]} {year}"
            self.add(
                "Betalingsverzoek",
                dt.date(year, month, 1),
                termijn,
                f"Betalingsverzoek maandtermijn {naam}",
                vervaldatum=dt.date(year, month, 28),
            )
            if (year * 12 + month) % 13 == 7:
                volgende = dt.date(year + month // 12, month % 12 + 1, 1)
                self.add(
                    "Herinnering",
                    volgende.replace(day=5),
                    termijn,
                    f"Herinnering: maandtermijn {naam} nog niet ontvangen",
                    vervaldatum=volgende.replace(day=19),
                )
                self.add("Betaling", volgende.replace(day=12), termijn, f"Betaling termijn {naam}")
            else:
                self.add("Betaling", dt.date(year, month, 24), termijn, f"Betaling termijn {naam}")
            if month == 12:
                self.rente(year)


def _months(first: tuple[int, int], last: tuple[int, int]) -> Iterator[tuple[int, int]]:
    year, month = first
    while (year, month) <= last:
        yield year, month
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)


def _studielening() -> dict[str, Native]:
    lening = _Vordering("SL-0068-2003")
    lening.add(
        "Vaststelling",
        dt.date(2010, 1, 4),
        Decimal("38712.44"),
        "Vaststelling studieschuld bij begin aflosfase van 15 jaar",
    )
    # The monthly instalment was recalculated every five years (draagkrachtmeting).
    for first, last, termijn in (
        ((2010, 1), (2014, 12), "185.00"),
        ((2015, 1), (2019, 12), "172.40"),
        ((2020, 1), (2024, 12), "191.25"),
    ):
        lening.maandtermijnen(_months(first, last), Decimal(termijn))
    lening.add(
        "Kwijtschelding",
        dt.date(2025, 1, 15),
        lening.saldo,
        "Kwijtschelding restschuld na afloop van de aflosfase",
    )
    return {
        "Vorderingnummer": lening.nummer,
        "Soort": "studielening",
        "Omschrijving": "Studieschuld (lening en prestatiebeurs, oud stelsel)",
        "Grondslag": _GRONDSLAG,
        "Mutaties": {"Mutatie": lening.mutaties},
    }


def _levenlanglerenkrediet() -> dict[str, Native]:
    krediet = _Vordering("LLK-0068-2018")
    # Paid out while studying, when DUO's interest rate was 0%; repaid after a run-up period.
    for year, month in _months((2018, 9), (2020, 8)):
        krediet.add(
            "Uitbetaling",
            dt.date(year, month, 20),
            Decimal("178.25"),
            f"Uitbetaling levenlanglerenkrediet {_MAANDEN[month - 1]} {year}",
        )
    krediet.maandtermijnen(_months((2023, 1), (2026, 10)), Decimal("52.85"))
    return {
        "Vorderingnummer": krediet.nummer,
        "Soort": "levenlanglerenkrediet",
        "Omschrijving": "Levenlanglerenkrediet voor het collegegeld van een deeltijdopleiding",
        "Grondslag": _GRONDSLAG,
        "Mutaties": {"Mutatie": krediet.mutaties},
    }
