"""SQLite engine: stdlib sqlite3 on ONE dedicated worker thread.

Why one thread: sqlite3 calls block, so they must stay off the event loop, and a single
connection used from a single thread needs no locking of our own; the executor's queue
serialises operations. Several processes (the CLI and a running server) share the file
through SQLite's own locking: WAL lets readers run beside the writer, and busy_timeout
makes a writer wait for the other process instead of failing at once.

Durability: WAL with synchronous=NORMAL survives a process crash (kill -9) — every
committed transaction is in the WAL file, which the OS keeps — but may lose the last
transactions on a power loss. That is what sipim promises.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

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

BUSY_TIMEOUT_MS = 5000
MEMORY = ":memory:"

T = TypeVar("T")

_BINDING_COLUMNS = (
    "aor, binding_key, contact, expires_at, instance_id, reg_id, q, call_id, cseq, path, "
    "source, transport, flow_id, node_id, gruu_tag, user_agent, registered_at"
)
_UPSERT_BINDING = (
    f"INSERT INTO bindings ({_BINDING_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (aor, binding_key) DO UPDATE SET "
    "contact = excluded.contact, expires_at = excluded.expires_at, "
    "instance_id = excluded.instance_id, reg_id = excluded.reg_id, q = excluded.q, "
    "call_id = excluded.call_id, cseq = excluded.cseq, path = excluded.path, "
    "source = excluded.source, transport = excluded.transport, flow_id = excluded.flow_id, "
    "node_id = excluded.node_id, gruu_tag = excluded.gruu_tag, "
    "user_agent = excluded.user_agent, registered_at = excluded.registered_at"
)
_INSERT_AUDIT = (
    "INSERT INTO audit (ts, aor, aor_user, username, instance_id, user_agent, source, "
    "transport, result, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_USER_COLUMNS = "username, domain, ha1, ha1_sha256, display_name, phones, created_at, disabled, admin"
_MESSAGE_COLUMNS = (
    "id, sender, recipient, target_instance, call_id, cseq, imdn_message_id, content_type, "
    "body, disposition_notification, created_at, expires_at, state"
)
# No conflict target: a clash on ANY unique key (id, sender+call_id+cseq,
# sender+imdn_message_id) skips the row; NOT NULL and CHECK failures still raise.
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)
_HISTORY_COLUMNS = (
    "owner, peer, direction, message_id, imdn_message_id, content_type, body, ts, status"
)
_INSERT_HISTORY = (
    f"INSERT INTO history ({_HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (message_id, owner, direction) DO NOTHING"
)


def sqlite_path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``, ``sqlite:////abs.db`` -> ``/abs.db`` (the
    SQLAlchemy convention); a bare path is returned as is, ``~`` expanded."""
    if url.startswith("sqlite://"):
        path = url[len("sqlite://") :]
        if path.startswith("/"):
            path = path[1:]
    elif url.startswith("sqlite:"):
        path = url[len("sqlite:") :]
    else:
        path = url
    if not path:
        raise StoreError(f"no SQLite file in store URL {url!r}")
    return path if path == MEMORY else os.path.expanduser(path)


