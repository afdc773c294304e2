"""The federation on the gateway: registry HTTP API, the directory's lifetime, rate limits.

Routes (docs/federation.md):
- `POST /v1/federatie/verzoeken`: a signed registry request (compact JWS body,
  `Content-Type: application/jwt` or `application/jose`); answers the stored entry's status.
  Over mTLS (the `[federation] mtls_port` listener, which serves only this route) the body may
  instead be the request as plain JSON (`application/json`), authenticated by the client
  certificate;
- `GET /v1/federatie/organisaties`: every registered organisation, latest version, with status;
- `GET /v1/federatie/organisaties/{oin}`: one entry with its version history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from cryptography import x509

from gateway.app import AUDIT, ISSUER, SETTINGS, TRANSACTIE_ID, problem
from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.federation import registry as reg
from gateway.federation.policy import PolicyEngine, retention_days
from gateway.federation.registry import Registratie, RegistrationRefused
from gateway.federation.runtime import Federation
from gateway.store import StoreUnavailable

log = logging.getLogger(__name__)

FEDERATION = web.AppKey("federation", Federation)
_POLICY = web.AppKey("federation_policy", PolicyEngine)
PATH_REQUESTS = "/v1/federatie/verzoeken"
PATH_LIST = "/v1/federatie/organisaties"
PATH_ONE = "/v1/federatie/organisaties/{oin}"
_TOKEN_TYPES = ("application/jwt", "application/jose")
_PLAIN_TYPE = "application/json"


def setup(app: web.Application) -> None:
    """Load the policies now (a broken policy file stops the start), run the directory later."""
    settings = app[SETTINGS]
    app[_POLICY] = PolicyEngine.load(settings.policies_dir)
    app.cleanup_ctx.append(_federation)
    app.router.add_post(PATH_REQUESTS, _request)
    app.router.add_get(PATH_LIST, _list)
    app.router.add_get(PATH_ONE, _one)


async def _federation(app: web.Application) -> AsyncIterator[None]:
    from gateway.authz.server import REGISTRY

    settings = app[SETTINGS]
    fanout = app[ISSUER].fanout
    federation = Federation(
        settings,
        app[AUDIT].store,
        app[AUDIT],
        fanout,
        list(fanout.connectors),
        app[REGISTRY],
        app[_POLICY],
        retention_days(settings.policies_dir),
    )
    await federation.refresh()
    app[FEDERATION] = federation
    mtls = await _start_mtls(settings, federation)
    poller = asyncio.create_task(federation.poll())
    try:
        yield
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        if mtls is not None:
            await mtls.cleanup()
        await federation.aclose()


def mtls_server_context(settings: Settings) -> ssl.SSLContext:
    """TLS for the mTLS listener: client certificates optional (a signed request needs none)
    but, when presented, chained to `mtls_client_ca` and valid, or the handshake fails."""
    fed = settings.federation
    cert, key, client_ca = fed.mtls_cert, fed.mtls_key, fed.mtls_client_ca
    if settings.mode == "sandbox":
        pki = settings.dev_pki
        pki.ensure()
        identity = pki.identity("gateway-server")
        cert, key = cert or identity.chain, key or identity.key
        client_ca = client_ca or pki.root_cert
    if cert is None or key is None or client_ca is None:  # production: refused by the config
        raise ConfigError("[federation] mtls_port needs mtls_cert, mtls_key and mtls_client_ca")
    try:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"[federation] mtls_cert {cert}, mtls_key {key} or mtls_client_ca {client_ca} is "
            f"not usable: {exc}"
        ) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


async def _start_mtls(settings: Settings, federation: Federation) -> web.AppRunner | None:
    """The mTLS listener: its own small application with only the registry request route."""
    port = settings.federation.mtls_port
    if port is None:
        return None
    app = web.Application(
        client_max_size=reg.MAX_REQUEST_BYTES + 1, middlewares=[_mtls_transaction]
    )
    app[FEDERATION] = federation
    app.router.add_post(PATH_REQUESTS, _request)
    context = mtls_server_context(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, port, ssl_context=context).start()
    except OSError:
        await runner.cleanup()
        raise
    federation.mtls_ca_certs = tuple(
        x509.load_der_x509_certificate(der) for der in context.get_ca_certs(binary_form=True)
    )
    bound = runner.addresses[0][1] if runner.addresses else port
    federation.mtls_url = f"https://{settings.host}:{bound}"
    log.info("registry mTLS listener started", extra={"url": federation.mtls_url})
    return runner


@web.middleware
async def _mtls_transaction(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[TRANSACTIE_ID] = str(uuid.uuid4())
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem(exc.status, exc.reason, "Only POST /v1/federatie/verzoeken is here.")
    response.headers["X-Transactie-Id"] = request[TRANSACTIE_ID]
    return response


def _client_certificate(request: web.Request) -> x509.Certificate | None:
    """The TLS client certificate, already verified by the handshake; None without TLS."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return x509.load_der_x509_certificate(der) if der else None


