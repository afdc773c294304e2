"""Configuration from a TOML file and `BLAUWEKNOP_*` environment variables.

Environment variables override the file; `__` separates nesting levels, so
`BLAUWEKNOP_ORGANISATIONS__DUO__URL` sets `[organisations.duo] url`. In sandbox mode the four
organisations default to the local sandboxes and the keys to the development PKI; production
mode has no defaults for either and refuses settings that are only safe in a sandbox.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

from gateway.assurance import BSN_SUB_ID_TYPE, DEFAULT_ACR_MAPPING, EIDAS_LEVELS, EIDAS_SUBSTANTIAL
from gateway.connector import (
    DEFAULT_MAX_XML_DEPTH,
    Connector,
    ConnectorFactory,
    ConnectorSettings,
)
from gateway.errors import BlauweKnopError, ConfigError
from gateway.fanout import BreakerSettings
from gateway.federation.settings import FederationSettings, parse_federation
from gateway.hsm import Pkcs11Config
from gateway.limits import ServerLimits
from gateway.models import Contactoptie, Organisatie
from gateway.pki import DevPki
from gateway.sign import KeyRing
from gateway.store.postgres import PostgresOptions

Mode = Literal["sandbox", "production"]
AuditWriterMode = Literal["inline", "process"]
ENTRY_POINT_GROUP = "blauweknop.connectors"
ENV_PREFIX = "BLAUWEKNOP_"

SANDBOX_ORGS = ("duo", "uwv", "cak", "gemeente")
DEFAULT_POLICIES_DIR = Path(__file__).resolve().parent.parent / "policies"
_DEFAULT_UITGEVER = Organisatie("00000099000000099000", "bkgw", "Blauwe Knop gateway (sandbox)")


@dataclass(frozen=True, slots=True)
class OrganisationConfig:
    connector: str
    settings: ConnectorSettings


@dataclass(frozen=True, slots=True)
class SigningConfig:
    """The seal key: a PEM file (`key`) or a PKCS#11 token (`pkcs11`), and its chain."""

    key: Path | None
    chain: Path
    retired: tuple[Path, ...] = ()
    pkcs11: Pkcs11Config | None = None


@dataclass(frozen=True, slots=True)
class DocumentSettings:
    """`[documents]`: the certified XML and PDF (see docs/documents.md).

    `tsa_url`: RFC 3161 time-stamping authority for the PDF (sandbox: the development TSA,
    started with the gateway). `trust_roots`: root certificates (PEM) that verification and
    the PDF's B-LT material chain to (sandbox: the development root). `crl_files`: revocation
    information to embed as is; `fetch_revocation`: let pyHanko fetch CRLs/OCSP responses the
    certificates point at (production). `workers`: processes that sign and verify documents,
    at `niceness` (lower CPU priority than the event loop, so documents wait, not everyone).
    `public_url`: the gateway's address as printed in the PDF (`…/verifieer`).
    """

    tsa_url: str | None = None
    trust_roots: tuple[Path, ...] = ()
    crl_files: tuple[Path, ...] = ()
    fetch_revocation: bool = False
    workers: int = 2
    public_url: str | None = None
    max_verify_bytes: int = 20 * 1024 * 1024
    max_xml_depth: int = 32  # deepest element nesting in an XML file handed in for verification
    max_pdf_pages: int = 100  # most pages in a PDF handed in for verification
    warm_up: bool | None = None  # start the workers at start-up; default: in production only
    niceness: int = 10  # CPU priority of the workers below the event loop (os.nice)


@dataclass(frozen=True, slots=True)
class AuthzSettings:
    """`[authz]`: lifetimes in the gateway's authorization server for portals (docs/portals.md).

    Shorter is allowed (tests use one second); longer than the defaults is refused.
    """

    request_uri_seconds: int = 60
    code_seconds: int = 60
    access_token_seconds: int = 300


def _authz(table: Mapping[str, Any]) -> AuthzSettings:
    limits = AuthzSettings()
    values = {}
    for name in ("request_uri_seconds", "code_seconds", "access_token_seconds"):
        value = _int(table, name, getattr(limits, name))
        if not 1 <= value <= getattr(limits, name):
            raise ConfigError(
                f"[authz] {name} must be between 1 and {getattr(limits, name)} seconds"
            )
        values[name] = value
    return AuthzSettings(**values)


# The stand-in DigiD of the demo stack listens on sandbox_base_port + this offset.
DIGID_PORT_OFFSET = 10


