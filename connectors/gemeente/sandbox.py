"""A stand-in for a municipality's Haal Centraal style API, serving the test citizens.

`POST /haalcentraal/api/v1/overzicht` with {"type": "RaadpleegMetBurgerservicenummer",
"burgerservicenummer": ..., "gemeentecode": ...} and header X-Transactie-Id answers a HAL
document signed as a compact ES256 JWS (application/jose); `aanslagen`, `bijstand` and
`terugvorderingen` answer the same query for one collection. Errors are RFC 9457 problem details.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

from connectors._sandbox import FAULTS, install_faults, rogue_identity
from connectors._sandbox.runner import SandboxSpec
from gateway.connector import certificate_key_id
from gateway.jws import sign_es256
from gateway.pki import DevPki

BASE_PATH: Final = "/haalcentraal/api/v1"
COLLECTIES: Final = ("aanslagen", "bijstand", "terugvorderingen")
TESTDATA: Final = Path(__file__).with_name("testdata.json")
DEFAULT_GEMEENTECODE: Final = "0363"

# Each embedded resource links to itself by its own number, as HAL resources do.
_NUMMERVELD: Final = {
    "aanslagen": "aanslagbiljetnummer",
    "bijstand": "uitkeringsnummer",
    "terugvorderingen": "terugvorderingsnummer",
}
_BSN: Final = re.compile(r"[0-9]{9}")
_BSN_WEIGHTS: Final = (9, 8, 7, 6, 5, 4, 3, 2, -1)


@dataclass(frozen=True, slots=True)
class _Signer:
    key: ec.EllipticCurvePrivateKey
    header: dict[str, Any]

    @classmethod
    def of(cls, key: object, chain: list[x509.Certificate]) -> _Signer:
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the gemeente signs with ES256 and needs an EC P-256 key")
        x5c = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in chain]
        return cls(key, {"kid": certificate_key_id(chain[0]), "typ": "JOSE", "x5c": x5c})

    def sign(self, payload: bytes) -> bytes:
        return sign_es256(payload, self.key, self.header, detached=False).encode("ascii")


@dataclass(frozen=True, slots=True)
class _Gemeente:
    gemeentecode: str
    dossiers: dict[str, dict[str, list[dict[str, Any]]]]
    signer: _Signer
    rogue: _Signer


_GEMEENTE: Final = web.AppKey("gemeente", _Gemeente)


def create_app(pki: DevPki, *, gemeentecode: str = DEFAULT_GEMEENTECODE) -> web.Application:
    """The sandbox of one municipality; only Amsterdam (0363) has test data, others answer empty."""
    identity = pki.identity("gemeente-sign")
    chain = x509.load_pem_x509_certificates(identity.chain.read_bytes())
    rogue_key, rogue_cert = rogue_identity("ec")
    app = web.Application()
    app[_GEMEENTE] = _Gemeente(
        gemeentecode=gemeentecode,
        dossiers=_dossiers() if gemeentecode == DEFAULT_GEMEENTECODE else {},
        signer=_Signer.of(load_pem_private_key(identity.key.read_bytes(), None), chain),
        rogue=_Signer.of(rogue_key, [rogue_cert]),
    )
    install_faults(app)
    for collectie in ("overzicht", *COLLECTIES):
        app.router.add_post(f"{BASE_PATH}/{collectie}", _raadpleeg)
    return app


SANDBOX: Final = SandboxSpec(org="gemeente", create_app=create_app)


def is_valid_bsn(bsn: str) -> bool:
    """Nine digits that pass the 11-proef."""
    if not _BSN.fullmatch(bsn):
        return False
    return sum(int(d) * w for d, w in zip(bsn, _BSN_WEIGHTS, strict=True)) % 11 == 0


def _dossiers() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The native records per BSN, each embedded resource given its HAL self link."""
    native: dict[str, dict[str, list[dict[str, Any]]]] = orjson.loads(TESTDATA.read_bytes())
    return {
        bsn: {
            collectie: [
                {
                    "_links": {"self": {"href": f"{BASE_PATH}/{collectie}/{item[veld]}"}},
                    **item,
                }
                for item in dossier.get(collectie, [])
            ]
            for collectie, veld in _NUMMERVELD.items()
        }
        for bsn, dossier in native.items()
    }


async def _raadpleeg(request: web.Request) -> web.Response:
    gemeente = request.app[_GEMEENTE]
    transactie_id = request.headers.get("X-Transactie-Id", "").strip()
    try:
        vraag = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _problem(request, 400, "Het verzoek is geen geldige JSON.", "badRequest")
    if not isinstance(vraag, dict) or vraag.get("type") != "RaadpleegMetBurgerservicenummer":
        return _invalid(
            request, "type", "Alleen RaadpleegMetBurgerservicenummer wordt ondersteund."
        )
    bsn = vraag.get("burgerservicenummer")
    if not isinstance(bsn, str) or not is_valid_bsn(bsn):
        # The reason never quotes the number: problem details end up in logs.
        return _invalid(request, "burgerservicenummer", "Geen geldig burgerservicenummer.")
    if not transactie_id:
        return _invalid(request, "X-Transactie-Id", "De header X-Transactie-Id ontbreekt.")
    if vraag.get("gemeentecode") != gemeente.gemeentecode:
        return _problem(
            request,
            404,
            "Opgevraagde resource bestaat niet.",
            "notFound",
            detail=f"Deze voorziening bedient alleen gemeente {gemeente.gemeentecode}.",
        )
    dossier = gemeente.dossiers.get(bsn, {})
    gevraagd = request.path.rsplit("/", 1)[1]
    links = {"self": {"href": request.path}} | {c: {"href": f"{BASE_PATH}/{c}"} for c in COLLECTIES}
    document = {
        "_links": links,
        "gemeentecode": gemeente.gemeentecode,
        "transactieId": transactie_id,
        "_embedded": {c: dossier.get(c, []) for c in COLLECTIES if gevraagd in ("overzicht", c)},
    }
    signer = gemeente.rogue if request.app[FAULTS].wrong_signature else gemeente.signer
    return web.Response(body=signer.sign(orjson.dumps(document)), content_type="application/jose")


def _invalid(request: web.Request, name: str, reason: str) -> web.Response:
    return _problem(
        request,
        400,
        "Een of meerdere parameters zijn niet correct.",
        "paramsValidation",
        detail=f"De foutieve parameter is: {name}.",
        invalidParams=[{"name": name, "code": "invalid", "reason": reason}],
    )


def _problem(
    request: web.Request, status: int, title: str, code: str, **extra: Any
) -> web.Response:
    body = {
        "type": f"https://www.rfc-editor.org/rfc/rfc9110#status.{status}",
        "title": title,
        "status": status,
        "instance": request.path,
        "code": code,
        **extra,
    }
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/problem+json"
    )
