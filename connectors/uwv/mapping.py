"""UWV's answer (polisadministratie, uitkeringen, vorderingen) mapped to the common schema.

Amounts arrive as xs:decimal euros and become exact integer cents; dates and local date-times
become RFC 3339 with the Europe/Amsterdam offset; every id gets the `uwv-` prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Final, TypeVar
from zoneinfo import ZoneInfo

from lxml import etree

from connectors.uwv.soap import NS
from gateway.errors import SourceInvalid
from gateway.models import (
    Aanschrijvingstype,
    Betalingsregeling,
    FinancieleZaak,
    Frequentie,
    Gebeurtenis,
    GebeurtenisType,
    Gegevens,
    Inkomen,
    Inkomenssoort,
    Regelingstatus,
)
from gateway.zaak import build_zaak

_T = TypeVar("_T")
_AMSTERDAM: Final = ZoneInfo("Europe/Amsterdam")
_DECIMAL: Final = re.compile(r"-?\d+(\.\d+)?")
_TYPE_SUFFIX: Final = re.compile(r"[a-z0-9_]+")

_TIJDVAKKEN: Final[dict[str, Frequentie]] = {
    "week": "week",
    "vier weken": "vier_weken",
    "maand": "maand",
    "kwartaal": "kwartaal",
    "jaar": "jaar",
}
_INKOMSTENVERHOUDINGEN: Final[dict[str, Inkomenssoort]] = {
    "dienstbetrekking": "loon",
    "uitkering": "uitkering",
}
_REGELINGSTATUSSEN: Final[dict[str, Regelingstatus]] = {
    "lopend": "actief",
    "beeindigd": "beeindigd",
    # A regeling "vervalt" when the termijnen are not paid: broken off, not completed.
    "vervallen": "afgebroken",
}


@dataclass(frozen=True, slots=True)
class _Mutatiesoort:
    gebeurtenis_type: GebeurtenisType
    aanschrijvingstype: Aanschrijvingstype | None = None
    bedrag_verplicht: bool = True


_MUTATIESOORTEN: Final = {
    "Vaststelling": _Mutatiesoort("FinancieleVerplichtingOpgelegd"),
    "Correctie": _Mutatiesoort("FinancieleVerplichtingGecorrigeerd"),
    "Kwijtschelding": _Mutatiesoort("FinancieleVerplichtingKwijtgescholden"),
    "Aanschrijving": _Mutatiesoort("BetalingsverplichtingOpgelegd", "Aanschrijving"),
    "Herinnering": _Mutatiesoort("BetalingsverplichtingOpgelegd", "Herinnering"),
    "Aanmaning": _Mutatiesoort("BetalingsverplichtingOpgelegd", "Aanmaning"),
    "IntrekkingBetaalverzoek": _Mutatiesoort("BetalingsverplichtingIngetrokken", None, False),
    "Betaling": _Mutatiesoort("BetalingVerwerkt"),
    # UWV offsets a debt against a running benefit; for the citizen that is a payment.
    "Verrekening": _Mutatiesoort("BetalingVerwerkt"),
}


def map_antwoord(antwoord: etree._Element) -> Gegevens:
    """Map a (signed) VraagInkomensEnVorderingenResponse; raises SourceInvalid if it cannot."""
    try:
        zaken = tuple(_zaak(v) for v in antwoord.iterfind("uwv:Vorderingen/uwv:Vordering", NS))
        kenmerken = {zaak.zaakkenmerk for zaak in zaken}
        return Gegevens(
            financiele_zaken=zaken,
            inkomsten=tuple(
                _inkomen(ikv)
                for ikv in antwoord.iterfind(
                    "uwv:Inkomstenverhoudingen/uwv:Inkomstenverhouding", NS
                )
            ),
            betalingsregelingen=tuple(
                _regeling(r, kenmerken)
                for r in antwoord.iterfind("uwv:Betalingsregelingen/uwv:Betalingsregeling", NS)
            ),
        )
    except ValueError as exc:
        raise SourceInvalid(f"UWV answer cannot be mapped: {exc}") from exc


def cents(text: str) -> int:
    """An xs:decimal amount in euros as exact integer cents."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"amount {text!r} is not a decimal number")
    amount = Decimal(text) * 100
    if amount != amount.to_integral_value():
        raise ValueError(f"amount {text!r} has fractions of a cent")
    return int(amount)


def datum(text: str) -> str:
    """An xs:date as the common schema's plain date (YYYY-MM-DD)."""
    return date.fromisoformat(text).isoformat()