def _view(r: Registratie) -> dict[str, object]:
    view: dict[str, object] = {
        "versie": r.version,
        "status": r.status,
        "inschrijving": r.inschrijving.to_json(),
    }
    if r.reden is not None:
        view["reden"] = r.reden  # why it was suspended or withdrawn
    return view


async def _request(request: web.Request) -> web.Response:
    if request.content_type not in (*_TOKEN_TYPES, _PLAIN_TYPE):
        return problem(
            415,
            "Verkeerd formaat",
            "Send the signed request as a compact JWS, Content-Type application/jwt "
            "(or, over mTLS with a client certificate, as application/json).",
        )
    certificate = _client_certificate(request)
    if request.content_type == _PLAIN_TYPE and certificate is None:
        return problem(
            401,
            "Geen clientcertificaat",
            "An unsigned (application/json) registry request must come over mTLS with the "
            "organisation's client certificate, at the gateway's [federation] mtls_port; "
            "otherwise sign it (application/jwt, docs/federation.md).",
        )
    if request.content_length is not None and request.content_length > reg.MAX_REQUEST_BYTES:
        return problem(413, "Verzoek te groot", f"At most {reg.MAX_REQUEST_BYTES} bytes.")
    raw = await request.content.read(reg.MAX_REQUEST_BYTES + 1)
    if len(raw) > reg.MAX_REQUEST_BYTES:
        return problem(413, "Verzoek te groot", f"At most {reg.MAX_REQUEST_BYTES} bytes.")
    federation = request.app[FEDERATION]
    try:
        if request.content_type == _PLAIN_TYPE:
            assert certificate is not None
            result = await federation.apply_mtls(raw, certificate, request[TRANSACTIE_ID])
        else:
            token = raw.decode("ascii").strip()
            result = await federation.apply(token, request[TRANSACTIE_ID])
    except UnicodeDecodeError:
        return problem(400, "Ongeldig verzoek", "The body must be a compact JWS (ASCII).")
    except RegistrationRefused as exc:
        log.info("registry request refused: %s", exc)
        return problem(exc.status, "Registratie geweigerd", str(exc))
    except StoreUnavailable:
        return problem(503, "Tijdelijk niet beschikbaar", "The registry could not be written.")
    return web.json_response(_view(result), status=200)


async def _list(request: web.Request) -> web.Response:
    federation = request.app[FEDERATION]
    entries: list[dict[str, object]] = []
    for d in await federation.store.list_latest(reg.KIND):
        try:
            entries.append(
                _view(Registratie.from_bytes(d.body, d.version, d.seq, federation.rules))
            )
        except (ValueError, KeyError):  # stored under older rules (e.g. a retired category)
            entries.append({"versie": d.version, "status": "onleesbaar", "oin": d.key})
    return web.json_response({"organisaties": entries, "actief": sorted(federation.members)})


async def _one(request: web.Request) -> web.Response:
    federation = request.app[FEDERATION]
    oin = request.match_info["oin"]
    if not reg.OIN_PATTERN.fullmatch(oin):
        return problem(400, "Ongeldig OIN", "An OIN has 20 digits.")
    history = await federation.store.history(reg.KIND, oin)
    if not history:
        return problem(404, "Onbekend", f"OIN {oin} is not registered.")
    versions = [
        {
            **_view(Registratie.from_bytes(d.body, d.version, d.seq, federation.rules)),
            "vastgelegd_op": d.created,
        }
        for d in history
    ]
    return web.Response(
        body=orjson.dumps({"oin": oin, "versies": versions}), content_type="application/json"
    )


async def rate_limited(request: web.Request, client_id: str, pseudonym: str) -> web.Response | None:
    """Store-backed limits per portal and per citizen (shared by replicas); None if within."""
    settings = request.app[SETTINGS].federation
    store = request.app[AUDIT].store
    window = 60.0
    checks = (
        ("portaal", client_id, settings.rate_portal_per_minute),
        ("burger", pseudonym, settings.rate_citizen_per_minute),
    )
    for kind, key, limit in checks:
        # The window starts at the first request and resets `window` seconds later.
        count = await store.increment(f"rate-{kind}", key, window)
        if count > limit:
            retry = str(int(window))
            response = problem(
                429,
                "Te veel verzoeken",
                (
                    "U heeft in korte tijd te vaak gegevens opgevraagd. Probeer het over een "
                    "minuut opnieuw. (Too many requests: try again in a minute.)"
                    if kind == "burger"
                    else f"Portal {client_id} exceeded {limit} bundle requests per minute."
                ),
            )
            response.headers["Retry-After"] = retry
            return response
    return None
