"""The generic provider document (docs/provider-api.yaml) mapped to the common schema.

Providers send FCID-style data close to our own schema: financial cases with immutable events,
income and payment arrangements; amounts are integer euro cents and date-times RFC 3339 with an
offset. The gateway recomputes every case's totals from its events (gateway.zaak), so a
provider's arithmetic is never trusted. Every defect raises ValueError naming its path.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, get_args

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
    Organisatie,
    Regelingstatus,
)
from gateway.zaak import build_zaak

DOCUMENT_TYPE: Final = "blauweknop.fcid"
VERSIONS: Final = ("1.0.0",)
MAX_ITEMS: Final = 5000
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})"
)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_KENMERK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
_TYPE = re.compile(r"[a-z]{2,5}_[a-z0-9_]{1,60}")
_TOP_FIELDS = frozenset(
    {
        "documenttype",
        "versie",
        "transactie_id",
        "bsn_sha256",
        "organisatie",
        "aangemaakt_op",
        "financiele_zaken",
        "inkomsten",
        "betalingsregelingen",
    }
)


@dataclass(frozen=True, slots=True)
class Document:
    transactie_id: str
    bsn_sha256: str
    gegevens: Gegevens
    aangemaakt_op: str = ""


def bsn_hash(transactie_id: str, bsn: str) -> str:
    """How a document names its citizen: SHA-256 over "<transactie_id>:<bsn>", hex.

    Bound to the transaction, so the same citizen cannot be linked across documents by it.
    """
    return hashlib.sha256(f"{transactie_id}:{bsn}".encode()).hexdigest()


def _obj(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path} must be an object")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise ValueError(f"{path} must be a list of at most {MAX_ITEMS} items")
    return value


def _str(data: Mapping[str, Any], key: str, path: str, *, limit: int = 500) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{path}.{key} must be a non-empty string of at most {limit} characters")
    return value


def _opt_str(data: Mapping[str, Any], key: str, path: str) -> str | None:
    return None if data.get(key) is None else _str(data, key, path)


def _cents(data: Mapping[str, Any], key: str, path: str, *, optional: bool = False) -> int | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 10**12:
        raise ValueError(f"{path}.{key} must be a whole number of euro cents (e.g. 1578)")
    return value


def _datetime(
    data: Mapping[str, Any], key: str, path: str, *, optional: bool = False
) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError(
            f"{path}.{key} must be an RFC 3339 date-time with an offset "
            "(e.g. 2024-03-01T09:00:00+01:00)"
        )
    datetime.fromisoformat(value)
    return value


def _date(data: Mapping[str, Any], key: str, path: str, *, optional: bool = False) -> str | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError(f"{path}.{key} must be a date YYYY-MM-DD")
    return value


def _choice(data: Mapping[str, Any], key: str, path: str, options: Any) -> Any:
    allowed = get_args(options)
    value = data.get(key)
    if value not in allowed:
        raise ValueError(f"{path}.{key} must be one of {list(allowed)}")
    return value


def parse_document(payload: bytes | Any, organisatie: Organisatie) -> Document:
    """Strictly read a provider document for `organisatie`; ValueError names each defect."""
    data = _obj(payload, "document")
    if unknown := set(data) - _TOP_FIELDS:
        raise ValueError(f"document has unknown fields {sorted(unknown)}")
    if data.get("documenttype") != DOCUMENT_TYPE:
        raise ValueError(f"document.documenttype must be {DOCUMENT_TYPE!r}")
    if data.get("versie") not in VERSIONS:
        raise ValueError(f"document.versie must be one of {list(VERSIONS)}")
    transactie_id = _str(data, "transactie_id", "document", limit=128)
    bsn_sha256 = _str(data, "bsn_sha256", "document", limit=64)
    org = _obj(data.get("organisatie"), "document.organisatie")
    if org.get("oin") != organisatie.oin or org.get("code") != organisatie.code:
        raise ValueError(
            f"document.organisatie must name the registered organisation "
            f"(oin {organisatie.oin}, code {organisatie.code!r})"
        )
    aangemaakt_op = _datetime(data, "aangemaakt_op", "document") or ""
    prefix = f"{organisatie.code}_"
    zaken = tuple(
        _zaak(_obj(item, f"financiele_zaken[{i}]"), f"financiele_zaken[{i}]", prefix)
        for i, item in enumerate(_list(data.get("financiele_zaken"), "financiele_zaken"))
    )
    inkomsten = tuple(
        _inkomen(_obj(item, f"inkomsten[{i}]"), f"inkomsten[{i}]", prefix)
        for i, item in enumerate(_list(data.get("inkomsten"), "inkomsten"))
    )
    regelingen = tuple(
        _regeling(_obj(item, f"betalingsregelingen[{i}]"), f"betalingsregelingen[{i}]")
        for i, item in enumerate(_list(data.get("betalingsregelingen"), "betalingsregelingen"))
    )
    kenmerken = [g.gebeurtenis_kenmerk for z in zaken for g in z.gebeurtenissen]
    if len(kenmerken) != len(set(kenmerken)):
        raise ValueError("gebeurtenis_kenmerk must be unique: each event has its own stable id")
    return Document(
        transactie_id, bsn_sha256, Gegevens(zaken, inkomsten, regelingen), aangemaakt_op
    )


def _zaak(data: Mapping[str, Any], path: str, prefix: str) -> FinancieleZaak:
    verplichtingtype = _str(data, "verplichtingtype", path, limit=64)
    if not _TYPE.fullmatch(verplichtingtype) or not verplichtingtype.startswith(prefix):
        raise ValueError(
            f"{path}.verplichtingtype must be namespaced '{prefix}<type>' "
            "(lowercase letters, digits, underscores)"
        )
    kenmerk = _str(data, "zaakkenmerk", path, limit=128)
    events = [
        _gebeurtenis(_obj(item, f"{path}.gebeurtenissen[{i}]"), f"{path}.gebeurtenissen[{i}]")
        for i, item in enumerate(_list(data.get("gebeurtenissen"), f"{path}.gebeurtenissen"))
    ]
    return build_zaak(
        zaakkenmerk=kenmerk,
        omschrijving=_str(data, "omschrijving", path),
        verplichtingtype=verplichtingtype,
        juridische_grondslag=_str(data, "juridische_grondslag", path),
        gebeurtenissen=events,
    )


def _gebeurtenis(data: Mapping[str, Any], path: str) -> Gebeurtenis:
    kenmerk = _str(data, "gebeurtenis_kenmerk", path, limit=128)
    if not _KENMERK.fullmatch(kenmerk):
        raise ValueError(f"{path}.gebeurtenis_kenmerk may use letters, digits and . _ : / -")
    aanschrijving = data.get("aanschrijvingstype")
    if aanschrijving is not None:
        aanschrijving = _choice(data, "aanschrijvingstype", path, Aanschrijvingstype)
    return Gebeurtenis(
        gebeurtenis_type=_choice(data, "gebeurtenis_type", path, GebeurtenisType),
        gebeurtenis_kenmerk=kenmerk,
        datumtijd=str(_datetime(data, "datumtijd", path)),
        omschrijving=_str(data, "omschrijving", path),
        bedrag=_cents(data, "bedrag", path, optional=True),
        aanschrijvingstype=aanschrijving,
        vervaldatum=_date(data, "vervaldatum", path, optional=True),
        verwijst_naar=_opt_str(data, "verwijst_naar", path),
    )


def _inkomen(data: Mapping[str, Any], path: str, prefix: str) -> Inkomen:
    inkomenstype = _str(data, "inkomenstype", path, limit=64)
    if not _TYPE.fullmatch(inkomenstype) or not inkomenstype.startswith(prefix):
        raise ValueError(f"{path}.inkomenstype must be namespaced '{prefix}<type>'")
    return Inkomen(
        kenmerk=_str(data, "kenmerk", path, limit=128),
        soort=_choice(data, "soort", path, Inkomenssoort),
        inkomenstype=inkomenstype,
        omschrijving=_str(data, "omschrijving", path),
        verstrekker=_str(data, "verstrekker", path),
        bedrag_bruto=int(_cents(data, "bedrag_bruto", path) or 0),
        bedrag_netto=_cents(data, "bedrag_netto", path, optional=True),
        frequentie=_choice(data, "frequentie", path, Frequentie),
        periode_start=str(_date(data, "periode_start", path)),
        periode_eind=_date(data, "periode_eind", path, optional=True),
    )


def _regeling(data: Mapping[str, Any], path: str) -> Betalingsregeling:
    zaken = _list(data.get("zaakkenmerken"), f"{path}.zaakkenmerken")
    if not zaken or not all(isinstance(z, str) and z for z in zaken):
        raise ValueError(f"{path}.zaakkenmerken must name the cases the arrangement covers")
    return Betalingsregeling(
        kenmerk=_str(data, "kenmerk", path, limit=128),
        omschrijving=_str(data, "omschrijving", path),
        zaakkenmerken=tuple(zaken),
        termijnbedrag=int(_cents(data, "termijnbedrag", path) or 0),
        frequentie=_choice(data, "frequentie", path, Frequentie),
        startdatum=str(_date(data, "startdatum", path)),
        einddatum=_date(data, "einddatum", path, optional=True),
        status=_choice(data, "status", path, Regelingstatus),
    )
