"""A stand-in for Haal Centraal "BRP Personen bevragen" (v2): where does a citizen live?

`POST /haalcentraal/api/brp/personen` with
`{"type": "RaadpleegMetBurgerservicenummer", "burgerservicenummer": ["999990020"],
"fields": ["verblijfplaats", "gemeenteVanInschrijving"]}` answers
`{"type": "RaadpleegMetBurgerservicenummer", "personen": [{"burgerservicenummer": …,
"gemeenteVanInschrijving": {"code": "0363", "omschrijving": "Amsterdam"}, "verblijfplaats": …}]}`.
Unknown citizens give an empty `personen` list, as the real API does. Errors are problem+json.
Test data: the nine test citizens over five municipalities (`testdata.json`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from connectors._sandbox import install_faults
from connectors._sandbox.runner import SandboxSpec
from gateway.pki import DevPki

PATH: Final = "/haalcentraal/api/brp/personen"
TESTDATA: Final = Path(__file__).with_name("testdata.json")
FIELDS: Final = frozenset({"verblijfplaats", "gemeenteVanInschrijving", "burgerservicenummer"})
_BSN: Final = re.compile(r"[0-9]{9}")
_DATA = web.AppKey("brp", dict)


def create_app(pki: DevPki | None = None) -> web.Application:
    app = web.Application(client_max_size=16 * 1024)
    app[_DATA] = orjson.loads(TESTDATA.read_bytes())
    install_faults(app)
    app.router.add_post(PATH, _personen)
    return app


SANDBOX: Final = SandboxSpec(org="brp", create_app=create_app)


def _problem(status: int, title: str, code: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "code": code, "detail": detail}
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/problem+json"
    )


async def _personen(request: web.Request) -> web.Response:
    try:
        vraag = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _problem(400, "Ongeldig verzoek", "badRequest", "De body is geen JSON.")
    if not isinstance(vraag, dict) or vraag.get("type") != "RaadpleegMetBurgerservicenummer":
        return _problem(
            400, "Ongeldig verzoek", "paramsValidation", "Alleen RaadpleegMetBurgerservicenummer."
        )
    bsns = vraag.get("burgerservicenummer")
    fields = vraag.get("fields")
    if (
        not isinstance(bsns, list)
        or not 1 <= len(bsns) <= 20
        or not all(isinstance(b, str) and _BSN.fullmatch(b) for b in bsns)
    ):
        return _problem(
            400, "Ongeldig verzoek", "paramsValidation", "burgerservicenummer: 1 tot 20 BSN's."
        )
    if not isinstance(fields, list) or not fields or not set(fields) <= FIELDS:
        return _problem(
            400, "Ongeldig verzoek", "paramsValidation", f"fields: kies uit {sorted(FIELDS)}."
        )
    data = request.app[_DATA]
    personen: list[dict[str, Any]] = []
    for bsn in bsns:
        gemeente = data.get(bsn)
        if gemeente is None:
            continue
        persoon: dict[str, Any] = {}
        if "burgerservicenummer" in fields:
            persoon["burgerservicenummer"] = bsn
        if "gemeenteVanInschrijving" in fields:
            persoon["gemeenteVanInschrijving"] = dict(gemeente)
        if "verblijfplaats" in fields:
            persoon["verblijfplaats"] = {
                "type": "Adres",
                "verblijfadres": {"woonplaats": gemeente["omschrijving"]},
            }
        personen.append(persoon)
    return web.json_response({"type": "RaadpleegMetBurgerservicenummer", "personen": personen})
