"""Fixtures running `sipim serve --workers 2` on both storage engines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

# Both stores, a fresh PostgreSQL schema per module: the fixture the integration tests use.
from tests.integration.conftest import engine_database  # noqa: F401
from tests.support.server import SipimProcess

USERS = ("alice", "bob", "carol", "dave", "erin", "frank")


@pytest.fixture(scope="module")
def cluster(engine_database, tmp_path_factory) -> Iterator[SipimProcess]:  # noqa: F811 (the fixture)
    """Two workers, users provisioned; lock-out out of the way (tested on its own server)."""
    process = SipimProcess(tmp_path_factory.mktemp("cluster"), database=engine_database,
                           extra_args=("--workers", "2"),
                           config_text="lockout_threshold = 100000\nchange_poll_interval = 0.5\n").start()
    try:
        for name in USERS:
            process.add_user(name, f"{name}-secret")
        yield process
    finally:
        process.stop()
