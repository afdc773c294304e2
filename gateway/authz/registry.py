"""Registered portals (confidential OAuth clients), purposes and data categories.

They are files under `policies/`, kept with the federation's policies:

- `policies/categories.toml`: the data categories, one table per scope, with Dutch and English
  labels and the organisations that provide that category;
- `policies/purposes/*.toml`: one purpose each (`purpose_id`, names and descriptions in Dutch and
  English, legal basis, scopes, organisations, optional minimum assurance level);
- `policies/portals/*.toml`: one portal each (`client_id`, name, exact `redirect_uris`, public
  keys as an inline `jwks` table or a `jwks_file`, allowed `purposes` and `scopes`).

Values may name `${state_dir}` and, for the demo portal, `${demo_portal_url}`: the loader is
given their values. Any other `${…}` is an error, so a typo never becomes a redirect URI.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import orjson

from gateway.errors import ConfigError

SCOPE_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,63}")
ID_PATTERN = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}")
CLIENT_KEY_ALGORITHMS = ("ES256", "EdDSA")
_VARIABLE = re.compile(r"\$\{([a-z_]+)\}")


@dataclass(frozen=True, slots=True)
class Category:
    """A data category, requested as a scope."""

    scope: str
    label_nl: str
    label_en: str
    organisations: frozenset[str]


@dataclass(frozen=True, slots=True)
class Purpose:
    purpose_id: str
    name_nl: str
    name_en: str
    description_nl: str
    description_en: str
    legal_basis_nl: str
    legal_basis_en: str
    scopes: frozenset[str]
    organisations: tuple[str, ...]
    min_acr: str | None = None


@dataclass(frozen=True, slots=True)
class ClientKey:
    kid: str | None
    key: jwt.PyJWK


@dataclass(frozen=True, slots=True)
class Portal:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    keys: tuple[ClientKey, ...]
    purposes: frozenset[str]
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Registry:
    portals: Mapping[str, Portal]
    purposes: Mapping[str, Purpose]
    categories: Mapping[str, Category]

    @classmethod
    def load(
        cls, directory: Path, variables: Mapping[str, str], *, sandbox: bool = False
    ) -> Registry:
        """Load every policy file; portals marked `sandbox_only` only in sandbox mode."""
        if not directory.is_dir():
            raise ConfigError(f"policies directory {directory} does not exist")
        categories = {
            scope: _category(scope, entry, directory / "categories.toml")
            for scope, entry in _read(directory / "categories.toml", variables).items()
        }
        purposes: dict[str, Purpose] = {}
        for path in sorted((directory / "purposes").glob("*.toml")):
            purpose = _purpose(_read(path, variables), path, categories)
            if purpose.purpose_id in purposes:
                raise ConfigError(f"{path}: purpose_id {purpose.purpose_id!r} is registered twice")
            purposes[purpose.purpose_id] = purpose
        portals: dict[str, Portal] = {}
        for path in sorted((directory / "portals").glob("*.toml")):
            if not sandbox and _read(path, {}, expand=False).get("sandbox_only", False):
                continue
            portal = _portal(_read(path, variables), path, purposes, categories)
            if portal.client_id in portals:
                raise ConfigError(f"{path}: client_id {portal.client_id!r} is registered twice")
            portals[portal.client_id] = portal
        return cls(portals, purposes, categories)


def _read(path: Path, variables: Mapping[str, str], *, expand: bool = True) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read policy file {path}: {exc}") from exc
    if not expand:
        return data
    expanded = _expand(data, variables, path)
    assert isinstance(expanded, dict)
    return expanded


def _expand(value: Any, variables: Mapping[str, str], path: Path) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise ConfigError(
                    f"{path}: unknown variable ${{{name}}}; known: {sorted(variables)}"
                )
            return variables[name]

        return _VARIABLE.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, variables, path) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables, path) for k, v in value.items()}
    return value


def _text(entry: Mapping[str, Any], key: str, path: Path) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {key!r} must be a non-empty string")
    return value.strip()


def _strings(entry: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    value = entry.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {key!r} must be a non-empty list of strings")
    return tuple(value)


def _category(scope: str, entry: Any, path: Path) -> Category:
    if not SCOPE_PATTERN.fullmatch(scope) or not isinstance(entry, Mapping):
        raise ConfigError(f"{path}: [{scope}] must be a table named like a scope (a-z, 0-9, -)")
    return Category(
        scope,
        _text(entry, "nl", path),
        _text(entry, "en", path),
        frozenset(_strings(entry, "organisaties", path)),
    )


def _purpose(entry: Mapping[str, Any], path: Path, categories: Mapping[str, Category]) -> Purpose:
    purpose_id = _text(entry, "purpose_id", path)
    if not ID_PATTERN.fullmatch(purpose_id):
        raise ConfigError(f"{path}: purpose_id {purpose_id!r} may use letters, digits, . _ -")
    scopes = frozenset(_strings(entry, "scopes", path))
    unknown = scopes - categories.keys()
    if unknown:
        raise ConfigError(f"{path}: scopes {sorted(unknown)} are not in categories.toml")
    names = entry.get("naam", {})
    descriptions = entry.get("omschrijving", {})
    basis = entry.get("grondslag", {})
    min_acr = entry.get("min_acr")
    if min_acr is not None and not isinstance(min_acr, str):
        raise ConfigError(f"{path}: min_acr must be an eIDAS level URI")
    return Purpose(
        purpose_id=purpose_id,
        name_nl=_text(names, "nl", path),
        name_en=_text(names, "en", path),
        description_nl=_text(descriptions, "nl", path),
        description_en=_text(descriptions, "en", path),
        legal_basis_nl=_text(basis, "nl", path),
        legal_basis_en=_text(basis, "en", path),
        scopes=scopes,
        organisations=_strings(entry, "organisaties", path),
        min_acr=min_acr,
    )


def _portal(
    entry: Mapping[str, Any],
    path: Path,
    purposes: Mapping[str, Purpose],
    categories: Mapping[str, Category],
) -> Portal:
    client_id = _text(entry, "client_id", path)
    if not ID_PATTERN.fullmatch(client_id):
        raise ConfigError(f"{path}: client_id {client_id!r} may use letters, digits, . _ -")
    redirect_uris = _strings(entry, "redirect_uris", path)
    for uri in redirect_uris:
        parts = urlsplit(uri)
        local = parts.hostname in ("127.0.0.1", "localhost", "::1")
        if (
            parts.fragment
            or parts.scheme not in ("https", "http")
            or (parts.scheme == "http" and not local)
        ):
            raise ConfigError(
                f"{path}: redirect URI {uri!r} must be https (http only on the loopback address) "
                "and have no fragment"
            )
    allowed_purposes = frozenset(_strings(entry, "purposes", path))
    if unknown := allowed_purposes - purposes.keys():
        raise ConfigError(f"{path}: purposes {sorted(unknown)} are not registered")
    scopes = frozenset(_strings(entry, "scopes", path))
    if unknown := scopes - categories.keys():
        raise ConfigError(f"{path}: scopes {sorted(unknown)} are not in categories.toml")
    return Portal(
        client_id=client_id,
        name=_text(entry, "naam", path),
        redirect_uris=redirect_uris,
        keys=_keys(entry, path),
        purposes=allowed_purposes,
        scopes=scopes,
    )


def _keys(entry: Mapping[str, Any], path: Path) -> tuple[ClientKey, ...]:
    if "jwks" in entry:
        document = entry["jwks"]
    elif "jwks_file" in entry:
        file = Path(_text(entry, "jwks_file", path))
        file = file if file.is_absolute() else path.parent / file
        try:
            document = orjson.loads(file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read jwks_file {file}: {exc}") from exc
    else:
        raise ConfigError(f"{path}: give the portal's public keys as jwks or jwks_file")
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ConfigError(f"{path}: the JWKS must be an object with a 'keys' list")
    keys: list[ClientKey] = []
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping) or "d" in jwk or "p" in jwk:
            raise ConfigError(f"{path}: JWKS entries must be public keys (no private parts)")
        alg = jwk.get("alg") or ("EdDSA" if jwk.get("kty") == "OKP" else "ES256")
        if alg not in CLIENT_KEY_ALGORITHMS:
            raise ConfigError(f"{path}: key algorithm {alg!r} not accepted; use ES256 or EdDSA")
        try:
            key = jwt.PyJWK(dict(jwk), algorithm=alg)
        except jwt.PyJWTError as exc:
            raise ConfigError(f"{path}: unusable key in JWKS: {exc}") from exc
        kid = jwk.get("kid")
        keys.append(ClientKey(kid if isinstance(kid, str) else None, key))
    if not keys:
        raise ConfigError(f"{path}: the JWKS holds no keys")
    return tuple(keys)
