"""Browser hardening shared by everything we serve to browsers: the gateway, the demo portal and
the stand-in DigiD. One place, so the three cannot drift apart (docs/hostile-input.md).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

# Two years, every subdomain, no `preload` (that list is a commitment for the whole domain, made
# by its owner, not by one service). Sent in every mode, also over plain http: browsers ignore
# the header on an insecure connection and for IP-address hosts (RFC 6797 §8.1, §8.1.1), so the
# http sandbox on 127.0.0.1 is not pinned to https, while the same code path is what production
# sends over TLS, and the tests see the header without a TLS listener.
HSTS = "max-age=63072000; includeSubDomains"

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def strict_csp(*, script_src: str | None = None, form_action: str = "'self'") -> str:
    """A policy without `unsafe-inline` or `unsafe-eval`: nothing but our own styles and images,
    scripts only from `script_src`, forms only to `form_action`, never framed."""
    script = f"script-src {script_src}; " if script_src else ""
    return (
        f"default-src 'none'; {script}style-src 'self'; img-src 'self'; "
        f"form-action {form_action}; base-uri 'none'; frame-ancestors 'none'"
    )


def harden(response: web.StreamResponse, csp: str) -> None:
    """The headers every response gets; a value the handler set itself wins."""
    response.headers.setdefault("Content-Security-Policy", csp)
    response.headers.setdefault("Strict-Transport-Security", HSTS)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")


def secure_origin(url: str) -> bool:
    """Whether browsers treat this base URL as a secure context, where `Secure` and `__Host-`
    cookies work: https, or http on loopback (Chromium and Firefox both do)."""
    split = urlsplit(url)
    return split.scheme == "https" or (split.scheme == "http" and split.hostname in LOOPBACK)
