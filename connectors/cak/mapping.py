"""CAK's native overview (signed JSON) mapped to the common schema; pure functions.

CAK keeps a ledger per *dossier* (one contribution scheme for one person): each entry
(`mutatie`) has a sequence number within its dossier and a `soort`; amounts are euro strings
("21.80") so no float ever touches money; dates are plain calendar dates in Dutch local time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import orjson

from gateway.errors import SourceInvalid
from gateway.models import (
    Aanschrijvingstype,
    Betalingsregeling,
    FinancieleZaak,
    Frequentie,
    Gebeurtenis,
    GebeurtenisType,
    Gegevens,
    Regelingstatus,
)
from gateway.zaak import build_zaak

BERICHTSOORT = "CAK_FINANCIEEL_OVERZICHT"
VERSIE = "1.0"

_PREFIX = "cak"
_AMSTERDAM = ZoneInfo("Europe/Amsterdam")
_BEDRAG = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
_DATUM = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Regeling:
    """One CAK contribution scheme as the common schema names it."""

    verplichtingtype: str
    juridische_grondslag: str


_REGELINGEN: Mapping[str, Regeling] = {
    "WMO": Regeling(
        "cak_eigen_bijdrage_wmo", "Wet maatschappelijke ondersteuning 2015, art. 2.1.4"
    ),
    "WLZ": Regeling("cak_eigen_bijdrage_wlz", "Wet langdurige zorg, art. 3.3.3"),
    "ZVW_BP": Regeling("cak_bestuursrechtelijke_premie", "Zorgverzekeringswet, art. 18d"),
}


@dataclass(frozen=True, slots=True)
class _Soort:
    gebeurtenis_type: GebeurtenisType
    aanschrijvingstype: Aanschrijvingstype | None = None
    # Corrections and withdrawals mean nothing without the entry they change.
    verwijzing_verplicht: bool = False


_SOORTEN: Mapping[str, _Soort] = {
    "VASTSTELLING": _Soort("FinancieleVerplichtingOpgelegd"),
    "HERBEREKENING": _Soort("FinancieleVerplichtingGecorrigeerd", verwijzing_verplicht=True),
    "KWIJTSCHELDING": _Soort("FinancieleVerplichtingKwijtgescholden"),
    "FACTUUR": _Soort("BetalingsverplichtingOpgelegd", "Aanschrijving"),
    "HERINNERING": _Soort("BetalingsverplichtingOpgelegd", "Herinnering"),
    "AANMANING": _Soort("BetalingsverplichtingOpgelegd", "Aanmaning"),
    "INTREKKING": _Soort("BetalingsverplichtingIngetrokken", verwijzing_verplicht=True),
    "BETALING": _Soort("BetalingVerwerkt"),
}

_FREQUENTIES: Mapping[str, Frequentie] = {
    "WEEK": "week",
    "VIERWEKELIJKS": "vier_weken",
    "MAAND": "maand",
    "KWARTAAL": "kwartaal",
    "JAAR": "jaar",
}

_STATUSSEN: Mapping[str, Regelingstatus] = {
    "LOPEND": "actief",
    "BEEINDIGD": "beeindigd",
    "VERBROKEN": "afgebroken",
}


@dataclass(frozen=True, slots=True)
class Overzicht:
    """A decoded CAK answer: whom and which request it is for, and the mapped data."""

    bsn: str
    transactie_id: str
    gegevens: Gegevens


def read_overzicht(payload: bytes) -> Overzicht:
    """Decode and map a verified payload; anything unexpected raises SourceInvalid."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise SourceInvalid(f"CAK overview is not JSON: {exc}") from exc
    root = _object(document, "CAK overview")
    if _get(root, "berichtsoort", str, "CAK overview") != BERICHTSOORT:
        raise SourceInvalid(f"CAK overview: berichtsoort is not {BERICHTSOORT}")
    if _get(root, "versie", str, "CAK overview") != VERSIE:
        raise SourceInvalid(f"CAK overview: only versie {VERSIE} is supported")
    zaken = tuple(
        _zaak(_object(item, f"dossiers[{i}]"), f"dossiers[{i}]")
        for i, item in enumerate(_get(root, "dossiers", list, "CAK overview"))
    )
    known = _unique((z.zaakkenmerk for z in zaken), "dossiernummer")
    regelingen = tuple(
        _regeling(_object(item, f"betalingsregelingen[{i}]"), f"betalingsregelingen[{i}]", known)
        for i, item in enumerate(_get(root, "betalingsregelingen", list, "CAK overview"))
    )
    _unique((r.kenmerk for r in regelingen), "regelingnummer")
    return Overzicht(
        bsn=_get(root, "bsn", str, "CAK overview"),
        transactie_id=_get(root, "transactieId", str, "CAK overview"),
        gegevens=Gegevens(financiele_zaken=zaken, betalingsregelingen=regelingen),
    )


def _cents(text: str, where: str) -> int:
    """An exact euro string such as "21.80" in cents; fractions of a cent are refused."""
    if not _BEDRAG.fullmatch(text):
        raise SourceInvalid(f"CAK {where}: bedrag {text!r} is not a euro amount like 21.80")
    value = Decimal(text) * 100
    if value != value.to_integral_value():
        raise SourceInvalid(f"CAK {where}: bedrag {text!r} is not a whole number of cents")
    return int(value)


def _datumtijd(text: str, where: str) -> str:
    """A CAK calendar date as the start of that day in Dutch time, RFC 3339 with offset."""
    day = _date(text, where)
    return datetime(day.year, day.month, day.day, tzinfo=_AMSTERDAM).isoformat()


