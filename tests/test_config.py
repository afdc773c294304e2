from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from gateway.config import connector_factory, load_settings, verification_connectors
from gateway.connector import FetchRequest
from gateway.errors import ConfigError


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        'port = 9000\ndeadline_seconds = 3.5\n[organisations.duo]\nurl = "http://duo.test:1"\n'
    )
    settings = load_settings(
        config,
        {
            "BLAUWEKNOP_PORT": "9100",
            "BLAUWEKNOP_ORGANISATIONS__CAK__READ_TIMEOUT": "1.5",
            "BLAUWEKNOP_STATE_DIR": str(tmp_path / "state"),
            "UNRELATED": "x",
        },
    )
    assert settings.port == 9100, "environment overrides the file"
    assert settings.deadline_seconds == 3.5
    by_code = {o.settings.organisatie.code: o.settings for o in settings.organisations}
    assert by_code["duo"].base_url == "http://duo.test:1"
    assert by_code["cak"].read_timeout == 1.5
    assert by_code["cak"].trust_cert == tmp_path / "state" / "pki" / "cak-sign.cert.pem"
    assert set(by_code) == {"duo", "uwv", "cak", "gm0363"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BLAUWEKNOP_MODE": "staging"}, "mode must be"),
        ({"BLAUWEKNOP_PORT": "eighty"}, "whole number"),
        ({"BLAUWEKNOP_ORGANISATIONS__SVB__URL": "https://svb.test"}, "no connector named 'svb'"),
    ],
)
def test_clear_errors(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(None, env)


def test_unreadable_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1")
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings(bad, {})


async def test_verification_connectors_need_no_credentials_and_never_fetch(
    tmp_path: Path,
) -> None:
    missing = str(tmp_path / "not-given")
    settings = load_settings(
        None,
        {
            "BLAUWEKNOP_STATE_DIR": str(tmp_path / "state"),
            "BLAUWEKNOP_ORGANISATIONS__UWV__CLIENT_KEY": missing,
            "BLAUWEKNOP_ORGANISATIONS__CAK__OPTIONS__CLIENT_SECRET_FILE": missing,
        },
    )
    settings.dev_pki.ensure()
    cak = next(o for o in settings.organisations if o.connector == "cak")
    with pytest.raises(ConfigError, match="CAK connector needs"):
        connector_factory("cak")(cak.settings)  # the gateway itself cannot run so
    connectors, problems = verification_connectors(settings)
    assert problems == []
    assert sorted(connectors) == ["cak", "duo", "gm0363", "uwv"]
    async with aiohttp.ClientSession() as session:
        request = FetchRequest("999990020", "tx", session)
        for code in ("uwv", "cak"):
            with pytest.raises(ConfigError, match="verify signatures only"):
                await connectors[code].fetch(request)
