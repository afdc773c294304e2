"""A DEVELOPMENT RFC 3161 time-stamping authority. NOT FOR PRODUCTION.

It signs whatever it is asked with a key from the development PKI (`state_dir/pki/tsa.*`), on
the local clock, with a policy OID in the documentation arc 2.999. It exists so that the demo
stack and the tests have a real TSA on a real socket; production configures a qualified TSA
(`[audit] tsa_url`, `tsa_ca_file`). It is a generic responder (RFC 3161 §2.4 over HTTP, §3.4),
so PAdES signatures can use it too.

The token is built with asn1crypto and signed with cryptography: SignedData with the TSTInfo
as encapsulated content, signed attributes content-type, message-digest and
signing-certificate-v2 (RFC 5816, SHA-256), sorted in DER order so every verifier agrees.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
from dataclasses import dataclass

from aiohttp import web
from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from connectors._sandbox.runner import serve_app
from gateway.pki import DevPki
from gateway.tsa.client import TIMESTAMP_QUERY, TIMESTAMP_REPLY

log = logging.getLogger(__name__)

# id 2.999 is the ITU/ISO "example" arc: nobody can mistake this policy for a real one.
DEV_POLICY = "2.999.3161.1"
MAX_REQUEST_BYTES = 16 * 1024
_DIGESTS = {"sha256": 32, "sha384": 48, "sha512": 64}


@dataclass(frozen=True, slots=True)
class DevTsa:
    """Signs time-stamp tokens with the development PKI's `tsa` identity."""

    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    certificate: x509.Certificate
    policy: str = DEV_POLICY

    @classmethod
    def from_pki(cls, pki: DevPki) -> DevTsa:
        pki.ensure()
        identity = pki.identity("tsa")
        key = serialization.load_pem_private_key(identity.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError("the development TSA key must be EC or RSA")
        return cls(key, x509.load_pem_x509_certificate(identity.cert.read_bytes()))

    def respond(self, request_der: bytes, *, now: dt.datetime | None = None) -> bytes:
        """A DER TimeStampResp for a DER TimeStampReq; a rejection for anything invalid."""
        try:
            request = tsp.TimeStampReq.load(request_der, strict=True)
            version = request["version"].native
            imprint = request["message_imprint"]
            algorithm = imprint["hash_algorithm"]["algorithm"].native
            digest = imprint["hashed_message"].native
            policy = request["req_policy"].native
            nonce = request["nonce"].native
            cert_req = bool(request["cert_req"].native)
            has_extensions = bool(request["extensions"].native)
        except (ValueError, TypeError, KeyError) as exc:
            return _rejection("bad_data_format", f"not a TimeStampReq: {exc}")
        if version != "v1":
            return _rejection("bad_request", "only TimeStampReq version 1 exists")
        if algorithm not in _DIGESTS or len(digest) != _DIGESTS[algorithm]:
            return _rejection("bad_alg", "the message imprint must be SHA-256, -384 or -512")
        if policy is not None and policy != self.policy:
            return _rejection("unaccepted_policy", f"this TSA only issues policy {self.policy}")
        if has_extensions:
            return _rejection("unaccepted_extension", "this TSA accepts no extensions")
        return self._grant(imprint, nonce, cert_req, now or dt.datetime.now(dt.UTC))

    def _grant(
        self, imprint: tsp.MessageImprint, nonce: int | None, cert_req: bool, now: dt.datetime
    ) -> bytes:
        cert = asn1_x509.Certificate.load(self.certificate.public_bytes(serialization.Encoding.DER))
        info: dict[str, object] = {
            "version": "v1",
            "policy": self.policy,
            "message_imprint": imprint,
            "serial_number": secrets.randbits(63) | 1,
            "gen_time": now.astimezone(dt.UTC).replace(microsecond=0),
            "accuracy": {"seconds": 1},
            "tsa": asn1_x509.GeneralName(name="directory_name", value=cert.subject),
        }
        if nonce is not None:
            info["nonce"] = nonce
        tst_info = tsp.TSTInfo(info).dump()
        ess = tsp.SigningCertificateV2(
            {
                "certs": [
                    {
                        "hash_algorithm": {"algorithm": "sha256"},
                        "cert_hash": hashlib.sha256(cert.dump()).digest(),
                        "issuer_serial": {
                            "issuer": [
                                asn1_x509.GeneralName(name="directory_name", value=cert.issuer)
                            ],
                            "serial_number": cert.serial_number,
                        },
                    }
                ]
            }
        )
        attributes = [
            cms.CMSAttribute({"type": "content_type", "values": ["tst_info"]}),
            cms.CMSAttribute(
                {"type": "message_digest", "values": [hashlib.sha256(tst_info).digest()]}
            ),
            cms.CMSAttribute({"type": "signing_certificate_v2", "values": [ess]}),
        ]
        # DER: the elements of a SET OF are sorted by their encoding.
        signed_attrs = cms.CMSAttributes(sorted(attributes, key=lambda a: a.dump()))
        to_sign = signed_attrs.dump()
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            signature = self.key.sign(to_sign, ec.ECDSA(hashes.SHA256()))
            signature_algorithm = "sha256_ecdsa"
        else:
            signature = self.key.sign(to_sign, padding.PKCS1v15(), hashes.SHA256())
            signature_algorithm = "sha256_rsa"
        signer = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    name="issuer_and_serial_number",
                    value={"issuer": cert.issuer, "serial_number": cert.serial_number},
                ),
                "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
                "signed_attrs": signed_attrs,
                "signature_algorithm": algos.SignedDigestAlgorithm(
                    {"algorithm": signature_algorithm}
                ),
                "signature": signature,
            }
        )
        signed_data: dict[str, object] = {
            "version": "v3",
            "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
            "encap_content_info": {
                "content_type": "tst_info",
                "content": core.ParsableOctetString(tst_info),
            },
            "signer_infos": [signer],
        }
        if cert_req:
            signed_data["certificates"] = [cert]
        token = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
        return bytes(
            tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()
        )


