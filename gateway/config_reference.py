"""The configuration reference (docs/configuration.md), generated from the loader itself.

`reference()` runs `settings_from_mapping` on a recording mapping: every key the loader reads,
and the default it passes, is recorded. So the key names and defaults come from the code and
cannot drift; only the one-line descriptions below are written by hand, and a test fails when
the loader reads a key that has no description here, or a description names a key it no longer
reads. Regenerate with `blauweknop config reference -o docs/configuration.md`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from gateway import config as config_module
from gateway.config import ENV_PREFIX, settings_from_mapping

ORG = "<name>"

DESCRIPTIONS: dict[str, str] = {
    "mode": "`sandbox` (development PKI, local sandboxes, test routes) or `production` "
    "(refuses sandbox-only settings; requires the files and https URLs below)",
    "host": "address to listen on; `0.0.0.0` in a container",
    "port": "port to listen on (0: any free port, printed at start)",
    "state_dir": "directory for the development PKI and the SQLite store; in a container a "
    "writable volume",
    "deadline_seconds": "one deadline for the whole fan-out to the organisations",
    "max_request_bytes": "largest request body accepted",
    "log_level": "`DEBUG`, `INFO`, `WARNING` or `ERROR`; logs are JSON lines on stderr",
    "sandbox_host": "where the sandboxes and the stand-in DigiD listen (demo stack)",
    "sandbox_base_port": "first sandbox port; DUO, UWV, CAK, gemeente follow, DigiD at +10",
    "public_url": "the gateway's external https base URL: its OAuth issuer and the URL DPoP "
    "proofs name; required in production",
    "policies_dir": "registered portals, purposes and data categories (default: the "
    "repository's `policies/`)",
    "demo_portal_port": "port of the demo portal (`blauweknop up` only)",
    "shutdown_grace_seconds": "on SIGTERM, how long in-flight requests get to finish before "
    "the store is flushed and closed (at least deadline_seconds + 1 is used)",
    "shutdown_drain_seconds": "on SIGTERM, how long /readyz answers 503 before the listener "
    "closes, so load balancers stop sending first (Kubernetes: 5)",
    "limits.max_line_bytes": "longest request line (method, path, query) accepted; longer: 431",
    "limits.max_field_bytes": "longest single header line accepted (at least 1024; DPoP proofs "
    "and cookies are several hundred bytes); longer: 431",
    "limits.max_headers": "most header lines in one request; more: 400",
    "limits.header_seconds": "from a request's first byte, seconds until its headers must be "
    "complete (slow-loris); later: 408 and the connection is closed",
    "limits.body_seconds": "seconds, once the headers are in, until the request body must be "
    "complete; later: 408 and the connection is closed",
    "limits.request_seconds": "seconds from a request's headers until its answer is ready, "
    "reading the body included; later: 503. Must exceed deadline_seconds",
    "limits.idle_seconds": "an open connection without a request is closed after this many "
    "seconds; keep it above a load balancer's idle timeout",
    "limits.send_seconds": "a connection whose client stops taking our answer (the send "
    "buffer stays full) this many seconds is reset",
    "limits.concurrent_per_client": "requests one peer address may have in progress at once; "
    "more: 429. Behind a proxy every client shares its address: raise it there",
    "uitgever.oin": "the OIN of the organisation that runs the gateway and seals bundles",
    "uitgever.code": "its short code in bundles",
    "uitgever.naam": "its name in bundles",
    "breaker.failures": "consecutive failures of an organisation that open its circuit breaker",
    "breaker.reset_seconds": "how long an open breaker waits before one trial call",
    "audit.pseudonym_key_file": "secret file (≥ 32 bytes) that turns a BSN into the keyed "
    "pseudonym in audit events; required in production; mount as a secret",
    "signing.key": "the seal's private key (PEM file); required in production",
    "signing.chain": "the seal's certificate chain (PEM file), leaf first",
    "signing.retired": "list of retired certificate chains, still published so older bundles "
    "verify",
    "audit.archive_public_key_file": "the archivist's X25519 public key (PEM): every issued "
    "document is archived HPKE-encrypted to it; required in production",
    "audit.disabled_for_benchmark": "sandbox benchmarks only: no audit records (refused in "
    "production)",
    "audit.writer": "where issued bundles are sealed, appended and relayed: `process`, an "
    "audit writer process beside the gateway, which serves more on a busy gateway; `inline` "
    "(the default in sandbox mode), the gateway process itself (docs/audit.md)",
    "audit.outbox_keep_sent_seconds": "how long the outbox keeps events Kafka acknowledged "
    "(a window to replay them should the cluster lose them) before the relay deletes them",
    "audit.origin": "the Merkle log's origin line (default: `<uitgever OIN>/blauweknop/audit`)",
    "audit.checkpoint_key_file": "Ed25519 private key (PEM) that signs checkpoints "
    "(checkpointer only; sandbox: made on first use)",
    "audit.checkpoint_verifier_key": "the checkpoint note verifier key auditors check against",
    "audit.checkpoint_every_events": "a checkpoint after at most this many new events",
    "audit.checkpoint_every_seconds": "a checkpoint after at most this many seconds",
    "audit.checkpointer_group": "Kafka consumer group that keeps one checkpointer active",
    "audit.checkpointer_metrics_port": "port of the checkpointer's `/metrics` and `/healthz` "
    "(on `host`; 0: any free port, printed at start)",
    "audit.tsa_url": "RFC 3161 time-stamping authority for checkpoints",
    "audit.tsa_ca_file": "CA certificate(s) (PEM) the checkpoint TSA must chain to",
    "audit.tsa_cert_file": "optional: pin the checkpoint TSA's own certificate (PEM)",
    "documents.tsa_url": "RFC 3161 time-stamping authority for the PDF seal; required in "
    "production",
    "documents.trust_roots": "root certificates (PEM) of the seal and the TSA; required in "
    "production",
    "documents.crl_files": "revocation lists (DER/PEM) embedded in the PDF as they are",
    "documents.fetch_revocation": "let pyHanko fetch the CRLs/OCSP answers the certificates "
    "point at",
    "documents.workers": "processes that make and verify PDF and XML documents",
    "documents.niceness": "CPU priority of those processes below the event loop",
    "documents.public_url": "the gateway's address printed in the PDF (its `/verifieer` page)",
    "documents.max_verify_bytes": "largest file accepted for verification (`POST /v1/verify`, "
    "`/verifieer`, `blauweknop verify`)",
    "documents.max_xml_depth": "deepest element nesting in an XML file (or PDF attachment) "
    "handed in for verification; DTDs and entities are always refused",
    "documents.max_pdf_pages": "most pages in a PDF handed in for verification",
    "documents.warm_up": "start the document processes at start-up (default: in production)",
    "federation.admin_jwks": "the federation administrators' public keys (JWKS file); without "
    "it in production nobody can approve an organisation",
    "federation.brp_url": "the population register (Haal Centraal BRP) that names a citizen's "
    "municipality",
    "federation.brp_timeout": "seconds to wait for the BRP",
    "federation.connect_timeout": "seconds to connect to an organisation that joined through "
    "the registry",
    "federation.read_timeout": "seconds to wait for its answer; later: `time-out` in the bundle",
    "federation.max_body_bytes": "largest answer accepted from it; larger: `ongeldig`",
    "federation.max_xml_depth": "deepest XML nesting accepted from it (XML connectors)",
    "federation.brp_max_body_bytes": "largest BRP answer accepted; larger, or later than "
    "brp_timeout: no municipality is asked",
    "federation.connectors": "connector types registered organisations may use",
    "federation.poll_seconds": "how often a running gateway looks for registry changes",
    "federation.mtls_port": "port of the registry's mTLS listener, where organisations send "
    "requests authenticated by their client certificate (unset: off; 0: any free port)",
    "federation.mtls_cert": "the mTLS listener's server certificate chain (PEM); required with "
    "mtls_port in production (sandbox: development PKI)",
    "federation.mtls_key": "the mTLS listener's private key (PEM)",
    "federation.mtls_client_ca": "CA certificates (PEM) client certificates must chain to, e.g. "
    "the PKIoverheid roots (sandbox: the development root)",
    "federation.rate_citizen_per_minute": "bundle requests per citizen per minute",
    "federation.rate_portal_per_minute": "bundle requests per portal per minute",
    "kafka.bootstrap_servers": "the audit stream's Kafka brokers (`host:port`, comma "
    "separated); required in production",
    "kafka.security_protocol": "`SSL` or `SASL_SSL` in production",
    "kafka.ca_file": "CA certificate (PEM) of the brokers",
    "kafka.cert_file": "client certificate (PEM) for two-sided TLS",
    "kafka.key_file": "its private key (PEM); mount as a secret",
    "kafka.sasl_mechanism": "`PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`",
    "kafka.sasl_username": "SASL user name",
    "kafka.sasl_password_file": "file holding the SASL password (mounted secret)",
    "kafka.client_id": "client id the relay gives the brokers",
    "kafka.idempotence": "idempotent producer (real Kafka: on; the embedded Tansu broker: off)",
    "kafka.request_timeout_seconds": "seconds one broker request may take",
    "kafka.send_timeout_seconds": "seconds the relay waits for a batch to be acknowledged",
    "kafka.max_message_bytes": "largest event the relay sends; within the topic's "
    "max.message.bytes",
    "kafka.relay_batch": "events per relay batch",
    "signing.pkcs11_module": "instead of `key`: the PKCS#11 module of an HSM, with "
    "`pkcs11_token`, `pkcs11_key_label` and `pkcs11_pin_file`",
    "authz.request_uri_seconds": "lifetime of a pushed authorization request (≤ 60)",
    "authz.code_seconds": "lifetime of an authorization code (≤ 60)",
    "authz.access_token_seconds": "lifetime of a DPoP-bound access token (≤ 300)",
    "store.url": "absent: SQLite in state_dir (one replica). `postgresql://user@host:5432/db"
    "?sslmode=verify-full`: the shared store for several replicas; no password in the URL",
    "store.password_file": "file holding the PostgreSQL password (mounted secret)",
    "store.pool_min": "connections each replica keeps open",
    "store.pool_max": "most connections one replica opens",
    "store.connect_timeout": "seconds to connect before the store counts as unavailable",
    "store.acquire_timeout": "seconds a request waits for a pooled connection before 503",
    "store.purge_seconds": "how often expired codes, sessions and replay entries are deleted",
    "oidc.issuer": "the DigiD OIDC broker's https issuer (sandbox: the stand-in DigiD)",
    "oidc.client_id": "the gateway's client id at the broker",
    "oidc.client_key": "private key (PEM file) for private_key_jwt; required in production",
    "oidc.encryption_keys": "private keys (PEM files) ID tokens may be encrypted to, newest first",
    "oidc.client_auth_alg": "algorithm of the client assertions",
    "oidc.id_token_algs": "ID token signature algorithms accepted (never `none` or HMAC)",
    "oidc.require_encrypted_id_token": "refuse ID tokens that are not encrypted (JWE)",
    "oidc.min_acr": "lowest eIDAS level accepted (default: substantial)",
    "oidc.acr_mapping": "table: the broker's acr values to eIDAS level URIs",
    "oidc.sub_id_type": "the sub_id_type value that marks a BSN",
    "oidc.sub_id_type_claim": "claim that carries the sub_id_type",
    "oidc.bsn_claim": "claim that carries the BSN",
    "oidc.scope": "scopes requested; must contain `openid`",
    "oidc.clock_skew_seconds": "tolerated clock difference with the broker",
    "oidc.connect_timeout": "seconds to connect to the broker",
    "oidc.read_timeout": "seconds to wait for the broker's answer",
    "oidc.max_body_bytes": "largest answer accepted from the broker",
    "oidc.jwks_refetch_seconds": "least time between two fetches of the broker's keys",
    "oidc.jwks_max_age_seconds": "the broker's keys are fetched anew when older than this",
    "oidc.session_seconds": "how long a citizen's login session lasts",
    "oidc.login_seconds": "how long a started login may take",
    f"organisations.{ORG}.connector": "the connector (entry point `blauweknop.connectors`); "
    "default: the table's name",
    f"organisations.{ORG}.oin": "the organisation's OIN (default: the connector's)",
    f"organisations.{ORG}.code": "its code in bundles (default: the connector's)",
    f"organisations.{ORG}.naam": "its name in bundles (default: the connector's)",
    f"organisations.{ORG}.url": "its base URL; https in production",
    f"organisations.{ORG}.trust_cert": "the organisation's signing certificate (PEM): its "
    "answers must verify against it",
    f"organisations.{ORG}.connect_timeout": "seconds to connect",
    f"organisations.{ORG}.read_timeout": "seconds to wait for the answer",
    f"organisations.{ORG}.max_body_bytes": "largest answer accepted; larger: the source is "
    "`ongeldig` in the bundle",
    f"organisations.{ORG}.max_xml_depth": "deepest element nesting accepted in an XML answer "
    "(DUO, UWV); DTDs and entities are always refused",
    f"organisations.{ORG}.client_cert": "client certificate (PEM) for two-sided TLS",
    f"organisations.{ORG}.client_key": "its private key (PEM); mount as a secret",
    f"organisations.{ORG}.ca_cert": "CA certificate (PEM) the organisation's TLS server "
    "certificate must chain to",
    f"organisations.{ORG}.options": "table of connector-specific options (e.g. CAK: "
    "`token_url`, `client_id`, `client_secret_file`; gemeente: `gemeentecode`)",
}

# What a production configuration must give on top of the defaults (the loader refuses without).
_PROBE: dict[str, Any] = {
    "mode": "production",
    "public_url": "https://gateway.example",
    "audit": {
        "pseudonym_key_file": "/run/secrets/pseudonym-key",
        "archive_public_key_file": "/etc/blauweknop/archivist.pub",
    },
    "documents": {"tsa_url": "https://tsa.example", "trust_roots": ["/etc/blauweknop/root.pem"]},
    "kafka": {"bootstrap_servers": "kafka:9093", "security_protocol": "SSL"},
    "signing": {"key": "/run/secrets/seal.key", "chain": "/run/secrets/seal.pem"},
    "store": {"url": "postgresql://gateway@db/blauweknop", "password_file": "/run/secrets/pw"},
    "oidc": {"issuer": "https://digid-broker.example", "client_key": "/run/secrets/oidc.key"},
    "organisations": {
        ORG: {"connector": "duo", "url": "https://duo.example", "trust_cert": "/duo.pem"}
    },
}


class _Recorder(Mapping[str, Any]):
    """A mapping that remembers which keys the loader asked for, and with what default."""

    def __init__(self, path: tuple[str, ...], probe: Mapping[str, Any], seen: dict[str, Any]):
        self._path = path
        self._probe = probe
        self._seen = seen

    def _name(self, key: str) -> str:
        return ".".join((*self._path, key))

    def get(self, key: str, default: Any = None) -> Any:
        value = self._probe.get(key)
        if key == "options":  # free-form, per connector
            self._seen.setdefault(self._name(key), None)
            return value or default
        is_table = isinstance(default, Mapping) and not default
        if is_table or isinstance(value, Mapping):
            return _Recorder((*self._path, key), value or {}, self._seen)
        self._seen.setdefault(self._name(key), default)
        return default if value is None else value

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._seen.setdefault(self._name(key), None)
        return key in self._probe

    def __iter__(self) -> Iterator[str]:
        return iter(self._probe)

    def __len__(self) -> int:
        return len(self._probe)


def read_keys() -> dict[str, Any]:
    """Every setting the loader reads, with the default the code passes (None: no default)."""
    seen: dict[str, Any] = {}
    settings_from_mapping(_Recorder((), _PROBE, seen))
    # The loader merges each organisation's table with the sandbox defaults into a plain dict
    # before reading it, so read one organisation table directly as well.
    org_probe = _PROBE["organisations"][ORG]
    config_module._organisation(ORG, _Recorder(("organisations", ORG), org_probe, seen))
    return seen


def _default(name: str, value: Any) -> str:
    if name == "oidc.issuer":
        return "sandbox: the stand-in DigiD; production: none"
    if name.startswith(f"organisations.{ORG}.") and name.rsplit(".", 1)[1] in (
        "oin",
        "code",
        "naam",
    ):
        return "the connector's"
    if name == "policies_dir":
        return "`policies/` beside the package"
    if value is None or value == "":
        return "–"
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`" if value else "`[]`"
    if isinstance(value, Mapping):
        return "see docs/login.md"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def reference() -> str:
    keys = read_keys()
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by `blauweknop config reference -o docs/configuration.md`; do not edit.",
        "     A test fails when this file and the code disagree. -->",
        "",
        "A TOML file (`--config FILE` or `BLAUWEKNOP_CONFIG`) and `BLAUWEKNOP_*` environment",
        "variables, which win; `__` separates levels (`BLAUWEKNOP_STORE__URL`). Secrets are",
        "never values: settings ending in `_file`, `key`, `chain` name files, mounted from a",
        "secret store (docs/operations.md). Production mode refuses to start without",
        "`public_url` (https), `[signing] key, chain`, `[audit] pseudonym_key_file`, an https",
        "`[oidc] issuer` with `client_key`, and at least one https organisation.",
        "",
    ]
    sections: dict[str, list[str]] = {}
    for name in sorted(keys, key=lambda n: (n.count("."), n)):
        section = name.rsplit(".", 1)[0] if "." in name else ""
        sections.setdefault(section, []).append(name)
    for section in sorted(sections, key=lambda s: (s != "", s)):
        lines += [f"## `[{section}]`" if section else "## top level", ""]
        lines += [
            "| setting | default | environment variable | meaning |",
            "| --- | --- | --- | --- |",
        ]
        for name in sections[section]:
            env = ENV_PREFIX + name.replace(".", "__").upper().replace(ORG.upper(), "<NAME>")
            key = name.rsplit(".", 1)[-1]
            description = DESCRIPTIONS.get(name, "**undocumented**").replace("|", "\\|")
            lines.append(f"| `{key}` | {_default(name, keys[name])} | `{env}` | {description} |")
        lines.append("")
    return "\n".join(lines)


__all__ = ["DESCRIPTIONS", "config_module", "read_keys", "reference"]
