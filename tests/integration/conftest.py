"""Fixtures that run real `sipim serve` processes on both storage engines."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from tests.support.server import SipimProcess
from tests.conftest import POSTGRES_BASE_URL, _check_postgres, _drop_schema


def _postgres_url_or_skip() -> tuple[str, str]:
    reason = asyncio.run(_check_postgres())
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    separator = "&" if "?" in POSTGRES_BASE_URL else "?"
    return f"{POSTGRES_BASE_URL}{separator}schema={schema}", schema


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine_database(request) -> Iterator[str | None]:
    """None (the embedded SQLite default) or a PostgreSQL URL with a fresh schema."""
    if request.param == "sqlite":
        yield None
        return
    url, schema = _postgres_url_or_skip()
    yield url
    asyncio.run(_drop_schema(schema))


@pytest.fixture(scope="module")
def server(engine_database, tmp_path_factory) -> Iterator[SipimProcess]:
    """One server per module and engine, with alice, bob and carol provisioned."""
    process = SipimProcess(tmp_path_factory.mktemp("sipim"), database=engine_database,
                           config_text="lockout_threshold = 1000\n").start()
    try:
        for name in ("alice", "bob", "carol"):
            process.add_user(name, f"{name}-secret")
        yield process
    finally:
        process.stop()


@pytest.fixture
def make_server(tmp_path) -> Iterator:
    """Start extra servers with their own settings (SQLite); all stopped after the test."""
    started: list[SipimProcess] = []

    def start(**kwargs) -> SipimProcess:
        process = SipimProcess(kwargs.pop("data_dir", tmp_path / f"s{len(started)}"), **kwargs).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