def _rejection(failure: str, text: str) -> bytes:
    status = tsp.PKIStatusInfo(
        {"status": "rejection", "status_string": [text], "fail_info": {failure}}
    )
    # asn1crypto's TimeStampResp insists on a token; a rejection is SEQUENCE { status } alone.
    body: bytes = status.dump()
    return b"\x30" + _der_length(len(body)) + body


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def create_app(tsa: DevTsa) -> web.Application:
    """POST a DER TimeStampReq to `/` (Content-Type application/timestamp-query)."""

    async def stamp(request: web.Request) -> web.Response:
        if request.content_type != TIMESTAMP_QUERY:
            raise web.HTTPUnsupportedMediaType(text=f"send {TIMESTAMP_QUERY}")
        if (request.content_length or 0) > MAX_REQUEST_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, request.content_length or 0)
        body = await request.content.read(MAX_REQUEST_BYTES + 1)
        if len(body) > MAX_REQUEST_BYTES:
            raise web.HTTPRequestEntityTooLarge(MAX_REQUEST_BYTES, len(body))
        try:
            answer = tsa.respond(body)
        except Exception:  # a hostile request must get a rejection, never a stack trace
            log.exception("development TSA could not answer a request")
            answer = _rejection("system_failure", "the TSA could not process the request")
        return web.Response(body=answer, content_type=TIMESTAMP_REPLY)

    async def about(_: web.Request) -> web.Response:
        return web.Response(
            text="Blauwe Knop DEVELOPMENT time-stamping authority (RFC 3161). "
            "Not for production: its key is in the development PKI.\n"
        )

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post("/", stamp)
    app.router.add_get("/", about)
    return app


async def start_dev_tsa(
    pki: DevPki, *, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve the development TSA on a real socket; returns the runner and its URL."""
    runner, bound = await serve_app(create_app(DevTsa.from_pki(pki)), host=host, port=port)
    return runner, f"http://{host}:{bound}/"
