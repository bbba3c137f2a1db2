"""PostgreSQL engine: an asyncpg pool shared by every role of one process.

Several sipim nodes may share one database (DESIGN.md "Scaling out"), so everything
that must be coherent across nodes is decided by PostgreSQL: upserts use ON CONFLICT,
migrations and the change feed are serialised with transaction-scoped advisory locks.

asyncpg prepares and caches every statement per connection (statement_cache_size), so
repeated queries run as prepared statements; executemany() pipelines a whole batch in
one round trip. (Behind pgbouncer in transaction mode, pass statement_cache_size=0.)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from . import migrations
from .base import DEFAULT_AUDIT_LIMIT, Store, normalise_batch
from .errors import StoreError, StoreUnavailable, UserExists
from .models import (
    CHANGE_USER,
    AuditRecord,
    Binding,
    Change,
    User,
    aor_of,
    aor_user_part,
    user_key,
)

POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 5
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Errors that mean "the server is not there / the connection is gone", as opposed to
# "the server refused this statement".
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)

_BINDING_COLUMNS = (
    "aor, binding_key, contact, expires_at, instance_id, reg_id, q, call_id, cseq, path, "
    "source, transport, flow_id, node_id, gruu_tag, user_agent, registered_at"
)
_UPSERT_BINDING = (
    f"INSERT INTO bindings ({_BINDING_COLUMNS}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
    "ON CONFLICT (aor, binding_key) DO UPDATE SET "
    "contact = excluded.contact, expires_at = excluded.expires_at, "
    "instance_id = excluded.instance_id, reg_id = excluded.reg_id, q = excluded.q, "
    "call_id = excluded.call_id, cseq = excluded.cseq, path = excluded.path, "
    "source = excluded.source, transport = excluded.transport, flow_id = excluded.flow_id, "
    "node_id = excluded.node_id, gruu_tag = excluded.gruu_tag, "
    "user_agent = excluded.user_agent, registered_at = excluded.registered_at"
)
_AUDIT_COLUMNS = (
    "ts", "aor", "aor_user", "username", "instance_id", "user_agent", "source",
    "transport", "result", "reason",
)  # fmt: skip
_INSERT_AUDIT = (
    f"INSERT INTO audit ({', '.join(_AUDIT_COLUMNS)}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
)
# From about this many audit rows COPY beats a pipelined executemany (measured: equal at
# 10 rows, -10% at 50, -30% at 200); below it, COPY's extra round trip does not pay.
# Binding upserts need ON CONFLICT, which COPY cannot do; a single INSERT ... SELECT FROM
# unnest(arrays) measured no faster than executemany, so upserts stay simple.
_AUDIT_COPY_THRESHOLD = 32
_USER_COLUMNS = "username, domain, ha1, ha1_sha256, display_name, phones, created_at, disabled"


class PostgresURL:
    """A PostgreSQL URL split into what asyncpg gets and what we use ourselves."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for name, value in query if name == "schema"]
        self.schema: str | None = schemas[-1] if schemas else None
        if self.schema is not None and not _SCHEMA_NAME.match(self.schema):
            raise StoreError(f"invalid PostgreSQL schema name {self.schema!r} in store URL")
        # asyncpg would turn an unknown query parameter into a server setting.
        remaining = urlencode([(name, value) for name, value in query if name != "schema"])
        self.dsn = urlunsplit(parts._replace(query=remaining))
        hostport = parts.netloc.rpartition("@")[2] or "localhost (default socket)"
        self.where = hostport if ":" in hostport or "(" in hostport else f"{hostport}:5432"
        self.database = parts.path.lstrip("/") or "(default database)"

    def describe(self) -> str:
        """Host, port and database, never the password."""
        return f"PostgreSQL at {self.where}, database {self.database!r}"


