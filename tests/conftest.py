"""Fixtures shared by every test: a development PKI made once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pki import DevPki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    made = DevPki(Path(tmp_path_factory.mktemp("pki")))
    made.ensure()
    return made
