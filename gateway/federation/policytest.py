"""`blauweknop policy test`: run the policy test cases kept beside the policies.

`policies/tests/*.toml` declare test portals (`[portalen.<client_id>]` with `purposes` and
`scopes`), test organisations (`[organisaties.<code>]` with `categorieen`) and cases
(`[[geval]]`: `naam`, `portaal`, `doel`, `scopes`, `acr` (low, substantial or high),
`gemeentecode`, `organisatie`, `verwacht` = "toegestaan" or "geweigerd", and optionally
`beleid`, the policy id that must be among those that decided). The run fails unless every
registered purpose has at least one allowed and one refused case.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.assurance import EIDAS_HIGH, EIDAS_LOW, EIDAS_SUBSTANTIAL
from gateway.authz.registry import Portal, Registry
from gateway.errors import ConfigError
from gateway.federation.policy import OrganisationFacts, PolicyEngine, Question, retention_days

_ACR = {"low": EIDAS_LOW, "substantial": EIDAS_SUBSTANTIAL, "high": EIDAS_HIGH}


@dataclass(frozen=True, slots=True)
class CaseResult:
    file: str
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class PolicyTestReport:
    results: tuple[CaseResult, ...]
    missing: tuple[str, ...]  # "<purpose>: toegestaan|geweigerd" without a case

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results) and not self.missing

    def text(self) -> str:
        lines = [
            f"{'ok  ' if r.ok else 'FOUT'} {r.file}: {r.name}"
            + (f" — {r.detail}" if not r.ok else "")
            for r in self.results
        ]
        lines += [f"FOUT no test case: {m}" for m in self.missing]
        failed = sum(not r.ok for r in self.results) + len(self.missing)
        lines.append(f"{len(self.results)} cases, {failed} failed")
        return "\n".join(lines)


def run_policy_tests(directory: Path) -> PolicyTestReport:
    engine = PolicyEngine.load(directory)
    registry = Registry.load(directory, {}, sandbox=False)
    retention = retention_days(directory)
    results: list[CaseResult] = []
    covered: set[tuple[str, bool]] = set()
    files = sorted((directory / "tests").glob("*.toml"))
    if not files:
        raise ConfigError(f"no policy test files in {directory / 'tests'}")
    for path in files:
        data = tomllib.loads(path.read_text())
        portals = {
            cid: Portal(cid, cid, (), (), frozenset(p["purposes"]), frozenset(p["scopes"]))
            for cid, p in data.get("portalen", {}).items()
        }
        orgs = [
            OrganisationFacts(code, frozenset(o["categorieen"]))
            for code, o in data.get("organisaties", {}).items()
        ]
        test_registry = Registry(portals, registry.purposes, registry.categories)
        entities = engine.entities(test_registry, orgs, retention)
        by_code = {o.code: o for o in orgs}
        for case in data.get("geval", []):
            results.append(_run(engine, entities, by_code, case, path.name, covered))
    missing = tuple(
        f"{purpose}: {'toegestaan' if allowed else 'geweigerd'}"
        for purpose in sorted(registry.purposes)
        for allowed in (True, False)
        if (purpose, allowed) not in covered
    )
    return PolicyTestReport(tuple(results), missing)


def _run(
    engine: PolicyEngine,
    entities: list[dict[str, Any]],
    orgs: dict[str, OrganisationFacts],
    case: dict[str, Any],
    file: str,
    covered: set[tuple[str, bool]],
) -> CaseResult:
    name = str(case.get("naam", "?"))
    org = orgs.get(case["organisatie"])
    if org is None:
        return CaseResult(file, name, False, f"organisatie {case['organisatie']!r} not declared")
    question = Question(
        case["portaal"],
        case["doel"],
        tuple(case["scopes"]),
        _ACR[case.get("acr", "substantial")],
        case.get("gemeentecode", ""),
    )
    decision = engine.decide(question, [org], entities)[0]
    expected = case["verwacht"] == "toegestaan"
    problems = []
    if decision.allowed != expected:
        problems.append(f"expected {case['verwacht']}, got the opposite")
    if "beleid" in case and case["beleid"] not in decision.policies:
        problems.append(f"expected policy {case['beleid']!r}, decided by {list(decision.policies)}")
    if decision.errors:
        problems.append(f"evaluation errors: {list(decision.errors)}")
    if not problems:
        covered.add((case["doel"], decision.allowed))
    return CaseResult(file, name, not problems, "; ".join(problems))
