"""The `[oidc]` configuration: safe defaults, a configurable acr mapping, production rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors._sandbox.runner import serve_app
from gateway.app import create_app
from gateway.assurance import (
    DEFAULT_ACR_MAPPING,
    DIGID_MIDDEN,
    EIDAS_HIGH,
    EIDAS_LOW,
    EIDAS_SUBSTANTIAL,
    provider_values_for,
)
from gateway.config import load_settings, settings_from_mapping
from gateway.demo.digid import start_digid
from gateway.errors import ConfigError, LoginError
from gateway.login import safe_return_to
from gateway.pki import DevPki
from tests.login_world import login_world
from tests.production import production_config


def production(pki: DevPki, tmp_path: Path, **oidc: Any) -> dict[str, Any]:
    return {**production_config(pki, tmp_path), "oidc": oidc}


def test_sandbox_defaults_point_at_the_stand_in_and_require_substantial() -> None:
    oidc = settings_from_mapping({"sandbox_base_port": 9500}).oidc
    assert oidc.issuer == "http://127.0.0.1:9510"
    assert oidc.min_acr == EIDAS_SUBSTANTIAL
    assert oidc.sub_id_type == "urn:nl-eid-gdi:1.0:id:BSN"
    assert "none" not in oidc.id_token_algs
    assert not any(a.startswith("HS") for a in oidc.id_token_algs)


def test_environment_overrides_oidc_settings() -> None:
    settings = load_settings(
        None, {"BLAUWEKNOP_OIDC__MIN_ACR": EIDAS_HIGH, "BLAUWEKNOP_OIDC__CLIENT_ID": "gw"}
    )
    assert (settings.oidc.min_acr, settings.oidc.client_id) == (EIDAS_HIGH, "gw")


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_weak_id_token_algorithms_cannot_be_configured(alg: str) -> None:
    with pytest.raises(ConfigError, match="may not contain"):
        settings_from_mapping({"oidc": {"id_token_algs": ["RS256", alg]}})


def test_acr_mapping_must_map_to_eidas_levels() -> None:
    with pytest.raises(ConfigError, match="acr_mapping"):
        settings_from_mapping({"oidc": {"acr_mapping": {DIGID_MIDDEN: "midden"}}})
    with pytest.raises(ConfigError, match="min_acr"):
        settings_from_mapping({"oidc": {"min_acr": "substantieel"}})


def test_production_needs_a_real_issuer_and_a_client_key(pki: DevPki, tmp_path: Path) -> None:
    key = str(pki.identity("gateway-client").key)
    with pytest.raises(ConfigError, match=r"\[oidc\] issuer"):
        settings_from_mapping(production(pki, tmp_path, client_key=key))
    with pytest.raises(ConfigError, match=r"\[oidc\] issuer"):
        settings_from_mapping(
            production(pki, tmp_path, issuer="http://digid.example", client_key=key)
        )
    with pytest.raises(ConfigError, match="client_key"):
        settings_from_mapping(production(pki, tmp_path, issuer="https://digid.example"))
    settings = settings_from_mapping(
        production(pki, tmp_path, issuer="https://digid.example", client_key=key)
    )
    assert settings.oidc.issuer == "https://digid.example"


def test_requested_acr_values_follow_the_mapping() -> None:
    assert provider_values_for(EIDAS_SUBSTANTIAL, DEFAULT_ACR_MAPPING) == [
        "urn:oasis:names:tc:SAML:2.0:ac:classes:Smartcard",
        "urn:oasis:names:tc:SAML:2.0:ac:classes:SmartcardPKI",
    ]
    assert len(provider_values_for(EIDAS_LOW, DEFAULT_ACR_MAPPING)) == 4


async def test_a_configured_mapping_changes_what_is_accepted(state_dir: Path) -> None:
    # A deployment that counts DigiD Midden as substantial (configurable, not the default).
    mapping = {**DEFAULT_ACR_MAPPING, DIGID_MIDDEN: EIDAS_SUBSTANTIAL}
    async with login_world(state_dir, acr_mapping=mapping) as world, world.browser() as browser:
        answer = await world.login(browser, niveau="midden")
        assert answer.status == 303, answer.body
        assert (await world.session_info(browser))["acr"] == EIDAS_SUBSTANTIAL


async def test_discovery_naming_another_issuer_is_refused(state_dir: Path) -> None:
    digid = await start_digid()  # calls itself http://127.0.0.1:<port>
    port = digid.url.rsplit(":", 1)[1]
    settings = settings_from_mapping(
        {"state_dir": str(state_dir), "oidc": {"issuer": f"http://localhost:{port}"}}
    )
    runner, gateway_port = await serve_app(create_app(settings))
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{gateway_port}/login",
                headers={"Accept": "application/json"},
                allow_redirects=False,
            ) as response,
        ):
            body = await response.json(content_type=None)
        assert response.status == 503
        assert body["reden"] == "issuer_mismatch"
    finally:
        await runner.cleanup()
        await digid.runner.cleanup()


@given(st.text(max_size=60))
def test_an_accepted_return_to_never_leaves_the_gateway(candidate: str) -> None:
    base = "https://gateway.example/consent/"
    try:
        accepted = safe_return_to(candidate)
    except LoginError:
        return
    resolved = urlsplit(urljoin(base, accepted))
    assert (resolved.scheme, resolved.netloc) == ("https", "gateway.example")


@pytest.mark.parametrize("candidate", ["/", "/consent?x=1&y=%2F%2F", "/a/b#c"])
def test_ordinary_paths_are_accepted(candidate: str) -> None:
    assert safe_return_to(candidate) == candidate