def _date(text: str, where: str) -> date:
    try:
        day = date.fromisoformat(text) if _DATUM.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None:
        raise SourceInvalid(f"CAK {where}: {text!r} is not a date YYYY-MM-DD")
    return day


def _zaak(dossier: Mapping[str, Any], where: str) -> FinancieleZaak:
    nummer = _get(dossier, "dossiernummer", str, where)
    code = _get(dossier, "regeling", str, where)
    regeling = _REGELINGEN.get(code)
    if regeling is None:
        raise SourceInvalid(f"CAK {where}: unknown regeling {code!r}")
    mutaties = [
        _object(item, f"{where}.mutaties[{i}]")
        for i, item in enumerate(_get(dossier, "mutaties", list, where))
    ]
    gebeurtenissen = [
        _gebeurtenis(m, nummer, f"{where}.mutaties[{i}]") for i, m in enumerate(mutaties)
    ]
    kenmerken = _unique((g.gebeurtenis_kenmerk for g in gebeurtenissen), "volgnummer")
    if any(g.verwijst_naar not in kenmerken for g in gebeurtenissen if g.verwijst_naar):
        raise SourceInvalid(f"CAK {where}: betreftVolgnummer names an unknown mutatie")
    try:
        return build_zaak(
            zaakkenmerk=_kenmerk(nummer),
            omschrijving=_get(dossier, "omschrijving", str, where),
            verplichtingtype=regeling.verplichtingtype,
            juridische_grondslag=regeling.juridische_grondslag,
            gebeurtenissen=gebeurtenissen,
        )
    except ValueError as exc:
        raise SourceInvalid(f"CAK {where}: {exc}") from exc


def _gebeurtenis(mutatie: Mapping[str, Any], dossiernummer: str, where: str) -> Gebeurtenis:
    code = _get(mutatie, "soort", str, where)
    soort = _SOORTEN.get(code)
    if soort is None:
        raise SourceInvalid(f"CAK {where}: unknown soort {code!r}")
    betreft = _optional(mutatie, "betreftVolgnummer", int, where)
    if soort.verwijzing_verplicht and betreft is None:
        raise SourceInvalid(f"CAK {where}: a {code} must name betreftVolgnummer")
    vervaldatum = _optional(mutatie, "vervaldatum", str, where)
    return Gebeurtenis(
        gebeurtenis_type=soort.gebeurtenis_type,
        gebeurtenis_kenmerk=_kenmerk(dossiernummer, _get(mutatie, "volgnummer", int, where)),
        datumtijd=_datumtijd(_get(mutatie, "boekdatum", str, where), where),
        omschrijving=_get(mutatie, "omschrijving", str, where),
        bedrag=_cents(_get(mutatie, "bedrag", str, where), where),
        aanschrijvingstype=soort.aanschrijvingstype,
        # The common schema keeps due dates as plain dates, as CAK does.
        vervaldatum=None if vervaldatum is None else _date(vervaldatum, where).isoformat(),
        verwijst_naar=None if betreft is None else _kenmerk(dossiernummer, betreft),
    )


def _regeling(regeling: Mapping[str, Any], where: str, zaken: set[str]) -> Betalingsregeling:
    nummers = _get(regeling, "dossiernummers", list, where)
    if not nummers or not all(isinstance(n, str) for n in nummers):
        raise SourceInvalid(f"CAK {where}: dossiernummers must be a non-empty list of strings")
    zaakkenmerken = tuple(_kenmerk(n) for n in nummers)
    if not set(zaakkenmerken) <= zaken:
        raise SourceInvalid(f"CAK {where}: covers a dossier that is not in the overview")
    frequentie = _FREQUENTIES.get(_get(regeling, "termijnfrequentie", str, where))
    status = _STATUSSEN.get(_get(regeling, "status", str, where))
    if frequentie is None or status is None:
        raise SourceInvalid(f"CAK {where}: unknown termijnfrequentie or status")
    einddatum = _optional(regeling, "einddatum", str, where)
    return Betalingsregeling(
        kenmerk=_kenmerk(_get(regeling, "regelingnummer", str, where)),
        omschrijving=_get(regeling, "omschrijving", str, where),
        zaakkenmerken=zaakkenmerken,
        termijnbedrag=_cents(_get(regeling, "termijnbedrag", str, where), where),
        frequentie=frequentie,
        startdatum=_date(_get(regeling, "ingangsdatum", str, where), where).isoformat(),
        einddatum=None if einddatum is None else _date(einddatum, where).isoformat(),
        status=status,
    )


def _kenmerk(*parts: object) -> str:
    return "-".join((_PREFIX, *(str(p) for p in parts)))


def _unique(kenmerken: Iterable[str], name: str) -> set[str]:
    seen: set[str] = set()
    for kenmerk in kenmerken:
        if kenmerk in seen:
            raise SourceInvalid(f"CAK overview: {name} {kenmerk!r} occurs twice")
        seen.add(kenmerk)
    return seen


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SourceInvalid(f"CAK {where}: expected a JSON object")
    return value


def _get(obj: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T:
    value = _optional(obj, key, kind, where)
    if value is None:
        raise SourceInvalid(f"CAK {where}: {key!r} is missing")
    return value


def _optional(obj: Mapping[str, Any], key: str, kind: type[_T], where: str) -> _T | None:
    value = obj.get(key)
    # bool is an int in Python, but never a sequence number.
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise SourceInvalid(f"CAK {where}: {key!r} must be a {kind.__name__}")
