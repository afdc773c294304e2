"""DUO's native overview answer (see koppelvlak.xsd) mapped to the common schema.

Everything here is pure and raises ValueError when the answer breaks the interface contract;
the connector turns that into SourceInvalid.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Final, TypeVar
from zoneinfo import ZoneInfo

from lxml import etree

from connectors.duo.protocol import NSMAP, ORGANISATIE, check_message
from gateway.models import (
    Aanschrijvingstype,
    Betalingsregeling,
    FinancieleZaak,
    Frequentie,
    Gebeurtenis,
    GebeurtenisType,
    Gegevens,
    Inkomen,
    Regelingstatus,
)
from gateway.zaak import build_zaak

_T = TypeVar("_T")
_AMSTERDAM = ZoneInfo("Europe/Amsterdam")

# DUO's claim kinds, as listed in the obligation-type catalogue.
_VERPLICHTINGTYPE: Final[dict[str, str]] = {
    "studielening": "duo_studielening",
    "terugvordering-studiefinanciering": "duo_terugvordering_sf",
    "lesgeld": "duo_lesgeld",
    "levenlanglerenkrediet": "duo_levenlanglerenkrediet",
}

# Interest added and loan instalments paid out are new obligations, just like the first one.
_GEBEURTENISTYPE: Final[dict[str, tuple[GebeurtenisType, Aanschrijvingstype | None]]] = {
    "Vaststelling": ("FinancieleVerplichtingOpgelegd", None),
    "Uitbetaling": ("FinancieleVerplichtingOpgelegd", None),
    "Rentebijschrijving": ("FinancieleVerplichtingOpgelegd", None),
    "Herberekening": ("FinancieleVerplichtingGecorrigeerd", None),
    "Kwijtschelding": ("FinancieleVerplichtingKwijtgescholden", None),
    "Betalingsverzoek": ("BetalingsverplichtingOpgelegd", "Aanschrijving"),
    "Herinnering": ("BetalingsverplichtingOpgelegd", "Herinnering"),
    "Aanmaning": ("BetalingsverplichtingOpgelegd", "Aanmaning"),
    "Intrekking": ("BetalingsverplichtingIngetrokken", None),
    "Betaling": ("BetalingVerwerkt", None),
}
_MOET_VERWIJZEN: Final = frozenset({"Herberekening", "Intrekking"})

_INKOMENSTYPE: Final[dict[str, str]] = {
    "basisbeurs": "duo_basisbeurs",
    "aanvullende-beurs": "duo_aanvullende_beurs",
}
_FREQUENTIE: Final[dict[str, Frequentie]] = {"maand": "maand", "kwartaal": "kwartaal"}
_REGELINGSTATUS: Final[dict[str, Regelingstatus]] = {
    "lopend": "actief",
    "beeindigd": "beeindigd",
    "afgebroken": "afgebroken",
}


@dataclass(frozen=True, slots=True)
class Antwoord:
    """A verified answer: whom and which transaction it is for, and what it holds."""

    transactie_id: str
    bsn: str
    gegevens: Gegevens


def map_antwoord(root: etree._Element) -> Antwoord:
    """Check a signed OverzichtAntwoord against the interface schema and map it."""
    check_message(root, "OverzichtAntwoord")
    velden = _velden(root)
    return Antwoord(
        transactie_id=_verplicht(velden, "TransactieId"),
        bsn=_verplicht(velden, "Burgerservicenummer"),
        gegevens=Gegevens(
            financiele_zaken=tuple(
                _zaak(v) for v in root.iterfind("d:Vorderingen/d:Vordering", NSMAP)
            ),
            inkomsten=tuple(
                _inkomen(t) for t in root.iterfind("d:Toekenningen/d:Toekenning", NSMAP)
            ),
            betalingsregelingen=tuple(
                _regeling(r)
                for r in root.iterfind("d:Betalingsregelingen/d:Betalingsregeling", NSMAP)
            ),
        ),
    )


def cents(amount: str) -> int:
    """Decimal euros ("1234.56") to integer cents, exactly; refuses fractions of a cent."""
    try:
        value = Decimal(amount) * 100
    except InvalidOperation as exc:
        raise ValueError(f"amount {amount!r} is not a decimal number") from exc
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"amount {amount!r} is not a whole number of cents")
    return int(value)


def datumtijd(datum: str) -> str:
    """A native booking date as the start of that day in Dutch time, RFC 3339 with offset."""
    day = dt.date.fromisoformat(datum)
    return dt.datetime(day.year, day.month, day.day, tzinfo=_AMSTERDAM).isoformat()


def _datum(datum: str) -> str:
    """Due dates and periods stay calendar dates; checked, and written as YYYY-MM-DD."""
    return dt.date.fromisoformat(datum).isoformat()


def _kenmerk(native: str) -> str:
    return f"{ORGANISATIE.code}-{native}"


def _zaak(vordering: etree._Element) -> FinancieleZaak:
    velden = _velden(vordering)
    return build_zaak(
        zaakkenmerk=_kenmerk(_verplicht(velden, "Vorderingnummer")),
        omschrijving=_verplicht(velden, "Omschrijving"),
        verplichtingtype=_lookup(_VERPLICHTINGTYPE, _verplicht(velden, "Soort")),
        juridische_grondslag=_verplicht(velden, "Grondslag"),
        gebeurtenissen=[
            _gebeurtenis(_velden(m)) for m in vordering.iterfind("d:Mutaties/d:Mutatie", NSMAP)
        ],
    )


def _gebeurtenis(velden: dict[str, str]) -> Gebeurtenis:
    soort = _verplicht(velden, "Mutatiesoort")
    gebeurtenis_type, aanschrijvingstype = _lookup(_GEBEURTENISTYPE, soort)
    betreft = velden.get("BetreftMutatie")
    if soort in _MOET_VERWIJZEN and betreft is None:
        raise ValueError(f"a {soort} must name the mutation it changes (BetreftMutatie)")
    return Gebeurtenis(
        gebeurtenis_type=gebeurtenis_type,
        gebeurtenis_kenmerk=_kenmerk(_verplicht(velden, "Mutatienummer")),
        datumtijd=datumtijd(_verplicht(velden, "Boekdatum")),
        omschrijving=_verplicht(velden, "Omschrijving"),
        bedrag=cents(_verplicht(velden, "Bedrag")),
        aanschrijvingstype=aanschrijvingstype,
        vervaldatum=_optionele_datum(velden, "Vervaldatum"),
        verwijst_naar=None if betreft is None else _kenmerk(betreft),
    )


def _inkomen(toekenning: etree._Element) -> Inkomen:
    velden = _velden(toekenning)
    # Student finance is paid out tax-free, so gross and net are the same amount.
    bedrag = cents(_verplicht(velden, "BedragPerMaand"))
    return Inkomen(
        kenmerk=_kenmerk(_verplicht(velden, "Toekenningnummer")),
        soort="studiefinanciering",
        inkomenstype=_lookup(_INKOMENSTYPE, _verplicht(velden, "Soort")),
        omschrijving=_verplicht(velden, "Omschrijving"),
        verstrekker=ORGANISATIE.naam,
        bedrag_bruto=bedrag,
        bedrag_netto=bedrag,
        frequentie="maand",
        periode_start=_datum(_verplicht(velden, "Ingangsdatum")),
        periode_eind=_optionele_datum(velden, "Einddatum"),
    )


def _regeling(regeling: etree._Element) -> Betalingsregeling:
    velden = _velden(regeling)
    return Betalingsregeling(
        kenmerk=_kenmerk(_verplicht(velden, "Regelingnummer")),
        omschrijving=_verplicht(velden, "Omschrijving"),
        # A plan may cover several claims, so this field repeats.
        zaakkenmerken=tuple(
            _kenmerk(n.text or "") for n in regeling.iterfind("d:Vorderingnummer", NSMAP)
        ),
        termijnbedrag=cents(_verplicht(velden, "Termijnbedrag")),
        frequentie=_lookup(_FREQUENTIE, _verplicht(velden, "Termijn")),
        startdatum=_datum(_verplicht(velden, "Ingangsdatum")),
        einddatum=_optionele_datum(velden, "Einddatum"),
        status=_lookup(_REGELINGSTATUS, _verplicht(velden, "Status")),
    )


def _velden(element: etree._Element) -> dict[str, str]:
    """An element's child elements by local name, read in one pass.

    findtext and etree.QName are slow; the schema check has already placed every element in
    DUO's namespace, so the local name is what follows the Clark-notation namespace.
    """
    return {
        child.tag.rpartition("}")[2]: child.text or ""
        for child in element.iterchildren(etree.Element)
    }


def _optionele_datum(velden: dict[str, str], name: str) -> str | None:
    value = velden.get(name)
    return None if value is None else _datum(value)


def _verplicht(velden: dict[str, str], name: str) -> str:
    try:
        return velden[name]
    except KeyError:
        raise ValueError(f"{name} is missing") from None


def _lookup(table: dict[str, _T], code: str) -> _T:
    try:
        return table[code]
    except KeyError:
        raise ValueError(f"unknown code {code!r}; expected one of {sorted(table)}") from None
