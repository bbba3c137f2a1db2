"""The one storage interface every role talks to.

All methods are coroutines. Two engines implement it: ``sqlite`` (embedded default) and
``postgres`` (several nodes sharing a database). Engines translate driver failures into
:mod:`sipim.store.errors`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

from .models import AuditRecord, BatchResult, Binding, Change, HistoryEntry, StoredMessage, User, WriteBatch
from .models import DeviceCredential, ProvisioningCode
from .models import XcapDocument

log = logging.getLogger(__name__)

# Told (kind, key) of a change this store object published, once its transaction committed.
ChangeListener = Callable[[str, str], None]

DEFAULT_AUDIT_LIMIT = 1000
DEFAULT_HISTORY_LIMIT = 50
DEFAULT_UNDELIVERED_LIMIT = 100

CLAIM_LEASE = 64.0
"""Seconds after which an unfinished delivery claim counts as abandoned (its node died
mid-delivery) and another node may take it over. A MESSAGE client transaction ends
within Timer F = 64*T1 = 32 s (RFC 3261 §17.1.2.2); twice that leaves a margin."""


class Store(abc.ABC):
    """Abstract store. Obtain one with :func:`sipim.store.open_store`."""

    # ---- lifecycle -------------------------------------------------------------

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections / the worker thread. Idempotent. Later calls raise StoreUnavailable."""

    async def __aenter__(self) -> Store:
        return self

    # ---- committed changes -----------------------------------------------------
    # Every mutation that publishes to the change feed (users, devices, XCAP documents,
    # publish_change) also tells this store object's listeners, after its transaction
    # committed and before the method returns: worker processes of one server pass the
    # change on to each other at once (sipim/cluster), where other processes only learn
    # it when they next read the feed.

    _change_listeners: tuple[ChangeListener, ...] = ()

    def add_change_listener(self, listener: ChangeListener) -> None:
        self._change_listeners = (*self._change_listeners, listener)

    def _committed(self, changes: Iterable[tuple[str, str]]) -> None:
        for kind, key in changes:
            for listener in self._change_listeners:
                try:
                    listener(kind, key)
                except Exception:  # the change is committed and in the feed all the same
                    log.exception("change listener %r failed on %s %s", listener, kind, key)

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
    async def user_domains(self) -> dict[str, int]:
        """The domains that have users, each with how many, in domain order.

        ``sipim serve`` warns when none of them is the domain it serves: users added
        under another domain cannot register."""

    @abc.abstractmethod
    async def users_by_phone(self, phone: str, domain: str) -> list[User]:
        """The users of ``domain`` who have the E.164 number ``phone`` (ordered by name).

        The directory lookup a ``tel:`` URI needs: exactly one user is an answer,
        none is "not found", several are "ambiguous" -- the caller decides."""

    @abc.abstractmethod
    async def update_user(self, user: User) -> bool:
        """Replace every field of the user (username, domain). False if there is no such user."""

    @abc.abstractmethod
    async def remove_user(self, username: str, domain: str) -> bool:
        """Delete the user and the bindings of its AORs (``sip:`` and ``sips:`` forms of
        :func:`~sipim.store.models.aor_of`), and revoke its devices. False if there was no
        such user."""

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
    async def write_batch(self, batch: WriteBatch) -> BatchResult:
        """Apply a group commit (:class:`~sipim.store.models.WriteBatch`) in ONE
        transaction: all of it or none of it.

        The batch describes final states: the same binding key must not be both
        upserted and deleted (ValueError); if a key is upserted twice, the last one wins.

        ``messages`` are stored for delivery (a MESSAGE is answered 202 only once its
        batch committed, RFC 3428 §7). A message equal to one already stored -- same
        sender and (call_id, cseq), or same sender and imdn_message_id -- or to an
        earlier one of the same batch is a resent request: it is skipped, not an error,
        and its id is reported in the result's ``duplicate_message_ids``; history
        entries whose ``message_id`` is a skipped id are skipped with it. History
        entries are otherwise appended, except that one (message_id, owner, direction)
        is stored once.

        A failing row (e.g. a constraint violation other than a duplicate message)
        raises StoreError and nothing is written. Callers that only write bindings and
        audit may ignore the result.

        The IM server's hot path writes deliveries, taken-at-once marks and history
        statuses in the group commit instead of one transaction each.
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

    # ---- pager messages: store-and-forward (RFC 3428 §7) -----------------------------
    # Semantics. A pager MESSAGE to an AOR goes to EVERY device of the recipient
    # (RFC 3428 §6: it forks like any non-INVITE request), including devices that
    # register later while the message lives (until expires_at). Per device, delivery is
    # decided by the database so that several nodes racing for the same device deliver
    # once: claim_delivery() -> send -> finish_delivery(). The message's state is
    # "delivered" as soon as ONE device took it (RFC 5438 §5.1: the IM was delivered to
    # the IM Recipient), yet it keeps being offered to the recipient's other devices
    # until it expires. "expired" is set by expire_messages() once expires_at passed;
    # a message that expired still "pending" was never delivered to anyone (RFC 5438
    # §8.2: the intermediary may then send a negative delivery notification).

    @abc.abstractmethod
    async def get_message(self, message_id: str) -> StoredMessage | None:
        """The message with this id, whatever its state."""

    @abc.abstractmethod
    async def find_duplicate(
        self, sender: str, imdn_message_id: str | None, call_id: str, cseq: int
    ) -> StoredMessage | None:
        """The stored message a new request from ``sender`` would duplicate: same
        imdn_message_id (when not None; RFC 5438 §6.3 ids are globally unique), or same
        call_id and cseq (a request resent after its transaction ended). None if new."""

    @abc.abstractmethod
    async def claim_delivery(
        self,
        message_id: str,
        device_key: str,
        node_id: str,
        now: float,
        *,
        claim_lease: float = CLAIM_LEASE,
    ) -> bool:
        """Try to become the one sender of ``message_id`` to the device ``device_key``.

        True when this caller got the claim and must now send the message and then call
        finish_delivery(). False when the device already received it, another caller
        holds a live claim (taken less than ``claim_lease`` seconds before ``now``), or
        the message is unknown or no longer live (expired). A claim older than the lease
        is taken over: its node presumably died mid-delivery. Atomic across processes
        and nodes sharing the database.
        """

    @abc.abstractmethod
    async def finish_delivery(
        self, message_id: str, device_key: str, delivered: bool, now: float
    ) -> bool:
        """End a claim.

        ``delivered=True``: the device took the message (a 2xx answered it); recorded
        for good, with or without a prior claim (a message delivered live, before it
        was offered from the store, is recorded this way directly), and the message
        becomes "delivered" if it was "pending" (an expired message stays "expired").
        Returns True when THIS call made the message delivered -- the first device --
        so a caller can report delivery once.
        ``delivered=False``: the attempt failed; the claim is released so a later
        attempt (from any node) may retry. Returns False.
        """

    @abc.abstractmethod
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
        """Live messages (``expires_at > now``, not "expired") to ``recipient`` that the
        device ``device_key`` neither received nor has a live claim on, oldest first
        (by created_at, then acceptance order). Messages targeted at another device
        (``target_instance`` set and != ``instance_id``, RFC 5627 GRUU) are left out.
        The caller still claims each one before sending it."""

    @abc.abstractmethod
    async def taken_at_once(self, message_id: str) -> None:
        """A device took the message while the sender waited (the sender got 200):
        it is no longer offered to devices that register later
        (:meth:`undelivered_for_device` skips it).  Messages are written as owed to
        later devices, so a crash before this call errs on the side of delivery."""

    @abc.abstractmethod
    async def recipients_owed_messages(self, now: float) -> dict[str, float]:
        """Recipients with live messages owed to devices that register later, each
        with the latest expiry among them (the IM role's "mailbox flags")."""

    @abc.abstractmethod
    async def messages_pending(self, recipient: str | None = None) -> list[StoredMessage]:
        """Messages in state "pending" (no device took them yet), oldest first,
        optionally to one recipient. For the CLI and tests."""

    @abc.abstractmethod
    async def expire_messages(self, now: float) -> list[StoredMessage]:
        """Mark every message with ``expires_at <= now`` not yet "expired" as "expired";
        return (with state "expired") those that no device ever received, oldest first,
        so the server can send the senders a failure report (RFC 5438 §8.2). Each
        message is returned by exactly one call, even with several nodes calling."""

    @abc.abstractmethod
    async def purge_messages(self, before_ts: float) -> int:
        """Delete messages that are done with (state "expired" or "delivered") and whose
        ``expires_at < before_ts``, with their delivery claims; returns how many
        messages. Live delivered messages are kept: later devices still get them, and
        a pending one past expiry waits for expire_messages() to report it."""

    # ---- message history -------------------------------------------------------------

    @abc.abstractmethod
    async def query_history(
        self,
        owner: str,
        *,
        peer: str | None = None,
        since: float | None = None,
        before: tuple[float, int] | None = None,
        limit: int = DEFAULT_HISTORY_LIMIT,
    ) -> list[HistoryEntry]:
        """``owner``'s history, newest first, ordered by (ts, row_id) descending.

        ``peer`` keeps one conversation; ``since`` keeps ``ts >= since``; ``before`` is
        a cursor -- the :attr:`HistoryEntry.cursor` of the last entry of the previous
        page -- and keeps entries strictly older than it in that order, so paging
        returns every entry exactly once even when timestamps are equal.
        """

    @abc.abstractmethod
    async def update_history_status(self, message_id: str, status: str) -> int:
        """Set ``status`` on every history entry of ``message_id`` (the sender's and
        the recipient's). Returns how many entries changed. The caller decides whether
        a status may replace another (e.g. not "delivered" over "displayed")."""

    @abc.abstractmethod
    async def prune_history(self, before_ts: float) -> int:
        """Delete history entries with ``ts < before_ts`` (retention); returns how many."""

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

    # ---- per-device credentials ------------------------------------------------------
    # add_device/update_device/revoke_device publish a change (kind "device", key the
    # auth username) in the same transaction: every node drops its cached HA1 values.

    @abc.abstractmethod
    async def add_device(self, device: DeviceCredential) -> None:
        """Insert a device. Raises DeviceExists when its device_id or auth_username is
        taken, or when the user already has a live (not revoked) device with that
        instance_id."""

    @abc.abstractmethod
    async def update_device(self, device: DeviceCredential) -> bool:
        """Replace name, HA1 values, token hash and last-used time of a live device
        (new credentials for the same device). False when there is no live device
        with that device_id."""

    @abc.abstractmethod
    async def get_device(self, device_id: str) -> DeviceCredential | None:
        """The device, revoked or not."""

    @abc.abstractmethod
    async def device_by_auth_username(self, auth_username: str) -> DeviceCredential | None:
        """The device whose digest username this is, revoked or not."""

    @abc.abstractmethod
    async def device_by_token_hash(self, token_hash: str) -> DeviceCredential | None:
        """The device whose bearer token hashes to ``token_hash``, revoked or not."""

    @abc.abstractmethod
    async def live_device_by_instance(self, username: str, domain: str,
                                      instance_id: str) -> DeviceCredential | None:
        """The user's live device registering with ``instance_id``, if any."""

    @abc.abstractmethod
    async def list_devices(self, username: str, domain: str) -> list[DeviceCredential]:
        """The user's devices, revoked ones included, oldest first."""

    @abc.abstractmethod
    async def revoke_device(self, device_id: str, now: float) -> DeviceCredential | None:
        """Mark a live device revoked at ``now``; returns it (revoked), or None when
        there was no live device with that id."""

    @abc.abstractmethod
    async def touch_devices(self, last_used: Sequence[tuple[str, float]]) -> None:
        """Record (device_id, time) as the devices' last use (never moving it back)."""

    # ---- one-time codes (provisioning) -------------------------------------------------

    @abc.abstractmethod
    async def put_code(self, code: ProvisioningCode) -> None:
        """Store a code, replacing any earlier one of the same (purpose, subject)."""

    @abc.abstractmethod
    async def get_code(self, purpose: str, subject: str) -> ProvisioningCode | None:
        """The stored code of (purpose, subject), expired or not."""

    @abc.abstractmethod
    async def count_code_failure(self, purpose: str, subject: str) -> int:
        """Add one wrong attempt to the code; returns the new count (0: no such code)."""

    @abc.abstractmethod
    async def take_code(self, purpose: str, subject: str, code_hash: str,
                        now: float) -> ProvisioningCode | None:
        """Delete and return the code if it is (purpose, subject, code_hash) and has not
        expired at ``now``: single use, atomic across processes and nodes -- of two
        callers presenting the same code, only one gets it."""

    @abc.abstractmethod
    async def delete_code(self, purpose: str, subject: str) -> bool:
        """Forget a code (too many wrong attempts); False if there was none."""

    @abc.abstractmethod
    async def prune_codes(self, now: float) -> int:
        """Delete codes that expired before ``now``; returns how many."""
    # ---- XCAP documents (RFC 4825) ---------------------------------------------------
    # Writes are compare-and-swap on the etag, so two nodes (or two requests) editing
    # the same document never lose an update; each write publishes a change (kind
    # "xcap", key xcap_key(...)) in the same transaction.  remove_user deletes the
    # user's documents with the user.

    @abc.abstractmethod
    async def get_xcap_document(self, auid: str, owner: str, filename: str) -> XcapDocument | None:
        """The document, or None."""

    @abc.abstractmethod
    async def list_xcap_documents(self, auid: str, owner: str | None = None) -> list[XcapDocument]:
        """Every document of an application usage (optionally of one owner), ordered by
        (owner, filename)."""

    @abc.abstractmethod
    async def put_xcap_document(self, document: XcapDocument, expected_etag: str | None) -> bool:
        """Create (``expected_etag`` None: only if absent) or replace (only if the stored
        etag equals ``expected_etag``) the document. False when that condition failed."""

    @abc.abstractmethod
    async def delete_xcap_document(self, auid: str, owner: str, filename: str, expected_etag: str) -> bool:
        """Delete the document if its etag is ``expected_etag``; False otherwise."""



def normalise_batch(batch: WriteBatch) -> tuple[list[Binding], list[tuple[str, str]]]:
    """The batch's binding upserts and deletes, validated: last upsert per key wins; a
    key in both lists is a caller bug.

    Keeping one row per key also matters for PostgreSQL, where a single statement may not
    touch the same row twice.
    """
    latest: dict[tuple[str, str], Binding] = {}
    for binding in batch.upserts:
        latest[(binding.aor, binding.binding_key)] = binding
    delete_keys = list(dict.fromkeys((aor, key) for aor, key in batch.deletes))
    both = latest.keys() & set(delete_keys)
    if both:
        raise ValueError(
            f"write_batch: {len(both)} binding key(s) both upserted and deleted, e.g. {next(iter(both))}"
        )
    return list(latest.values()), delete_keys


# RFC 5438 §7.1.2: a message's disposition only moves forward.  Notifications for
# one message are applied by concurrent tasks, so "delivered" can be written after
# "displayed"; the UPDATE keeps the further state.  Failure counts as past
# "stored" (expiry) but not past a delivery.
_HISTORY_STATUS_RANK = {"stored": 1, "processed": 1, "failed": 2, "forbidden": 2, "error": 2,
                        "delivered": 3, "displayed": 4}


def history_status_rank_sql(expression: str) -> str:
    """SQL giving the rank of the status ``expression`` (a column or a parameter)."""
    cases = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in _HISTORY_STATUS_RANK.items())
    return f"(CASE {expression} {cases} ELSE 0 END)"


def history_status_update_sql(status_param: str, message_id_param: str) -> str:
    """``UPDATE history`` that never moves a message's status backwards."""
    return (f"UPDATE history SET status = {status_param} WHERE message_id = {message_id_param} "
            f"AND {history_status_rank_sql('status')} < {history_status_rank_sql(status_param)}")
