"""docs/configuration.md is generated from the loader, and the committed file is up to date."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gateway.config_reference import DESCRIPTIONS, read_keys, reference
from tests.replicas import BLAUWEKNOP

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_every_setting_the_loader_reads_is_described_and_no_description_is_stale() -> None:
    keys = read_keys()
    assert "store.url" in keys
    assert "oidc.issuer" in keys
    assert "organisations.<name>.trust_cert" in keys
    assert keys["deadline_seconds"] == 5.0, "defaults come from the code"
    assert sorted(set(keys) - set(DESCRIPTIONS)) == [], "undocumented settings"
    assert sorted(set(DESCRIPTIONS) - set(keys)) == [], "documented but no longer read"


def test_committed_reference_is_up_to_date() -> None:
    assert DOC.read_text() == reference(), (
        "docs/configuration.md is stale: run `blauweknop config reference -o "
        "docs/configuration.md` and commit it"
    )


def test_cli_prints_the_reference(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    subprocess.run([BLAUWEKNOP, "config", "reference", "-o", str(out)], check=True)
    assert out.read_text() == DOC.read_text()