def _lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory-lock key, distinct per schema."""
    digest = hashlib.blake2b(f"sipim:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _binding_row(b: Binding) -> tuple[Any, ...]:
    return (
        b.aor, b.binding_key, b.contact, b.expires_at, b.instance_id, b.reg_id, b.q,
        b.call_id, b.cseq, list(b.path), b.source, b.transport, b.flow_id, b.node_id,
        b.gruu_tag, b.user_agent, b.registered_at,
    )  # fmt: skip


def _binding_from_record(r: asyncpg.Record) -> Binding:
    return Binding(
        aor=r["aor"], binding_key=r["binding_key"], contact=r["contact"],
        expires_at=r["expires_at"], instance_id=r["instance_id"], reg_id=r["reg_id"],
        q=r["q"], call_id=r["call_id"], cseq=r["cseq"], path=tuple(r["path"]),
        source=r["source"], transport=r["transport"], flow_id=r["flow_id"],
        node_id=r["node_id"], gruu_tag=r["gruu_tag"], user_agent=r["user_agent"],
        registered_at=r["registered_at"],
    )  # fmt: skip


def _user_row(u: User) -> tuple[Any, ...]:
    return (
        u.username, u.domain, u.ha1_md5, u.ha1_sha256, u.display_name, list(u.phones),
        u.created_at, u.disabled,
    )  # fmt: skip


def _user_from_record(r: asyncpg.Record) -> User:
    return User(
        username=r["username"], domain=r["domain"], ha1_md5=r["ha1"],
        ha1_sha256=r["ha1_sha256"], display_name=r["display_name"],
        phones=tuple(r["phones"]), created_at=r["created_at"], disabled=r["disabled"],
    )  # fmt: skip


def _audit_row(a: AuditRecord) -> tuple[Any, ...]:
    return (
        a.ts, a.aor, aor_user_part(a.aor), a.username, a.instance_id, a.user_agent,
        a.source, a.transport, a.result, a.reason,
    )  # fmt: skip


def _audit_from_record(r: asyncpg.Record) -> AuditRecord:
    return AuditRecord(
        ts=r["ts"], aor=r["aor"], username=r["username"], instance_id=r["instance_id"],
        user_agent=r["user_agent"], source=r["source"], transport=r["transport"],
        result=r["result"], reason=r["reason"],
    )  # fmt: skip


class PostgresStore(Store):
    """Use :func:`open_postgres` (or :func:`sipim.store.open_store`) to create one."""

    def __init__(self, url: PostgresURL, pool: asyncpg.Pool, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._pool: asyncpg.Pool | None = pool
        self._changes_lock = _lock_key("changes", schema)

    def __repr__(self) -> str:
        return f"<PostgresStore {self.url.describe()}, schema {self.schema!r}>"

    # ---- plumbing ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"{self.url.describe()}: store is closed")
        try:
            async with pool.acquire() as conn:
                yield conn
        except StoreError:
            raise
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"{self.url.describe()} is not reachable: {exc}") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # InterfaceError: a value asyncpg cannot encode for its column (a bad row).
            raise StoreError(f"{self.url.describe()}: {exc}") from exc

    async def _publish(self, conn: asyncpg.Connection, kind: str, key: str) -> int:
        # Serialise publishers until commit: a sequence hands out ids in call order but
        # transactions may commit out of order, and a reader polling "id > last" would
        # then skip the late committer for good. Under the lock, id order = commit order.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._changes_lock)
        return await conn.fetchval(
            "INSERT INTO changes (kind, key, ts) VALUES ($1, $2, $3) RETURNING id",
            kind, key, time.time(),
        )  # fmt: skip

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
        except (asyncio.TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()

    # ---- users -----------------------------------------------------------------------

    async def add_user(self, user: User) -> None:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        *_user_row(user),
                    )
                    await self._publish(conn, CHANGE_USER, user_key(user.username, user.domain))
            except asyncpg.UniqueViolationError as exc:
                raise UserExists(user.username, user.domain) from exc

    async def get_user(self, username: str, domain: str) -> User | None:
        async with self._connection() as conn:
            record = await conn.fetchrow(
                f"SELECT {_USER_COLUMNS} FROM users WHERE username = $1 AND domain = $2",
                username, domain,
            )  # fmt: skip
        return _user_from_record(record) if record else None

    async def list_users(self, domain: str | None = None) -> list[User]:
        async with self._connection() as conn:
            if domain is None:
                records = await conn.fetch(
                    f"SELECT {_USER_COLUMNS} FROM users ORDER BY domain, username"
                )
            else:
                records = await conn.fetch(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE domain = $1 ORDER BY username",
                    domain,
                )
        return [_user_from_record(r) for r in records]

    async def update_user(self, user: User) -> bool:
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE users SET ha1 = $3, ha1_sha256 = $4, display_name = $5, phones = $6, "
                "created_at = $7, disabled = $8 WHERE username = $1 AND domain = $2",
                *_user_row(user),
            )
            if _row_count(status) == 0:
                return False
            await self._publish(conn, CHANGE_USER, user_key(user.username, user.domain))
            return True

    async def remove_user(self, username: str, domain: str) -> bool:
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM users WHERE username = $1 AND domain = $2", username, domain
            )
            if _row_count(status) == 0:
                return False
            await conn.execute(
                "DELETE FROM bindings WHERE aor = ANY($1::text[])",
                [aor_of(username, domain), aor_of(username, domain, "sips")],
            )
            await self._publish(conn, CHANGE_USER, user_key(username, domain))
            return True

    # ---- bindings --------------------------------------------------------------------

    async def list_bindings(self, aor: str | None = None) -> list[Binding]:
        async with self._connection() as conn:
            if aor is None:
                records = await conn.fetch(
                    f"SELECT {_BINDING_COLUMNS} FROM bindings ORDER BY aor, binding_key"
                )
            else:
                records = await conn.fetch(
                    f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE aor = $1 ORDER BY binding_key",
                    aor,
                )
        return [_binding_from_record(r) for r in records]

    async def delete_bindings(self, aor: str) -> int:
        async with self._connection() as conn:
            return _row_count(await conn.execute("DELETE FROM bindings WHERE aor = $1", aor))

    async def delete_expired_bindings(self, now: float) -> int:
        async with self._connection() as conn:
            return _row_count(
                await conn.execute("DELETE FROM bindings WHERE expires_at <= $1", now)
            )

    async def write_batch(
        self,
        upserts: Sequence[Binding] = (),
        deletes: Sequence[tuple[str, str]] = (),
        audit: Sequence[AuditRecord] = (),
    ) -> None:
        upsert_list, delete_list = normalise_batch(upserts, deletes)
        if not (upsert_list or delete_list or audit):
            return
        upsert_rows = [_binding_row(b) for b in upsert_list]
        audit_rows = [_audit_row(a) for a in audit]
        async with self._connection() as conn, conn.transaction():
            if delete_list:
                await conn.executemany(
                    "DELETE FROM bindings WHERE aor = $1 AND binding_key = $2", delete_list
                )
            if upsert_rows:
                await conn.executemany(_UPSERT_BINDING, upsert_rows)
            if len(audit_rows) >= _AUDIT_COPY_THRESHOLD:
                await conn.copy_records_to_table(
                    "audit", records=audit_rows, columns=_AUDIT_COLUMNS, schema_name=self.schema
                )
            elif audit_rows:
                await conn.executemany(_INSERT_AUDIT, audit_rows)

    # ---- audit -----------------------------------------------------------------------

    async def query_audit(
        self,
        *,
        username: str | None = None,
        since: float | None = None,
        result: str | None = None,
        limit: int = DEFAULT_AUDIT_LIMIT,
    ) -> list[AuditRecord]:
        conditions: list[str] = []
        params: list[Any] = []
        if username is not None:
            params.append(username)
            conditions.append(f"(username = ${len(params)} OR aor_user = ${len(params)})")
        if since is not None:
            params.append(since)
            conditions.append(f"ts >= ${len(params)}")
        if result is not None:
            params.append(result)
            conditions.append(f"result = ${len(params)}")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        params.append(max(0, limit))
        sql = (
            "SELECT ts, aor, username, instance_id, user_agent, source, transport, result, "
            f"reason FROM audit {where} ORDER BY ts DESC, id DESC LIMIT ${len(params)}"
        )
        async with self._connection() as conn:
            records = await conn.fetch(sql, *params)
        return [_audit_from_record(r) for r in records]

    async def prune_audit(self, before_ts: float) -> int:
        async with self._connection() as conn:
            return _row_count(await conn.execute("DELETE FROM audit WHERE ts < $1", before_ts))

    # ---- change feed -------------------------------------------------------------------

    async def publish_change(self, kind: str, key: str) -> int:
        async with self._connection() as conn, conn.transaction():
            return await self._publish(conn, kind, key)

    async def changes_since(self, change_id: int) -> list[Change]:
        async with self._connection() as conn:
            records = await conn.fetch(
                "SELECT id, kind, key, ts FROM changes WHERE id > $1 ORDER BY id", change_id
            )
        return [Change(r["id"], r["kind"], r["key"], r["ts"]) for r in records]

    async def latest_change_id(self) -> int:
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM changes"))

    async def prune_changes(self, before_ts: float) -> int:
        async with self._connection() as conn:
            return _row_count(
                await conn.execute(
                    "DELETE FROM changes WHERE ts < $1 AND id < (SELECT max(id) FROM changes)",
                    before_ts,
                )
            )


def _row_count(status: str) -> int:
    """asyncpg returns the command tag, e.g. ``DELETE 3`` or ``INSERT 0 1``."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


