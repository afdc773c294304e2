"""The federation's policy engine: Cedar policies in `policies/*.cedar`, evaluated per request.

Every policy carries an `@id("…")` annotation; decisions name the policies that made them, and
the gateway audits each decision (`beleid.besluit`) with those ids. Entities come from the
files the authorization server already reads (portals, purposes, categories) and from the
organisation directory (static configuration plus the registry):

- `Portal::"<client_id>"` with `purposes` and `scopes` (sets of strings);
- `Purpose::"<purpose_id>"` with `min_acr_niveau` (0 low, 1 substantial, 2 high),
  `bewaartermijn_dagen` and `organisaties` (the purpose file's list: organisation codes, or
  "gemeente" for the citizen's own municipality);
- `Organisatie::"<code>"` with `soort` ("gemeente" for `gm` + CBS code, else the code itself),
  `gemeentecode` ("" if not a municipality) and `categorieen`.

The action is `Action::"gegevens_ophalen"`; the context holds `purpose` (an entity reference),
`scopes`, `acr_niveau` and `gemeentecode` (the citizen's municipality from the BRP, "" unknown).
Cedar denies by default: a request no policy permits is denied by `standaard-weigering`.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cedarpy
import orjson

from gateway.assurance import rank
from gateway.authz.registry import Registry
from gateway.errors import ConfigError

ACTION = 'Action::"gegevens_ophalen"'
DEFAULT_DENY = "standaard-weigering"
_GEMEENTE = re.compile(r"gm([0-9]{4})")


@dataclass(frozen=True, slots=True)
class OrganisationFacts:
    """What the policies may know about an organisation."""

    code: str
    categorieen: frozenset[str]

    @property
    def gemeentecode(self) -> str:
        match = _GEMEENTE.fullmatch(self.code)
        return match.group(1) if match else ""

    @property
    def soort(self) -> str:
        return "gemeente" if self.gemeentecode else self.code


@dataclass(frozen=True, slots=True)
class Question:
    """One request to decide: may this portal, for this purpose, fetch from these organisations?"""

    client_id: str
    purpose_id: str
    scopes: tuple[str, ...]
    acr: str
    gemeentecode: str  # the citizen's municipality, "" when unknown


@dataclass(frozen=True, slots=True)
class Decision:
    code: str
    allowed: bool
    policies: tuple[str, ...]  # the ids of the policies that decided (DEFAULT_DENY if none)
    errors: tuple[str, ...] = ()


class PolicyEngine:
    def __init__(self, policy_text: str, ids: Mapping[str, str], sources: Sequence[Path]) -> None:
        self.sources = tuple(sources)
        self._ids = dict(ids)
        self._policies = cedarpy.PolicySet.from_str(policy_text)
        self._text = policy_text
        self._entities_key: object = None
        self._entities: Any = None

    @classmethod
    def load(cls, directory: Path) -> PolicyEngine:
        files = sorted(directory.glob("*.cedar"))
        if not files:
            raise ConfigError(f"{directory} holds no *.cedar policies; the gateway would deny all")
        text = "\n".join(f.read_text() for f in files)
        try:
            parsed = orjson.loads(cedarpy.policies_to_json_str(text))
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(f"the Cedar policies in {directory} do not parse: {exc}") from exc
        ids: dict[str, str] = {}
        for internal, policy in parsed.get("staticPolicies", {}).items():
            annotated = policy.get("annotations", {}).get("id")
            if not annotated:
                raise ConfigError(
                    f'every policy needs an @id("…") annotation ({internal} has none)'
                )
            if annotated in ids.values():
                raise ConfigError(f"policy id {annotated!r} is used twice")
            ids[internal] = annotated
        return cls(text, ids, files)

    @staticmethod
    def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and modification times of the policy files: cheap change detection."""
        result = []
        for path in sorted(directory.glob("*.cedar")):
            with contextlib.suppress(OSError):
                stat = path.stat()
                result.append((path.name, stat.st_size, stat.st_mtime_ns))
        return tuple(result)

    @property
    def policy_ids(self) -> tuple[str, ...]:
        return tuple(self._ids.values())

    def entities(
        self, registry: Registry, organisations: Collection[OrganisationFacts], retention: Any
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for portal in registry.portals.values():
            items.append(
                {
                    "uid": {"type": "Portal", "id": portal.client_id},
                    "attrs": {"purposes": sorted(portal.purposes), "scopes": sorted(portal.scopes)},
                    "parents": [],
                }
            )
        for purpose in registry.purposes.values():
            items.append(
                {
                    "uid": {"type": "Purpose", "id": purpose.purpose_id},
                    "attrs": {
                        "min_acr_niveau": rank(purpose.min_acr) if purpose.min_acr else 0,
                        "organisaties": sorted(purpose.organisations),
                        "bewaartermijn_dagen": int(retention.get(purpose.purpose_id, 0)),
                    },
                    "parents": [],
                }
            )
        for org in organisations:
            items.append(
                {
                    "uid": {"type": "Organisatie", "id": org.code},
                    "attrs": {
                        "soort": org.soort,
                        "gemeentecode": org.gemeentecode,
                        "categorieen": sorted(org.categorieen),
                    },
                    "parents": [],
                }
            )
        return items

    def decide(
        self,
        question: Question,
        organisations: Sequence[OrganisationFacts],
        entities: Sequence[Mapping[str, Any]],
        entities_key: object = None,
    ) -> list[Decision]:
        """One decision per organisation. `entities_key` caches the parsed entities."""
        if entities_key is None or entities_key != self._entities_key:
            self._entities = cedarpy.Entities.from_json_str(orjson.dumps(list(entities)).decode())
            self._entities_key = entities_key
        try:
            acr = rank(question.acr)
        except ValueError:
            acr = -1
        context = {
            "purpose": {"__entity": {"type": "Purpose", "id": question.purpose_id}},
            "scopes": list(question.scopes),
            "acr_niveau": acr,
            "gemeentecode": question.gemeentecode,
        }
        decisions = []
        for org in organisations:
            result = cedarpy.is_authorized(
                {
                    "principal": {"type": "Portal", "id": question.client_id},
                    "action": ACTION,
                    "resource": {"type": "Organisatie", "id": org.code},
                    "context": context,
                },
                self._policies,
                self._entities,
            )
            reasons = tuple(self._ids.get(r, r) for r in result.diagnostics.reasons)
            errors = tuple(str(e) for e in result.diagnostics.errors)
            decisions.append(
                Decision(org.code, bool(result.allowed), reasons or (DEFAULT_DENY,), errors)
            )
        return decisions


def retention_days(directory: Path) -> dict[str, int]:
    """`bewaartermijn_dagen` per purpose from policies/purposes/*.toml (0 when not given)."""
    result: dict[str, int] = {}
    for path in sorted((directory / "purposes").glob("*.toml")):
        data = tomllib.loads(path.read_text())
        days = data.get("bewaartermijn_dagen", 0)
        if not isinstance(days, int) or days < 0:
            raise ConfigError(f"{path}: bewaartermijn_dagen must be a whole number of days")
        result[str(data.get("purpose_id"))] = days
    return result
