"""Session-wide fixtures: keys are slow to make, so each kind is made once per test session."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from blindscore.dgk import DGKKeyPair, generate_dgk_keypair
from blindscore.paillier import KeyPair, generate_keypair

settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(scope="session")
def paillier_keypair() -> KeyPair:
    """A real 2048-bit Paillier key pair, shared by the whole session."""
    return generate_keypair(2048)


@pytest.fixture(scope="session")
def dgk_keypair() -> DGKKeyPair:
    """A real 2048-bit DGK key pair (default t, u = 65537), shared by the whole session."""
    return generate_dgk_keypair(2048)
