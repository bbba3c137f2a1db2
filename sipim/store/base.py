"""The one storage interface every role talks to.

All methods are coroutines. Two engines implement it: ``sqlite`` (embedded default) and
``postgres`` (several nodes sharing a database). Engines translate driver failures into
:mod:`sipim.store.errors`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from types import TracebackType

from .models import AuditRecord, Binding, Change, User

DEFAULT_AUDIT_LIMIT = 1000


class Store(abc.ABC):
    """Abstract store. Obtain one with :func:`sipim.store.open_store`."""

    # ---- lifecycle -------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections / the worker thread. Idempotent. Later calls raise StoreUnavailable."""

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # ---- users -----------------------------------------------------------------
    # Mutations also publish a change (kind "user", key "username@domain") in the same
    # transaction, so a running server learns about CLI edits without the CLI having to
    # remember to call publish_change().

    @abc.abstractmethod
    async def add_user(self, user: User) -> None:
        """Insert a user. Raises UserExists if (username, domain) is taken."""

    @abc.abstractmethod
    async def get_user(self, username: str, domain: str) -> User | None:
        """Exact (case-sensitive) look-up; the caller normalises the domain's case."""

    @abc.abstractmethod
    async def list_users(self, domain: str | None = None) -> list[User]:
        """Users ordered by (domain, username), optionally of one domain."""

    @abc.abstractmethod
    async def update_user(self, user: User) -> bool:
        """Replace every field of the user (username, domain). False if there is no such user."""

    @abc.abstractmethod
    async def remove_user(self, username: str, domain: str) -> bool:
        """Delete the user and the bindings of its AORs (``sip:`` and ``sips:`` forms of
        :func:`~sipim.store.models.aor_of`). False if there was no such user."""

    # ---- bindings (location service, RFC 3261 §10, RFC 5626, RFC 5627) -------------

    @abc.abstractmethod
    async def list_bindings(self, aor: str | None = None) -> list[Binding]:
        """Stored bindings (expired ones included until deleted), ordered by (aor, binding_key)."""

    @abc.abstractmethod
    async def delete_bindings(self, aor: str) -> int:
        """Delete every binding of an AOR; returns how many."""

    @abc.abstractmethod
    async def delete_expired_bindings(self, now: float) -> int:
        """Delete bindings whose ``expires_at <= now``; returns how many."""

    @abc.abstractmethod
    async def write_batch(
        self,
        upserts: Sequence[Binding] = (),
        deletes: Sequence[tuple[str, str]] = (),
        audit: Sequence[AuditRecord] = (),
    ) -> None:
        """Apply a group commit in ONE transaction: all of it or none of it.

        ``upserts`` insert or replace bindings by (aor, binding_key); ``deletes`` are
        (aor, binding_key) pairs (absent ones are ignored); ``audit`` rows are appended.
        The batch describes final states: the same key must not be both upserted and
        deleted (ValueError); if a key is upserted twice, the last one wins.
        A failing row (e.g. a constraint violation) raises StoreError and nothing is written.
        """

    # ---- audit trail --------------------------------------------------------------

    @abc.abstractmethod
    async def query_audit(
        self,
        *,
        username: str | None = None,
        since: float | None = None,
        result: str | None = None,
        limit: int = DEFAULT_AUDIT_LIMIT,
    ) -> list[AuditRecord]:
        """Audit records, newest first.

        ``username`` matches a record whose authenticated username equals it OR whose
        AOR's user part equals it (so attempts without credentials are found too).
        ``since`` keeps records with ``ts >= since``; ``result`` is an exact match.
        """

    @abc.abstractmethod
    async def prune_audit(self, before_ts: float) -> int:
        """Delete audit records with ``ts < before_ts``; returns how many."""

    # ---- change feed ---------------------------------------------------------------

    @abc.abstractmethod
    async def publish_change(self, kind: str, key: str) -> int:
        """Record that object kind/key changed; returns the change id.

        Ids increase and become visible in id order: a reader that remembers the last id
        it processed and calls changes_since() never skips a change.
        """

    @abc.abstractmethod
    async def changes_since(self, change_id: int) -> list[Change]:
        """Changes with ``id > change_id``, oldest first."""

    @abc.abstractmethod
    async def latest_change_id(self) -> int:
        """The highest change id (0 on an empty feed); a new reader starts from here."""

    @abc.abstractmethod
    async def prune_changes(self, before_ts: float) -> int:
        """Delete changes older than ``before_ts``, always keeping the newest one so
        latest_change_id() never goes backwards. Returns how many were deleted."""


def normalise_batch(
    upserts: Sequence[Binding], deletes: Sequence[tuple[str, str]]
) -> tuple[list[Binding], list[tuple[str, str]]]:
    """Validate a write_batch: last upsert per key wins; a key in both lists is a caller bug.

    Keeping one row per key also matters for PostgreSQL, where a single statement may not
    touch the same row twice.
    """
    latest: dict[tuple[str, str], Binding] = {}
    for binding in upserts:
        latest[(binding.aor, binding.binding_key)] = binding
    delete_keys = list(dict.fromkeys((aor, key) for aor, key in deletes))
    both = latest.keys() & set(delete_keys)
    if both:
        raise ValueError(
            f"write_batch: {len(both)} binding key(s) both upserted and deleted, e.g. {next(iter(both))}"
        )
    return list(latest.values()), delete_keys
