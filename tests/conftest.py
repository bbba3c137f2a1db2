"""Shared database fixtures. Per-layer fixtures live in tests/<layer>/conftest.py.

``database_url`` is parametrized over both engines, so every test that uses it (or
``store``) runs once on SQLite and once on PostgreSQL:

- sqlite: a fresh file in the test's tmp_path;
- postgresql: a fresh schema ``t_<random>`` on the shared ``test`` database, dropped after
  the test. Override the server with SIPIM_TEST_POSTGRES_URL. When no PostgreSQL answers,
  the postgresql variants are skipped (with the reason), not failed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from sipim.store import Store, open_store

POSTGRES_BASE_URL = os.environ.get(
    "SIPIM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

_postgres_unreachable_reason: str | None = None
_postgres_checked = False


async def _check_postgres() -> str | None:
    """Connect once per session; the reason PostgreSQL is unusable, or None."""
    global _postgres_checked, _postgres_unreachable_reason
    if not _postgres_checked:
        _postgres_checked = True
        import asyncpg

        try:
            conn = await asyncpg.connect(POSTGRES_BASE_URL, timeout=5)
            await conn.close()
        except Exception as exc:  # any failure means "skip the postgresql variants"
            _postgres_unreachable_reason = f"PostgreSQL at {POSTGRES_BASE_URL} unusable: {exc!r}"
    return _postgres_unreachable_reason


async def _drop_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(POSTGRES_BASE_URL, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:
    """A URL naming an empty database of the parametrized engine."""
    if request.param == "sqlite":
        yield str(tmp_path / "sipim.db")
        return
    reason = await _check_postgres()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    separator = "&" if "?" in POSTGRES_BASE_URL else "?"
    yield f"{POSTGRES_BASE_URL}{separator}schema={schema}"
    await _drop_schema(schema)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open store on ``database_url``, closed after the test."""
    opened = await open_store(database_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path) -> AsyncIterator[Store]:
    """A SQLite store only, for tests that need a real store but not both engines."""
    opened = await open_store(str(tmp_path / "sipim.db"))
    try:
        yield opened
    finally:
        await opened.close()
