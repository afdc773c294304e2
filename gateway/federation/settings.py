"""`[federation]`: the organisation registry, the BRP, policy and rate-limit settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError


@dataclass(frozen=True, slots=True)
class FederationSettings:
    """See docs/federation.md.

    `poll_seconds`: how often a running gateway checks the store for registry changes (one
    indexed `max(seq)` query). `admin_jwks`: the federation administrators' public keys (JWKS
    file) that approve new organisations; sandbox mode makes a development key pair under
    `state_dir/federation/`. `brp_url`: the population register (Haal Centraal "BRP Personen
    bevragen") that says which municipality a citizen lives in. `connectors`: connector types an
    organisation may choose when registering (built-in ones with file options are excluded on
    purpose). Rate limits count per minute, shared by replicas through the store.

    `mtls_port`: a second listener, TLS with client certificates, where organisations send
    registry requests authenticated by their certificate instead of a signature (off when
    unset; 0: any free port). `mtls_cert`/`mtls_key`: its server certificate chain and key;
    `mtls_client_ca`: the CA certificates client certificates must chain to (PKIoverheid
    roots). Sandbox mode defaults all three to the development PKI.
    """

    poll_seconds: float = 2.0
    admin_jwks: Path | None = None
    brp_url: str | None = None
    brp_timeout: float = 2.0
    brp_max_body_bytes: int = 256 * 1024
    # What organisations that joined through the registry may cost, as `[organisations.*]`
    # sets it for configured ones.
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_body_bytes: int = 8 * 1024 * 1024
    max_xml_depth: int = 32
    connectors: tuple[str, ...] = ("generic", "gemeente")
    rate_portal_per_minute: int = 600
    rate_citizen_per_minute: int = 60
    mtls_port: int | None = None
    mtls_cert: Path | None = None
    mtls_key: Path | None = None
    mtls_client_ca: Path | None = None


def parse_federation(table: Mapping[str, Any], mode: str) -> FederationSettings:
    defaults = FederationSettings()
    try:
        poll = float(table.get("poll_seconds", defaults.poll_seconds))
        portal_rate = int(table.get("rate_portal_per_minute", defaults.rate_portal_per_minute))
        citizen_rate = int(table.get("rate_citizen_per_minute", defaults.rate_citizen_per_minute))
        brp_timeout = float(table.get("brp_timeout", defaults.brp_timeout))
        brp_max_body = int(table.get("brp_max_body_bytes", defaults.brp_max_body_bytes))
        connect_timeout = float(table.get("connect_timeout", defaults.connect_timeout))
        read_timeout = float(table.get("read_timeout", defaults.read_timeout))
        max_body = int(table.get("max_body_bytes", defaults.max_body_bytes))
        max_xml_depth = int(table.get("max_xml_depth", defaults.max_xml_depth))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[federation] has a setting that is not a number: {exc}") from exc
    if not 0.05 <= poll <= 3600:
        raise ConfigError("[federation] poll_seconds must be between 0.05 and 3600")
    if min(connect_timeout, read_timeout, brp_timeout) <= 0 or min(max_body, max_xml_depth) < 1:
        raise ConfigError("[federation] timeouts and size limits must be positive")
    if portal_rate < 1 or citizen_rate < 1:
        raise ConfigError("[federation] rate limits must be at least 1 per minute")
    connectors = table.get("connectors", defaults.connectors)
    if not isinstance(connectors, list | tuple) or not all(isinstance(c, str) for c in connectors):
        raise ConfigError("[federation] connectors must be a list of connector names")
    # Without admin_jwks in production, nobody can approve: registrations wait (docs say so).
    admin = table.get("admin_jwks")
    brp_url = table.get("brp_url")
    if brp_url is not None and mode == "production" and not str(brp_url).startswith("https://"):
        raise ConfigError("[federation] brp_url must use https in production mode")
    mtls_port = table.get("mtls_port")
    if mtls_port is not None and (
        not isinstance(mtls_port, int) or isinstance(mtls_port, bool) or not 0 <= mtls_port < 65536
    ):
        raise ConfigError("[federation] mtls_port must be a port number (0: any free port)")
    mtls_files = {k: table.get(k) for k in ("mtls_cert", "mtls_key", "mtls_client_ca")}
    missing = [k for k, v in mtls_files.items() if v is None]
    if mtls_port is not None and mode == "production" and missing:
        raise ConfigError(
            f"[federation] mtls_port needs {', '.join(missing)} in production mode: the "
            "listener's certificate and key, and the CA file client certificates chain to"
        )
    return FederationSettings(
        poll_seconds=poll,
        admin_jwks=Path(str(admin)) if admin is not None else None,
        brp_url=str(brp_url).rstrip("/") if brp_url else None,
        brp_timeout=brp_timeout,
        brp_max_body_bytes=brp_max_body,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_body_bytes=max_body,
        max_xml_depth=max_xml_depth,
        connectors=tuple(connectors),
        rate_portal_per_minute=portal_rate,
        rate_citizen_per_minute=citizen_rate,
        mtls_port=mtls_port,
        mtls_cert=_path(mtls_files["mtls_cert"]),
        mtls_key=_path(mtls_files["mtls_key"]),
        mtls_client_ca=_path(mtls_files["mtls_client_ca"]),
    )


def _path(value: Any) -> Path | None:
    return Path(str(value)) if value is not None else None
