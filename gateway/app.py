"""The gateway's HTTP application: bundle download, keys, schema and operations endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from html import escape
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connectors._sandbox import CITIZENS
from gateway import logs
from gateway.audit import AuditTrail
from gateway.audit.archive import IssuedDocument
from gateway.audit.events import OrganisatieBevraagd
from gateway.audit.kafka import producer_options
from gateway.audit.relay import Relay
from gateway.audit.writer import AuditWriter
from gateway.bodies import read_form
from gateway.browser_security import harden, strict_csp
from gateway.bsn import is_bsn
from gateway.bundle import BundleIssuer
from gateway.config import Settings, connector_factory, load_keys
from gateway.documents import web as documents_web
from gateway.documents.service import MEDIA_TYPES, DocumentService, WorkerSpec, negotiate
from gateway.errors import ConfigError, DocumentUnavailable, MalformedRequest
from gateway.fanout import Fanout
from gateway.limits import limits_middleware
from gateway.metrics import Metrics
from gateway.openapi import served_bytes as openapi_bytes
from gateway.schema import SCHEMA_FILE, schema_bytes
from gateway.sign import KeyRing, SignedBundel
from gateway.store import StoreUnavailable

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
ISSUER = web.AppKey("issuer", BundleIssuer)
KEYS = web.AppKey("keys", KeyRing)
METRICS = web.AppKey("metrics", Metrics)
SESSION = web.AppKey("session", aiohttp.ClientSession)
AUDIT = web.AppKey("audit", AuditTrail)
RELAY = web.AppKey("relay", Relay)
AUDIT_WRITER = web.AppKey("audit_writer", AuditWriter)
TRANSACTIE_ID = web.RequestKey("transactie_id", str)


@dataclass
class Lifecycle:
    """Whether the gateway is stopping: once draining, /readyz says 503 so traffic moves away."""

    draining: bool = False


# A readiness check returns None when healthy, or says what is wrong (no personal data). The
# store's is built in; the Kafka relay appends its own (broker reachable, producer healthy).
ReadinessCheck = Callable[[web.Application], Awaitable[str | None]]
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
READINESS_CHECKS = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
READINESS_TIMEOUT = 2.0

JOSE = "application/jose"
JSON = "application/json"
_CSP = strict_csp()


def problem(status: int, title: str, detail: str) -> web.Response:
    """An RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/problem+json"
    )


def create_app(settings: Settings, keys: KeyRing | None = None) -> web.Application:
    keys = keys or load_keys(settings)
    metrics = Metrics()
    connectors = [connector_factory(o.connector)(o.settings) for o in settings.organisations]
    fanout = Fanout(
        connectors, deadline=settings.deadline_seconds, metrics=metrics, breaker=settings.breaker
    )
    app = web.Application(
        client_max_size=settings.max_request_bytes,
        # The limits inside the error middleware: their answers get a transaction id too.
        middlewares=[_transaction_and_errors, limits_middleware(settings.limits)],
    )
    app.on_response_prepare.append(_security_headers)
    app[SETTINGS] = settings
    app[KEYS] = keys
    app[METRICS] = metrics
    app[ISSUER] = BundleIssuer(fanout, keys, settings.uitgever, metrics)
    app[LIFECYCLE] = Lifecycle()
    checks: dict[str, ReadinessCheck] = {"store": _store_ready, "http_client": _client_ready}
    app[READINESS_CHECKS] = checks
    for key in (keys.active, *keys.retired):
        role = "active" if key is keys.active else "retired"
        not_after = key.chain[0].not_valid_after_utc.timestamp()
        metrics.certificate_not_after.labels(key.kid, role).set(not_after)
    app.cleanup_ctx.append(_client_session)
    app.cleanup_ctx.append(_audit_trail)
    app.cleanup_ctx.append(_documents)
    documents_web.add_routes(app, settings.documents.max_verify_bytes)
    app.cleanup_ctx.append(_audit_relay)
    app.router.add_get("/.well-known/jwks.json", _jwks)
    app.router.add_get(f"/schema/{SCHEMA_FILE}", _schema)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/openapi.json", _openapi)
    from gateway import authz, login  # here: both import this module's app keys

    login.setup(app)
    authz.setup(app)
    from gateway.federation import api as federation  # registry, BRP routing, Cedar policies

    federation.setup(app)
    if settings.mode == "sandbox":
        # Fetching by BSN without login exists only in sandbox mode; production never routes it.
        app.router.add_get("/", _sandbox_home)
        app.router.add_post("/v1/sandbox/bundel", _sandbox_bundel)
    return app


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=256, limit_per_host=64, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=False) as session:
        app[SESSION] = session
        yield


