"""The organisation registry: who takes part, how to reach them, and which keys they sign with.

An entry (`Inschrijving`) is keyed by OIN and stored as a versioned document (`Store.put_version`,
kind `organisatie`), so every change is kept. Entries change only through signed requests
(`Verzoek`): a compact JWS (ES256) whose payload names the action, the OIN, a fresh `jti` and a
short lifetime, in the style of an RFC 7523 `private_key_jwt` client assertion, with the request
body inside it. Rules:

- `aanmelden` (register): signed by a key in the submitted entry's own JWKS (proof of
  possession); the entry waits as `aangemeld` until a federation administrator approves it;
- `wijzigen` (update): signed by a key in the *currently registered* JWKS of that OIN, so only
  the organisation itself can change its entry (and rotate its keys);
- `goedkeuren` (approve): signed by a federation administrator key (`[federation] admin_jwks`);
- `intrekken` (withdraw): by the organisation itself or an administrator; it is no longer asked;
- `schorsen` (suspend) and `herstellen` (reinstate): by an administrator.

An organisation may also send its requests as plain JSON over mTLS, authenticated by its
PKIoverheid-style client certificate instead of a signature (gateway.federation.certs).

Each accepted change is audited as `registratie.gewijzigd`. Parsing is strict and bounded: a
registration request comes from outside and may be hostile.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

from gateway import jws
from gateway.errors import BlauweKnopError, VerificationError
from gateway.federation.certs import MAX_ANCHORS, load_anchors
from gateway.federation.safety import UnsafeAddress, check_url
from gateway.models import Contactoptie, Organisatie

KIND = "organisatie"
AUDIENCE = "blauweknop-federatie"
ADMIN_ISSUER = "federatie-beheer"
MAX_REQUEST_BYTES = 64 * 1024
MAX_LIFETIME_SECONDS = 300
CLOCK_SKEW_SECONDS = 60
MAX_KEYS = 8
MAX_CONTACTOPTIES = 10
MAX_TEXT = 500

Status = Literal["aangemeld", "goedgekeurd", "geschorst", "ingetrokken"]
Actie = Literal["aanmelden", "wijzigen", "goedkeuren", "intrekken", "schorsen", "herstellen"]
Methode = Literal["private_key_jwt", "mtls"]
STATUSES: tuple[Status, ...] = ("aangemeld", "goedgekeurd", "geschorst", "ingetrokken")
ACTIES: tuple[Actie, ...] = (
    "aanmelden",
    "wijzigen",
    "goedkeuren",
    "intrekken",
    "schorsen",
    "herstellen",
)
# What an organisation may ask about its own entry, and what an administrator may do.
ORGANISATION_ACTIES: frozenset[str] = frozenset({"aanmelden", "wijzigen", "intrekken"})
ADMIN_ACTIES: frozenset[str] = frozenset({"goedkeuren", "intrekken", "schorsen", "herstellen"})
_PLAIN_FIELDS = frozenset({"actie", "oin", "inschrijving", "versie", "reden"})

OIN_PATTERN = re.compile(r"[0-9]{20}")
CODE_PATTERN = re.compile(r"[a-z]{2,5}|gm[0-9]{4}")
_CONTACTVORMEN = ("telefoon", "email", "website", "post")
_ENTRY_FIELDS = frozenset(
    {
        "oin",
        "code",
        "naam",
        "connector",
        "url",
        "jwks",
        "x509",
        "categorieen",
        "contactopties",
        "gemeentecode",
    }
)


class RegistrationRefused(BlauweKnopError):
    """A registry request was refused; `status` is the HTTP status, the message says what to fix."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Inschrijving:
    """One organisation's registry entry, as the organisation submitted it (public data only)."""

    oin: str
    code: str
    naam: str
    connector: str
    url: str
    jwks: Mapping[str, Any]
    categorieen: tuple[str, ...]
    contactopties: tuple[Contactoptie, ...]
    x509: str | None = None
    gemeentecode: str | None = None

    @property
    def organisatie(self) -> Organisatie:
        return Organisatie(self.oin, self.code, self.naam)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "oin": self.oin,
            "code": self.code,
            "naam": self.naam,
            "connector": self.connector,
            "url": self.url,
            "jwks": dict(self.jwks),
            "categorieen": list(self.categorieen),
            "contactopties": [
                {"contactvorm": c.contactvorm, "waarde": c.waarde, "omschrijving": c.omschrijving}
                for c in self.contactopties
            ],
        }
        if self.x509 is not None:
            data["x509"] = self.x509
        if self.gemeentecode is not None:
            data["gemeentecode"] = self.gemeentecode
        return data

    def public_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        return public_keys(self.jwks)


