"""A municipality's HAL overview mapped to the common schema: pure functions, exact amounts.

The municipality's API follows Haal Centraal conventions: camelCase Dutch field names, dates as
`YYYY-MM-DD`, fields without a value left out, and amounts as integer cents (`...InCenten`), so
nothing passes through a float. Every malformed field raises ValueError naming its path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Final, TypeVar
from zoneinfo import ZoneInfo

import orjson

from gateway.models import (
    Aanschrijvingstype,
    Betalingsregeling,
    FinancieleZaak,
    Frequentie,
    Gebeurtenis,
    Gegevens,
    Inkomen,
    Organisatie,
    Regelingstatus,
)
from gateway.zaak import build_zaak

_T = TypeVar("_T")

AMSTERDAM: Final = ZoneInfo("Europe/Amsterdam")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# Municipal taxes and their legal basis; a combined tax bill gets the umbrella type below.
BELASTINGSOORTEN: Final[Mapping[str, str]] = {
    "onroerendezaakbelasting": "Gemeentewet art. 220",
    "forensenbelasting": "Gemeentewet art. 223",
    "toeristenbelasting": "Gemeentewet art. 224",
    "parkeerbelasting": "Gemeentewet art. 225",
    "hondenbelasting": "Gemeentewet art. 226",
    "reclamebelasting": "Gemeentewet art. 227",
    "precariobelasting": "Gemeentewet art. 228",
    "rioolheffing": "Gemeentewet art. 228a",
    "afvalstoffenheffing": "Wet milieubeheer art. 15.33",
}
GECOMBINEERDE_AANSLAG: Final = "gm_gemeentelijke_belastingen"
TERUGVORDERING_BIJSTAND: Final = "gm_terugvordering_bijstand"
BIJSTAND: Final = "gm_bijstand"

_FREQUENTIES: Final[Mapping[str, Frequentie]] = {
    "wekelijks": "week",
    "vierwekelijks": "vier_weken",
    "maandelijks": "maand",
    "per kwartaal": "kwartaal",
    "jaarlijks": "jaar",
}
_REGELINGSTATUSSEN: Final[Mapping[str, Regelingstatus]] = {
    "lopend": "actief",
    "beëindigd": "beeindigd",
    "afgebroken": "afgebroken",
}
_KWIJTSCHELDINGSBESLUITEN: Final[Mapping[str, bool]] = {
    "toegekend": True,
    "gedeeltelijk toegekend": True,
    "afgewezen": False,
}


@dataclass(frozen=True, slots=True)
class _Aanschrijving:
    """One kind of payment demand in the native data and how the common schema names it."""

    veld: str
    naam: str
    type: Aanschrijvingstype
    kosten: str
    toelichting: str = ""


# A dwangbevel has no type of its own in the common schema: it is the last, strongest demand.
_AANSCHRIJVINGEN: Final = (
    _Aanschrijving("herinneringen", "Herinnering", "Herinnering", "Kosten herinnering"),
    _Aanschrijving("aanmaningen", "Aanmaning", "Aanmaning", "Aanmaningskosten"),
    _Aanschrijving(
        "dwangbevelen",
        "Dwangbevel",
        "Aanmaning",
        "Kosten dwangbevel",
        " (Invorderingswet 1990 art. 12): de gemeente mag de schuld nu met beslag invorderen",
    ),
)


@dataclass(frozen=True, slots=True)
class Overzicht:
    """A verified overview: the municipality it claims to come from, its transaction, the data."""

    gemeentecode: str
    transactie_id: str
    gegevens: Gegevens


def map_overzicht(payload: bytes, organisatie: Organisatie) -> Overzicht:
    """Parse the signed HAL document and map it; raises ValueError when it is not one."""
    document = _Record.of(orjson.loads(payload), "overzicht")
    embedded = document.record("_embedded")
    code = organisatie.code
    zaken: list[FinancieleZaak] = [_aanslag(a, code) for a in embedded.records("aanslagen")]
    regelingen: list[Betalingsregeling] = []
    for terugvordering in embedded.records("terugvorderingen"):
        zaak, eigen_regelingen = _terugvordering(terugvordering, code)
        zaken.append(zaak)
        regelingen.extend(eigen_regelingen)
    inkomsten = tuple(_bijstand(b, organisatie) for b in embedded.records("bijstand"))
    return Overzicht(
        gemeentecode=document.text("gemeentecode"),
        transactie_id=document.text("transactieId"),
        gegevens=Gegevens(tuple(zaken), inkomsten, tuple(regelingen)),
    )


def rfc3339(day: date) -> str:
    """Midnight at the start of `day` in Amsterdam, with the offset valid on that day."""
    return datetime.combine(day, time(), AMSTERDAM).isoformat()


def _aanslag(aanslag: _Record, code: str) -> FinancieleZaak:
    nummer = aanslag.text("aanslagbiljetnummer")
    kenmerk = f"{code}-{nummer}"
    dagtekening = aanslag.date("dagtekening")
    jaar = aanslag.integer("belastingjaar")
    heffingen = aanslag.records("heffingen")
    if not heffingen:
        raise ValueError(f"{aanslag.path}.heffingen is empty")
    soorten: dict[str, str] = {}
    events: list[Gebeurtenis] = []
    for heffing in heffingen:
        soorten[heffing.text("belastingsoort")] = heffing.choice("belastingsoort", BELASTINGSOORTEN)
        object_ = heffing.optional_text("object")
        events.append(
            Gebeurtenis(
                "FinancieleVerplichtingOpgelegd",
                f"{kenmerk}-r{heffing.integer('regelnummer')}",
                dagtekening,
                f"{heffing.text('omschrijving')} {jaar}" + (f" ({object_})" if object_ else ""),
                bedrag=heffing.cents("bedragInCenten"),
            )
        )
    termijnen = aanslag.records("vervaldata")
    for termijn in termijnen:
        nr = termijn.integer("termijn")
        events.append(
            Gebeurtenis(
                "BetalingsverplichtingOpgelegd",
                f"{kenmerk}-t{nr}",
                dagtekening,
                f"Aanslagbiljet {nummer}, termijn {nr} van {len(termijnen)}",
                bedrag=termijn.cents("bedragInCenten"),
                aanschrijvingstype="Aanschrijving",
                vervaldatum=termijn.day("vervaldatum"),
            )
        )
    for vermindering in aanslag.records("verminderingen"):
        events.append(
            Gebeurtenis(
                "FinancieleVerplichtingGecorrigeerd",
                f"{code}-{vermindering.text('kenmerk')}",
                vermindering.date("datum"),
                f"Vermindering aanslag {nummer}: {vermindering.text('reden')}",
                bedrag=vermindering.cents("nieuwBedragInCenten"),
                verwijst_naar=f"{kenmerk}-r{vermindering.integer('regelnummer')}",
            )
        )
    kwijtschelding = aanslag.optional_record("kwijtschelding")
    if kwijtschelding is not None and kwijtschelding.choice("besluit", _KWIJTSCHELDINGSBESLUITEN):
        events.append(
            Gebeurtenis(
                "FinancieleVerplichtingKwijtgescholden",
                f"{code}-{kwijtschelding.text('beschikkingsnummer')}",
                kwijtschelding.date("datumBesluit"),
                f"Kwijtschelding aanslag {nummer}: {kwijtschelding.text('reden')}",
                bedrag=kwijtschelding.cents("bedragInCenten"),
            )
        )
    events.extend(_betalingen(aanslag.records("betalingen"), code))
    events.extend(_aanschrijvingen(aanslag, code, f"aanslag {nummer}"))
    return build_zaak(
        zaakkenmerk=kenmerk,
        omschrijving=f"{aanslag.text('omschrijving')} (aanslagbiljet {nummer})",
        verplichtingtype=f"gm_{next(iter(soorten))}"
        if len(soorten) == 1
        else GECOMBINEERDE_AANSLAG,
        juridische_grondslag="; ".join(dict.fromkeys(soorten.values())),
        gebeurtenissen=events,
    )


def _terugvordering(
    terugvordering: _Record, code: str
) -> tuple[FinancieleZaak, list[Betalingsregeling]]:
    nummer = terugvordering.text("terugvorderingsnummer")
    kenmerk = f"{code}-{nummer}"
    dagtekening = terugvordering.date("dagtekening")
    bedrag = terugvordering.cents("bedragInCenten")
    events = [
        Gebeurtenis(
            "FinancieleVerplichtingOpgelegd",
            f"{kenmerk}-besluit",
            dagtekening,
            f"Terugvorderingsbesluit {nummer}: {terugvordering.text('reden')}",
            bedrag=bedrag,
        )
    ]
    vervaldatum = terugvordering.optional_day("vervaldatum")
    if vervaldatum is not None:
        events.append(
            Gebeurtenis(
                "BetalingsverplichtingOpgelegd",
                f"{kenmerk}-aanschrijving",
                dagtekening,
                f"Betaalverzoek bij terugvorderingsbesluit {nummer}",
                bedrag=bedrag,
                aanschrijvingstype="Aanschrijving",
                vervaldatum=vervaldatum,
            )
        )
    events.extend(_betalingen(terugvordering.records("invorderingen"), code))
    events.extend(_aanschrijvingen(terugvordering, code, f"terugvordering {nummer}"))
    zaak = build_zaak(
        zaakkenmerk=kenmerk,
        omschrijving=terugvordering.text("omschrijving"),
        verplichtingtype=TERUGVORDERING_BIJSTAND,
        juridische_grondslag=terugvordering.text("wettelijkeGrondslag"),
        gebeurtenissen=events,
    )
    regelingen = [
        Betalingsregeling(
            kenmerk=f"{code}-{regeling.text('regelingnummer')}",
            omschrijving=f"Betalingsregeling voor terugvordering {nummer}",
            zaakkenmerken=(kenmerk,),
            termijnbedrag=regeling.cents("termijnbedragInCenten"),
            frequentie=regeling.choice("frequentie", _FREQUENTIES),
            startdatum=regeling.day("ingangsdatum"),
            einddatum=regeling.optional_day("einddatum"),
            status=regeling.choice("status", _REGELINGSTATUSSEN),
        )
        for regeling in terugvordering.records("betalingsregelingen")
    ]
    return zaak, regelingen


def _bijstand(uitkering: _Record, organisatie: Organisatie) -> Inkomen:
    periode = uitkering.record("periode")
    return Inkomen(
        kenmerk=(
            f"{organisatie.code}-{uitkering.text('uitkeringsnummer')}"
            f"-{uitkering.integer('volgnummer')}"
        ),
        soort="bijstand",
        inkomenstype=BIJSTAND,
        omschrijving=f"{uitkering.text('omschrijving')} ({uitkering.text('regeling')})",
        verstrekker=organisatie.naam,
        bedrag_bruto=uitkering.cents("maandbedragBrutoInCenten"),
        bedrag_netto=uitkering.cents("maandbedragNettoInCenten"),
        frequentie="maand",
        periode_start=periode.day("begindatum"),
        periode_eind=periode.optional_day("einddatum"),
    )


def _betalingen(betalingen: list[_Record], code: str) -> Iterator[Gebeurtenis]:
    for betaling in betalingen:
        yield Gebeurtenis(
            "BetalingVerwerkt",
            f"{code}-{betaling.text('kenmerk')}",
            betaling.date("datum"),
            f"Betaling ontvangen ({betaling.text('wijze')})",
            bedrag=betaling.cents("bedragInCenten"),
        )


def _aanschrijvingen(record: _Record, code: str, onderwerp: str) -> Iterator[Gebeurtenis]:
    """Reminders, demands and writs; their costs are owed too, until the demand is withdrawn."""
    for soort in _AANSCHRIJVINGEN:
        for brief in record.records(soort.veld):
            eigen = brief.text("kenmerk")
            kenmerk = f"{code}-{eigen}"
            dagtekening = brief.date("dagtekening")
            yield Gebeurtenis(
                "BetalingsverplichtingOpgelegd",
                kenmerk,
                dagtekening,
                f"{soort.naam} {eigen} voor {onderwerp}{soort.toelichting}",
                bedrag=brief.cents("openstaandBedragInCenten"),
                aanschrijvingstype=soort.type,
                vervaldatum=brief.day("vervaldatum"),
            )
            kosten = brief.optional_cents("kostenInCenten")
            if kosten:
                yield Gebeurtenis(
                    "FinancieleVerplichtingOpgelegd",
                    f"{kenmerk}-kosten",
                    dagtekening,
                    f"{soort.kosten} bij {soort.naam.lower()} {eigen}",
                    bedrag=kosten,
                )
            intrekking = brief.optional_record("intrekking")
            if intrekking is None:
                continue
            datum = intrekking.date("datum")
            yield Gebeurtenis(
                "BetalingsverplichtingIngetrokken",
                f"{kenmerk}-ingetrokken",
                datum,
                f"{soort.naam} {eigen} ingetrokken: {intrekking.text('reden')}",
                verwijst_naar=kenmerk,
            )
            if kosten:
                yield Gebeurtenis(
                    "FinancieleVerplichtingGecorrigeerd",
                    f"{kenmerk}-kosten-vervallen",
                    datum,
                    f"{soort.kosten} vervallen door intrekking van {eigen}",
                    bedrag=0,
                    verwijst_naar=f"{kenmerk}-kosten",
                )


@dataclass(frozen=True, slots=True)
class _Record:
    """A JSON object with typed, path-aware accessors, so bad input never leaks a KeyError."""

    data: Mapping[str, object]
    path: str

    @classmethod
    def of(cls, value: object, path: str) -> _Record:
        if not isinstance(value, dict):
            raise ValueError(f"{path} must be a JSON object")
        return cls(value, path)

    def _get(self, key: str) -> object:
        if key not in self.data:
            raise ValueError(f"{self.path}.{key} is missing")
        return self.data[key]

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{self.path}.{key} must be a non-empty string")
        return value

    def optional_text(self, key: str) -> str | None:
        return self.text(key) if key in self.data else None

    def integer(self, key: str) -> int:
        value = self._get(key)
        # bool is an int subclass and a float may have lost precision: both are refused.
        if type(value) is not int:
            raise ValueError(f"{self.path}.{key} must be an integer")
        return value

    def cents(self, key: str) -> int:
        value = self.integer(key)
        if value < 0:
            raise ValueError(f"{self.path}.{key} must not be negative")
        return value

    def optional_cents(self, key: str) -> int | None:
        return self.cents(key) if key in self.data else None

    def date(self, key: str) -> str:
        value = self.text(key)
        # fromisoformat alone would also take forms like 20240101 that the API never sends.
        if not _DATE.fullmatch(value):
            raise ValueError(f"{self.path}.{key} must be a date YYYY-MM-DD")
        try:
            return rfc3339(date.fromisoformat(value))
        except ValueError as exc:
            raise ValueError(f"{self.path}.{key} is not a valid date") from exc

    def day(self, key: str) -> str:
        """A plain date (YYYY-MM-DD), for the schema's date-only fields."""
        return self.date(key)[:10]

    def optional_day(self, key: str) -> str | None:
        return self.day(key) if key in self.data else None

    def choice(self, key: str, allowed: Mapping[str, _T]) -> _T:
        value = self.text(key)
        if value not in allowed:
            raise ValueError(f"{self.path}.{key} has unknown value {value!r}")
        return allowed[value]

    def record(self, key: str) -> _Record:
        return _Record.of(self._get(key), f"{self.path}.{key}")

    def optional_record(self, key: str) -> _Record | None:
        return self.record(key) if key in self.data else None

    def records(self, key: str) -> list[_Record]:
        """A list of objects; a missing list is empty, as Haal Centraal leaves empty fields out."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise ValueError(f"{self.path}.{key} must be a list")
        return [_Record.of(item, f"{self.path}.{key}[{i}]") for i, item in enumerate(value)]
