"""A stand-in for the SVB (Sociale Verzekeringsbank) that implements the generic provider API.

It exists to show that an organisation joins with no code in the gateway: it registers, is
approved, and appears in bundles through the generic connector (docs/federation.md). Routes:
`POST /blauweknop/v1/gegevens` and `GET /blauweknop/v1/jwks.json` (docs/provider-api.yaml).

`create_app(pki, broken=True)` makes a deliberately non-conforming variant for the conformance
kit's tests: it signs with a key it does not publish, leaves out the transaction id, gives
amounts in euros as decimals and date-times without an offset, and answers 404 for a citizen
without data. `create_app(pki, certified=(key, chain))` signs with that key instead and puts
the certificate chain in the JWS header as `x5c` (for organisations with X.509 anchors).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from connectors._sandbox import install_faults
from connectors._sandbox.runner import SandboxSpec
from connectors.generic.mapping import DOCUMENT_TYPE, bsn_hash
from gateway.federation.registry import key_id, public_jwk
from gateway.jws import sign_es256
from gateway.models import Organisatie
from gateway.pki import DevPki

TESTDATA: Final = Path(__file__).with_name("testdata.json")
ORGANISATIE: Final = Organisatie("00000001001000000000", "svb", "Sociale Verzekeringsbank")
_BSN: Final = re.compile(r"[0-9]{9}")
_WEIGHTS: Final = (9, 8, 7, 6, 5, 4, 3, 2, -1)
_STATE = web.AppKey("svb", dict)


def signing_key(pki: DevPki, name: str = "svb-sign") -> ec.EllipticCurvePrivateKey:
    """The sandbox's ES256 key, made once in the development PKI folder (never in the repo)."""
    path = pki.directory / f"{name}.es256.key.pem"
    if not path.exists():
        pki.directory.mkdir(parents=True, exist_ok=True)
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    key = load_pem_private_key(path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def jwks(pki: DevPki) -> dict[str, Any]:
    public = signing_key(pki).public_key()
    return {"keys": [public_jwk(public, key_id(public))]}


def create_app(
    pki: DevPki,
    *,
    broken: bool = False,
    certified: tuple[ec.EllipticCurvePrivateKey, list[x509.Certificate]] | None = None,
) -> web.Application:
    key = signing_key(pki)
    rogue = ec.generate_private_key(ec.SECP256R1())
    header: dict[str, Any] = {}
    if certified is not None:
        key = certified[0]
        header["x5c"] = [
            base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in certified[1]
        ]
    app = web.Application(client_max_size=64 * 1024)
    app[_STATE] = {
        "header": header,
        "key": rogue if broken else key,
        "kid": key_id((rogue if broken else key).public_key()),
        "jwks": jwks(pki),
        "broken": broken,
        "data": orjson.loads(TESTDATA.read_bytes()),
    }
    install_faults(app)
    app.router.add_post("/blauweknop/v1/gegevens", _gegevens)
    app.router.add_get("/blauweknop/v1/jwks.json", _jwks)
    return app


SANDBOX: Final = SandboxSpec(org="svb", create_app=create_app)


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/problem+json"
    )


async def _jwks(request: web.Request) -> web.Response:
    return web.Response(
        body=orjson.dumps(request.app[_STATE]["jwks"]), content_type="application/jwk-set+json"
    )


async def _gegevens(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    try:
        vraag = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _problem(400, "Ongeldig verzoek", "The body is not JSON.")
    if not isinstance(vraag, dict):
        return _problem(400, "Ongeldig verzoek", "The body must be a JSON object.")
    bsn, tx = vraag.get("burgerservicenummer"), vraag.get("transactie_id")
    if not isinstance(tx, str) or not 1 <= len(tx) <= 128:
        return _problem(400, "Ongeldig verzoek", "transactie_id is required.")
    if (
        not isinstance(bsn, str)
        or not _BSN.fullmatch(bsn)
        or sum(int(d) * w for d, w in zip(bsn, _WEIGHTS, strict=True)) % 11
    ):
        return _problem(400, "Ongeldig BSN", "burgerservicenummer fails the 11-proef.")
    dossier = state["data"].get(bsn)
    if dossier is None and state["broken"]:
        return _problem(404, "Niet gevonden", "No data.")
    dossier = dossier or {"financiele_zaken": [], "inkomsten": [], "betalingsregelingen": []}
    document: dict[str, Any] = {
        "documenttype": DOCUMENT_TYPE,
        "versie": "1.0.0",
        "transactie_id": tx,
        "bsn_sha256": bsn_hash(tx, bsn),
        "organisatie": {"oin": ORGANISATIE.oin, "code": ORGANISATIE.code},
        "aangemaakt_op": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **dossier,
    }
    if state["broken"]:
        document = _break(document)
    header = {"kid": state["kid"], "typ": "JOSE", **state["header"]}
    token = sign_es256(orjson.dumps(document), state["key"], header, detached=False)
    return web.Response(body=token.encode(), content_type="application/jose")


def _break(document: dict[str, Any]) -> dict[str, Any]:
    """The defects provider-check must name, each once."""
    broken = dict(document)
    del broken["transactie_id"]
    broken["aangemaakt_op"] = dt.datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    zaken = []
    for zaak in broken["financiele_zaken"]:
        events = [
            {**e, "bedrag": e["bedrag"] / 100} if "bedrag" in e else e
            for e in zaak["gebeurtenissen"]
        ]
        zaken.append({**zaak, "gebeurtenissen": events})
    broken["financiele_zaken"] = zaken
    return broken
