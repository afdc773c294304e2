"""The running federation: the organisation directory, registry changes, BRP routing, policy.

`Federation` holds every organisation the gateway may ask: the statically configured ones
(`[organisations.*]`) and the approved registry entries. It polls the store's registry head
(`Store.head`, one indexed query) every `poll_seconds`; when it moved, it reloads the entries,
builds connectors for new or changed ones and swaps them into the fan-out, so every replica
picks up a change without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.audit.events import AuditTrail
from gateway.authz.registry import Registry
from gateway.config import Settings, connector_factory
from gateway.connector import Connector, ConnectorSettings, read_limited
from gateway.errors import BlauweKnopError, ConfigError
from gateway.fanout import Fanout
from gateway.federation import certs
from gateway.federation import registry as reg
from gateway.federation.policy import Decision, OrganisationFacts, PolicyEngine, Question
from gateway.federation.registry import Registratie, RegistrationRefused, Rules
from gateway.federation.safety import GuardedConnector, UnsafeAddress, check_resolves
from gateway.store import Store, VersionConflict

log = logging.getLogger(__name__)

JTI_NAMESPACE = "federatie-jti"


@dataclass(frozen=True, slots=True)
class Member:
    """One organisation in the directory, with the connector that asks it."""

    facts: OrganisationFacts
    connector: Connector
    naam: str
    registered: Registratie | None = None


class Federation:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        audit: AuditTrail,
        fanout: Fanout,
        static: Sequence[Connector],
        registry: Registry,
        policy: PolicyEngine,
        retention: Mapping[str, int],
    ) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.fanout = fanout
        self.registry = registry
        self.policy = policy
        self._policy_fingerprint = PolicyEngine.fingerprint(settings.policies_dir)
        self.retention = dict(retention)
        self.sandbox = settings.mode == "sandbox"
        self.rules = Rules(
            categories=frozenset(registry.categories),
            connectors=frozenset(settings.federation.connectors),
            sandbox=self.sandbox,
        )
        self.anchor_dir = settings.state_dir / "federation" / "anchors"
        self._static = {
            c.organisatie.code: Member(
                OrganisationFacts(
                    c.organisatie.code,
                    frozenset(
                        s
                        for s, cat in registry.categories.items()
                        if c.organisatie.code in cat.organisations
                    ),
                ),
                c,
                c.organisatie.naam,
            )
            for c in static
        }
        self._members: dict[str, Member] = dict(self._static)
        self._built: dict[tuple[str, int], Connector] = {}
        self.entries: dict[str, Registratie] = {}
        self.head = -1
        self._entities: list[dict[str, Any]] = []
        self._entities_key: object = None
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()
        self.admin_keys = self._admin_keys()
        # Where organisations reach the mTLS listener, once it runs ([federation] mtls_port),
        # and the certificates of its mtls_client_ca: the registry's path building may pass
        # through them (Python's ssl does not hand over the chain the client sent).
        self.mtls_url: str | None = None
        self.mtls_ca_certs: tuple[x509.Certificate, ...] = ()
        self._rebuild_entities()

    # --- directory ---------------------------------------------------------------------------

    @property
    def members(self) -> Mapping[str, Member]:
        return self._members

    async def refresh(self) -> bool:
        """Reload the registry if it changed since the last look; True if it did."""
        head = await self.store.head(reg.KIND)
        if head == self.head:
            return False
        async with self._lock:
            head = await self.store.head(reg.KIND)
            if head == self.head:
                return False
            entries: dict[str, Registratie] = {}
            for doc in await self.store.list_latest(reg.KIND):
                try:
                    entries[doc.key] = Registratie.from_bytes(
                        doc.body, doc.version, doc.seq, self.rules
                    )
                except (ValueError, KeyError, orjson.JSONDecodeError) as exc:
                    log.error("registry entry %s unreadable, skipped: %s", doc.key, exc)
            members = dict(self._static)
            built: dict[tuple[str, int], Connector] = {}
            for r in entries.values():
                entry = r.inschrijving
                if not r.actief or entry.code in self._static:
                    continue
                ident = (entry.oin, r.version)
                try:
                    connector = self._built.get(ident) or self._connector(entry)
                except (ValueError, OSError, BlauweKnopError) as exc:
                    log.error("cannot build a connector for %s: %s", entry.code, exc)
                    continue
                built[ident] = connector
                members[entry.code] = Member(
                    OrganisationFacts(entry.code, frozenset(entry.categorieen)),
                    connector,
                    entry.naam,
                    r,
                )
            stale = [c for k, c in self._built.items() if k not in built]
            self._built = built
            self.entries = entries
            self._members = members
            self.fanout.replace_connectors([m.connector for m in members.values()])
            self._rebuild_entities()
            self.head = head
        for connector in stale:
            # Requests in flight may still use it; give them the fan-out deadline.
            task = asyncio.create_task(self._close_later(connector))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("registry loaded", extra={"head": head, "organisations": len(members)})
        return True

    async def _close_later(self, connector: Connector) -> None:
        try:
            await asyncio.sleep(self.fanout.deadline + 1)
        finally:
            # Also when cancelled at shutdown: its sessions must not outlive the gateway.
            close = getattr(connector, "aclose", None)
            if close is not None:
                await close()

    def reload_policies(self) -> bool:
        """Load `policies/*.cedar` again if the files changed; a broken edit keeps the old set."""
        directory = self.settings.policies_dir
        fingerprint = PolicyEngine.fingerprint(directory)
        if fingerprint == self._policy_fingerprint:
            return False
        self._policy_fingerprint = fingerprint
        try:
            engine = PolicyEngine.load(directory)
        except (ConfigError, OSError) as exc:
            log.error("policies changed but do not load; keeping the previous ones: %s", exc)
            return False
        self.policy = engine
        self._rebuild_entities()
        log.info("policies reloaded", extra={"policies": list(engine.policy_ids)})
        return True

    async def poll(self) -> None:
        """Runs for the gateway's lifetime: picks up registry and policy changes, no restart."""
        while True:
            try:
                self.reload_policies()
                await self.refresh()
            except Exception:  # the store may be briefly unavailable; keep the last good view
                log.exception("registry refresh failed; keeping the current directory")
            await asyncio.sleep(self.settings.federation.poll_seconds)

    async def aclose(self) -> None:
        closing = list(self._closing)
        for task in closing:
            task.cancel()
        await asyncio.gather(*closing, return_exceptions=True)
        for connector in self._built.values():
            close = getattr(connector, "aclose", None)
            if close is not None:
                await close()

    def _connector(self, entry: reg.Inschrijving) -> Connector:
        options: dict[str, str] = {
            "categorieen": " ".join(entry.categorieen),
            "contactopties": orjson.dumps(
                [
                    {
                        "contactvorm": c.contactvorm,
                        "waarde": c.waarde,
                        "omschrijving": c.omschrijving,
                    }
                    for c in entry.contactopties
                ]
            ).decode(),
        }
        if self.sandbox:
            options["allow_private"] = "true"
        if entry.gemeentecode:
            options["gemeentecode"] = entry.gemeentecode
            for c in entry.contactopties:
                options.setdefault(f"contact_{c.contactvorm}", c.waarde)
        if entry.connector == "generic":
            anchor = self._anchor(orjson.dumps(dict(entry.jwks)), "jwks.json")
            if entry.x509 is not None:
                # X.509 anchors for answers that carry an x5c chain (connectors/generic).
                options["x509"] = str(self._anchor(entry.x509.encode(), "pem"))
        else:
            assert entry.x509 is not None
            anchor = self._anchor(entry.x509.encode(), "pem")
        limits = self.settings.federation
        settings = ConnectorSettings(
            organisatie=entry.organisatie,
            base_url=entry.url,
            trust_cert=anchor,
            connect_timeout=limits.connect_timeout,
            read_timeout=limits.read_timeout,
            max_body_bytes=limits.max_body_bytes,
            max_xml_depth=limits.max_xml_depth,
            options=options,
        )
        inner = connector_factory(entry.connector)(settings)
        return GuardedConnector(inner, allow_private=self.sandbox)

    def _anchor(self, content: bytes, suffix: str) -> Path:
        """Trust anchors as content-addressed files: connectors load them like configured ones."""
        self.anchor_dir.mkdir(parents=True, exist_ok=True)
        path = self.anchor_dir / f"{hashlib.sha256(content).hexdigest()}.{suffix}"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        return path

    # --- registry changes --------------------------------------------------------------------

    def _admin_keys(self) -> dict[str, ec.EllipticCurvePublicKey]:
        path = self.settings.federation.admin_jwks
        if path is None and self.sandbox:
            from gateway.federation.keys import development_admin_key

            key, kid = development_admin_key(self.settings.state_dir)
            return {kid: key.public_key()}
        if path is None:
            return {}
        try:
            return reg.public_keys(orjson.loads(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise BlauweKnopError(f"[federation] admin_jwks {path}: {exc}") from exc

    async def apply(self, token: str, transactie_id: str) -> Registratie:
        """Verify and apply one signed registry request; audited. RegistrationRefused if not."""
        if len(token) > reg.MAX_REQUEST_BYTES:
            raise RegistrationRefused(f"the request exceeds {reg.MAX_REQUEST_BYTES} bytes", 413)
        _, claims = reg.unverified_claims(token)
        actie, oin = claims.get("actie"), claims.get("oin")
        if not isinstance(oin, str) or not reg.OIN_PATTERN.fullmatch(oin):
            raise RegistrationRefused("oin must be the 20-digit OIN the request is about")
        current = await self._current(oin)
        # Who may sign follows from the action and the claimed issuer; both are checked again
        # once the signature verifies.
        by_admin = actie in reg.ADMIN_ACTIES and (
            actie != "intrekken" or claims.get("iss") == reg.ADMIN_ISSUER
        )
        if actie == "aanmelden":
            keys = self._entry(claims.get("inschrijving")).public_keys()
        elif by_admin:
            if not self.admin_keys:
                raise RegistrationRefused(
                    "no federation administrator keys are configured ([federation] admin_jwks)",
                    403,
                )
            keys = self.admin_keys
        elif actie in reg.ORGANISATION_ACTIES:
            keys = self._registered(oin, current).inschrijving.public_keys()
        else:
            raise RegistrationRefused(f"actie must be one of {list(reg.ACTIES)}")
        verzoek = reg.verify_request(token, keys)
        expected_iss = reg.ADMIN_ISSUER if by_admin else oin
        if verzoek.iss != expected_iss:
            raise RegistrationRefused(f"iss must be {expected_iss!r} for {actie}", 403)
        assert verzoek.jti is not None
        ttl = max(1.0, verzoek.exp - time.time() + reg.CLOCK_SKEW_SECONDS)
        if not await self.store.put_new(JTI_NAMESPACE, verzoek.jti, b"1", ttl):
            raise RegistrationRefused("this request was sent before (jti replayed)", 409)
        return await self._change(verzoek, current, transactie_id)

    async def apply_mtls(
        self, body: bytes, certificate: x509.Certificate, transactie_id: str
    ) -> Registratie:
        """Apply a JSON request sent over mTLS by the organisation the client certificate names.

        The TLS handshake already chained the certificate to `[federation] mtls_client_ca` (and
        checked its validity); here it must also chain to the organisation's own registered
        X.509 anchor and name its OIN. Administrator actions are always signed requests.
        """
        verzoek = reg.parse_plain_request(body)
        if verzoek.actie not in reg.ORGANISATION_ACTIES:
            raise RegistrationRefused(
                f"{verzoek.actie} is an administrator's action: send it as a request signed "
                "with a [federation] admin_jwks key",
                403,
            )
        current = await self._current(verzoek.oin)
        if verzoek.actie == "aanmelden":
            anchors_pem = self._entry(verzoek.inschrijving).x509
        else:
            anchors_pem = self._registered(verzoek.oin, current).inschrijving.x509
        if anchors_pem is None:
            raise RegistrationRefused(
                f"OIN {verzoek.oin} has no registered X.509 trust anchor (x509): register one, "
                "or sign the request with a key from the registered JWKS",
                403,
            )
        try:
            certs.verify_chain(
                certificate,
                self.mtls_ca_certs,
                certs.load_anchors(anchors_pem),
                oin=verzoek.oin,
                at=dt.datetime.now(dt.UTC),
                purpose="tls-client",
            )
        except certs.CertificateRefused as exc:
            raise RegistrationRefused(f"client certificate refused: {exc}", 403) from exc
        signed = replace(verzoek, kid=f"x5t#S256:{certs.thumbprint(certificate)}")
        return await self._change(signed, current, transactie_id)

    async def _current(self, oin: str) -> Registratie | None:
        doc = await self.store.get_latest(reg.KIND, oin)
        return Registratie.from_bytes(doc.body, doc.version, doc.seq, self.rules) if doc else None

    @staticmethod
    def _registered(oin: str, current: Registratie | None) -> Registratie:
        if current is None:
            raise RegistrationRefused(f"OIN {oin} is not registered; register it first", 404)
        return current

    def _check_version(self, verzoek: reg.Verzoek, current: Registratie, *, required: bool) -> None:
        if verzoek.versie is None and not required:
            return
        if verzoek.versie != current.version:
            raise RegistrationRefused(
                (
                    f"approve the version you reviewed: the entry is at version "
                    f"{current.version}, the request names {verzoek.versie}"
                )
                if required
                else (
                    f"the entry is at version {current.version}, not {verzoek.versie}: "
                    "read it again and resend"
                ),
                409,
            )

    def _new_status(self, verzoek: reg.Verzoek, current: Registratie) -> Registratie:
        """The administrator's and withdrawal actions: a status change of the current entry."""
        actie, oin, status = verzoek.actie, verzoek.oin, current.status
        if status == "ingetrokken" and actie != "herstellen":
            raise RegistrationRefused(
                f"OIN {oin} is withdrawn; a federation administrator can reinstate it (herstellen)",
                409,
            )
        if actie == "goedkeuren":
            if status != "aangemeld":
                raise RegistrationRefused(
                    f"OIN {oin} is {status}, not waiting for approval"
                    + ("; reinstate it with herstellen" if status == "geschorst" else ""),
                    409,
                )
            self._check_version(verzoek, current, required=True)
            return reg.with_status(current, "goedgekeurd")
        if actie == "herstellen":
            if status not in ("geschorst", "ingetrokken"):
                raise RegistrationRefused(f"OIN {oin} is {status}: nothing to reinstate", 409)
            self._check_version(verzoek, current, required=True)
            return reg.with_status(current, "goedgekeurd", verzoek.reden)
        if actie == "schorsen":
            if status == "geschorst":
                raise RegistrationRefused(f"OIN {oin} is already suspended", 409)
            self._check_version(verzoek, current, required=False)
            return reg.with_status(current, "geschorst", verzoek.reden)
        assert actie == "intrekken"
        self._check_version(verzoek, current, required=False)
        return reg.with_status(current, "ingetrokken", verzoek.reden)

    async def _change(
        self, verzoek: reg.Verzoek, current: Registratie | None, transactie_id: str
    ) -> Registratie:
        """Apply an authenticated request to the entry it was checked against; audited."""
        oin = verzoek.oin
        if verzoek.actie not in ("aanmelden", "wijzigen"):
            new = self._new_status(verzoek, self._registered(oin, current))
        else:
            entry = self._entry(verzoek.inschrijving)
            if verzoek.actie == "wijzigen":
                current = self._registered(oin, current)
                if current.status == "ingetrokken":
                    raise RegistrationRefused(
                        f"OIN {oin} is withdrawn; a federation administrator can reinstate it "
                        "(herstellen) before it changes its entry",
                        409,
                    )
                self._check_version(verzoek, current, required=False)
            elif current is not None:
                raise RegistrationRefused(f"OIN {oin} is already registered; send wijzigen", 409)
            if entry.oin != oin:
                raise RegistrationRefused("the entry's oin differs from the request's oin")
            await self._check_code(entry)
            if not self.sandbox:
                try:
                    await check_resolves(entry.url)
                except UnsafeAddress as exc:
                    raise RegistrationRefused(f"url: {exc}") from exc
            status: reg.Status = current.status if current is not None else "aangemeld"
            if (
                current is not None
                and status == "goedgekeurd"
                and reg.identity_changed(current.inschrijving, entry)
            ):
                # Who the organisation is (code, kind, protocol, name) decides what policies
                # allow it: changing that needs an administrator's approval again.
                status = "aangemeld"
            new = Registratie(entry, status, reden=current.reden if current else None)
        try:
            stored = await self.store.put_version(
                reg.KIND, oin, new.to_bytes(), expected_version=current.version if current else 0
            )
        except VersionConflict as exc:
            raise RegistrationRefused(str(exc), 409) from exc
        result = replace(new, version=stored.version, seq=stored.seq)
        await self.audit.record(
            "registratie.gewijzigd",
            transactie_id,
            {
                "oin": oin,
                "code": result.inschrijving.code,
                "actie": verzoek.actie,
                "versie": result.version,
                "status": result.status,
                "door": verzoek.iss,
                "methode": verzoek.methode,
                "sleutel_id": verzoek.kid,
                "reden": verzoek.reden,
                "inschrijving_sha256": hashlib.sha256(new.to_bytes()).hexdigest(),
            },
        )
        log.info("registry changed", extra={"oin": oin, "actie": verzoek.actie})
        return result

    def _entry(self, data: Any) -> reg.Inschrijving:
        try:
            return reg.parse_entry(data, self.rules)
        except ValueError as exc:
            raise RegistrationRefused(f"inschrijving: {exc}") from exc

    async def _check_code(self, entry: reg.Inschrijving) -> None:
        if entry.code in self._static:
            raise RegistrationRefused(f"code {entry.code!r} is configured statically here", 409)
        for doc in await self.store.list_latest(reg.KIND):
            if (
                doc.key != entry.oin
                and orjson.loads(doc.body)["inschrijving"]["code"] == entry.code
            ):
                raise RegistrationRefused(f"code {entry.code!r} belongs to another OIN", 409)

    # --- routing and policy ------------------------------------------------------------------

    async def gemeentecode(self, bsn: str, session: aiohttp.ClientSession) -> str:
        """The citizen's municipality: from the BRP if configured; else, when exactly one
        municipality takes part, that one; "" when unknown (then no municipality is asked)."""
        url = self.settings.federation.brp_url
        if url is None:
            codes = [m.facts.gemeentecode for m in self._members.values() if m.facts.gemeentecode]
            return codes[0] if len(codes) == 1 else ""
        body = {
            "type": "RaadpleegMetBurgerservicenummer",
            "burgerservicenummer": [bsn],
            "fields": ["verblijfplaats", "gemeenteVanInschrijving"],
        }
        timeout = aiohttp.ClientTimeout(total=self.settings.federation.brp_timeout)
        try:
            async with session.post(
                url + "/haalcentraal/api/brp/personen",
                json=body,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                raw = await read_limited(response, self.settings.federation.brp_max_body_bytes)
                if response.status != 200:
                    log.warning("BRP answered HTTP %s", response.status)
                    return ""
        except (aiohttp.ClientError, TimeoutError, BlauweKnopError) as exc:
            log.warning("BRP lookup failed, no municipality is asked: %s", type(exc).__name__)
            return ""
        return brp_gemeentecode(raw)

    def admission(
        self, bsn: str, session: aiohttp.ClientSession
    ) -> Callable[[str], Awaitable[bool]]:
        """A fan-out `admit` predicate: organisations other than municipalities at once; a
        municipality once the BRP (looked up once, concurrently) says it is the citizen's."""
        lookup: asyncio.Task[str] | None = None

        async def admit(code: str) -> bool:
            nonlocal lookup
            member = self._members.get(code)
            if member is None or not member.facts.gemeentecode:
                return True
            if lookup is None:
                lookup = asyncio.ensure_future(self.gemeentecode(bsn, session))
            return member.facts.gemeentecode == await asyncio.shield(lookup)

        return admit

    def consented_gemeentecode(self, organisations: Sequence[str]) -> str:
        """The municipality a consent names (consent offers only the citizen's own), or ""."""
        codes = {
            m.facts.gemeentecode
            for code, m in self._members.items()
            if code in organisations and m.facts.gemeentecode
        }
        return codes.pop() if len(codes) == 1 else ""

    def among(self, gemeentecode: str) -> list[str]:
        """Every organisation except municipalities other than the citizen's own."""
        return [
            code
            for code, m in self._members.items()
            if not m.facts.gemeentecode or m.facts.gemeentecode == gemeentecode
        ]

    def decide(self, question: Question, codes: Sequence[str] | None = None) -> list[Decision]:
        facts = [m.facts for code, m in self._members.items() if codes is None or code in codes]
        return self.policy.decide(question, facts, self._entities, self._entities_key)

    def _rebuild_entities(self) -> None:
        self._entities = self.policy.entities(
            self.registry, [m.facts for m in self._members.values()], self.retention
        )
        self._entities_key = object()

    async def audit_decisions(
        self, transactie_id: str, question: Question, decisions: Sequence[Decision], bsn: str
    ) -> None:
        await self.audit.record(
            "beleid.besluit",
            transactie_id,
            {
                "burger": self.audit.key.pseudonym(bsn),
                "client_id": question.client_id,
                "purpose_id": question.purpose_id,
                "scopes": list(question.scopes),
                "bewaartermijn_dagen": self.retention.get(question.purpose_id, 0),
                "besluiten": [
                    {
                        "organisatie": d.code,
                        "besluit": "toegestaan" if d.allowed else "geweigerd",
                        "beleid": list(d.policies),
                    }
                    for d in decisions
                ],
            },
        )


def brp_gemeentecode(raw: bytes) -> str:
    """The municipality code in a BRP answer; "" when it names none or cannot be read."""
    try:
        personen = orjson.loads(raw).get("personen", [])
        code = personen[0]["gemeenteVanInschrijving"]["code"] if personen else ""
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        log.warning("BRP answer unreadable, no municipality is asked: %s", type(exc).__name__)
        return ""
    # isdigit alone takes other scripts' digits ("٠٣٦٣"); a CBS code is four ASCII digits.
    valid = isinstance(code, str) and len(code) == 4 and code.isascii() and code.isdigit()
    return code if valid else ""


def suppress_cancel() -> contextlib.AbstractContextManager[None]:
    return contextlib.suppress(asyncio.CancelledError)