async def _audit_trail(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[AUDIT] = trail = await AuditTrail.open(settings)
    writer = None
    if settings.audit_writer == "process" and not settings.audit_disabled_for_benchmark:
        writer = AuditWriter(settings)
        app[AUDIT_WRITER] = writer
        app[READINESS_CHECKS]["audit_writer"] = _writer_ready
    try:
        if writer is not None:
            await writer.start()
        yield
    finally:
        if writer is not None:
            await writer.stop()
        await trail.store.close()


async def _documents(app: web.Application) -> AsyncIterator[None]:
    """The document process pool (and in sandbox mode the development TSA, on first use)."""
    settings = app[SETTINGS]
    public = settings.documents.public_url or f"http://{settings.host}:{settings.port}"
    service = DocumentService(
        WorkerSpec(settings, settings.documents.tsa_url, f"{public.rstrip('/')}/verifieer")
    )
    app[documents_web.DOCUMENTS] = service
    warm = settings.documents.warm_up
    try:
        if warm or (warm is None and settings.mode == "production"):
            await service.start()
        yield
    finally:
        await asyncio.get_running_loop().run_in_executor(None, service.close)


async def _audit_relay(app: web.Application) -> AsyncIterator[None]:
    """Publish the outbox to Kafka in the background when `[kafka]` is configured.

    With an audit writer process, the writer runs the relay instead.
    """
    kafka = app[SETTINGS].kafka
    if kafka is None or AUDIT_WRITER in app:
        yield
        return
    producer_options(kafka)  # bad TLS or SASL files stop the start, not the relay later
    relay = Relay(
        app[AUDIT].store,
        kafka,
        app[METRICS],
        keep_sent_seconds=app[SETTINGS].outbox_keep_sent_seconds,
    )
    app[RELAY] = relay
    app[READINESS_CHECKS]["audit_relay"] = _relay_ready
    relay.start()
    try:
        yield
    finally:
        # Publish what waits for a few seconds; the rest stays in the outbox for next time.
        await relay.stop(drain_seconds=5.0)


async def release(
    request: web.Request, signed: SignedBundel, body: bytes, content_type: str, formaat: str
) -> web.Response:
    """Hand out a bundle only once its audit record is durably stored; otherwise 503."""
    if request.app[SETTINGS].audit_disabled_for_benchmark:  # sandbox benchmarks only
        request.app[METRICS].bundles.labels("issued_unaudited").inc()
        return web.Response(body=body, content_type=content_type)
    app, trail = request.app, request.app[AUDIT]
    # Recorded by the audit writer process when there is one, else here: the same events.
    record = app[AUDIT_WRITER].bundle_issued if AUDIT_WRITER in app else trail.bundle_issued
    try:
        await record(
            transactie_id=request[TRANSACTIE_ID],
            burger=trail.key.pseudonym(signed.bundel.bsn),
            bundel_id=signed.bundel.bundel_id,
            canonical_sha256=hashlib.sha256(signed.canonical).hexdigest(),
            # The exact bytes sent, archived encrypted to the archivist in the same append.
            documents=[IssuedDocument(formaat, content_type, body)],
            bevragingen=[OrganisatieBevraagd.of(b) for b in signed.bundel.bronnen],
        )
    except StoreUnavailable:
        log.exception("audit record not stored; bundle withheld")
        request.app[METRICS].bundles.labels("withheld_no_evidence").inc()
        return problem(
            503,
            "Tijdelijk niet beschikbaar",
            "The audit record could not be stored, so no data is released. Try again later.",
        )
    request.app[METRICS].bundles.labels("issued").inc()
    return web.Response(body=body, content_type=content_type)


_DETAILS = {
    404: "There is nothing at this address; /openapi.json lists every endpoint.",
    405: "This address does not take this method; the Allow header lists the ones it takes.",
}


@web.middleware
async def _transaction_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    tx = str(uuid.uuid4())
    request[TRANSACTIE_ID] = tx
    token = logs.transaction_id.set(tx)
    try:
        response = await handler(request)
    except MalformedRequest as exc:
        response = problem(400, "Ongeldig verzoek", str(exc))
    except web.HTTPRequestEntityTooLarge:
        response = problem(413, "Verzoek te groot", "The request body is larger than allowed.")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # aiohttp's own answers (no such path, method, …) in our shape, without their text.
        response = problem(exc.status, exc.reason, _DETAILS.get(exc.status, exc.reason))
        if "Allow" in exc.headers:  # RFC 9110 §15.5.6: a 405 names the methods there are
            response.headers["Allow"] = exc.headers["Allow"]
    except Exception as exc:
        if isinstance(exc, ConnectionResetError) and _client_gone(request):
            # The client left while we read its request (a slow body given up, a closed tab):
            # nothing is wrong here and nobody reads the answer. Not an error with a traceback,
            # which an attacker could otherwise write into the log at will (bench/slowloris.py).
            log.info("the client went away before its request was read")
            response = problem(400, "Verbinding verbroken", "The connection was lost.")
        else:
            log.exception("unhandled error")
            response = problem(
                500, "Interne fout", f"Something went wrong; quote transaction id {tx}."
            )
    finally:
        logs.transaction_id.reset(token)
    response.headers["X-Transactie-Id"] = tx
    return response


def _client_gone(request: web.Request) -> bool:
    # An organisation's connection reset raises a ConnectionResetError too (aiohttp's client
    # errors subclass it); only the browser's own closed connection is the client leaving.
    transport = request.transport
    return transport is None or transport.is_closing()


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response, also the problem details the error middleware makes and redirects.

    A handler's own value wins (the consent page's CSP names the portal). HSTS in every mode:
    see gateway/browser_security.py. The Server header names no software or version: that only
    helps an attacker pick an exploit.
    """
    harden(response, _CSP)
    response.headers["Server"] = "Blauwe Knop"


async def _jwks(request: web.Request) -> web.Response:
    response = web.Response(
        body=orjson.dumps(request.app[KEYS].jwks()), content_type="application/jwk-set+json"
    )
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


async def _schema(request: web.Request) -> web.Response:
    return web.Response(body=schema_bytes(), content_type="application/schema+json")


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(
        body=openapi_bytes(request.app[SETTINGS].mode), content_type="application/json"
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _store_ready(app: web.Application) -> str | None:
    if AUDIT not in app or not app[AUDIT].store.is_open:
        return "the store is not open"
    try:
        await app[AUDIT].store.ping()
    except StoreUnavailable as exc:
        return str(exc)
    return None


async def _relay_ready(app: web.Application) -> str | None:
    """The relay's task runs, leading or standing by: a standby replica serves like any other.

    Kafka itself is no readiness check: while it is away every replica is equally affected,
    and the outbox keeps the evidence (the store check covers that), so traffic stays.
    """
    return None if app[RELAY].running else "the audit relay has stopped"


async def _writer_ready(app: web.Application) -> str | None:
    """The audit writer answers, and its relay runs (when Kafka is configured)."""
    try:
        status = await app[AUDIT_WRITER].status()
    except StoreUnavailable as exc:
        return str(exc)
    return "the audit relay has stopped" if status.get("relay_running") is False else None


async def _client_ready(app: web.Application) -> str | None:
    if SESSION not in app or app[SESSION].closed:
        return "the HTTP client for the organisations is closed"
    return None


async def _readyz(request: web.Request) -> web.Response:
    """Ready when not draining and every check passes (store, HTTP client, Kafka once present)."""
    app = request.app
    checks = app[READINESS_CHECKS]

    async def run(check: ReadinessCheck) -> str | None:
        try:
            return await asyncio.wait_for(check(app), READINESS_TIMEOUT)
        except TimeoutError:
            return f"no answer within {READINESS_TIMEOUT} s"

    outcomes = await asyncio.gather(*(run(c) for c in checks.values()))
    results = {name: outcome or "ok" for name, outcome in zip(checks, outcomes, strict=True)}
    if app[LIFECYCLE].draining:
        results["lifecycle"] = "draining: the gateway is shutting down"
    ready = all(v == "ok" for v in results.values())
    app[METRICS].ready.set(1 if ready else 0)
    for name, outcome in results.items():
        if outcome != "ok":
            log.warning("not ready: %s: %s", name, outcome)
    return web.json_response({"ready": ready, "checks": results}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    body = generate_latest(metrics.registry)
    if AUDIT_WRITER in request.app:  # the relay's metrics live in the writer process
        with contextlib.suppress(StoreUnavailable):  # while it restarts, scrape the rest
            status = await request.app[AUDIT_WRITER].status()
            body += str(status.get("metrics", "")).encode()
    else:
        body += generate_latest(metrics.audit_registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _sandbox_bundel(request: web.Request) -> web.Response:
    """Sandbox only: a bundle for a test BSN, without login. JSON body or HTML form."""
    fields: dict[str, Any]
    if request.content_type == JSON:
        try:
            fields = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return problem(400, "Ongeldig verzoek", "The body is not valid JSON.")
        if not isinstance(fields, dict):
            return problem(400, "Ongeldig verzoek", "The body must be a JSON object.")
    else:
        fields = dict(await read_form(request))
    bsn = fields.get("bsn")
    if not isinstance(bsn, str) or not is_bsn(bsn):
        return problem(400, "Ongeldig BSN", "Give a 9-digit BSN that passes the 11-proef.")
    organisaties = fields.get("organisaties")
    if organisaties is not None and not (
        isinstance(organisaties, list) and all(isinstance(o, str) for o in organisaties)
    ):
        return problem(400, "Ongeldig verzoek", "organisaties must be a list of codes.")
    formaat = fields.get("formaat")
    try:
        media_type = negotiate(
            request.headers.get("Accept", ""), formaat if isinstance(formaat, str) else None
        )
    except ValueError as exc:
        return problem(400, "Ongeldig formaat", str(exc))
    from gateway.federation.api import FEDERATION

    # No portal and no purpose here: only the routing to the citizen's own municipality applies;
    # the BRP lookup runs alongside the calls to the other organisations.
    federation = request.app[FEDERATION]
    signed = await request.app[ISSUER].issue(
        bsn=bsn,
        transactie_id=request[TRANSACTIE_ID],
        session=request.app[SESSION],
        selected=organisaties,
        admit=federation.admission(bsn, request.app[SESSION]),
    )
    extension = MEDIA_TYPES[media_type]
    try:
        body = await request.app[documents_web.DOCUMENTS].render(signed, media_type)
    except (DocumentUnavailable, ConfigError) as exc:
        log.error("document not made: %s", exc)
        return problem(
            503,
            "Tijdelijk niet beschikbaar",
            f"The {extension.upper()} document cannot be made right now; nothing was released. "
            "Try again later, or ask for JSON.",
        )
    response = await release(request, signed, body, media_type, extension)
    if "formaat" in fields and response.status == 200:
        response.headers["Content-Disposition"] = (
            f'attachment; filename="blauwe-knop-{signed.document["bundel_id"]}.{extension}"'
        )
    return response


async def _sandbox_home(request: web.Request) -> web.Response:
    rows = "\n".join(
        f"<tr><td>{c.bsn}</td><td>{escape(c.naam)}</td><td>{escape(c.scenario)}</td><td>"
        f'<form method="post" action="/v1/sandbox/bundel">'
        f'<input type="hidden" name="bsn" value="{c.bsn}">'
        f'<button name="formaat" value="json">JSON</button> '
        f'<button name="formaat" value="jws">JWS</button> '
        f'<button name="formaat" value="xml">XML</button> '
        f'<button name="formaat" value="pdf">PDF</button></form></td></tr>'
        for c in CITIZENS
    )
    html = f"""<!doctype html>
<html lang="nl"><head><meta charset="utf-8"><title>Blauwe Knop gateway (sandbox)</title></head>
<body><main><h1>Blauwe Knop gateway — sandbox</h1>
<p>Alleen voor testen: haal een ondertekende bundel op voor een testburger, zonder inloggen.
<span lang="en">Sandbox only: fetch a signed bundle for a test citizen without login.</span></p>
<table><thead><tr><th scope="col">BSN</th><th scope="col">Naam</th><th scope="col">Scenario</th>
<th scope="col">Download</th></tr></thead><tbody>
{rows}
</tbody></table>
<p><a href="/.well-known/jwks.json">JWKS</a> · <a href="/schema/{SCHEMA_FILE}">Schema v1</a> ·
<a href="/schema/bundel-v1.xsd">XSD</a> · <a href="/verifieer">Document controleren</a> ·
<a href="/metrics">Metrics</a></p></main></body></html>"""
    return web.Response(text=html, content_type="text/html")
