"""The common schema v1 as typed, immutable values.

Field names follow the Dutch VO Rijk / FCID conventions (CONTEXT.md §4): amounts are integer
euro cents, date-times are RFC 3339 strings with an offset, obligation types are `<org>_<type>`.
orjson serialises these dataclasses directly, so the JSON shape is exactly the field list here;
`gateway/schema/bundel-v1.schema.json` describes the same shape and is checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SCHEMA_VERSION = "1.0.0"
DOCUMENT_TYPE = "blauweknop.bundel"

BronStatus = Literal[
    "ok", "geen_gegevens", "niet_opgevraagd", "onbereikbaar", "time-out", "ongeldig"
]

GebeurtenisType = Literal[
    "FinancieleVerplichtingOpgelegd",
    "FinancieleVerplichtingGecorrigeerd",
    "FinancieleVerplichtingKwijtgescholden",
    "BetalingsverplichtingOpgelegd",
    "BetalingsverplichtingIngetrokken",
    "BetalingVerwerkt",
]

Aanschrijvingstype = Literal["Aanschrijving", "Herinnering", "Aanmaning"]
Contactvorm = Literal["telefoon", "email", "website", "post"]
Frequentie = Literal["week", "vier_weken", "maand", "kwartaal", "jaar"]
Inkomenssoort = Literal["loon", "uitkering", "bijstand", "studiefinanciering"]
Regelingstatus = Literal["actief", "beeindigd", "afgebroken"]
Handtekeningvorm = Literal["xmldsig", "wss-xmldsig", "jws"]


@dataclass(frozen=True, slots=True)
class Organisatie:
    """A participating organisation; municipalities use `gm` + CBS gemeentecode as code."""

    oin: str
    code: str
    naam: str


@dataclass(frozen=True, slots=True)
class Contactoptie:
    contactvorm: Contactvorm
    waarde: str
    omschrijving: str


@dataclass(frozen=True, slots=True)
class Gebeurtenis:
    """One immutable event; corrections and withdrawals are new events that `verwijst_naar` it."""

    gebeurtenis_type: GebeurtenisType
    gebeurtenis_kenmerk: str
    datumtijd: str
    omschrijving: str
    bedrag: int | None = None
    aanschrijvingstype: Aanschrijvingstype | None = None
    vervaldatum: str | None = None
    verwijst_naar: str | None = None


@dataclass(frozen=True, slots=True)
class FinancieleZaak:
    """A financial case with its events and the totals derived from them (see `totals`)."""

    zaakkenmerk: str
    omschrijving: str
    verplichtingtype: str
    juridische_grondslag: str
    totaal_financieel_verplicht: int
    totaal_financieel_vereffend: int
    totaal_financieel_kwijtgescholden: int
    saldo: int
    gebeurtenissen: tuple[Gebeurtenis, ...]


@dataclass(frozen=True, slots=True)
class Inkomen:
    """Income or a benefit, per period (wages, UWV benefits, bijstand, student grant)."""

    kenmerk: str
    soort: Inkomenssoort
    inkomenstype: str
    omschrijving: str
    verstrekker: str
    bedrag_bruto: int
    bedrag_netto: int | None
    frequentie: Frequentie
    periode_start: str
    periode_eind: str | None


@dataclass(frozen=True, slots=True)
class Betalingsregeling:
    """A payment arrangement covering one or more financial cases."""

    kenmerk: str
    omschrijving: str
    zaakkenmerken: tuple[str, ...]
    termijnbedrag: int
    frequentie: Frequentie
    startdatum: str
    einddatum: str | None
    status: Regelingstatus


@dataclass(frozen=True, slots=True)
class Herkomst:
    """The organisation's original signed response, byte for byte (base64), for re-verification."""

    media_type: str
    handtekening: Handtekeningvorm
    sleutel_id: str
    sha256: str
    inhoud: str


@dataclass(frozen=True, slots=True)
class Gegevens:
    """What one organisation holds about the citizen, in the common schema."""

    financiele_zaken: tuple[FinancieleZaak, ...] = ()
    inkomsten: tuple[Inkomen, ...] = ()
    betalingsregelingen: tuple[Betalingsregeling, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.financiele_zaken or self.inkomsten or self.betalingsregelingen)


@dataclass(frozen=True, slots=True)
class Bron:
    """One organisation's entry in a bundle: its data, or why it is missing."""

    organisatie: Organisatie
    status: BronStatus
    toelichting: str | None
    opgehaald_op: str | None
    duur_ms: int | None
    herkomst: Herkomst | None
    contactopties: tuple[Contactoptie, ...] = ()
    gegevens: Gegevens = field(default_factory=Gegevens)


@dataclass(frozen=True, slots=True)
class Bundel:
    """The combined overview the gateway signs and hands to the citizen."""

    bundel_id: str
    transactie_id: str
    uitgegeven_op: str
    uitgever: Organisatie
    bsn: str
    bronnen: tuple[Bron, ...]
    document_type: str = DOCUMENT_TYPE
    schema_versie: str = SCHEMA_VERSION
