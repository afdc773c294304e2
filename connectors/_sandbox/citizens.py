"""The synthetic test citizens every sandbox knows, as public API sandboxes list them.

The BSNs are in the 9999xxxxx range used for test persons and pass the 11-proef. `holders` names
the organisations that have data about the citizen; each connector folder's sandbox data holds
the records themselves in that organisation's own format.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TestCitizen:
    __test__ = False  # not a pytest test class, despite the name

    bsn: str
    naam: str
    scenario: str
    scenario_en: str
    holders: frozenset[str]


CITIZENS: tuple[TestCitizen, ...] = (
    TestCitizen(
        "999990007",
        "Anna de Vries",
        "Geen gegevens bij welke organisatie dan ook.",
        "No data at any organisation.",
        frozenset(),
    ),
    TestCitizen(
        "999990019",
        "Bram Jansen",
        "Alleen een studieschuld bij DUO, netjes afgelost per maand.",
        "Student loan at DUO only, repaid monthly.",
        frozenset({"duo"}),
    ),
    TestCitizen(
        "999990020",
        "Citlali Bakker",
        "Gegevens bij alle vier: studieschuld, loon en WW, eigen bijdrage Wmo, "
        "gemeentelijke belastingen.",
        "Data everywhere: student loan, wages and unemployment benefit, care contribution, "
        "municipal taxes.",
        frozenset({"duo", "uwv", "cak", "gemeente"}),
    ),
    TestCitizen(
        "999990032",
        "Daan Visser",
        "Veel schulden: achterstanden, herinneringen en aanmaningen bij alle vier organisaties.",
        "Many debts: arrears, reminders and formal demands at all four organisations.",
        frozenset({"duo", "uwv", "cak", "gemeente"}),
    ),
    TestCitizen(
        "999990044",
        "Esra Yilmaz",
        "Betalingsregelingen bij de gemeente (terugvordering bijstand) en het CAK.",
        "Payment arrangements with the municipality (social-assistance recovery) and CAK.",
        frozenset({"cak", "gemeente"}),
    ),
    TestCitizen(
        "999990056",
        "Fleur Smit",
        "Gecorrigeerde en ingetrokken gebeurtenissen bij DUO, het CAK en de gemeente.",
        "Corrected and withdrawn events at DUO, CAK and the municipality.",
        frozenset({"duo", "cak", "gemeente"}),
    ),
    TestCitizen(
        "999990068",
        "Gerrit Mulder",
        "Een zeer lange geschiedenis: meer dan 500 gebeurtenissen bij DUO en het CAK.",
        "A very long history: more than 500 events at DUO and CAK.",
        frozenset({"duo", "cak"}),
    ),
    TestCitizen(
        "999990081",
        "Hanna el Amrani",
        "Alleen inkomen bij UWV: loon van twee werkgevers en een Ziektewet-uitkering.",
        "Income at UWV only: wages from two employers and a sickness benefit.",
        frozenset({"uwv"}),
    ),
    TestCitizen(
        "999990093",
        "Iris de Boer",
        "Alleen de gemeente: bijstand en kwijtschelding van gemeentelijke belastingen.",
        "Municipality only: social assistance and remission of municipal taxes.",
        frozenset({"gemeente"}),
    ),
)

_BY_BSN = {c.bsn: c for c in CITIZENS}


def citizen(bsn: str) -> TestCitizen | None:
    return _BY_BSN.get(bsn)
