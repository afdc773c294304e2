"""Shared machinery for the organisations' sandbox services: test citizens and fault knobs."""

from connectors._sandbox.citizens import CITIZENS, TestCitizen, citizen
from connectors._sandbox.faults import FAULTS, Faults, install_faults, rogue_identity

__all__ = [
    "CITIZENS",
    "FAULTS",
    "Faults",
    "TestCitizen",
    "citizen",
    "install_faults",
    "rogue_identity",
]
