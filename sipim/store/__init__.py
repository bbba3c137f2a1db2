"""Storage layer: one async interface (:class:`Store`), two engines.

``open_store(url)`` picks the engine from the URL:

- ``postgresql://user@host:port/db`` or ``postgres://...`` -> PostgreSQL (asyncpg pool).
  A ``schema=NAME`` query parameter creates that schema if needed and puts it alone on
  the search_path (tests use it to isolate themselves on a shared database).
- anything else -> SQLite: a file path, or ``sqlite:///relative.db`` /
  ``sqlite:////absolute.db`` (SQLAlchemy's convention), or ``:memory:``.

Pending schema migrations run on open (see :mod:`sipim.store.migrations`).
"""

from __future__ import annotations

from .base import Store
from .errors import DeviceExists, StoreError, StoreUnavailable, UserExists
from .base import CLAIM_LEASE
from .changes import CHANGE_USER
from .models import (
    HISTORY_IN,
    HISTORY_OUT,
    MESSAGE_DELIVERED,
    MESSAGE_EXPIRED,
    MESSAGE_PENDING,
    AuditRecord,
    BatchResult,
    Binding,
    Change,
    DeviceCredential,
    HistoryEntry,
    ProvisioningCode,
    StoredMessage,
    User,
    WriteBatch,
    XcapDocument,
    aor_of,
    aor_user_part,
    new_message_id,
    user_key,
)

__all__ = [
    "CHANGE_USER",
    "CLAIM_LEASE",
    "HISTORY_IN",
    "HISTORY_OUT",
    "MESSAGE_DELIVERED",
    "MESSAGE_EXPIRED",
    "MESSAGE_PENDING",
    "AuditRecord",
    "BatchResult",
    "Binding",
    "Change",
    "DeviceCredential",
    "DeviceExists",
    "ProvisioningCode",
    "HistoryEntry",
    "StoredMessage",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "User",
    "UserExists",
    "WriteBatch",
    "XcapDocument",
    "aor_of",
    "aor_user_part",
    "is_postgres_url",
    "new_message_id",
    "open_store",
    "user_key",
]


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


async def open_store(url: str) -> Store:
    """Open (creating and migrating if needed) the store named by ``url``."""
    # Engines are imported lazily so that a SQLite-only deployment never loads asyncpg.
    if is_postgres_url(url):
        from .postgres import open_postgres

        return await open_postgres(url)
    from .sqlite import open_sqlite, sqlite_path_from_url

    return await open_sqlite(sqlite_path_from_url(url))
