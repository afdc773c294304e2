"""Levels of assurance: eIDAS `acr` URIs and the mapping from DigiD's own levels.

The gateway reasons in eIDAS levels only (low < substantial < high). An identity provider speaks
its own `acr` values; `DEFAULT_ACR_MAPPING` translates the ones a DigiD broker sends, and the
`[oidc] acr_mapping` table replaces or extends it (docs/login.md explains the choice).

DigiD's four levels, with the SAML authentication context classes DigiD uses for them:

| DigiD level | acr from DigiD | eIDAS level |
| --- | --- | --- |
| Basis | `urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport` | low |
| Midden | `urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract` | low |
| Substantieel | `urn:oasis:names:tc:SAML:2.0:ac:classes:Smartcard` | substantial |
| Hoog | `urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI` | high |

Midden maps to *low*: the Netherlands notified only DigiD Substantieel and Hoog under eIDAS, so
two-factor DigiD Midden does not reach *substantial*. A provider that already speaks eIDAS URIs
is understood as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

EIDAS_LOW: Final = "http://eidas.europa.eu/LoA/low"
EIDAS_SUBSTANTIAL: Final = "http://eidas.europa.eu/LoA/substantial"
EIDAS_HIGH: Final = "http://eidas.europa.eu/LoA/high"
EIDAS_LEVELS: Final = (EIDAS_LOW, EIDAS_SUBSTANTIAL, EIDAS_HIGH)

DIGID_BASIS: Final = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"
DIGID_MIDDEN: Final = "urn:oasis:names:tc:SAML:2.0:ac:classes:MobileTwoFactorContract"
DIGID_SUBSTANTIEEL: Final = "urn:oasis:names:tc:SAML:2.0:ac:classes:Smartcard"
DIGID_HOOG: Final = "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI"

#: DigiD's levels by name, lowest first, as the stand-in provider offers them.
DIGID_LEVELS: Final = (
    ("basis", "Basis", DIGID_BASIS),
    ("midden", "Midden", DIGID_MIDDEN),
    ("substantieel", "Substantieel", DIGID_SUBSTANTIEEL),
    ("hoog", "Hoog", DIGID_HOOG),
)

DEFAULT_ACR_MAPPING: Final[Mapping[str, str]] = {
    DIGID_BASIS: EIDAS_LOW,
    DIGID_MIDDEN: EIDAS_LOW,
    DIGID_SUBSTANTIEEL: EIDAS_SUBSTANTIAL,
    DIGID_HOOG: EIDAS_HIGH,
    EIDAS_LOW: EIDAS_LOW,
    EIDAS_SUBSTANTIAL: EIDAS_SUBSTANTIAL,
    EIDAS_HIGH: EIDAS_HIGH,
}

#: The identifier type that says `sub` is a burgerservicenummer.
BSN_SUB_ID_TYPE: Final = "urn:nl-eid-gdi:1.0:id:BSN"


def rank(eidas: str) -> int:
    """0 for low, 1 substantial, 2 high; ValueError for anything that is not an eIDAS level."""
    try:
        return EIDAS_LEVELS.index(eidas)
    except ValueError:
        raise ValueError(f"{eidas!r} is not an eIDAS level; use one of {EIDAS_LEVELS}") from None


def at_least(eidas: str, minimum: str) -> bool:
    return rank(eidas) >= rank(minimum)


def provider_values_for(minimum: str, mapping: Mapping[str, str]) -> list[str]:
    """The provider's own acr values that satisfy `minimum`, to ask for in `acr_values`."""
    return [
        value
        for value, eidas in mapping.items()
        if value not in EIDAS_LEVELS and at_least(eidas, minimum)
    ]
