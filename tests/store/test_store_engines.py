"""Engine behaviour: persistence, sharing between processes, migrations, failures."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import stat
import sys
import textwrap

import pytest
from store_samples import DOMAIN, sample_audit, sample_binding, sample_user

from sipim.store import Store, StoreError, StoreUnavailable, WriteBatch, open_store
from sipim.store import migrations
from sipim.store.sqlite import sqlite_path_from_url


async def test_data_survives_close_and_reopen(database_url: str):
    store = await open_store(database_url)
    await store.add_user(sample_user())
    await store.write_batch(WriteBatch(upserts=[sample_binding()], audit=[sample_audit(1.0)]))
    change_id = await store.publish_change("contacts", "alice@example.com")
    await store.close()

    store = await open_store(database_url)
    try:
        assert await store.get_user("alice", DOMAIN) == sample_user()
        assert await store.list_bindings() == [sample_binding()]
        assert await store.query_audit() == [sample_audit(1.0)]
        assert await store.latest_change_id() == change_id
    finally:
        await store.close()


async def test_committed_batch_survives_process_kill_9(database_url: str):
    # What we promise: a write_batch that returned is durable even if the process is
    # killed right after (SQLite: WAL + synchronous=NORMAL).
    child = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from store_samples import sample_binding
        from sipim.store import WriteBatch, open_store

        async def main():
            store = await open_store({database_url!r})
            await store.write_batch(WriteBatch(upserts=[sample_binding("killed")]))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", child)
    assert await process.wait() == -9
    store = await open_store(database_url)
    try:
        assert [b.aor for b in await store.list_bindings()] == [f"sip:killed@{DOMAIN}"]
    finally:
        await store.close()


async def test_two_stores_on_one_database_see_each_others_writes(database_url: str):
    # The CLI and a running server (or two nodes on PostgreSQL) share one database.
    server = await open_store(database_url)
    cli = await open_store(database_url)
    try:
        start = await server.latest_change_id()
        await cli.add_user(sample_user("bob"))
        assert await server.get_user("bob", DOMAIN) == sample_user("bob")
        assert [c.key for c in await server.changes_since(start)] == [f"bob@{DOMAIN}"]

        await server.write_batch(WriteBatch(upserts=[sample_binding("bob")]))
        assert await cli.list_bindings() == [sample_binding("bob")]
        assert await cli.remove_user("bob", DOMAIN) is True
        assert await server.list_bindings() == []
    finally:
        await cli.close()
        await server.close()


async def test_concurrent_publishers_produce_one_gapless_increasing_feed(database_url: str):
    first = await open_store(database_url)
    second = await open_store(database_url)
    try:
        ids = await asyncio.gather(
            *(store.publish_change("k", f"{n}") for n in range(20) for store in (first, second))
        )
        assert len(set(ids)) == 40
        feed = await first.changes_since(0)
        assert [c.id for c in feed] == sorted(ids)
    finally:
        await second.close()
        await first.close()


async def test_large_audit_batch_is_written_completely(store: Store):
    # PostgreSQL switches to COPY above a threshold; both paths must store the same rows.
    records = [sample_audit(float(ts), username=None if ts % 2 else "alice") for ts in range(250)]
    await store.write_batch(WriteBatch(audit=records))
    assert await store.query_audit() == records[::-1]


async def test_closed_store_raises_store_unavailable(database_url: str):
    store = await open_store(database_url)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.get_user("alice", DOMAIN)


# ---- migrations ------------------------------------------------------------------------


async def test_appended_migration_runs_exactly_once(database_url: str, monkeypatch):
    store = await open_store(database_url)
    await store.close()
    probe = "INSERT INTO changes (kind, key, ts) VALUES ('migration', 'v2', 0)"
    extra = migrations.Migration(migrations.latest_version() + 1, "probe", sqlite=(probe,), postgresql=(probe,))
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, extra))
    for _ in range(2):
        store = await open_store(database_url)
        await store.close()
    store = await open_store(database_url)
    try:
        assert [(c.kind, c.key) for c in await store.changes_since(0)] == [("migration", "v2")]
    finally:
        await store.close()


async def test_database_newer_than_code_refuses_to_open(database_url: str, monkeypatch):
    store = await open_store(database_url)
    await store.close()
    monkeypatch.setattr(migrations, "MIGRATIONS", ())
    with pytest.raises(StoreError, match="newer than this sipim"):
        await open_store(database_url)


# ---- PostgreSQL specifics ----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_unreachable_postgresql_raises_store_unavailable_naming_host_and_port():
    port = _closed_port()
    with pytest.raises(StoreUnavailable) as caught:
        await open_store(f"postgresql://postgres:secret@127.0.0.1:{port}/test?schema=s")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "not reachable" in message
    assert "secret" not in message


async def test_invalid_schema_name_is_rejected_before_connecting():
    with pytest.raises(StoreError, match="invalid PostgreSQL schema name"):
        await open_store("postgres://postgres@127.0.0.1:1/test?schema=a;drop")


# ---- SQLite specifics ------------------------------------------------------------------


async def test_sqlite_file_is_private_in_created_dirs_and_uses_wal(tmp_path):
    path = tmp_path / "deep" / "er" / "sipim.db"
    store = await open_store(str(path))
    await store.add_user(sample_user())
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE((path.parent / "sipim.db-wal").stat().st_mode) == 0o600
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
                migrations.latest_version()
            )
            # Kamailio auth_db column names (username, domain, ha1)
            assert conn.execute("SELECT username, domain, ha1 FROM users").fetchall() == [
                ("alice", DOMAIN, "0" * 32)
            ]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///relative/s.db", "relative/s.db"),
        ("sqlite:////abs/s.db", "/abs/s.db"),
        ("/abs/s.db", "/abs/s.db"),
        ("s.db", "s.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_url_forms(url: str, path: str):
    assert sqlite_path_from_url(url) == path


async def test_sqlite_memory_store_works():
    store = await open_store(":memory:")
    try:
        await store.add_user(sample_user())
        assert [u.username for u in await store.list_users()] == ["alice"]
    finally:
        await store.close()


async def test_sqlite_unwritable_location_raises_store_unavailable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match="a-file"):
        await open_store(str(blocker / "sub" / "sipim.db"))


async def test_sqlite_audit_keeps_only_its_time_index_and_still_filters_by_user(tmp_path):
    # Migration 7: per-user audit indexes cost two page writes per attempt in WAL mode;
    # user filters walk the time index instead and must find the same rows.
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    store = await open_store(url)
    try:
        records = [sample_audit(float(ts), user="bob" if ts % 3 else "alice",
                                username=None if ts % 5 == 0 else ("carol" if ts % 7 == 0 else "bob"))
                   for ts in range(200)]
        await store.write_batch(WriteBatch(audit=records))
        expected = [r for r in records if r.username == "bob" or r.aor.startswith("sip:bob@")][::-1]
        assert await store.query_audit(username="bob", limit=1000) == expected
        assert await store.query_audit(username="bob", since=150.0, limit=5) == [r for r in expected if r.ts >= 150][:5]
    finally:
        await store.close()
    with sqlite3.connect(sqlite_path_from_url(url)) as conn:
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(audit)")}
    assert indexes == {"audit_ts"}
