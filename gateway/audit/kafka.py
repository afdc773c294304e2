"""Options shared by every Kafka client of the gateway: producer, consumers and admin.

aiokafka has no type hints; this module and its users keep the untyped surface small.
"""

from __future__ import annotations

import ssl
from typing import Any

from gateway.config import KafkaConfig
from gateway.errors import ConfigError


def client_options(config: KafkaConfig) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaProducer / AIOKafkaConsumer / AIOKafkaAdminClient."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id,
        "request_timeout_ms": int(config.request_timeout_seconds * 1000),
        "security_protocol": config.security_protocol,
        "metadata_max_age_ms": 60_000,
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(config)
    if config.security_protocol.startswith("SASL_"):
        if config.sasl_password_file is None or config.sasl_mechanism is None:
            raise ConfigError("[kafka] SASL needs sasl_mechanism and sasl_password_file")
        try:
            password = config.sasl_password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"[kafka] cannot read sasl_password_file: {exc}") from exc
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_username
        options["sasl_plain_password"] = password
    return options


def _ssl_context(config: KafkaConfig) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        if config.cert_file is not None and config.key_file is not None:
            context.load_cert_chain(str(config.cert_file), str(config.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[kafka] TLS files could not be loaded: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def producer_options(config: KafkaConfig) -> dict[str, Any]:
    """AIOKafkaProducer settings for the audit stream: every replica in sync acknowledges.

    The relay builds one record batch per request itself (gateway/audit/relay.py); a batch is
    at most `max_message_bytes`, which is what Kafka's max.message.bytes limits.
    """
    return {
        **client_options(config),
        "acks": "all",
        "enable_idempotence": config.idempotence,
        "max_batch_size": config.max_message_bytes,
        "max_request_size": config.max_message_bytes + 64 * 1024,
        "linger_ms": 0,
        "retry_backoff_ms": 200,
    }