@dataclass(frozen=True, slots=True)
class OidcSettings:
    """`[oidc]`: the gateway as OpenID Connect relying party towards DigiD (docs/login.md).

    `client_key` signs the RFC 7523 client assertions (private_key_jwt); `encryption_keys` are
    the private keys ID tokens may be encrypted to (JWE), newest first. In sandbox mode both
    default to development keys made under `state_dir/pki`; production needs files.
    """

    issuer: str = "http://127.0.0.1:9111"
    client_id: str = "blauweknop-gateway"
    client_key: Path | None = None
    encryption_keys: tuple[Path, ...] = ()
    client_auth_alg: str = "ES256"
    id_token_algs: tuple[str, ...] = ("RS256", "PS256", "ES256")
    require_encrypted_id_token: bool = False
    min_acr: str = EIDAS_SUBSTANTIAL
    acr_mapping: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_ACR_MAPPING))
    sub_id_type: str = BSN_SUB_ID_TYPE
    sub_id_type_claim: str = "sub_id_type"
    bsn_claim: str = "sub"
    scope: str = "openid"
    clock_skew_seconds: float = 60.0
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_body_bytes: int = 256 * 1024
    jwks_refetch_seconds: float = 60.0
    jwks_max_age_seconds: float = 3600.0
    session_seconds: int = 900
    login_seconds: int = 600


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """`[kafka]`: where the audit stream goes, and how the clients reach it.

    `idempotence` is on by default (real Kafka); the embedded Tansu broker of the demo and the
    tests does not support InitProducerId, so they turn it off. Secrets come from files.
    """

    bootstrap_servers: tuple[str, ...]
    idempotence: bool = True
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password_file: Path | None = None
    client_id: str = "blauweknop-gateway"
    request_timeout_seconds: float = 10.0
    # The relay waits this long for the broker to acknowledge one batch before it starts over.
    send_timeout_seconds: float = 30.0
    # Must not exceed the topic's max.message.bytes (deploy/kafka/).
    max_message_bytes: int = 8 * 1024 * 1024
    relay_batch: int = 500

    @property
    def bootstrap(self) -> str:
        return ",".join(self.bootstrap_servers)


# The demo stack's development time-stamping authority (gateway/tsa/server.py) listens at
# sandbox_base_port + 8 (9109 by default), after the organisation sandboxes.
DEV_TSA_PORT_OFFSET = 8


@dataclass(frozen=True, slots=True)
class CheckpointConfig:
    """`[audit]` settings of the Merkle log: who signs checkpoints, who timestamps them, how often.

    Sandbox mode makes the signing key on first use (`state_dir/audit-checkpoint.key`) and uses
    the demo stack's development TSA; production configures every file and the TSA's URL.
    """

    origin: str | None = None  # default: "<gateway OIN>/blauweknop/audit"
    key_file: Path | None = None  # Ed25519 private key, PKCS#8 PEM (the checkpointer only)
    verifier_key: str | None = None  # "<name>+<key id>+<base64 key>" (auditors)
    tsa_url: str | None = None
    tsa_ca_file: Path | None = None  # the TSA's CA certificate(s), PEM
    tsa_cert_file: Path | None = None  # optional: pin the TSA's own certificate
    every_events: int = 1000
    every_seconds: float = 10.0
    group_id: str = "blauweknop-checkpointer"
    metrics_port: int = 9464  # the checkpointer's /metrics (on `host`); 0: any free port


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """`[store]`: where shared state lives. No url: SQLite in `state_dir` (one replica).

    `url = "postgresql://user@host:5432/db?sslmode=verify-full"` serves several replicas; the
    password comes from `password_file`, never from the URL or the environment.
    """

    postgres: PostgresOptions | None = None


def _store(table: Mapping[str, Any]) -> StoreSettings:
    url = _str(table, "url", "")
    if not url:
        return StoreSettings()
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "[store] url must be a postgresql:// URL (or absent for SQLite), not a "
            f"{urlsplit(url).scheme or 'schemeless'} URL"
        )
    if urlsplit(url).password is not None:
        raise ConfigError(
            "[store] url may not contain a password: put it in a file and name that file "
            "as [store] password_file (mounted as a secret)"
        )
    defaults = PostgresOptions(url)
    options = PostgresOptions(
        url=url,
        password_file=Path(_str(table, "password_file")) if "password_file" in table else None,
        pool_min=_int(table, "pool_min", defaults.pool_min),
        pool_max=_int(table, "pool_max", defaults.pool_max),
        connect_timeout=_float(table, "connect_timeout", defaults.connect_timeout),
        acquire_timeout=_float(table, "acquire_timeout", defaults.acquire_timeout),
        purge_seconds=_float(table, "purge_seconds", defaults.purge_seconds),
    )
    if not 1 <= options.pool_min <= options.pool_max:
        raise ConfigError("[store] needs 1 <= pool_min <= pool_max")
    return StoreSettings(options)