async def _migrate(conn: asyncpg.Connection, schema: str | None) -> str:
    """Create the schema if asked, apply pending migrations; returns the schema in use."""
    async with conn.transaction():
        # Two nodes starting together: the second waits here, then finds nothing to do.
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", _lock_key("migrate", schema or "public")
        )
        if schema is not None:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        current_schema = await conn.fetchval("SELECT current_schema()")
        if current_schema is None:
            raise StoreError("PostgreSQL search_path names no existing schema to create tables in")
        await conn.execute(migrations.POSTGRESQL_SCHEMA_VERSION_TABLE)
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        try:
            todo = migrations.pending(int(current))
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        for migration in todo:
            for statement in migration.postgresql:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES ($1, $2, $3)",
                migration.version, migration.description, time.time(),
            )  # fmt: skip
        return str(current_schema)


async def open_postgres(url: str) -> PostgresStore:
    parsed = PostgresURL(url)
    server_settings = {"search_path": f'"{parsed.schema}"'} if parsed.schema else None
    try:
        pool = await asyncpg.create_pool(
            parsed.dsn,
            min_size=POOL_MIN_SIZE,
            max_size=POOL_MAX_SIZE,
            timeout=CONNECT_TIMEOUT,
            server_settings=server_settings,
        )
    except _UNAVAILABLE_ERRORS as exc:
        reason = str(exc) or type(exc).__name__
        raise StoreUnavailable(f"{parsed.describe()} is not reachable: {reason}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreUnavailable(f"{parsed.describe()} refused the connection: {exc}") from exc
    try:
        async with pool.acquire() as conn:
            schema = await _migrate(conn, parsed.schema)
    except StoreError:
        pool.terminate()
        raise
    except _UNAVAILABLE_ERRORS as exc:
        pool.terminate()
        raise StoreUnavailable(f"{parsed.describe()} is not reachable: {exc}") from exc
    except asyncpg.PostgresError as exc:
        pool.terminate()
        raise StoreError(f"{parsed.describe()}: migration failed: {exc}") from exc
    except BaseException:
        pool.terminate()
        raise
    return PostgresStore(parsed, pool, schema)
