"""Session-wide fixtures: keys are slow to make, so each kind is made once per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from blindscore.crypto.dgk import DGKKeyPair, generate_dgk_keypair
from blindscore.crypto.paillier import KeyPair, generate_keypair

if TYPE_CHECKING:  # support imports all three nodes: only the tests that start nodes pay for that
    from blindscore.models.linear import LinearModel

    from support import GermanRows, NodesFactory

#: Names the Hypothesis profile to load; unset, the suite runs "ci".
HYPOTHESIS_PROFILE_ENV = "BLINDSCORE_HYPOTHESIS_PROFILE"
settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
# For mutation runs only (scripts/mutation.py --hypothesis-profile mutation): the same examples as
# "ci", but a failing one is reported as found, not shrunk. A mutant that breaks a builder makes
# every random circuit fail, and shrinking those costs a mutant seconds to minutes (or a time-out);
# a failing example fails the test either way. (No test calls hypothesis.target, so leaving out
# the target phase draws no other examples.)
settings.register_profile(
    "mutation", parent=settings.get_profile("ci"), phases=[Phase.explicit, Phase.reuse, Phase.generate]
)
settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_ENV, "ci"))


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """A node's ``serve`` command run in-process sets the node's umask (077) for the whole process;
    give the next test the umask the session started with."""
    mask = os.umask(0o077)
    os.umask(mask)
    yield
    os.umask(mask)


@pytest.fixture(scope="session")
def paillier_keypair() -> KeyPair:
    """A real 2048-bit Paillier key pair, shared by the whole session."""
    return generate_keypair(2048)


@pytest.fixture(scope="session")
def dgk_keypair() -> DGKKeyPair:
    """A real 2048-bit DGK key pair (default t, u = 65537), shared by the whole session."""
    return generate_dgk_keypair(2048)


@pytest.fixture(scope="session")
def second_paillier_keypair() -> KeyPair:
    """Another 2048-bit Paillier key pair, for tests that need a bank key other than the first."""
    return generate_keypair(2048)


# ---------------------------------------------------------------------- German credit data


@pytest.fixture(scope="session")
def german_rows() -> GermanRows:
    """The 1000 German credit applications, read once per session (tests must not change them)."""
    from support import german_credit

    return german_credit()[0]


@pytest.fixture(scope="session")
def default_german_model() -> LinearModel:
    """The shipped German credit model, loaded once per session."""
    from support import german_model

    return german_model()


# ---------------------------------------------------------------------- three nodes over gRPC


@pytest.fixture
def make_nodes(
    tmp_path_factory: pytest.TempPathFactory, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> Iterator[NodesFactory]:
    """Starts bureau, bank and platform in process over real gRPC (``support.running_nodes``
    options); every network it started is stopped after the test."""
    from support import NodesFactory

    factory = NodesFactory(tmp_path_factory, paillier_keypair, dgk_keypair)
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_nodes(
    tmp_path_factory: pytest.TempPathFactory, paillier_keypair: KeyPair, dgk_keypair: DGKKeyPair
) -> Iterator[NodesFactory]:
    """``make_nodes`` for module-scoped networks: stopped after the module's last test."""
    from support import NodesFactory

    factory = NodesFactory(tmp_path_factory, paillier_keypair, dgk_keypair)
    yield factory
    factory.close()


# ---------------------------------------------------------------------- PostgreSQL

PG_URL_ENV = "BLINDSCORE_TEST_PG_URL"
NO_PG_ENV = "BLINDSCORE_TEST_NO_PG"
_NO_PG_KEY = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"postgresql: needs the PostgreSQL server named by ${PG_URL_ENV}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With BLINDSCORE_TEST_NO_PG=1 (and only then) the PostgreSQL tests are deselected, visibly."""
    if os.environ.get(NO_PG_ENV) != "1":
        return
    dropped = [item for item in items if item.get_closest_marker("postgresql")]
    if dropped:
        items[:] = [item for item in items if not item.get_closest_marker("postgresql")]
        config.hook.pytest_deselected(items=dropped)
        config.stash[_NO_PG_KEY] = len(dropped)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    dropped = config.stash.get(_NO_PG_KEY, 0)
    if dropped:
        terminalreporter.write_line(
            f"{dropped} PostgreSQL test(s) deselected because {NO_PG_ENV}=1: "
            "the PostgreSQL backend was NOT tested",
            yellow=True,
        )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """The PostgreSQL server the tests use: ``$BLINDSCORE_TEST_PG_URL`` when set, else a private
    cluster started for this session from the installed server binaries (tests/pg_cluster.py).

    If neither is possible the tests fail rather than skip: a green run must have tested
    PostgreSQL unless BLINDSCORE_TEST_NO_PG=1 says otherwise.
    """
    url = os.environ.get(PG_URL_ENV, "")
    if url:
        yield url
        return
    import pg_cluster

    try:
        cluster = pg_cluster.start()
    except pg_cluster.NoPostgres as exc:
        pytest.fail(f"{exc}; or point {PG_URL_ENV} at a server, or set {NO_PG_ENV}=1 to deselect these tests")
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """``pg_url`` narrowed to a fresh schema (via search_path), dropped after the test."""
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in pg_url else "?"
    yield f"{pg_url}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
