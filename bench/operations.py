"""CPU cost per operation of the XML-DSig work for one bundle, in one process, without load.

The full fan-out benchmark needs a quiet machine; these figures hardly do, because each is the
CPU time (not wall time) of one operation, the best of several runs, on answers recorded from
the real sandboxes (test citizen 999990020 by default):

* DUO and UWV: the signature check alone, and the connector's `verify` (signature check,
  interface checks and mapping to the common schema), as the gateway runs it per answer;
* the sandboxes' signing of one DUO and one UWV answer, as they do per request.

    .venv/bin/python -m bench.operations [--citizen BSN]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import sys
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import aiohttp
import orjson
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree

from connectors._sandbox.runner import start_sandbox
from connectors.duo import protocol as duo_protocol
from connectors.uwv import soap
from gateway.config import connector_factory, load_settings
from gateway.connector import FetchRequest, load_certificate
from gateway.pki import DevPki
from gateway.xmldsig import (
    SignatureShape,
    XmlSignatureVerifier,
    sign,
    signing_key,
    x509_key_info,
)

_XML_SHAPES: dict[str, SignatureShape] = {
    "duo": duo_protocol.SIGNATURE_SHAPE,
    "uwv": soap.SIGNATURE_SHAPE,
}


def per_call_ms(call: Callable[[], object], number: int = 200) -> float:
    """CPU time per call, the best of five runs: other processes on the machine hardly count."""
    runs = timeit.repeat(call, number=number, repeat=5, timer=time.process_time)
    return min(runs) / number * 1000


def rsa_identity(pki: DevPki, name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    identity = pki.identity(name)
    key = load_pem_private_key(identity.key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key, load_certificate(identity.cert)


async def run(citizen: str) -> dict[str, float]:
    settings = load_settings(None, {"BLAUWEKNOP_STATE_DIR": tempfile.mkdtemp(prefix="bk-ops-")})
    pki = settings.dev_pki
    pki.ensure()
    report: dict[str, float] = {}
    raws: dict[str, bytes] = {}
    async with aiohttp.ClientSession() as session:
        request = FetchRequest(citizen, f"bench-{uuid.uuid4()}", session)
        for org in settings.organisations:
            shape = _XML_SHAPES.get(org.connector)
            if shape is None:
                continue
            sandbox = await start_sandbox(org.connector, pki)
            try:
                connector = connector_factory(org.connector)(
                    replace(org.settings, base_url=sandbox.url)
                )
                raw = base64.b64decode((await connector.fetch(request)).herkomst.inhoud)
            finally:
                await sandbox.runner.cleanup()
            raws[org.connector] = raw
            verifier = XmlSignatureVerifier(load_certificate(org.settings.trust_cert), shape)
            report[f"{org.connector}_answer_bytes"] = len(raw)
            report[f"{org.connector}_signature_check_ms"] = per_call_ms(
                partial(verifier.verify, raw)
            )
            report[f"{org.connector}_verify_and_map_ms"] = per_call_ms(
                partial(connector.verify, raw)
            )

    # The sandboxes' signing, redone on the recorded answers without their signatures.
    duo_answer = etree.fromstring(raws["duo"])
    duo_answer.remove(duo_answer[-1])
    duo_private, duo_cert = rsa_identity(pki, "duo-sign")
    duo_key = signing_key(duo_private)
    report["duo_sandbox_sign_ms"] = per_call_ms(
        lambda: sign(
            copy.deepcopy(duo_answer),
            duo_key,
            duo_protocol.SIGNATURE_SHAPE,
            key_info=x509_key_info(duo_cert),
        )
    )
    uwv_body = etree.fromstring(raws["uwv"]).find("soap:Body/*", soap.NS)
    assert uwv_body is not None
    uwv_private, uwv_cert = rsa_identity(pki, "uwv-sign")
    uwv_key = signing_key(uwv_private)
    report["uwv_sandbox_sign_ms"] = per_call_ms(
        lambda: soap.sign_response(
            copy.deepcopy(uwv_body),
            relates_to="urn:uuid:bench",
            transactie_id="bench",
            message_id="urn:uuid:bench",
            key=uwv_key,
            cert=uwv_cert,
            now=datetime.now(UTC),
        )
    )
    return {k: round(v, 3) for k, v in report.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--citizen", default="999990020", help="test BSN (default: data everywhere)"
    )
    args = parser.parse_args()
    report = asyncio.run(run(args.citizen))
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")


if __name__ == "__main__":
    main()