def tijdstip(text: str) -> str:
    """A date-time as RFC 3339; UWV's back-end writes local time without an offset."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_AMSTERDAM)
    return moment.isoformat(timespec="seconds")


def _kenmerk(native_id: str) -> str:
    return f"uwv-{native_id}"


def _text(parent: etree._Element, name: str) -> str:
    value = _optional(parent, name)
    if value is None:
        raise ValueError(f"{etree.QName(parent).localname} has no {name}")
    return value


def _optional(parent: etree._Element, name: str) -> str | None:
    value = parent.findtext(f"uwv:{name}", None, NS)
    return value.strip() if value and value.strip() else None


def _lookup(table: dict[str, _T], value: str, what: str) -> _T:
    if value not in table:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(table)}")
    return table[value]


def _type(prefix_source: str) -> str:
    suffix = prefix_source.lower()
    if not _TYPE_SUFFIX.fullmatch(suffix):
        raise ValueError(f"{prefix_source!r} cannot be part of a type name")
    return f"uwv_{suffix}"


def _inkomen(ikv: etree._Element) -> Inkomen:
    soort = _lookup(_INKOMSTENVERHOUDINGEN, _text(ikv, "SoortInkomstenverhouding"), "soort")
    # In the polisadministratie UWV is itself the inhoudingsplichtige for its benefits.
    verstrekker = ikv.findtext("uwv:Inhoudingsplichtige/uwv:Naam", None, NS)
    if not verstrekker:
        raise ValueError("Inkomstenverhouding has no Inhoudingsplichtige/Naam")
    netto = _optional(ikv, "BedragNetto")
    einde = _optional(ikv, "DatumEinde")
    return Inkomen(
        kenmerk=_kenmerk(_text(ikv, "IkvNummer")),
        soort=soort,
        inkomenstype=_type("loon" if soort == "loon" else _text(ikv, "Regeling")),
        omschrijving=_text(ikv, "Omschrijving"),
        verstrekker=verstrekker.strip(),
        bedrag_bruto=cents(_text(ikv, "BedragBruto")),
        bedrag_netto=cents(netto) if netto is not None else None,
        frequentie=_lookup(_TIJDVAKKEN, _text(ikv, "Tijdvak"), "tijdvak"),
        periode_start=datum(_text(ikv, "DatumAanvang")),
        periode_eind=datum(einde) if einde is not None else None,
    )


def _zaak(vordering: etree._Element) -> FinancieleZaak:
    return build_zaak(
        zaakkenmerk=_kenmerk(_text(vordering, "Vorderingnummer")),
        omschrijving=_text(vordering, "Omschrijving"),
        verplichtingtype=_type(_text(vordering, "SoortVordering")),
        juridische_grondslag=_text(vordering, "Grondslag"),
        gebeurtenissen=(
            _gebeurtenis(m) for m in vordering.iterfind("uwv:Mutaties/uwv:Mutatie", NS)
        ),
    )


def _gebeurtenis(mutatie: etree._Element) -> Gebeurtenis:
    soort = _lookup(_MUTATIESOORTEN, _text(mutatie, "Mutatiesoort"), "Mutatiesoort")
    bedrag = _optional(mutatie, "Bedrag")
    if bedrag is None and soort.bedrag_verplicht:
        raise ValueError(f"a {soort.gebeurtenis_type} mutation needs a Bedrag")
    vervaldatum = _optional(mutatie, "Vervaldatum")
    verwijst_naar = _optional(mutatie, "VerwijstNaar")
    return Gebeurtenis(
        gebeurtenis_type=soort.gebeurtenis_type,
        gebeurtenis_kenmerk=_kenmerk(_text(mutatie, "MutatieId")),
        datumtijd=tijdstip(_text(mutatie, "Tijdstip")),
        omschrijving=_text(mutatie, "Omschrijving"),
        bedrag=cents(bedrag) if bedrag is not None else None,
        aanschrijvingstype=soort.aanschrijvingstype,
        vervaldatum=datum(vervaldatum) if vervaldatum is not None else None,
        verwijst_naar=_kenmerk(verwijst_naar) if verwijst_naar is not None else None,
    )


def _regeling(regeling: etree._Element, zaakkenmerken: set[str]) -> Betalingsregeling:
    zaken = tuple(
        _kenmerk((n.text or "").strip())
        for n in regeling.iterfind("uwv:Vorderingnummers/uwv:Vorderingnummer", NS)
    )
    if not zaken or not zaakkenmerken.issuperset(zaken):
        raise ValueError("a Betalingsregeling must cover Vorderingen in the same answer")
    einde = _optional(regeling, "DatumEinde")
    return Betalingsregeling(
        kenmerk=_kenmerk(_text(regeling, "Regelingnummer")),
        omschrijving=_text(regeling, "Omschrijving"),
        zaakkenmerken=zaken,
        termijnbedrag=cents(_text(regeling, "Termijnbedrag")),
        frequentie=_lookup(_TIJDVAKKEN, _text(regeling, "Termijn"), "termijn"),
        startdatum=datum(_text(regeling, "DatumAanvang")),
        einddatum=datum(einde) if einde is not None else None,
        status=_lookup(_REGELINGSTATUSSEN, _text(regeling, "Status"), "status"),
    )
