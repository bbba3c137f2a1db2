"""PostgreSQL engine: an asyncpg pool shared by every role of one process.

Several sipim nodes may share one database (docs/internals.md, "external" and "cluster"), so everything
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

# asyncpg ships no type information (no py.typed, no stubs in the package): its
# values are Any here, annotated where they enter the store's own code.
import asyncpg  # type: ignore[import-untyped]

from . import migrations
from .base import history_status_update_sql
from .base import (
    CLAIM_LEASE,
    DEFAULT_AUDIT_LIMIT,
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_UNDELIVERED_LIMIT,
    Store,
    normalise_batch,
)
from .errors import DeviceExists, StoreError, StoreUnavailable, UserExists
from .models import (
    EMPTY_BATCH_RESULT,
    MESSAGE_DELIVERED,
    MESSAGE_EXPIRED,
    MESSAGE_PENDING,
    AuditRecord,
    BatchResult,
    Binding,
    Change,
    HistoryEntry,
    StoredMessage,
    User,
    WriteBatch,
    XcapDocument,
    aor_of,
    aor_user_part,
    user_key,
    xcap_key,
)
from .changes import CHANGE_DEVICE, CHANGE_USER, CHANGE_XCAP
from .models import DeviceCredential, ProvisioningCode

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
_USER_COLUMNS = "username, domain, ha1, ha1_sha256, display_name, phones, created_at, disabled, admin"
_MESSAGE_COLUMNS = (
    "id, sender, recipient, target_instance, call_id, cseq, imdn_message_id, content_type, "
    "body, disposition_notification, created_at, expires_at, state"
)
# The whole batch of messages in ONE statement (one array per column): RETURNING then
# names the rows actually inserted, which executemany() cannot tell. Without a conflict
# target, a clash on ANY unique key (id, sender+call_id+cseq, sender+imdn_message_id),
# including with an earlier row of the same statement or with a concurrent transaction
# (which it waits for), skips the row; NOT NULL and CHECK failures still raise.
# WITH ORDINALITY ... ORDER BY keeps the batch order for the seq column.
_INSERT_MESSAGES = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) "
    f"SELECT {_MESSAGE_COLUMNS} FROM unnest("
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], "
    "$8::text[], $9::bytea[], $10::text[], $11::float8[], $12::float8[], $13::text[]"
    f") WITH ORDINALITY AS batch ({_MESSAGE_COLUMNS}, ord) ORDER BY ord "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_HISTORY_COLUMNS = (
    "owner, peer, direction, message_id, imdn_message_id, content_type, body, ts, status"
)
# COPY cannot skip the (message_id, owner, direction) duplicates, so history also goes
# in as one unnest() statement.
_INSERT_HISTORY = (
    f"INSERT INTO history ({_HISTORY_COLUMNS}) "
    f"SELECT {_HISTORY_COLUMNS} FROM unnest("
    "$1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], "
    "$8::float8[], $9::text[]"
    f") WITH ORDINALITY AS batch ({_HISTORY_COLUMNS}, ord) ORDER BY ord "
    "ON CONFLICT (message_id, owner, direction) DO NOTHING"
)


# A device took a message (see finish_delivery): $1 message id, $2 device key, $3 time.
_RECORD_DELIVERY = (
    "INSERT INTO message_deliveries "
    "(message_id, device_key, node_id, claimed_at, delivered_at) "
    "SELECT id, $2, '', $3, $3 FROM messages WHERE id = $1 "
    "ON CONFLICT (message_id, device_key) DO UPDATE "
    "SET delivered_at = coalesce(message_deliveries.delivered_at, excluded.delivered_at)"
)


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
        u.created_at, u.disabled, u.admin,
    )  # fmt: skip


def _user_from_record(r: asyncpg.Record) -> User:
    return User(
        username=r["username"], domain=r["domain"], ha1_md5=r["ha1"],
        ha1_sha256=r["ha1_sha256"], display_name=r["display_name"],
        phones=tuple(r["phones"]), created_at=r["created_at"], disabled=r["disabled"],
        admin=r["admin"],
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


def _message_columns(messages: Sequence[StoredMessage]) -> list[list[Any]]:
    """Column arrays for _INSERT_MESSAGES."""
    return [
        [m.id for m in messages],
        [m.sender for m in messages],
        [m.recipient for m in messages],
        [m.target_instance for m in messages],
        [m.call_id for m in messages],
        [m.cseq for m in messages],
        [m.imdn_message_id for m in messages],
        [m.content_type for m in messages],
        [m.body for m in messages],
        [m.disposition_notification for m in messages],
        [m.created_at for m in messages],
        [m.expires_at for m in messages],
        [m.state for m in messages],
    ]


def _history_columns(history: Sequence[HistoryEntry]) -> list[list[Any]]:
    """Column arrays for _INSERT_HISTORY."""
    return [
        [h.owner for h in history],
        [h.peer for h in history],
        [h.direction for h in history],
        [h.message_id for h in history],
        [h.imdn_message_id for h in history],
        [h.content_type for h in history],
        [h.body for h in history],
        [h.ts for h in history],
        [h.status for h in history],
    ]


def _message_from_record(r: asyncpg.Record) -> StoredMessage:
    return StoredMessage(
        id=r["id"], sender=r["sender"], recipient=r["recipient"],
        target_instance=r["target_instance"], call_id=r["call_id"], cseq=r["cseq"],
        imdn_message_id=r["imdn_message_id"], content_type=r["content_type"],
        body=r["body"], disposition_notification=r["disposition_notification"],
        created_at=r["created_at"], expires_at=r["expires_at"], state=r["state"],
    )  # fmt: skip


def _history_from_record(r: asyncpg.Record) -> HistoryEntry:
    return HistoryEntry(
        owner=r["owner"], peer=r["peer"], direction=r["direction"],
        message_id=r["message_id"], imdn_message_id=r["imdn_message_id"],
        content_type=r["content_type"], body=r["body"], ts=r["ts"], status=r["status"],
        row_id=r["seq"],
    )  # fmt: skip


class PostgresStore(Store):
    """Use :func:`open_postgres` (or :func:`sipim.store.open_store`) to create one."""

    def __init__(self, url: PostgresURL, pool: asyncpg.Pool, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._pool: asyncpg.Pool | None = pool
        self._changes_lock = _lock_key("changes", schema)
        # connection -> the changes its open transaction published (_publish); told to
        # the change listeners when the _connection() block that made them ends cleanly.
        self._published: dict[asyncpg.Connection, list[tuple[str, str]]] = {}

    def __repr__(self) -> str:
        return f"<PostgresStore {self.url.describe()}, schema {self.schema!r}>"

    # ---- plumbing ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable(f"{self.url.describe()}: store is closed")
        published: list[tuple[str, str]] = []
        try:
            async with pool.acquire() as conn:
                self._published[conn] = published
                try:
                    yield conn
                finally:
                    del self._published[conn]
        except StoreError:
            raise
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(f"{self.url.describe()} is not reachable: {exc}") from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # InterfaceError: a value asyncpg cannot encode for its column (a bad row).
            raise StoreError(f"{self.url.describe()}: {exc}") from exc
        # Every _publish runs last in its transaction, inside this block: a clean end
        # means it committed (a failed commit raised above).
        if published:
            self._committed(published)

    async def _publish(self, conn: asyncpg.Connection, kind: str, key: str) -> int:
        # Serialise publishers until commit: a sequence hands out ids in call order but
        # transactions may commit out of order, and a reader polling "id > last" would
        # then skip the late committer for good. Under the lock, id order = commit order.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", self._changes_lock)
        change_id: int = await conn.fetchval(
            "INSERT INTO changes (kind, key, ts) VALUES ($1, $2, $3) RETURNING id",
            kind, key, time.time(),
        )  # fmt: skip
        self._published[conn].append((kind, key))
        return change_id

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
                        f"INSERT INTO users ({_USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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

    async def users_by_phone(self, phone: str, domain: str) -> list[User]:
        async with self._connection() as conn:
            records = await conn.fetch(
                f"SELECT {_USER_COLUMNS} FROM users WHERE domain = $1 AND $2 = ANY(phones) ORDER BY username",
                domain, phone,
            )
        return [_user_from_record(r) for r in records]

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

    async def user_domains(self) -> dict[str, int]:
        async with self._connection() as conn:
            records = await conn.fetch("SELECT domain, COUNT(*) AS users FROM users GROUP BY domain ORDER BY domain")
        return {r["domain"]: r["users"] for r in records}

    async def update_user(self, user: User) -> bool:
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE users SET ha1 = $3, ha1_sha256 = $4, display_name = $5, phones = $6, "
                "created_at = $7, disabled = $8, admin = $9 WHERE username = $1 AND domain = $2",
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
            # A user added later under the same name must not inherit these devices.
            await conn.execute("UPDATE devices SET revoked_at = $1 WHERE username = $2 AND domain = $3 "
                               "AND revoked_at IS NULL", time.time(), username, domain)
            # A later user of the same name must not inherit lists or privacy rules.
            await conn.execute("DELETE FROM xcap_documents WHERE owner = $1", aor_of(username, domain))
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

    async def write_batch(self, batch: WriteBatch) -> BatchResult:
        if batch.is_empty():
            return EMPTY_BATCH_RESULT
        upsert_list, delete_list = normalise_batch(batch)
        audit, messages, history = batch.audit, batch.messages, batch.history
        deliveries, taken_at_once, history_status = batch.deliveries, batch.taken_at_once, batch.history_status
        upsert_rows = [_binding_row(b) for b in upsert_list]
        audit_rows = [_audit_row(a) for a in audit]
        duplicates: frozenset[str] = frozenset()
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
            if messages:
                inserted = await conn.fetch(_INSERT_MESSAGES, *_message_columns(messages))
                # Counting is enough when nothing was skipped (the common case).
                if len(inserted) != len(messages):
                    duplicates = frozenset(m.id for m in messages) - {r["id"] for r in inserted}
            kept_history = (
                [h for h in history if h.message_id not in duplicates] if duplicates else history
            )
            if kept_history:
                await conn.execute(_INSERT_HISTORY, *_history_columns(kept_history))
            if deliveries:
                await conn.executemany(_RECORD_DELIVERY, list(deliveries))
                await conn.executemany("UPDATE messages SET state = $2 WHERE id = $1 AND state = $3",
                                       [(mid, MESSAGE_DELIVERED, MESSAGE_PENDING) for mid, _, _ in deliveries])
            if taken_at_once:
                await conn.executemany("UPDATE messages SET for_late_devices = FALSE WHERE id = $1",
                                       [(mid,) for mid in taken_at_once])
            if history_status:
                await conn.executemany(history_status_update_sql("$2::text", "$1"), list(history_status))
        return BatchResult(duplicates) if duplicates else EMPTY_BATCH_RESULT

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

    # ---- pager messages -----------------------------------------------------------------
    # Several nodes may run these at once: each decision is one atomic statement (an
    # upsert, or an UPDATE on rows locked FOR UPDATE), never read-then-write.

    async def get_message(self, message_id: str) -> StoredMessage | None:
        async with self._connection() as conn:
            record = await conn.fetchrow(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id
            )
        return _message_from_record(record) if record else None

    async def find_duplicate(
        self, sender: str, imdn_message_id: str | None, call_id: str, cseq: int
    ) -> StoredMessage | None:
        # Two index look-ups (messages_sender_imdn, messages_sender_call); the IMDN id wins.
        async with self._connection() as conn:
            record = await conn.fetchrow(
                f"(SELECT {_MESSAGE_COLUMNS}, 0 AS rank FROM messages "
                " WHERE sender = $1 AND imdn_message_id = $2) "
                f"UNION ALL (SELECT {_MESSAGE_COLUMNS}, 1 AS rank FROM messages "
                " WHERE sender = $1 AND call_id = $3 AND cseq = $4) "
                "ORDER BY rank LIMIT 1",
                sender, imdn_message_id, call_id, cseq,
            )  # fmt: skip
        return _message_from_record(record) if record else None

    async def claim_delivery(
        self,
        message_id: str,
        device_key: str,
        node_id: str,
        now: float,
        *,
        claim_lease: float = CLAIM_LEASE,
    ) -> bool:
        # One statement. A concurrent claimer of the same (message, device) waits for
        # the first one's insert to commit, then re-checks the DO UPDATE condition on
        # the committed row: a fresh claim fails it, so exactly one caller wins.
        async with self._connection() as conn:
            won = await conn.fetchval(
                "INSERT INTO message_deliveries (message_id, device_key, node_id, claimed_at) "
                "SELECT id, $2, $3, $4 FROM messages WHERE id = $1 AND expires_at > $4 "
                "AND state <> 'expired' "
                "ON CONFLICT (message_id, device_key) DO UPDATE SET "
                "node_id = excluded.node_id, claimed_at = excluded.claimed_at "
                "WHERE message_deliveries.delivered_at IS NULL "
                "AND message_deliveries.claimed_at <= $5 "
                "RETURNING true",
                message_id, device_key, node_id, now, now - claim_lease,
            )  # fmt: skip
        return bool(won)

    async def finish_delivery(
        self, message_id: str, device_key: str, delivered: bool, now: float
    ) -> bool:
        async with self._connection() as conn:
            if not delivered:
                await conn.execute(
                    "DELETE FROM message_deliveries WHERE message_id = $1 AND device_key = $2 "
                    "AND delivered_at IS NULL",
                    message_id, device_key,
                )  # fmt: skip
                return False
            async with conn.transaction():
                # An upsert, so no claim is needed (a live delivery records itself) and a
                # claim taken over meanwhile does not matter: the device took the message.
                # The first delivery time is kept; an unknown message records nothing.
                await conn.execute(_RECORD_DELIVERY, message_id, device_key, now)
                # Row lock + re-check under READ COMMITTED: one device's call wins.
                status = await conn.execute(
                    "UPDATE messages SET state = $2 WHERE id = $1 AND state = $3",
                    message_id, MESSAGE_DELIVERED, MESSAGE_PENDING,
                )  # fmt: skip
            return _row_count(status) == 1

    async def undelivered_for_device(
        self,
        recipient: str,
        device_key: str,
        instance_id: str | None,
        now: float,
        limit: int = DEFAULT_UNDELIVERED_LIMIT,
        *,
        claim_lease: float = CLAIM_LEASE,
    ) -> list[StoredMessage]:
        async with self._connection() as conn:
            records = await conn.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m "
                "WHERE m.recipient = $1 AND m.expires_at > $2 AND m.state <> 'expired' AND m.for_late_devices "
                "AND (m.target_instance IS NULL OR m.target_instance = $3) "
                "AND NOT EXISTS (SELECT 1 FROM message_deliveries d "
                "    WHERE d.message_id = m.id AND d.device_key = $4 "
                "    AND (d.delivered_at IS NOT NULL OR d.claimed_at > $5)) "
                "ORDER BY m.created_at, m.seq LIMIT $6",
                recipient, now, instance_id, device_key, now - claim_lease, max(0, limit),
            )  # fmt: skip
        return [_message_from_record(r) for r in records]

    async def taken_at_once(self, message_id: str) -> None:
        async with self._connection() as conn:
            await conn.execute("UPDATE messages SET for_late_devices = FALSE WHERE id = $1", message_id)

    async def recipients_owed_messages(self, now: float) -> dict[str, float]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT recipient, MAX(expires_at) AS expires FROM messages "
                "WHERE for_late_devices AND expires_at > $1 AND state <> 'expired' GROUP BY recipient", now)
        return {row["recipient"]: float(row["expires"]) for row in rows}

    async def messages_pending(self, recipient: str | None = None) -> list[StoredMessage]:
        async with self._connection() as conn:
            if recipient is None:
                records = await conn.fetch(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE state = $1 "
                    "ORDER BY created_at, seq",
                    MESSAGE_PENDING,
                )
            else:
                records = await conn.fetch(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE recipient = $1 "
                    "AND state = $2 ORDER BY created_at, seq",
                    recipient, MESSAGE_PENDING,
                )  # fmt: skip
        return [_message_from_record(r) for r in records]

    async def expire_messages(self, now: float) -> list[StoredMessage]:
        # FOR UPDATE SKIP LOCKED: two nodes sweeping at once take disjoint rows, and a
        # row being delivered right now (locked by finish_delivery) is left for the next
        # sweep, when its state is settled. previous_state tells "never delivered".
        async with self._connection() as conn:
            records = await conn.fetch(
                "WITH due AS ("
                "  SELECT seq, state FROM messages WHERE expires_at <= $1 AND state <> $2 "
                "  FOR UPDATE SKIP LOCKED"
                "), expired AS ("
                "  UPDATE messages m SET state = $2 FROM due WHERE m.seq = due.seq "
                f"  RETURNING {', '.join('m.' + c.strip() for c in _MESSAGE_COLUMNS.split(','))}, "
                "  m.seq, due.state AS previous_state"
                ") SELECT * FROM expired WHERE previous_state = $3 ORDER BY created_at, seq",
                now, MESSAGE_EXPIRED, MESSAGE_PENDING,
            )  # fmt: skip
        return [_message_from_record(r) for r in records]

    async def purge_messages(self, before_ts: float) -> int:
        async with self._connection() as conn, conn.transaction():
            purged = await conn.fetch(
                "DELETE FROM messages WHERE expires_at < $1 AND state <> $2 RETURNING id",
                before_ts, MESSAGE_PENDING,
            )  # fmt: skip
            if purged:
                await conn.execute(
                    "DELETE FROM message_deliveries WHERE message_id = ANY($1::text[])",
                    [r["id"] for r in purged],
                )
            return len(purged)

    # ---- history ----------------------------------------------------------------------

    async def query_history(
        self,
        owner: str,
        *,
        peer: str | None = None,
        since: float | None = None,
        before: tuple[float, int] | None = None,
        limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> list[HistoryEntry]:
        params: list[Any] = [owner]
        conditions = ["owner = $1"]
        if peer is not None:
            params.append(peer)
            conditions.append(f"peer = ${len(params)}")
        if since is not None:
            params.append(since)
            conditions.append(f"ts >= ${len(params)}")
        if before is not None:
            # A row comparison, which the (owner, [peer,] ts, seq) indexes serve directly.
            params += [float(before[0]), int(before[1])]
            conditions.append(f"(ts, seq) < (${len(params) - 1}, ${len(params)})")
        params.append(max(0, limit))
        sql = (
            f"SELECT seq, {_HISTORY_COLUMNS} FROM history WHERE {' AND '.join(conditions)} "
            f"ORDER BY ts DESC, seq DESC LIMIT ${len(params)}"
        )
        async with self._connection() as conn:
            records = await conn.fetch(sql, *params)
        return [_history_from_record(r) for r in records]

    async def update_history_status(self, message_id: str, status: str) -> int:
        async with self._connection() as conn:
            return _row_count(
                await conn.execute(history_status_update_sql("$2::text", "$1"), message_id, status)
            )

    async def prune_history(self, before_ts: float) -> int:
        async with self._connection() as conn:
            return _row_count(await conn.execute("DELETE FROM history WHERE ts < $1", before_ts))

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

    # ---- per-device credentials ------------------------------------------------------

    async def add_device(self, device: DeviceCredential) -> None:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(
                        f"INSERT INTO devices ({_DEVICE_COLUMNS}) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)", *_device_row(device))
                    await self._publish(conn, CHANGE_DEVICE, device.auth_username)
            except asyncpg.UniqueViolationError as exc:
                raise DeviceExists(f"device {device.device_id} ({device.auth_username}, "
                                   f"{device.instance_id}) already exists") from exc

    async def update_device(self, device: DeviceCredential) -> bool:
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE devices SET name = $1, ha1_md5 = $2, ha1_sha256 = $3, token_hash = $4, "
                "last_used_at = $5 WHERE device_id = $6 AND revoked_at IS NULL",
                device.name, device.ha1_md5, device.ha1_sha256, device.token_hash, device.last_used_at,
                device.device_id)
            if _row_count(status) == 0:
                return False
            await self._publish(conn, CHANGE_DEVICE, device.auth_username)
            return True

    async def _one_device(self, where: str, *args: Any) -> DeviceCredential | None:
        async with self._connection() as conn:
            record = await conn.fetchrow(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {where}", *args)
        return DeviceCredential(**dict(record)) if record else None

    async def get_device(self, device_id: str) -> DeviceCredential | None:
        return await self._one_device("device_id = $1", device_id)

    async def device_by_auth_username(self, auth_username: str) -> DeviceCredential | None:
        return await self._one_device("auth_username = $1", auth_username)

    async def device_by_token_hash(self, token_hash: str) -> DeviceCredential | None:
        return await self._one_device("token_hash = $1", token_hash)

    async def live_device_by_instance(self, username: str, domain: str,
                                      instance_id: str) -> DeviceCredential | None:
        return await self._one_device(
            "username = $1 AND domain = $2 AND instance_id = $3 AND revoked_at IS NULL",
            username, domain, instance_id)

    async def list_devices(self, username: str, domain: str) -> list[DeviceCredential]:
        async with self._connection() as conn:
            records = await conn.fetch(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE username = $1 AND domain = $2 "
                                       "ORDER BY created_at, device_id", username, domain)
        return [DeviceCredential(**dict(r)) for r in records]

    async def revoke_device(self, device_id: str, now: float) -> DeviceCredential | None:
        async with self._connection() as conn, conn.transaction():
            record = await conn.fetchrow(
                f"UPDATE devices SET revoked_at = $1 WHERE device_id = $2 AND revoked_at IS NULL "
                f"RETURNING {_DEVICE_COLUMNS}", now, device_id)
            if record is None:
                return None
            device = DeviceCredential(**dict(record))
            await self._publish(conn, CHANGE_DEVICE, device.auth_username)
            return device

    async def touch_devices(self, last_used: Sequence[tuple[str, float]]) -> None:
        if not last_used:
            return
        async with self._connection() as conn:
            await conn.executemany(
                "UPDATE devices SET last_used_at = greatest(coalesce(last_used_at, 0), $1) WHERE device_id = $2",
                [(ts, device_id) for device_id, ts in last_used])

    # ---- one-time codes ------------------------------------------------------------------

    async def put_code(self, code: ProvisioningCode) -> None:
        async with self._connection() as conn:
            await conn.execute(
                f"INSERT INTO provisioning_codes ({_CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (purpose, subject) DO UPDATE SET code_hash = excluded.code_hash, "
                "owner = excluded.owner, created_at = excluded.created_at, "
                "expires_at = excluded.expires_at, attempts = excluded.attempts",
                code.purpose, code.subject, code.code_hash, code.owner, code.created_at, code.expires_at,
                code.attempts)

    async def get_code(self, purpose: str, subject: str) -> ProvisioningCode | None:
        async with self._connection() as conn:
            record = await conn.fetchrow(
                f"SELECT {_CODE_COLUMNS} FROM provisioning_codes WHERE purpose = $1 AND subject = $2",
                purpose, subject)
        return ProvisioningCode(**dict(record)) if record else None

    async def count_code_failure(self, purpose: str, subject: str) -> int:
        async with self._connection() as conn:
            attempts = await conn.fetchval(
                "UPDATE provisioning_codes SET attempts = attempts + 1 WHERE purpose = $1 AND subject = $2 "
                "RETURNING attempts", purpose, subject)
        return int(attempts or 0)

    async def take_code(self, purpose: str, subject: str, code_hash: str,
                        now: float) -> ProvisioningCode | None:
        async with self._connection() as conn:
            record = await conn.fetchrow(
                f"DELETE FROM provisioning_codes WHERE purpose = $1 AND subject = $2 AND code_hash = $3 "
                f"AND expires_at > $4 RETURNING {_CODE_COLUMNS}", purpose, subject, code_hash, now)
        return ProvisioningCode(**dict(record)) if record else None

    async def delete_code(self, purpose: str, subject: str) -> bool:
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM provisioning_codes WHERE purpose = $1 AND subject = $2",
                                        purpose, subject)
        return _row_count(status) > 0

    async def prune_codes(self, now: float) -> int:
        async with self._connection() as conn:
            return _row_count(await conn.execute("DELETE FROM provisioning_codes WHERE expires_at < $1", now))

    # ---- XCAP documents ----------------------------------------------------------------

    async def get_xcap_document(self, auid: str, owner: str, filename: str) -> XcapDocument | None:
        async with self._connection() as conn:
            record = await conn.fetchrow(
                "SELECT auid, owner, filename, content, etag, updated_at FROM xcap_documents "
                "WHERE auid = $1 AND owner = $2 AND filename = $3", auid, owner, filename,
            )
        return _xcap_from_record(record) if record else None

    async def list_xcap_documents(self, auid: str, owner: str | None = None) -> list[XcapDocument]:
        sql = "SELECT auid, owner, filename, content, etag, updated_at FROM xcap_documents WHERE auid = $1"
        params: list[Any] = [auid]
        if owner is not None:
            sql += " AND owner = $2"
            params.append(owner)
        async with self._connection() as conn:
            records = await conn.fetch(sql + " ORDER BY owner, filename", *params)
        return [_xcap_from_record(r) for r in records]

    async def put_xcap_document(self, document: XcapDocument, expected_etag: str | None) -> bool:
        d = document
        async with self._connection() as conn, conn.transaction():
            if expected_etag is None:
                status = await conn.execute(
                    "INSERT INTO xcap_documents (auid, owner, filename, content, etag, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                    d.auid, d.owner, d.filename, d.content, d.etag, d.updated_at,
                )
            else:
                status = await conn.execute(
                    "UPDATE xcap_documents SET content = $4, etag = $5, updated_at = $6 "
                    "WHERE auid = $1 AND owner = $2 AND filename = $3 AND etag = $7",
                    d.auid, d.owner, d.filename, d.content, d.etag, d.updated_at, expected_etag,
                )
            if _row_count(status) == 0:
                return False
            await self._publish(conn, CHANGE_XCAP, xcap_key(d.auid, d.owner, d.filename))
            return True

    async def delete_xcap_document(self, auid: str, owner: str, filename: str, expected_etag: str) -> bool:
        async with self._connection() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM xcap_documents WHERE auid = $1 AND owner = $2 AND filename = $3 AND etag = $4",
                auid, owner, filename, expected_etag,
            )
            if _row_count(status) == 0:
                return False
            await self._publish(conn, CHANGE_XCAP, xcap_key(auid, owner, filename))
            return True


def _xcap_from_record(r: asyncpg.Record) -> XcapDocument:
    return XcapDocument(auid=r["auid"], owner=r["owner"], filename=r["filename"],
                        content=bytes(r["content"]), etag=r["etag"], updated_at=r["updated_at"])


_DEVICE_COLUMNS = (
    "device_id, username, domain, name, instance_id, auth_username, ha1_md5, ha1_sha256, "
    "token_hash, created_at, last_used_at, revoked_at"
)
_CODE_COLUMNS = "purpose, subject, code_hash, owner, created_at, expires_at, attempts"


def _device_row(d: DeviceCredential) -> tuple[Any, ...]:
    return (
        d.device_id, d.username, d.domain, d.name, d.instance_id, d.auth_username, d.ha1_md5,
        d.ha1_sha256, d.token_hash, d.created_at, d.last_used_at, d.revoked_at,
    )  # fmt: skip


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