def _prepare_file(path: str) -> None:
    """Create parent dirs and the file itself with mode 0600 before SQLite opens it.

    SQLite creates the -wal and -shm files with the permissions of the main file, so
    they are 0600 too. Users' HA1 values are password-equivalent for their realm.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _binding_row(b: Binding) -> tuple[Any, ...]:
    return (
        b.aor, b.binding_key, b.contact, b.expires_at, b.instance_id, b.reg_id, b.q,
        b.call_id, b.cseq, json.dumps(list(b.path)) if b.path else "[]", b.source, b.transport, b.flow_id,
        b.node_id, b.gruu_tag, b.user_agent, b.registered_at,
    )  # fmt: skip


def _binding_from_row(r: sqlite3.Row) -> Binding:
    return Binding(
        aor=r["aor"], binding_key=r["binding_key"], contact=r["contact"],
        expires_at=r["expires_at"], instance_id=r["instance_id"], reg_id=r["reg_id"],
        q=r["q"], call_id=r["call_id"], cseq=r["cseq"], path=tuple(json.loads(r["path"])),
        source=r["source"], transport=r["transport"], flow_id=r["flow_id"],
        node_id=r["node_id"], gruu_tag=r["gruu_tag"], user_agent=r["user_agent"],
        registered_at=r["registered_at"],
    )  # fmt: skip


def _user_row(u: User) -> tuple[Any, ...]:
    return (
        u.username, u.domain, u.ha1_md5, u.ha1_sha256, u.display_name,
        json.dumps(list(u.phones)), u.created_at, int(u.disabled), int(u.admin),
    )  # fmt: skip


def _user_from_row(r: sqlite3.Row) -> User:
    return User(
        username=r["username"], domain=r["domain"], ha1_md5=r["ha1"],
        ha1_sha256=r["ha1_sha256"], display_name=r["display_name"],
        phones=tuple(json.loads(r["phones"])), created_at=r["created_at"],
        disabled=bool(r["disabled"]), admin=bool(r["admin"]),
    )  # fmt: skip


def _audit_row(a: AuditRecord) -> tuple[Any, ...]:
    return (
        a.ts, a.aor, aor_user_part(a.aor), a.username, a.instance_id, a.user_agent,
        a.source, a.transport, a.result, a.reason,
    )  # fmt: skip


def _audit_from_row(r: sqlite3.Row) -> AuditRecord:
    return AuditRecord(
        ts=r["ts"], aor=r["aor"], username=r["username"], instance_id=r["instance_id"],
        user_agent=r["user_agent"], source=r["source"], transport=r["transport"],
        result=r["result"], reason=r["reason"],
    )  # fmt: skip


def _message_row(m: StoredMessage) -> tuple[Any, ...]:
    return (
        m.id, m.sender, m.recipient, m.target_instance, m.call_id, m.cseq, m.imdn_message_id,
        m.content_type, m.body, m.disposition_notification, m.created_at, m.expires_at, m.state,
    )  # fmt: skip


def _message_from_row(r: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=r["id"], sender=r["sender"], recipient=r["recipient"],
        target_instance=r["target_instance"], call_id=r["call_id"], cseq=r["cseq"],
        imdn_message_id=r["imdn_message_id"], content_type=r["content_type"],
        body=bytes(r["body"]), disposition_notification=r["disposition_notification"],
        created_at=r["created_at"], expires_at=r["expires_at"], state=r["state"],
    )  # fmt: skip


def _history_row(h: HistoryEntry) -> tuple[Any, ...]:
    return (
        h.owner, h.peer, h.direction, h.message_id, h.imdn_message_id, h.content_type,
        h.body, h.ts, h.status,
    )  # fmt: skip


def _history_from_row(r: sqlite3.Row) -> HistoryEntry:
    return HistoryEntry(
        owner=r["owner"], peer=r["peer"], direction=r["direction"],
        message_id=r["message_id"], imdn_message_id=r["imdn_message_id"],
        content_type=r["content_type"], body=bytes(r["body"]), ts=r["ts"],
        status=r["status"], row_id=r["seq"],
    )  # fmt: skip


# A device took a message: an upsert, so no claim is needed and a claim taken over
# meanwhile does not matter; the first delivery time is kept; an unknown message
# records nothing.
_RECORD_DELIVERY = (
    "INSERT INTO message_deliveries "
    "(message_id, device_key, node_id, claimed_at, delivered_at) "
    "SELECT id, ?, '', ?, ? FROM messages WHERE id = ? "
    "ON CONFLICT (message_id, device_key) DO UPDATE "
    "SET delivered_at = coalesce(message_deliveries.delivered_at, excluded.delivered_at)"
)


class _ManyRows:
    """An ``INSERT ... VALUES (?, ...) [ON CONFLICT ...]`` run for a batch of rows, many
    rows per statement.

    ``executemany`` steps its statement once per row, and the sqlite3 module lets go of
    the GIL around every step; with the event loop busy on the main thread, the store's
    thread then waits for the GIL again before each row (up to the interpreter's switch
    interval), and every hand-over pauses the event loop too.  A statement of 32 rows
    hands over once for 32.  Statements of 32, 16, 8, 4, 2 and 1 rows cover any batch
    size with few steps and few distinct statements (all stay in the statement cache).
    """

    SIZES = (32, 16, 8, 4, 2, 1)

    def __init__(self, sql: str) -> None:
        head, _, rest = sql.partition("VALUES (")
        placeholders, _, tail = rest.partition(")")
        row = f"({placeholders})"
        self._statements = {size: f"{head}VALUES {', '.join([row] * size)}{tail}" for size in self.SIZES}

    def run(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        start, total = 0, len(rows)
        for size in self.SIZES:
            statement = self._statements[size]
            while total - start >= size:
                conn.execute(statement, [value for row in rows[start:start + size] for value in row])
                start += size


_UPSERT_BINDINGS = _ManyRows(_UPSERT_BINDING)
_INSERT_AUDITS = _ManyRows(_INSERT_AUDIT)
_INSERT_MESSAGES = _ManyRows(_INSERT_MESSAGE)
_INSERT_HISTORIES = _ManyRows(_INSERT_HISTORY)


# write_batch's form of _RECORD_DELIVERY, many rows per statement: (message id, device
# key, time) rows.  "WHERE true": an INSERT ... SELECT with an upsert clause needs a
# WHERE (SQLite's parser would otherwise read ON CONFLICT as a join constraint).
_RECORD_DELIVERIES = _ManyRows(
    "INSERT INTO message_deliveries "
    "(message_id, device_key, node_id, claimed_at, delivered_at) "
    "SELECT m.id, v.column2, '', v.column3, v.column3 "
    "FROM (VALUES (?, ?, ?)) AS v JOIN messages AS m ON m.id = v.column1 WHERE true "
    "ON CONFLICT (message_id, device_key) DO UPDATE "
    "SET delivered_at = coalesce(message_deliveries.delivered_at, excluded.delivered_at)"
)
# A device took the message: delivered, and (for_late 0) no longer owed to the
# recipient's later devices when it was also taken at once (PagerService).
_MARK_DELIVERED_STATEMENT = (
    f"UPDATE messages SET state = CASE WHEN state = '{MESSAGE_PENDING}' THEN '{MESSAGE_DELIVERED}' "
    "ELSE state END, for_late_devices = min(for_late_devices, {for_late}) "
    "WHERE id IN (VALUES (?))"
)
_MARK_DELIVERED_TAKEN = _ManyRows(_MARK_DELIVERED_STATEMENT.format(for_late=0))
_MARK_DELIVERED_KEPT = _ManyRows(_MARK_DELIVERED_STATEMENT.format(for_late=1))
_NOT_FOR_LATE_DEVICES = _ManyRows("UPDATE messages SET for_late_devices = 0 WHERE id IN (VALUES (?))")


def _call_and_collect(fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> tuple[T, list[tuple[str, str]]]:
    """``fn(conn)`` and the changes its committed transactions published (on the store's thread)."""
    if not isinstance(conn, _Connection):
        return fn(conn), []
    try:
        result = fn(conn)
    except BaseException:
        conn.published = []
        raise
    published, conn.published = conn.published, []
    return result, published


class _Transaction:
    """``with _Transaction(conn):`` -> BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on error.

    IMMEDIATE takes the write lock up front: a deferred transaction that later upgrades
    from read to write can fail with SQLITE_BUSY without honouring busy_timeout.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return
            except BaseException:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if isinstance(self.conn, _Connection):
            self.conn.published.clear()  # rolled back: nothing to tell
        # Some errors (SQLITE_FULL, SQLITE_IOERR...) already rolled back automatically.
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


class _Connection(sqlite3.Connection):
    """A connection that remembers what its open transaction published (_publish), for
    the store's change listeners once the transaction committed (SQLiteStore._run)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published: list[tuple[str, str]] = []


def _publish(conn: sqlite3.Connection, kind: str, key: str) -> int:
    cursor = conn.execute(
        "INSERT INTO changes (kind, key, ts) VALUES (?, ?, ?)", (kind, key, time.time())
    )
    if isinstance(conn, _Connection):
        conn.published.append((kind, key))
    return int(cursor.lastrowid or 0)


class SQLiteStore(Store):
    """Use :func:`open_sqlite` (or :func:`sipim.store.open_store`) to create one."""

    def __init__(self, path: str, executor: ThreadPoolExecutor, conn: sqlite3.Connection) -> None:
        self.path = path
        self._executor = executor
        self._conn: sqlite3.Connection | None = conn

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path}>"

    # ---- plumbing ------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the worker thread, translating sqlite3 errors.

        If the awaiting task is cancelled, the work still completes (or rolls back) on
        the thread: a transaction is never left half-applied.
        """
        conn = self._conn
        if conn is None:
            raise StoreUnavailable(f"SQLite store {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            result, published = await loop.run_in_executor(self._executor, _call_and_collect, fn, conn)
        except sqlite3.OperationalError as exc:
            raise _translate_operational(self.path, exc) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite {self.path}: {exc}") from exc
        if published:
            self._committed(published)
        return result

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, conn.close)
        finally:
            self._executor.shutdown(wait=True)

    # ---- users -----------------------------------------------------------------------

    async def add_user(self, user: User) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _Transaction(conn):
                conn.execute(
                    f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    _user_row(user),
                )
                _publish(conn, CHANGE_USER, user_key(user.username, user.domain))

        try:
            await self._run(work)
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError) and "users" in str(exc.__cause__):
                raise UserExists(user.username, user.domain) from exc.__cause__
            raise

    async def get_user(self, username: str, domain: str) -> User | None:
        def work(conn: sqlite3.Connection) -> User | None:
            row = conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE username = ? AND domain = ?",
                (username, domain),
            ).fetchone()
            return _user_from_row(row) if row else None

        return await self._run(work)

    async def users_by_phone(self, phone: str, domain: str) -> list[User]:
        def work(conn: sqlite3.Connection) -> list[User]:
            rows = conn.execute(
                f"SELECT {_USER_COLUMNS} FROM users WHERE domain = ? AND EXISTS "
                "(SELECT 1 FROM json_each(users.phones) WHERE json_each.value = ?) ORDER BY username",
                (domain, phone),
            ).fetchall()
            return [_user_from_row(r) for r in rows]

        return await self._run(work)

    async def list_users(self, domain: str | None = None) -> list[User]:
        def work(conn: sqlite3.Connection) -> list[User]:
            if domain is None:
                rows = conn.execute(
                    f"SELECT {_USER_COLUMNS} FROM users ORDER BY domain, username"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_USER_COLUMNS} FROM users WHERE domain = ? ORDER BY username",
                    (domain,),
                ).fetchall()
            return [_user_from_row(r) for r in rows]

        return await self._run(work)

    async def user_domains(self) -> dict[str, int]:
        def work(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT domain, COUNT(*) FROM users GROUP BY domain ORDER BY domain").fetchall()
            return {domain: count for domain, count in rows}

        return await self._run(work)

    async def update_user(self, user: User) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                cursor = conn.execute(
                    "UPDATE users SET ha1 = ?, ha1_sha256 = ?, display_name = ?, phones = ?, "
                    "created_at = ?, disabled = ?, admin = ? WHERE username = ? AND domain = ?",
                    (*_user_row(user)[2:], user.username, user.domain),
                )
                if cursor.rowcount == 0:
                    return False
                _publish(conn, CHANGE_USER, user_key(user.username, user.domain))
                return True

        return await self._run(work)

    async def remove_user(self, username: str, domain: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                cursor = conn.execute(
                    "DELETE FROM users WHERE username = ? AND domain = ?", (username, domain)
                )
                if cursor.rowcount == 0:
                    return False
                conn.execute(
                    "DELETE FROM bindings WHERE aor IN (?, ?)",
                    (aor_of(username, domain), aor_of(username, domain, "sips")),
                )
                # A user added later under the same name must not inherit these devices.
                conn.execute("UPDATE devices SET revoked_at = ? WHERE username = ? AND domain = ? "
                             "AND revoked_at IS NULL", (time.time(), username, domain))
                # A later user of the same name must not inherit lists or privacy rules.
                conn.execute("DELETE FROM xcap_documents WHERE owner = ?", (aor_of(username, domain),))
                _publish(conn, CHANGE_USER, user_key(username, domain))
                return True

        return await self._run(work)

    # ---- bindings --------------------------------------------------------------------

    async def list_bindings(self, aor: str | None = None) -> list[Binding]:
        def work(conn: sqlite3.Connection) -> list[Binding]:
            if aor is None:
                rows = conn.execute(
                    f"SELECT {_BINDING_COLUMNS} FROM bindings ORDER BY aor, binding_key"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE aor = ? ORDER BY binding_key",
                    (aor,),
                ).fetchall()
            return [_binding_from_row(r) for r in rows]

        return await self._run(work)

    async def delete_bindings(self, aor: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return conn.execute("DELETE FROM bindings WHERE aor = ?", (aor,)).rowcount

        return await self._run(work)

    async def delete_expired_bindings(self, now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return conn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,)).rowcount

        return await self._run(work)

    async def write_batch(self, batch: WriteBatch) -> BatchResult:
        if batch.is_empty():
            return EMPTY_BATCH_RESULT
        upsert_list, delete_list = normalise_batch(batch)
        audit, messages, history = batch.audit, batch.messages, batch.history
        deliveries, taken_at_once, history_status = batch.deliveries, batch.taken_at_once, batch.history_status

        def work(conn: sqlite3.Connection) -> BatchResult:
            # Rows are made here, on the store's thread, not on the event loop; still
            # before BEGIN, so a bad value fails the batch before it touches the DB.
            upsert_rows = [_binding_row(b) for b in upsert_list]
            audit_rows = [_audit_row(a) for a in audit]
            message_rows = [_message_row(m) for m in messages]
            # A message delivered at once is also "taken at once": one UPDATE for both.
            taken = set(taken_at_once)
            delivered_ids = {mid for mid, _, _ in deliveries}
            with _Transaction(conn):
                if delete_list:
                    conn.executemany(
                        "DELETE FROM bindings WHERE aor = ? AND binding_key = ?", delete_list
                    )
                if upsert_rows:
                    _UPSERT_BINDINGS.run(conn, upsert_rows)
                if audit_rows:
                    _INSERT_AUDITS.run(conn, audit_rows)
                duplicates: frozenset[str] = frozenset()
                if message_rows:
                    # All new (the usual case) when every row counted; else redo them one
                    # by one: each execute's rowcount (0 = skipped) names the duplicates.
                    conn.execute("SAVEPOINT batch_messages")
                    before = conn.total_changes
                    _INSERT_MESSAGES.run(conn, message_rows)
                    if conn.total_changes - before != len(message_rows):
                        conn.execute("ROLLBACK TO batch_messages")
                        duplicates = frozenset(
                            row[0] for row in message_rows if conn.execute(_INSERT_MESSAGE, row).rowcount == 0
                        )
                    conn.execute("RELEASE batch_messages")
                if history:
                    _INSERT_HISTORIES.run(
                        conn, [_history_row(h) for h in history if h.message_id not in duplicates])
                if deliveries:
                    _RECORD_DELIVERIES.run(conn, deliveries)
                    _MARK_DELIVERED_TAKEN.run(conn, [(mid,) for mid in delivered_ids if mid in taken])
                    _MARK_DELIVERED_KEPT.run(conn, [(mid,) for mid in delivered_ids if mid not in taken])
                if taken:
                    _NOT_FOR_LATE_DEVICES.run(conn, [(mid,) for mid in taken if mid not in delivered_ids])
                if history_status:
                    conn.executemany(history_status_update_sql("?1", "?2"),
                                     [(status, mid) for mid, status in history_status])
            return BatchResult(duplicates) if duplicates else EMPTY_BATCH_RESULT

        return await self._run(work)

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
            conditions.append("(username = ? OR aor_user = ?)")
            params += [username, username]
        if since is not None:
            conditions.append("ts >= ?")
            params.append(since)
        if result is not None:
            conditions.append("result = ?")
            params.append(result)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        params.append(max(0, limit))
        sql = (
            "SELECT ts, aor, username, instance_id, user_agent, source, transport, result, "
            f"reason FROM audit {where} ORDER BY ts DESC, id DESC LIMIT ?"
        )

        def work(conn: sqlite3.Connection) -> list[AuditRecord]:
            return [_audit_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return await self._run(work)

    async def prune_audit(self, before_ts: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return conn.execute("DELETE FROM audit WHERE ts < ?", (before_ts,)).rowcount

        return await self._run(work)

    # ---- pager messages -----------------------------------------------------------------
    # SQLite runs one write transaction at a time (BEGIN IMMEDIATE), across processes
    # too, so read-then-write inside one transaction is race-free here.

    async def get_message(self, message_id: str) -> StoredMessage | None:
        def work(conn: sqlite3.Connection) -> StoredMessage | None:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            return _message_from_row(row) if row else None

        return await self._run(work)

    async def find_duplicate(
        self, sender: str, imdn_message_id: str | None, call_id: str, cseq: int
    ) -> StoredMessage | None:
        def work(conn: sqlite3.Connection) -> StoredMessage | None:
            row = None
            if imdn_message_id is not None:
                row = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages "
                    "WHERE sender = ? AND imdn_message_id = ?",
                    (sender, imdn_message_id),
                ).fetchone()
            if row is None:
                row = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages "
                    "WHERE sender = ? AND call_id = ? AND cseq = ?",
                    (sender, call_id, cseq),
                ).fetchone()
            return _message_from_row(row) if row else None

        return await self._run(work)

    async def claim_delivery(
        self,
        message_id: str,
        device_key: str,
        node_id: str,
        now: float,
        *,
        claim_lease: float = CLAIM_LEASE,
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                # The SELECT only yields a row for a live message; the upsert's WHERE
                # lets it take over nothing but an abandoned (older than the lease) claim.
                cursor = conn.execute(
                    "INSERT INTO message_deliveries (message_id, device_key, node_id, claimed_at) "
                    "SELECT id, ?, ?, ? FROM messages WHERE id = ? AND expires_at > ? "
                    "AND state != 'expired' "
                    "ON CONFLICT (message_id, device_key) DO UPDATE SET "
                    "node_id = excluded.node_id, claimed_at = excluded.claimed_at "
                    "WHERE message_deliveries.delivered_at IS NULL "
                    "AND message_deliveries.claimed_at <= ?",
                    (device_key, node_id, now, message_id, now, now - claim_lease),
                )
                return cursor.rowcount == 1

        return await self._run(work)

    async def finish_delivery(
        self, message_id: str, device_key: str, delivered: bool, now: float
    ) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                if not delivered:
                    conn.execute(
                        "DELETE FROM message_deliveries WHERE message_id = ? AND device_key = ? "
                        "AND delivered_at IS NULL",
                        (message_id, device_key),
                    )
                    return False
                # An upsert, so no claim is needed (a live delivery records itself) and a
                # claim taken over meanwhile does not matter: the device took the message.
                # The first delivery time is kept; an unknown message records nothing.
                conn.execute(_RECORD_DELIVERY, (device_key, now, now, message_id))
                return (
                    conn.execute(
                        "UPDATE messages SET state = ? WHERE id = ? AND state = ?",
                        (MESSAGE_DELIVERED, message_id, MESSAGE_PENDING),
                    ).rowcount
                    == 1
                )

        return await self._run(work)

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
        sql = (
            f"SELECT {_MESSAGE_COLUMNS} FROM messages m "
            "WHERE m.recipient = ? AND m.expires_at > ? AND m.state != 'expired' AND m.for_late_devices "
            "AND (m.target_instance IS NULL OR m.target_instance = ?) "
            "AND NOT EXISTS (SELECT 1 FROM message_deliveries d "
            "    WHERE d.message_id = m.id AND d.device_key = ? "
            "    AND (d.delivered_at IS NOT NULL OR d.claimed_at > ?)) "
            "ORDER BY m.created_at, m.seq LIMIT ?"
        )
        params = (recipient, now, instance_id, device_key, now - claim_lease, max(0, limit))

        def work(conn: sqlite3.Connection) -> list[StoredMessage]:
            return [_message_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return await self._run(work)

    async def taken_at_once(self, message_id: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _Transaction(conn):
                conn.execute("UPDATE messages SET for_late_devices = 0 WHERE id = ?", (message_id,))

        await self._run(work)

    async def recipients_owed_messages(self, now: float) -> dict[str, float]:
        def work(conn: sqlite3.Connection) -> dict[str, float]:
            rows = conn.execute(
                "SELECT recipient, MAX(expires_at) FROM messages "
                "WHERE for_late_devices AND expires_at > ? AND state != 'expired' GROUP BY recipient",
                (now,)).fetchall()
            return {recipient: float(expires) for recipient, expires in rows}

        return await self._run(work)

    async def messages_pending(self, recipient: str | None = None) -> list[StoredMessage]:
        def work(conn: sqlite3.Connection) -> list[StoredMessage]:
            if recipient is None:
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE state = ? "
                    "ORDER BY created_at, seq",
                    (MESSAGE_PENDING,),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE recipient = ? AND state = ? "
                    "ORDER BY created_at, seq",
                    (recipient, MESSAGE_PENDING),
                ).fetchall()
            return [_message_from_row(r) for r in rows]

        return await self._run(work)

    async def expire_messages(self, now: float) -> list[StoredMessage]:
        def work(conn: sqlite3.Connection) -> list[StoredMessage]:
            with _Transaction(conn):
                never_delivered = conn.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE expires_at <= ? AND state = ? "
                    "ORDER BY created_at, seq",
                    (now, MESSAGE_PENDING),
                ).fetchall()
                conn.execute(
                    "UPDATE messages SET state = ? WHERE expires_at <= ? AND state != ?",
                    (MESSAGE_EXPIRED, now, MESSAGE_EXPIRED),
                )
            return [
                dataclasses.replace(_message_from_row(r), state=MESSAGE_EXPIRED)
                for r in never_delivered
            ]

        return await self._run(work)

    async def purge_messages(self, before_ts: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                done = "expires_at < ? AND state != 'pending'"
                conn.execute(
                    "DELETE FROM message_deliveries WHERE message_id IN "
                    f"(SELECT id FROM messages WHERE {done})",
                    (before_ts,),
                )
                return conn.execute(f"DELETE FROM messages WHERE {done}", (before_ts,)).rowcount

        return await self._run(work)

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
        conditions = ["owner = ?"]
        params: list[Any] = [owner]
        if peer is not None:
            conditions.append("peer = ?")
            params.append(peer)
        if since is not None:
            conditions.append("ts >= ?")
            params.append(since)
        if before is not None:
            # A row value comparison: strictly before (ts, seq) in the page order.
            conditions.append("(ts, seq) < (?, ?)")
            params += [before[0], before[1]]
        params.append(max(0, limit))
        sql = (
            f"SELECT seq, {_HISTORY_COLUMNS} FROM history WHERE {' AND '.join(conditions)} "
            "ORDER BY ts DESC, seq DESC LIMIT ?"
        )

        def work(conn: sqlite3.Connection) -> list[HistoryEntry]:
            return [_history_from_row(r) for r in conn.execute(sql, params).fetchall()]

        return await self._run(work)

    async def update_history_status(self, message_id: str, status: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return conn.execute(history_status_update_sql("?1", "?2"), (status, message_id)).rowcount

        return await self._run(work)

    async def prune_history(self, before_ts: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return conn.execute("DELETE FROM history WHERE ts < ?", (before_ts,)).rowcount

        return await self._run(work)

    # ---- change feed -------------------------------------------------------------------
    # SQLite has one writer at a time, so ids commit in increasing order by construction.

    async def publish_change(self, kind: str, key: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return _publish(conn, kind, key)

        return await self._run(work)

    async def changes_since(self, change_id: int) -> list[Change]:
        def work(conn: sqlite3.Connection) -> list[Change]:
            rows = conn.execute(
                "SELECT id, kind, key, ts FROM changes WHERE id > ? ORDER BY id", (change_id,)
            ).fetchall()
            return [Change(r["id"], r["kind"], r["key"], r["ts"]) for r in rows]

        return await self._run(work)

    async def latest_change_id(self) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM changes").fetchone()[0])

        return await self._run(work)

    async def prune_changes(self, before_ts: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return conn.execute(
                    "DELETE FROM changes WHERE ts < ? AND id < (SELECT max(id) FROM changes)",
                    (before_ts,),
                ).rowcount

        return await self._run(work)

    # ---- per-device credentials ------------------------------------------------------

    async def add_device(self, device: DeviceCredential) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _Transaction(conn):
                conn.execute(f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                             _device_row(device))
                _publish(conn, CHANGE_DEVICE, device.auth_username)

        try:
            await self._run(work)
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):
                raise DeviceExists(f"device {device.device_id} ({device.auth_username}, "
                                   f"{device.instance_id}) already exists") from exc.__cause__
            raise

    async def update_device(self, device: DeviceCredential) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                cursor = conn.execute(
                    "UPDATE devices SET name = ?, ha1_md5 = ?, ha1_sha256 = ?, token_hash = ?, "
                    "last_used_at = ? WHERE device_id = ? AND revoked_at IS NULL",
                    (device.name, device.ha1_md5, device.ha1_sha256, device.token_hash,
                     device.last_used_at, device.device_id))
                if cursor.rowcount == 0:
                    return False
                _publish(conn, CHANGE_DEVICE, device.auth_username)
                return True

        return await self._run(work)

    async def _one_device(self, where: str, args: tuple[Any, ...]) -> DeviceCredential | None:
        def work(conn: sqlite3.Connection) -> DeviceCredential | None:
            row = conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {where}", args).fetchone()
            return _device_from_row(row) if row else None

        return await self._run(work)

    async def get_device(self, device_id: str) -> DeviceCredential | None:
        return await self._one_device("device_id = ?", (device_id,))

    async def device_by_auth_username(self, auth_username: str) -> DeviceCredential | None:
        return await self._one_device("auth_username = ?", (auth_username,))

    async def device_by_token_hash(self, token_hash: str) -> DeviceCredential | None:
        return await self._one_device("token_hash = ?", (token_hash,))

    async def live_device_by_instance(self, username: str, domain: str,
                                      instance_id: str) -> DeviceCredential | None:
        return await self._one_device("username = ? AND domain = ? AND instance_id = ? AND revoked_at IS NULL",
                                      (username, domain, instance_id))

    async def list_devices(self, username: str, domain: str) -> list[DeviceCredential]:
        def work(conn: sqlite3.Connection) -> list[DeviceCredential]:
            rows = conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE username = ? AND domain = ? "
                                "ORDER BY created_at, device_id", (username, domain)).fetchall()
            return [_device_from_row(r) for r in rows]

        return await self._run(work)

    async def revoke_device(self, device_id: str, now: float) -> DeviceCredential | None:
        def work(conn: sqlite3.Connection) -> DeviceCredential | None:
            with _Transaction(conn):
                row = conn.execute(f"UPDATE devices SET revoked_at = ? WHERE device_id = ? AND revoked_at IS NULL "
                                   f"RETURNING {_DEVICE_COLUMNS}", (now, device_id)).fetchone()
                if row is None:
                    return None
                device = _device_from_row(row)
                _publish(conn, CHANGE_DEVICE, device.auth_username)
                return device

        return await self._run(work)

    async def touch_devices(self, last_used: Sequence[tuple[str, float]]) -> None:
        if not last_used:
            return

        def work(conn: sqlite3.Connection) -> None:
            with _Transaction(conn):
                conn.executemany("UPDATE devices SET last_used_at = max(coalesce(last_used_at, 0), ?) "
                                 "WHERE device_id = ?", [(ts, device_id) for device_id, ts in last_used])

        await self._run(work)

    # ---- one-time codes ------------------------------------------------------------------

    async def put_code(self, code: ProvisioningCode) -> None:
        def work(conn: sqlite3.Connection) -> None:
            with _Transaction(conn):
                conn.execute(f"INSERT OR REPLACE INTO provisioning_codes ({_CODE_COLUMNS}) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", _code_row(code))

        await self._run(work)

    async def get_code(self, purpose: str, subject: str) -> ProvisioningCode | None:
        def work(conn: sqlite3.Connection) -> ProvisioningCode | None:
            row = conn.execute(f"SELECT {_CODE_COLUMNS} FROM provisioning_codes WHERE purpose = ? AND subject = ?",
                               (purpose, subject)).fetchone()
            return _code_from_row(row) if row else None

        return await self._run(work)

    async def count_code_failure(self, purpose: str, subject: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                row = conn.execute("UPDATE provisioning_codes SET attempts = attempts + 1 "
                                   "WHERE purpose = ? AND subject = ? RETURNING attempts",
                                   (purpose, subject)).fetchone()
                return int(row[0]) if row else 0

        return await self._run(work)

    async def take_code(self, purpose: str, subject: str, code_hash: str,
                        now: float) -> ProvisioningCode | None:
        def work(conn: sqlite3.Connection) -> ProvisioningCode | None:
            with _Transaction(conn):
                row = conn.execute(f"DELETE FROM provisioning_codes WHERE purpose = ? AND subject = ? "
                                   f"AND code_hash = ? AND expires_at > ? RETURNING {_CODE_COLUMNS}",
                                   (purpose, subject, code_hash, now)).fetchone()
                return _code_from_row(row) if row else None

        return await self._run(work)

    async def delete_code(self, purpose: str, subject: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                return conn.execute("DELETE FROM provisioning_codes WHERE purpose = ? AND subject = ?",
                                    (purpose, subject)).rowcount > 0

        return await self._run(work)

    async def prune_codes(self, now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            with _Transaction(conn):
                return conn.execute("DELETE FROM provisioning_codes WHERE expires_at < ?", (now,)).rowcount

        return await self._run(work)

    # ---- XCAP documents ----------------------------------------------------------------

    async def get_xcap_document(self, auid: str, owner: str, filename: str) -> XcapDocument | None:
        def work(conn: sqlite3.Connection) -> XcapDocument | None:
            row = conn.execute(
                "SELECT auid, owner, filename, content, etag, updated_at FROM xcap_documents "
                "WHERE auid = ? AND owner = ? AND filename = ?", (auid, owner, filename),
            ).fetchone()
            return _xcap_from_row(row) if row else None

        return await self._run(work)

    async def list_xcap_documents(self, auid: str, owner: str | None = None) -> list[XcapDocument]:
        def work(conn: sqlite3.Connection) -> list[XcapDocument]:
            sql = "SELECT auid, owner, filename, content, etag, updated_at FROM xcap_documents WHERE auid = ?"
            params: tuple[Any, ...] = (auid,)
            if owner is not None:
                sql += " AND owner = ?"
                params += (owner,)
            rows = conn.execute(sql + " ORDER BY owner, filename", params).fetchall()
            return [_xcap_from_row(r) for r in rows]

        return await self._run(work)

    async def put_xcap_document(self, document: XcapDocument, expected_etag: str | None) -> bool:
        d = document

        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                if expected_etag is None:
                    cursor = conn.execute(
                        "INSERT INTO xcap_documents (auid, owner, filename, content, etag, updated_at) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (d.auid, d.owner, d.filename, d.content, d.etag, d.updated_at),
                    )
                else:
                    cursor = conn.execute(
                        "UPDATE xcap_documents SET content = ?, etag = ?, updated_at = ? "
                        "WHERE auid = ? AND owner = ? AND filename = ? AND etag = ?",
                        (d.content, d.etag, d.updated_at, d.auid, d.owner, d.filename, expected_etag),
                    )
                if cursor.rowcount == 0:
                    return False
                _publish(conn, CHANGE_XCAP, xcap_key(d.auid, d.owner, d.filename))
                return True

        return await self._run(work)

    async def delete_xcap_document(self, auid: str, owner: str, filename: str, expected_etag: str) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            with _Transaction(conn):
                cursor = conn.execute(
                    "DELETE FROM xcap_documents WHERE auid = ? AND owner = ? AND filename = ? AND etag = ?",
                    (auid, owner, filename, expected_etag),
                )
                if cursor.rowcount == 0:
                    return False
                _publish(conn, CHANGE_XCAP, xcap_key(auid, owner, filename))
                return True

        return await self._run(work)


def _xcap_from_row(r: sqlite3.Row) -> XcapDocument:
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


def _device_from_row(r: sqlite3.Row) -> DeviceCredential:
    return DeviceCredential(**{key: r[key] for key in r.keys()})


def _code_row(c: ProvisioningCode) -> tuple[Any, ...]:
    return (c.purpose, c.subject, c.code_hash, c.owner, c.created_at, c.expires_at, c.attempts)


def _code_from_row(r: sqlite3.Row) -> ProvisioningCode:
    return ProvisioningCode(**{key: r[key] for key in r.keys()})


def _translate_operational(path: str, exc: sqlite3.OperationalError) -> StoreError:
    message = str(exc)
    if "locked" in message or "busy" in message:
        return StoreUnavailable(
            f"SQLite database {path} stayed locked by another process for more than "
            f"{BUSY_TIMEOUT_MS / 1000:g}s"
        )
    if "unable to open" in message or "readonly" in message or "disk I/O" in message:
        return StoreUnavailable(f"SQLite database {path} cannot be opened or written: {message}")
    return StoreError(f"SQLite {path}: {message}")


def _connect(path: str) -> sqlite3.Connection:
    """Open and migrate; runs on the worker thread (sqlite3 objects stay on their thread)."""
    if path != MEMORY:
        _prepare_file(path)
    # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, factory=_Connection)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != MEMORY:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"SQLite database {path} refused WAL journal mode ({mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    # One IMMEDIATE transaction for the check and all pending migrations: a second
    # process opening the same file at the same time waits, then finds nothing to do.
    with _Transaction(conn):
        conn.execute(migrations.SQLITE_SCHEMA_VERSION_TABLE)
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        try:
            todo = migrations.pending(int(current))
        except ValueError as exc:
            raise StoreError(str(exc)) from None
        for migration in todo:
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, time.time()),
            )


async def open_sqlite(path: str) -> SQLiteStore:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sipim-sqlite")
    loop = asyncio.get_running_loop()
    try:
        conn = await loop.run_in_executor(executor, _connect, path)
    except sqlite3.OperationalError as exc:
        executor.shutdown(wait=False)
        raise _translate_operational(path, exc) from exc
    except sqlite3.Error as exc:
        executor.shutdown(wait=False)
        raise StoreError(f"SQLite {path}: {exc}") from exc
    except OSError as exc:
        executor.shutdown(wait=False)
        raise StoreUnavailable(f"SQLite database {path} cannot be created: {exc}") from exc
    except BaseException:
        executor.shutdown(wait=False)
        raise
    return SQLiteStore(path, executor, conn)