@dataclass(frozen=True, slots=True)
class Settings:
    mode: Mode = "sandbox"
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = Path(".blauweknop")
    uitgever: Organisatie = _DEFAULT_UITGEVER
    deadline_seconds: float = 5.0
    max_request_bytes: int = 64 * 1024
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    organisations: tuple[OrganisationConfig, ...] = ()
    signing: SigningConfig | None = None
    pseudonym_key_file: Path | None = None
    # The archivist's X25519 public key (PEM); the private key never comes near the gateway.
    archive_public_key_file: Path | None = None
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    kafka: KafkaConfig | None = None
    # Benchmarks only: bundles go out without audit events. Refused outside sandbox mode.
    audit_disabled_for_benchmark: bool = False
    # How long the outbox keeps records Kafka has acknowledged before the relay deletes them.
    outbox_keep_sent_seconds: float = 3600.0
    # Where issued bundles are sealed, appended and relayed: in the gateway's own process, or in
    # an audit writer process beside it (gateway/audit/writer.py), which a busy gateway needs.
    # The loader's default is "process" in production mode.
    audit_writer: AuditWriterMode = "inline"
    log_level: str = "INFO"
    sandbox_host: str = "127.0.0.1"
    sandbox_base_port: int = 9101
    # The gateway's external base URL, its OAuth issuer; sandbox mode derives it from the request.
    public_url: str | None = None
    # Registered portals and purposes (gateway.authz); default: the repository's policies/.
    policies_dir: Path = DEFAULT_POLICIES_DIR
    demo_portal_port: int = 8088
    authz: AuthzSettings = field(default_factory=lambda: AuthzSettings())
    oidc: OidcSettings = field(default_factory=OidcSettings)
    # The organisation registry, BRP, policies and rate limits (docs/federation.md).
    federation: FederationSettings = field(default_factory=FederationSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    # What one request and one client may cost: header size, time, concurrency (gateway.limits).
    limits: ServerLimits = field(default_factory=ServerLimits)
    # Seconds a stopping gateway gives in-flight requests before it closes (SIGTERM).
    shutdown_grace_seconds: float = 10.0
    # Seconds /readyz answers 503 before the listener closes, so load balancers move away first.
    shutdown_drain_seconds: float = 0.0

    @property
    def digid_port(self) -> int:
        """The stand-in DigiD's port in the demo stack."""
        return self.sandbox_base_port + DIGID_PORT_OFFSET

    documents: DocumentSettings = field(default_factory=DocumentSettings)

    @property
    def store_path(self) -> Path:
        return self.state_dir / "gateway.db"

    def sandbox_port(self, org: str) -> int:
        """The demo sandboxes listen on consecutive ports, in `SANDBOX_ORGS` order."""
        return self.sandbox_base_port + SANDBOX_ORGS.index(org)

    @property
    def dev_tsa_port(self) -> int:
        return self.sandbox_base_port + DEV_TSA_PORT_OFFSET

    @property
    def dev_pki(self) -> DevPki:
        return DevPki(self.state_dir / "pki")


def load_keys(settings: Settings) -> KeyRing:
    """The configured seal keys, or in sandbox mode the development PKI's."""
    if settings.signing is not None:
        s = settings.signing
        if s.pkcs11 is not None:
            return KeyRing.from_pkcs11(s.pkcs11, s.chain, s.retired)
        assert s.key is not None
        return KeyRing.from_files(s.key, s.chain, s.retired)
    if settings.mode != "sandbox":
        raise ConfigError("production mode needs [signing] key and chain")
    return KeyRing.from_dev_pki(settings.dev_pki)


def connector_factory(name: str) -> ConnectorFactory:
    """Find a connector through the `blauweknop.connectors` entry-point group."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return cast(ConnectorFactory, ep.load())
    known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
    raise ConfigError(f"no connector named {name!r}; installed connectors: {known}")


def verification_connectors(settings: Settings) -> tuple[dict[str, Connector], list[str]]:
    """Each configured organisation's connector, set up only to re-check its signatures.

    An auditor holds the organisations' signing certificates, not the gateway's client keys
    or secrets, so none of those are loaded. Returns the connectors by code, and a problem per
    organisation that could not be set up (its sources then show as "not checked").
    """
    connectors: dict[str, Connector] = {}
    problems: list[str] = []
    for org in settings.organisations:
        try:
            connector = connector_factory(org.connector)(replace(org.settings, verify_only=True))
        except (BlauweKnopError, OSError, ValueError) as exc:
            problems.append(f"cannot check {org.connector}'s signatures: {exc}")
            continue
        connectors[connector.organisatie.code] = connector
    return connectors, problems


def connector_defaults(name: str) -> tuple[Organisatie, tuple[Contactoptie, ...]]:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            module = importlib.import_module(ep.module)
            return module.ORGANISATIE, module.CONTACTOPTIES
    raise ConfigError(f"no connector named {name!r}")


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
    for key, value in (env or {}).items():
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG":
            _set_path(data, key.removeprefix(ENV_PREFIX).lower().split("__"), value)
    return settings_from_mapping(data)


def settings_from_mapping(data: Mapping[str, Any]) -> Settings:
    mode = _str(data, "mode", "sandbox")
    if mode not in ("sandbox", "production"):
        raise ConfigError(f"mode must be 'sandbox' or 'production', not {mode!r}")
    state_dir = Path(_str(data, "state_dir", ".blauweknop"))
    uitgever_data = _table(data, "uitgever")
    uitgever = Organisatie(
        oin=_str(uitgever_data, "oin", _DEFAULT_UITGEVER.oin),
        code=_str(uitgever_data, "code", _DEFAULT_UITGEVER.code),
        naam=_str(uitgever_data, "naam", _DEFAULT_UITGEVER.naam),
    )
    breaker = _table(data, "breaker")
    audit = _table(data, "audit")
    signing_data = _table(data, "signing")
    signing = _signing(signing_data) if signing_data else None
    documents = _table(data, "documents")
    sandbox_host = _str(data, "sandbox_host", "127.0.0.1")
    sandbox_base_port = _int(data, "sandbox_base_port", 9101)
    settings = Settings(
        mode=cast(Mode, mode),
        host=_str(data, "host", "127.0.0.1"),
        port=_int(data, "port", 8080),
        state_dir=state_dir,
        uitgever=uitgever,
        deadline_seconds=_float(data, "deadline_seconds", 5.0),
        max_request_bytes=_int(data, "max_request_bytes", 64 * 1024),
        breaker=BreakerSettings(
            failure_threshold=_int(breaker, "failures", 5),
            reset_after=_float(breaker, "reset_seconds", 30.0),
        ),
        organisations=_organisations(
            _table(data, "organisations"),
            mode,
            DevPki(state_dir / "pki"),
            sandbox_host,
            sandbox_base_port,
        ),
        signing=signing,
        pseudonym_key_file=(
            Path(_str(audit, "pseudonym_key_file")) if "pseudonym_key_file" in audit else None
        ),
        archive_public_key_file=(
            Path(_str(audit, "archive_public_key_file"))
            if "archive_public_key_file" in audit
            else None
        ),
        kafka=kafka_config(_table(data, "kafka")),
        checkpoints=checkpoint_config(audit),
        audit_disabled_for_benchmark=_bool(audit, "disabled_for_benchmark", False),
        outbox_keep_sent_seconds=_non_negative(audit, "outbox_keep_sent_seconds", 3600.0),
        audit_writer=_audit_writer(audit, mode),
        log_level=_str(data, "log_level", "INFO"),
        sandbox_host=sandbox_host,
        sandbox_base_port=sandbox_base_port,
        public_url=_str(data, "public_url").rstrip("/") if "public_url" in data else None,
        policies_dir=Path(_str(data, "policies_dir", str(DEFAULT_POLICIES_DIR))),
        demo_portal_port=_int(data, "demo_portal_port", 8088),
        authz=_authz(_table(data, "authz")),
        oidc=_oidc(_table(data, "oidc"), mode, sandbox_host, sandbox_base_port),
        federation=parse_federation(_table(data, "federation"), mode),
        documents=DocumentSettings(
            tsa_url=str(documents["tsa_url"]) if documents.get("tsa_url") else None,
            trust_roots=tuple(Path(p) for p in documents.get("trust_roots", ())),
            crl_files=tuple(Path(p) for p in documents.get("crl_files", ())),
            fetch_revocation=_bool(documents, "fetch_revocation", False),
            workers=_int(documents, "workers", 2),
            public_url=str(documents["public_url"]) if documents.get("public_url") else None,
            max_verify_bytes=_int(documents, "max_verify_bytes", 20 * 1024 * 1024),
            max_xml_depth=_int(documents, "max_xml_depth", 32),
            max_pdf_pages=_int(documents, "max_pdf_pages", 100),
            niceness=_int(documents, "niceness", 10),
            warm_up=_bool(documents, "warm_up", False) if "warm_up" in documents else None,
        ),
        store=_store(_table(data, "store")),
        shutdown_grace_seconds=_float(data, "shutdown_grace_seconds", 10.0),
        shutdown_drain_seconds=_float(data, "shutdown_drain_seconds", 0.0),
        limits=_limits(_table(data, "limits"), _float(data, "deadline_seconds", 5.0)),
    )
    if settings.documents.max_xml_depth < 1 or settings.documents.max_pdf_pages < 1:
        raise ConfigError("[documents] max_xml_depth and max_pdf_pages must be at least 1")
    if any(o.settings.max_xml_depth < 1 for o in settings.organisations):
        raise ConfigError("[organisations.<name>] max_xml_depth must be at least 1")
    if mode == "production":
        _check_production(settings)
    return settings


def _limits(table: Mapping[str, Any], deadline_seconds: float) -> ServerLimits:
    """`[limits]`; each must be positive, and a request must outlast the fan-out deadline."""
    d = ServerLimits()
    limits = ServerLimits(
        max_line_bytes=_int(table, "max_line_bytes", d.max_line_bytes),
        max_field_bytes=_int(table, "max_field_bytes", d.max_field_bytes),
        max_headers=_int(table, "max_headers", d.max_headers),
        header_seconds=_float(table, "header_seconds", d.header_seconds),
        body_seconds=_float(table, "body_seconds", d.body_seconds),
        request_seconds=_float(table, "request_seconds", d.request_seconds),
        idle_seconds=_float(table, "idle_seconds", d.idle_seconds),
        send_seconds=_float(table, "send_seconds", d.send_seconds),
        concurrent_per_client=_int(table, "concurrent_per_client", d.concurrent_per_client),
    )
    for f in fields(limits):
        if getattr(limits, f.name) <= 0:
            raise ConfigError(f"[limits] {f.name} must be positive")
    if limits.max_line_bytes < 1024 or limits.max_field_bytes < 1024:
        raise ConfigError(
            "[limits] max_line_bytes and max_field_bytes must be at least 1024: DPoP proofs "
            "and session cookies are headers of several hundred bytes"
        )
    if limits.request_seconds <= deadline_seconds:
        raise ConfigError(
            f"[limits] request_seconds ({limits.request_seconds:g}) must be longer than "
            f"deadline_seconds ({deadline_seconds:g}), or no bundle request could finish"
        )
    return limits


def _signing(data: Mapping[str, Any]) -> SigningConfig:
    pkcs11 = None
    if "pkcs11_module" in data:
        pkcs11 = Pkcs11Config(
            module=Path(_str(data, "pkcs11_module")),
            token_label=_str(data, "pkcs11_token"),
            key_label=_str(data, "pkcs11_key_label"),
            pin_file=Path(_str(data, "pkcs11_pin_file")),
        )
    elif "key" not in data:
        raise ConfigError(
            "[signing] needs key (a PEM file) or pkcs11_module, pkcs11_token, pkcs11_key_label "
            "and pkcs11_pin_file (an HSM), and chain"
        )
    return SigningConfig(
        key=Path(_str(data, "key")) if "key" in data else None,
        chain=Path(_str(data, "chain")),
        retired=tuple(Path(p) for p in data.get("retired", ())),
        pkcs11=pkcs11,
    )


def kafka_config(table: Mapping[str, Any]) -> KafkaConfig | None:
    """`[kafka]`, or None when no bootstrap servers are configured (no relay runs)."""
    servers = table.get("bootstrap_servers")
    if not servers:
        return None
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    if not isinstance(servers, list) or not all(isinstance(s, str) and s for s in servers):
        raise ConfigError('[kafka] bootstrap_servers must be "host:port" or a list of them')
    protocol = _str(table, "security_protocol", "PLAINTEXT").upper()
    if protocol not in _SECURITY_PROTOCOLS:
        raise ConfigError(f"[kafka] security_protocol must be one of {list(_SECURITY_PROTOCOLS)}")
    mechanism = table.get("sasl_mechanism")
    if mechanism is not None and str(mechanism).upper() not in _SASL_MECHANISMS:
        raise ConfigError(f"[kafka] sasl_mechanism must be one of {list(_SASL_MECHANISMS)}")
    if protocol.startswith("SASL_") and not (
        mechanism and "sasl_username" in table and "sasl_password_file" in table
    ):
        raise ConfigError(
            f"[kafka] security_protocol {protocol} needs sasl_mechanism, sasl_username and "
            "sasl_password_file (a file holding the password)"
        )

    def path(key: str) -> Path | None:
        value = table.get(key)
        return Path(str(value)) if value else None

    config = KafkaConfig(
        bootstrap_servers=tuple(servers),
        idempotence=_bool(table, "idempotence", True),
        security_protocol=cast(SecurityProtocol, protocol),
        ca_file=path("ca_file"),
        cert_file=path("cert_file"),
        key_file=path("key_file"),
        sasl_mechanism=cast(SaslMechanism, str(mechanism).upper()) if mechanism else None,
        sasl_username=str(table["sasl_username"]) if "sasl_username" in table else None,
        sasl_password_file=path("sasl_password_file"),
        client_id=_str(table, "client_id", "blauweknop-gateway"),
        request_timeout_seconds=_float(table, "request_timeout_seconds", 10.0),
        send_timeout_seconds=_float(table, "send_timeout_seconds", 30.0),
        max_message_bytes=_int(table, "max_message_bytes", 8 * 1024 * 1024),
        relay_batch=_int(table, "relay_batch", 500),
    )
    if (config.cert_file is None) != (config.key_file is None):
        raise ConfigError("[kafka] cert_file and key_file go together (the client certificate)")
    if not 0 < config.request_timeout_seconds <= config.send_timeout_seconds:
        raise ConfigError(
            "[kafka] request_timeout_seconds must be positive and at most send_timeout_seconds"
        )
    if not 1 <= config.relay_batch <= 10_000:
        raise ConfigError("[kafka] relay_batch must be between 1 and 10000")
    if config.max_message_bytes < 64 * 1024:
        raise ConfigError("[kafka] max_message_bytes must be at least 65536")
    return config


def checkpoint_config(audit: Mapping[str, Any]) -> CheckpointConfig:
    """The Merkle-log settings of `[audit]`: checkpoint_*, tsa_*."""

    def path(key: str) -> Path | None:
        value = audit.get(key)
        return Path(str(value)) if value else None

    config = CheckpointConfig(
        origin=str(audit["origin"]) if audit.get("origin") else None,
        key_file=path("checkpoint_key_file"),
        verifier_key=(
            str(audit["checkpoint_verifier_key"]) if audit.get("checkpoint_verifier_key") else None
        ),
        tsa_url=str(audit["tsa_url"]) if audit.get("tsa_url") else None,
        tsa_ca_file=path("tsa_ca_file"),
        tsa_cert_file=path("tsa_cert_file"),
        every_events=_int(audit, "checkpoint_every_events", 1000),
        every_seconds=_float(audit, "checkpoint_every_seconds", 10.0),
        group_id=_str(audit, "checkpointer_group", "blauweknop-checkpointer"),
        metrics_port=_int(audit, "checkpointer_metrics_port", 9464),
    )
    if not 0 <= config.metrics_port <= 65535:
        raise ConfigError("[audit] checkpointer_metrics_port must be between 0 and 65535")
    if not 1 <= config.every_events <= 100_000:
        raise ConfigError("[audit] checkpoint_every_events must be between 1 and 100000")
    if not 0.1 <= config.every_seconds <= 3600:
        raise ConfigError("[audit] checkpoint_every_seconds must be between 0.1 and 3600")
    return config


def sandbox_organisation_table(pki: DevPki, urls: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """The configuration of the four sandbox organisations at the given base URLs."""
    return {
        "duo": {"url": urls["duo"], "trust_cert": str(pki.identity("duo-sign").cert)},
        "uwv": {
            "url": urls["uwv"],
            "trust_cert": str(pki.identity("uwv-sign").cert),
            "client_cert": str(pki.identity("gateway-client").cert),
            "client_key": str(pki.identity("gateway-client").key),
            "ca_cert": str(pki.root_cert),
        },
        "cak": {
            "url": urls["cak"],
            "trust_cert": str(pki.identity("cak-sign").cert),
            "options": {
                "token_url": urls["cak"] + "/oauth2/token",
                "client_id": "blauweknop-gateway",
                "client_secret_file": str(pki.secret("cak-client-secret")),
            },
        },
        "gemeente": {
            "url": urls["gemeente"],
            "trust_cert": str(pki.identity("gemeente-sign").cert),
            "options": {"gemeentecode": "0363"},
        },
    }


def _organisations(
    table: Mapping[str, Any], mode: str, pki: DevPki, sandbox_host: str, base_port: int
) -> tuple[OrganisationConfig, ...]:
    merged: dict[str, dict[str, Any]] = {}
    if mode == "sandbox":
        urls = {
            org: f"{'https' if org == 'uwv' else 'http'}://{sandbox_host}:{base_port + i}"
            for i, org in enumerate(SANDBOX_ORGS)
        }
        merged = sandbox_organisation_table(pki, urls)
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"[organisations.{name}] must be a table")
        merged[name] = {**merged.get(name, {}), **entry}
    return tuple(_organisation(name, entry) for name, entry in merged.items())


def _organisation(name: str, entry: Mapping[str, Any]) -> OrganisationConfig:
    where = f"organisations.{name}"
    connector = _str(entry, "connector", name)
    default_org, _ = connector_defaults(connector)
    org = Organisatie(
        oin=_str(entry, "oin", default_org.oin),
        code=_str(entry, "code", default_org.code),
        naam=_str(entry, "naam", default_org.naam),
    )

    def path(key: str) -> Path | None:
        value = entry.get(key)
        return Path(value) if value else None

    trust = path("trust_cert")
    if trust is None:
        raise ConfigError(f"[{where}] needs trust_cert: the organisation's signing certificate")
    options = entry.get("options", {})
    if not isinstance(options, Mapping):
        raise ConfigError(f"[{where}.options] must be a table")
    return OrganisationConfig(
        connector=connector,
        settings=ConnectorSettings(
            organisatie=org,
            base_url=_str(entry, "url").rstrip("/"),
            trust_cert=trust,
            connect_timeout=_float(entry, "connect_timeout", 2.0),
            read_timeout=_float(entry, "read_timeout", 5.0),
            max_body_bytes=_int(entry, "max_body_bytes", 8 * 1024 * 1024),
            max_xml_depth=_int(entry, "max_xml_depth", DEFAULT_MAX_XML_DEPTH),
            client_cert=path("client_cert"),
            client_key=path("client_key"),
            ca_cert=path("ca_cert"),
            options={str(k): str(v) for k, v in options.items()},
        ),
    )


def _check_production(settings: Settings) -> None:
    if settings.signing is None:
        raise ConfigError(
            "production mode needs [signing] key and chain: the seal key and its certificate chain"
        )
    if settings.pseudonym_key_file is None:
        raise ConfigError(
            "production mode needs [audit] pseudonym_key_file: the secret that turns a BSN "
            "into the pseudonym in audit events (at least 32 bytes)"
        )
    if settings.public_url is None or urlsplit(settings.public_url).scheme != "https":
        raise ConfigError(
            "production mode needs public_url: the gateway's external https base URL, which is "
            "its OAuth issuer and the URL that DPoP proofs name"
        )
    if not settings.organisations:
        raise ConfigError("production mode needs at least one [organisations.<name>] table")
    for org in settings.organisations:
        if urlsplit(org.settings.base_url).scheme != "https":
            raise ConfigError(
                f"[organisations.{org.connector}] url must use https in production mode"
            )
    _check_oidc_production(settings.oidc)
    if settings.documents.tsa_url is None or not settings.documents.trust_roots:
        raise ConfigError(
            "production mode needs [documents] tsa_url (an RFC 3161 time-stamping authority) "
            "and trust_roots (the CA certificates of the seal and the TSA) for the certified PDF"
        )
    if settings.archive_public_key_file is None:
        raise ConfigError(
            "production mode needs [audit] archive_public_key_file: the archivist's X25519 "
            "public key (PEM) to which every issued document is archived encrypted"
        )
    if settings.audit_disabled_for_benchmark:
        raise ConfigError(
            "[audit] disabled_for_benchmark exists only for sandbox benchmarks; "
            "production never hands out data without audit evidence"
        )
    if settings.kafka is None:
        raise ConfigError(
            "production mode needs [kafka] bootstrap_servers: the audit stream's Kafka cluster "
            "(see deploy/kafka/)"
        )
    if settings.kafka.security_protocol not in ("SSL", "SASL_SSL"):
        raise ConfigError(
            "[kafka] security_protocol must be SSL or SASL_SSL in production mode: "
            "audit events must not cross the network in clear"
        )


def _set_path(data: dict[str, Any], keys: list[str], value: str) -> None:
    for key in keys[:-1]:
        data = data.setdefault(key, {})
        if not isinstance(data, dict):
            raise ConfigError(f"environment variable sets {key!r} both as value and as table")
    data[keys[-1]] = value


def _audit_writer(audit: Mapping[str, Any], mode: str) -> AuditWriterMode:
    # Production serves many citizens at once; a sandbox or the demo is simpler in one process.
    writer = _str(audit, "writer", "process" if mode == "production" else "inline")
    if writer not in ("inline", "process"):
        raise ConfigError(f'[audit] writer must be "inline" or "process", not {writer!r}')
    return cast(AuditWriterMode, writer)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key} must be a table")
    return value


def _str(data: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if value is None:
        raise ConfigError(f"missing setting {key!r}")
    return str(value)


def _int(data: Mapping[str, Any], key: str, default: int) -> int:
    try:
        return int(data.get(key, default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {key!r} must be a whole number") from exc


def _bool(data: Mapping[str, Any], key: str, default: bool) -> bool:
    value = data.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ConfigError(f"setting {key!r} must be true or false")


def _float(data: Mapping[str, Any], key: str, default: float) -> float:
    try:
        return float(data.get(key, default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {key!r} must be a number") from exc


def _non_negative(data: Mapping[str, Any], key: str, default: float) -> float:
    value = _float(data, key, default)
    if not 0 <= value < float("inf"):
        raise ConfigError(f"setting {key!r} must be a number of seconds, 0 or more")
    return value


_WEAK_ALGS = frozenset({"none", "HS256", "HS384", "HS512"})


def _oidc(table: Mapping[str, Any], mode: str, sandbox_host: str, base_port: int) -> OidcSettings:
    """`[oidc]`; sandbox mode defaults the issuer to the demo stack's stand-in DigiD."""
    default_issuer = f"http://{sandbox_host}:{base_port + DIGID_PORT_OFFSET}"
    # Production has no default; _check_production names what is missing, in its turn.
    issuer = _str(table, "issuer", default_issuer if mode == "sandbox" else "").rstrip("/")
    mapping = table.get("acr_mapping", DEFAULT_ACR_MAPPING)
    if not isinstance(mapping, Mapping) or not mapping:
        raise ConfigError("[oidc] acr_mapping must be a table of provider acr -> eIDAS level URI")
    for value, eidas in mapping.items():
        if eidas not in EIDAS_LEVELS:
            raise ConfigError(
                f"[oidc] acr_mapping maps {value!r} to {eidas!r}; map to one of {EIDAS_LEVELS}"
            )
    min_acr = _str(table, "min_acr", EIDAS_SUBSTANTIAL)
    if min_acr not in EIDAS_LEVELS:
        raise ConfigError(f"[oidc] min_acr must be one of {EIDAS_LEVELS}, not {min_acr!r}")
    algs = tuple(str(a) for a in table.get("id_token_algs", ("RS256", "PS256", "ES256")))
    if weak := sorted(_WEAK_ALGS.intersection(algs)):
        raise ConfigError(
            f"[oidc] id_token_algs may not contain {weak}: 'none' and shared-secret HMAC "
            "algorithms let anyone who knows the provider's public key forge ID tokens"
        )
    enc = table.get("encryption_keys", ())
    if isinstance(enc, str):
        enc = [enc]
    settings = OidcSettings(
        issuer=issuer,
        client_id=_str(table, "client_id", "blauweknop-gateway"),
        client_key=Path(_str(table, "client_key")) if "client_key" in table else None,
        encryption_keys=tuple(Path(str(p)) for p in enc),
        client_auth_alg=_str(table, "client_auth_alg", "ES256"),
        id_token_algs=algs,
        require_encrypted_id_token=_bool(table, "require_encrypted_id_token", False),
        min_acr=min_acr,
        acr_mapping={str(k): str(v) for k, v in mapping.items()},
        sub_id_type=_str(table, "sub_id_type", BSN_SUB_ID_TYPE),
        sub_id_type_claim=_str(table, "sub_id_type_claim", "sub_id_type"),
        bsn_claim=_str(table, "bsn_claim", "sub"),
        scope=_str(table, "scope", "openid"),
        clock_skew_seconds=_float(table, "clock_skew_seconds", 60.0),
        connect_timeout=_float(table, "connect_timeout", 2.0),
        read_timeout=_float(table, "read_timeout", 5.0),
        max_body_bytes=_int(table, "max_body_bytes", 256 * 1024),
        jwks_refetch_seconds=_float(table, "jwks_refetch_seconds", 60.0),
        jwks_max_age_seconds=_float(table, "jwks_max_age_seconds", 3600.0),
        session_seconds=_int(table, "session_seconds", 900),
        login_seconds=_int(table, "login_seconds", 600),
    )
    if "openid" not in settings.scope.split():
        raise ConfigError("[oidc] scope must contain 'openid'")
    if settings.require_encrypted_id_token and not settings.encryption_keys and mode != "sandbox":
        raise ConfigError(
            "[oidc] require_encrypted_id_token needs encryption_keys: PEM private keys"
        )
    return settings


def _check_oidc_production(oidc: OidcSettings) -> None:
    if urlsplit(oidc.issuer).scheme != "https":
        raise ConfigError(
            "production mode needs [oidc] issuer: the identity provider's https URL "
            "(a DigiD OIDC broker); the stand-in DigiD exists only in sandbox mode"
        )
    if oidc.client_key is None:
        raise ConfigError(
            "production mode needs [oidc] client_key: the private key (PEM) whose public half "
            "is registered with the identity provider for private_key_jwt"
        )