@dataclass(frozen=True, slots=True)
class Registratie:
    """A stored registry document: the entry, its approval status and its version."""

    inschrijving: Inschrijving
    status: Status
    version: int = 0
    seq: int = 0
    reden: str | None = None

    @property
    def actief(self) -> bool:
        return self.status == "goedgekeurd"

    def to_bytes(self) -> bytes:
        data: dict[str, Any] = {"inschrijving": self.inschrijving.to_json(), "status": self.status}
        if self.reden is not None:
            data["reden"] = self.reden
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, body: bytes, version: int, seq: int, rules: Rules) -> Registratie:
        data = orjson.loads(body)
        status = data["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        reden = data.get("reden")
        return cls(
            parse_entry(data["inschrijving"], rules),
            status,
            version,
            seq,
            reden if isinstance(reden, str) else None,
        )


@dataclass(frozen=True, slots=True)
class Rules:
    """What an entry may contain here: known categories, connectors and the network policy."""

    categories: frozenset[str]
    connectors: frozenset[str]
    sandbox: bool


def public_keys(jwks_document: Mapping[str, Any]) -> dict[str, ec.EllipticCurvePublicKey]:
    """The ES256 public keys of a JWKS by kid; refuses private parts and other key types."""
    keys = jwks_document.get("keys") if isinstance(jwks_document, Mapping) else None
    if not isinstance(keys, list) or not 1 <= len(keys) <= MAX_KEYS:
        raise ValueError(f"jwks must be an object with a 'keys' list of 1 to {MAX_KEYS} keys")
    result: dict[str, ec.EllipticCurvePublicKey] = {}
    for jwk in keys:
        if not isinstance(jwk, Mapping):
            raise ValueError("every JWKS entry must be an object")
        if any(part in jwk for part in ("d", "p", "q", "dp", "dq", "qi", "k")):
            raise ValueError("the JWKS holds private key material: publish public keys only")
        if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
            raise ValueError("keys must be EC P-256 (ES256): kty 'EC', crv 'P-256'")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not 1 <= len(kid) <= 128:
            raise ValueError("every key needs a kid (1 to 128 characters)")
        if kid in result:
            raise ValueError(f"kid {kid!r} appears twice")
        try:
            key = jwt.PyJWK(dict(jwk), algorithm="ES256").key
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise ValueError(f"key {kid!r} is unusable: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"key {kid!r} is not an EC public key")
        result[kid] = key
    return result


def _text(data: Mapping[str, Any], key: str, *, limit: int = 200) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise ValueError(f"{key!r} must be a non-empty string of at most {limit} characters")
    if any(ord(c) < 0x20 for c in value):
        raise ValueError(f"{key!r} must not contain control characters")
    return value.strip()


def parse_entry(data: Any, rules: Rules) -> Inschrijving:
    """Validate an entry strictly; ValueError says what is wrong and how to fix it."""
    if not isinstance(data, Mapping):
        raise ValueError("the entry must be a JSON object")
    if unknown := set(data) - _ENTRY_FIELDS:
        raise ValueError(f"unknown fields {sorted(unknown)}; allowed: {sorted(_ENTRY_FIELDS)}")
    oin = _text(data, "oin")
    if not OIN_PATTERN.fullmatch(oin):
        raise ValueError("oin must be the 20-digit organisatie-identificatienummer")
    code = _text(data, "code")
    if not CODE_PATTERN.fullmatch(code):
        raise ValueError(
            "code must be 2 to 5 lowercase letters (e.g. 'svb'), or 'gm' + the 4-digit CBS "
            "gemeentecode for a municipality"
        )
    gemeentecode = data.get("gemeentecode")
    if code.startswith("gm") and gemeentecode != code[2:]:
        raise ValueError(f"a municipality's gemeentecode must be {code[2:]!r}, matching its code")
    if gemeentecode is not None and not code.startswith("gm"):
        raise ValueError("only municipalities (code 'gm' + gemeentecode) have a gemeentecode")
    connector = data.get("connector", "generic")
    # Not a string (a list, say) would make the membership test raise TypeError: a 500.
    if not isinstance(connector, str) or connector not in rules.connectors:
        raise ValueError(
            f"connector {connector!r} cannot be registered here; choose one of "
            f"{sorted(rules.connectors)} (or implement docs/provider-api.yaml: 'generic')"
        )
    try:
        url = check_url(_text(data, "url", limit=512), sandbox=rules.sandbox)
    except UnsafeAddress as exc:
        raise ValueError(f"url: {exc}") from exc
    jwks_document = data.get("jwks")
    if not isinstance(jwks_document, Mapping):
        raise ValueError("jwks must be the organisation's public key set (JWKS)")
    public_keys(jwks_document)
    x509_pem = data.get("x509")
    if x509_pem is not None:
        if not isinstance(x509_pem, str) or len(x509_pem) > 16 * 1024:
            raise ValueError("x509 must be a PEM certificate of at most 16 KiB")
        try:
            load_anchors(x509_pem)
        except ValueError as exc:
            raise ValueError(f"x509 must be 1 to {MAX_ANCHORS} PEM certificates: {exc}") from exc
    if connector != "generic" and x509_pem is None:
        raise ValueError(f"the {connector} connector pins an X.509 certificate: give x509")
    categorieen = data.get("categorieen")
    if (
        not isinstance(categorieen, list)
        or not categorieen
        or not all(isinstance(c, str) for c in categorieen)
    ):
        raise ValueError("categorieen must be a non-empty list of data categories")
    if unknown_categories := set(categorieen) - rules.categories:
        raise ValueError(
            f"unknown categorieen {sorted(unknown_categories)}; known: {sorted(rules.categories)}"
        )
    contact = data.get("contactopties", [])
    if not isinstance(contact, list) or len(contact) > MAX_CONTACTOPTIES:
        raise ValueError(f"contactopties must be a list of at most {MAX_CONTACTOPTIES}")
    opties = []
    for item in contact:
        if not isinstance(item, Mapping) or item.get("contactvorm") not in _CONTACTVORMEN:
            raise ValueError(f"every contactoptie needs a contactvorm out of {_CONTACTVORMEN}")
        opties.append(
            Contactoptie(
                item["contactvorm"],
                _text(item, "waarde", limit=MAX_TEXT),
                _text(item, "omschrijving", limit=MAX_TEXT),
            )
        )
    return Inschrijving(
        oin=oin,
        code=code,
        naam=_text(data, "naam"),
        connector=str(connector),
        url=url,
        jwks={"keys": list(cast(Mapping[str, Any], jwks_document)["keys"])},
        categorieen=tuple(dict.fromkeys(categorieen)),
        contactopties=tuple(opties),
        x509=x509_pem,
        gemeentecode=gemeentecode,
    )


@dataclass(frozen=True, slots=True)
class Verzoek:
    """A verified registry request."""

    actie: Actie
    oin: str
    iss: str
    jti: str | None
    exp: float
    inschrijving: Mapping[str, Any] | None
    versie: int | None
    kid: str
    reden: str | None = None
    methode: Methode = "private_key_jwt"


def unverified_claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before the signature is checked: only to find the key to check with."""
    try:
        parsed, _, _ = jws.parse(token)
        claims = orjson.loads(parsed.payload)
    except (VerificationError, orjson.JSONDecodeError) as exc:
        raise RegistrationRefused(
            f"the body is not a compact JWS with a JSON payload: {exc}"
        ) from exc
    if not isinstance(claims, dict):
        raise RegistrationRefused("the JWS payload must be a JSON object")
    return parsed.header, claims


def verify_request(
    token: str, keys: Mapping[str, ec.EllipticCurvePublicKey], *, now: float | None = None
) -> Verzoek:
    """Check the signature with one of `keys` (by kid), then the claims."""
    header, claims = unverified_claims(token)
    if header.get("alg") != "ES256":
        raise RegistrationRefused("sign registry requests with ES256")
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in keys:
        raise RegistrationRefused(
            f"signed with key {kid!r}, which is not a registered key for this request", 401
        )
    try:
        jws.verify_es256(token, keys[kid])
    except VerificationError as exc:
        raise RegistrationRefused(f"the signature does not verify: {exc}", 401) from exc
    now = time.time() if now is None else now
    if claims.get("aud") != AUDIENCE:
        raise RegistrationRefused(f"aud must be {AUDIENCE!r}")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or not isinstance(exp, int | float):
        raise RegistrationRefused("iat and exp (seconds since the epoch) are required")
    if exp - iat > MAX_LIFETIME_SECONDS:
        raise RegistrationRefused(f"exp may be at most {MAX_LIFETIME_SECONDS} s after iat")
    if exp < now - CLOCK_SKEW_SECONDS or iat > now + CLOCK_SKEW_SECONDS:
        raise RegistrationRefused("the request has expired or is dated in the future")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not 16 <= len(jti) <= 128:
        raise RegistrationRefused("jti must be a unique string of 16 to 128 characters")
    iss = claims.get("iss")
    if not isinstance(iss, str):
        raise RegistrationRefused("iss is required: the OIN of the organisation, or the admin")
    actie, oin, entry, versie, reden = _request_fields(claims)
    return Verzoek(actie, oin, iss, jti, float(exp), entry, versie, kid, reden)


def _request_fields(
    data: Mapping[str, Any],
) -> tuple[Actie, str, Mapping[str, Any] | None, int | None, str | None]:
    """The request proper (signed or sent over mTLS): actie, oin, entry, versie, reden."""
    actie = data.get("actie")
    if actie not in ACTIES:
        raise RegistrationRefused(f"actie must be one of {list(ACTIES)}")
    oin = data.get("oin")
    if not isinstance(oin, str) or not OIN_PATTERN.fullmatch(oin):
        raise RegistrationRefused("oin must be the 20-digit OIN the request is about")
    versie = data.get("versie")
    if versie is not None and (
        not isinstance(versie, int) or isinstance(versie, bool) or versie < 0
    ):
        raise RegistrationRefused("versie must be the entry version the request builds on")
    entry = data.get("inschrijving")
    if actie in ("aanmelden", "wijzigen") and not isinstance(entry, dict):
        raise RegistrationRefused("inschrijving (the entry) is required to register or update")
    reden = data.get("reden")
    if reden is not None:
        try:
            reden = _text(data, "reden", limit=MAX_TEXT)
        except ValueError as exc:
            raise RegistrationRefused(str(exc)) from exc
    return cast(Actie, actie), oin, entry, versie, reden


def parse_plain_request(body: bytes) -> Verzoek:
    """A request sent as JSON over mTLS; who sent it is checked against the client certificate.

    No signature, `iss`, `jti` or lifetime: the TLS connection authenticates the organisation
    and protects the request in transit.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RegistrationRefused(f"the body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RegistrationRefused("the body must be a JSON object")
    if unknown := set(data) - _PLAIN_FIELDS:
        raise RegistrationRefused(
            f"unknown fields {sorted(unknown)}; allowed: {sorted(_PLAIN_FIELDS)}"
        )
    actie, oin, entry, versie, reden = _request_fields(data)
    return Verzoek(actie, oin, oin, None, 0.0, entry, versie, "", reden, "mtls")


def sign_request(
    *,
    key: ec.EllipticCurvePrivateKey,
    kid: str,
    actie: Actie,
    oin: str,
    iss: str,
    inschrijving: Mapping[str, Any] | None = None,
    versie: int | None = None,
    reden: str | None = None,
    lifetime: int = 120,
) -> str:
    """Make a registry request (used by `blauweknop org`, by tests and by organisations' tools)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + lifetime,
        "jti": str(uuid.uuid4()),
        "actie": actie,
        "oin": oin,
    }
    if inschrijving is not None:
        claims["inschrijving"] = dict(inschrijving)
    if versie is not None:
        claims["versie"] = versie
    if reden is not None:
        claims["reden"] = reden
    return jws.sign_es256(
        orjson.dumps(claims), key, {"alg": "ES256", "kid": kid, "typ": "JWT"}, detached=False
    )


def public_jwk(key: ec.EllipticCurvePublicKey, kid: str) -> dict[str, str]:
    numbers = key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "kid": kid,
        "use": "sig",
        "alg": "ES256",
        "x": jws.b64url(numbers.x.to_bytes(32, "big")),
        "y": jws.b64url(numbers.y.to_bytes(32, "big")),
    }


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """A kid for a public key: its RFC 7638 thumbprint."""
    jwk = public_jwk(key, "")
    canonical = orjson.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")})
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def identity_changed(old: Inschrijving, new: Inschrijving) -> bool:
    """True when an update changes who the organisation is, not just how to reach it."""
    return (old.code, old.naam, old.connector, old.gemeentecode) != (
        new.code,
        new.naam,
        new.connector,
        new.gemeentecode,
    )


def with_status(registratie: Registratie, status: Status, reden: str | None = None) -> Registratie:
    return replace(registratie, status=status, reden=reden)


def codes_in_use(entries: Collection[Registratie], *, except_oin: str) -> set[str]:
    return {r.inschrijving.code for r in entries if r.inschrijving.oin != except_oin}
