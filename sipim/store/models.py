"""Values the store reads and writes: frozen dataclasses, no behaviour beyond helpers.

Times are POSIX timestamps (float seconds, time.time()) everywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class User:
    """A provisioned subscriber.

    Only digest HA1 values are kept, never passwords (RFC 7616 §3.4.2; RFC 8760 for
    SHA-256): ``ha1_md5 = MD5(username:realm:password)``,
    ``ha1_sha256 = SHA-256(username:realm:password)``. The realm is the domain, so the
    row is readable by a Kamailio ``auth_db`` (columns username, domain, ha1).
    An empty string means "no HA1 for that algorithm".
    """

    username: str
    domain: str
    ha1_md5: str
    ha1_sha256: str
    display_name: str | None = None
    phones: tuple[str, ...] = ()
    created_at: float = 0.0
    disabled: bool = False
    admin: bool = False  # operator scope over every user's XDM documents and the directory


@dataclass(frozen=True, slots=True)
class Binding:
    """One registered contact of an address-of-record (RFC 3261 §10.3).

    ``aor`` is the canonical AOR (RFC 3261 §10.3 step 5: URI parameters removed,
    escapes unescaped), e.g. ``sip:alice@example.com`` -- see :func:`aor_of`.
    ``binding_key`` identifies the binding within the AOR: the core derives it from
    +sip.instance and reg-id (RFC 5626 §6) or, without them, from the Contact URI
    (RFC 3261 §10.3 step 7 comparison rules).
    ``contact`` is the full Contact value with all its parameters (RFC 5626 §6 says the
    registrar stores them all). ``path`` holds the Path header values (RFC 3327 §5.3).
    ``flow_id`` and ``node_id`` say which flow, on which sipim node, reaches the device
    (RFC 5626 §6: "enough information to uniquely identify the network flow"); with
    several nodes on one PostgreSQL, ``node_id`` is how a node finds the owner.
    ``gruu_tag`` is the RFC 5627 temporary-GRUU tag, if one was handed out.
    """

    aor: str
    binding_key: str
    contact: str
    expires_at: float
    instance_id: str | None = None
    reg_id: int | None = None
    q: float | None = None
    call_id: str = ""
    cseq: int = 0
    path: tuple[str, ...] = ()
    source: str = ""
    transport: str = ""
    flow_id: str | None = None
    node_id: str = ""
    gruu_tag: str | None = None
    user_agent: str = ""
    registered_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One registration attempt, successful or not.

    ``username`` is the digest username that authenticated (None when the request
    carried no credentials); ``result`` is a short word chosen by the core
    (e.g. "ok", "challenged", "bad_password", "locked_out").
    """

    ts: float
    aor: str
    username: str | None
    instance_id: str | None
    user_agent: str
    source: str
    transport: str
    result: str
    reason: str


@dataclass(frozen=True, slots=True)
class Change:
    """An entry of the change feed: "the object ``kind``/``key`` changed at ``ts``"."""

    id: int
    kind: str
    key: str
    ts: float


# ---- pager-mode messaging (RFC 3428) -------------------------------------------------------

MESSAGE_PENDING = "pending"
"""Accepted (answered 202, RFC 3428 §7) and no device has taken it yet."""
MESSAGE_DELIVERED = "delivered"
"""At least one device of the recipient took it (RFC 5438 §5.1 "delivered")."""
MESSAGE_EXPIRED = "expired"
"""Its lifetime passed (RFC 3428 §7 "expired"); no further delivery is attempted."""
MESSAGE_STATES = (MESSAGE_PENDING, MESSAGE_DELIVERED, MESSAGE_EXPIRED)

HISTORY_IN = "in"
HISTORY_OUT = "out"


def new_message_id() -> str:
    """A fresh :attr:`StoredMessage.id` (uuid4 hex: 122 random bits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A pager-mode MESSAGE (RFC 3428) the IM server accepted for store-and-forward.

    ``sender`` and ``recipient`` are canonical AORs (``sip:alice@example.com``).
    ``target_instance`` is the ``+sip.instance`` of the one device the message was
    addressed to (its GRUU, RFC 5627 §3); None means "every device of the recipient"
    (RFC 3428 §6: a pager message forks to all of them).
    ``call_id``/``cseq`` and ``imdn_message_id`` (the CPIM Message-ID, RFC 5438 §6.3)
    identify a resent request: the store keeps one message per (sender, call_id, cseq)
    and per (sender, imdn_message_id) when the latter is set.
    ``disposition_notification`` is the sender's Disposition-Notification value
    (RFC 5438 §6.2), e.g. ``"positive-delivery, negative-delivery, display"``.
    ``expires_at`` comes from the request's Expires (RFC 3428 §7) or the server default.
    ``state`` is one of :data:`MESSAGE_STATES`.
    """

    id: str
    sender: str
    recipient: str
    target_instance: str | None
    call_id: str
    cseq: int
    imdn_message_id: str | None
    content_type: str
    body: bytes
    disposition_notification: str | None
    created_at: float
    expires_at: float
    state: str = MESSAGE_PENDING


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One message in a user's history: ``owner`` sent it to ``peer`` (direction
    ``"out"``) or received it from ``peer`` (``"in"``).

    A message between two users is normally two entries, one per owner, sharing
    ``message_id`` (the :attr:`StoredMessage.id`). ``status`` is free text kept by the
    IM server, e.g. "delivered", "displayed", "failed" (RFC 5438 §5).
    ``row_id`` is assigned by the store (0 before insertion): with ``ts`` it orders
    entries and makes the paging cursor (:attr:`cursor`). It takes no part in equality,
    so an entry read back compares equal to the one written.
    """

    owner: str
    peer: str
    direction: str
    message_id: str
    imdn_message_id: str | None
    content_type: str
    body: bytes
    ts: float
    status: str = ""
    row_id: int = field(default=0, compare=False)

    @property
    def cursor(self) -> tuple[float, int]:
        """Pass as ``query_history(before=...)`` to get the next (older) page."""
        return (self.ts, self.row_id)


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """One group commit for :meth:`Store.write_batch`: what it writes, by kind.

    The sequences are the caller's (no copies are made): do not change them once the
    batch is handed over.

    ``upserts`` insert or replace bindings by (aor, binding_key); ``deletes`` are
    (aor, binding_key) pairs (absent ones are ignored); ``audit`` rows are appended.
    ``messages`` are stored for delivery, ``history`` entries appended with them.
    After the messages (so a message of the same batch can be referred to):
    ``deliveries`` are (message_id, device_key, ts) -- devices that took a message, as
    :meth:`Store.finish_delivery` with ``delivered=True`` records them;
    ``taken_at_once`` are message ids as :meth:`Store.taken_at_once`;
    ``history_status`` are (message_id, status) as :meth:`Store.update_history_status`.
    """

    upserts: Sequence[Binding] = ()
    deletes: Sequence[tuple[str, str]] = ()
    audit: Sequence[AuditRecord] = ()
    messages: Sequence[StoredMessage] = ()
    history: Sequence[HistoryEntry] = ()
    deliveries: Sequence[tuple[str, str, float]] = ()
    taken_at_once: Sequence[str] = ()
    history_status: Sequence[tuple[str, str]] = ()

    def is_empty(self) -> bool:
        return not (self.upserts or self.deletes or self.audit or self.messages or self.history
                    or self.deliveries or self.taken_at_once or self.history_status)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What write_batch() did beyond "everything committed".

    ``duplicate_message_ids`` are the ids of the messages of the batch that were NOT
    stored because an equal message already existed (same sender and call_id/cseq, or
    same sender and imdn_message_id) -- in the database or earlier in the same batch.
    Their history entries were skipped too. The original is found with find_duplicate().
    """

    duplicate_message_ids: frozenset[str] = frozenset()


EMPTY_BATCH_RESULT = BatchResult()


"""Published by add_user/update_user/remove_user with key ``username@domain``."""


def user_key(username: str, domain: str) -> str:
    """The change-feed key of a user."""
    return f"{username}@{domain}"


def aor_of(username: str, domain: str, scheme: str = "sip") -> str:
    """The canonical AOR string of a user (RFC 3261 §10.3 step 5), as bindings store it."""
    return f"{scheme}:{username}@{domain}"


def aor_user_part(aor: str) -> str:
    """The user part of an AOR: ``sip:alice@example.com;x=y`` -> ``alice``.

    Used to index audit rows so a username filter also finds unauthenticated attempts.
    An AOR without a user part gives "".
    """
    scheme_sep = aor.find(":")
    rest = aor[scheme_sep + 1 :] if scheme_sep >= 0 and "@" in aor[scheme_sep + 1 :] else aor
    at = rest.rfind("@")
    if at < 0:
        return ""
    return rest[:at]


# ---- per-device credentials and provisioning codes ------------------------------------

"""Published by add_device/update_device/revoke_device with the device's auth username:
a running server drops its cached HA1 values and token of that device."""


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """The credentials of one device of a user (handed out by provisioning).

    The device authenticates with its own digest username ``auth_username`` (the
    owner's name, ``!`` and a short id: user names cannot contain ``!``, so the two
    never collide) and the HA1 values of a random password; the core maps it to the
    owner's AOR. ``token_hash`` is SHA-256 (hex) of the device's bearer token for the
    HTTP API. ``instance_id`` is the ``+sip.instance`` (RFC 5626 §4.1) the device
    registers with, ``urn:uuid:...`` without angle brackets. ``revoked_at`` set means
    revoked: the credentials no longer authenticate.
    """

    device_id: str
    username: str
    domain: str
    name: str
    instance_id: str
    auth_username: str
    ha1_md5: str
    ha1_sha256: str
    token_hash: str
    created_at: float = 0.0
    last_used_at: float | None = None
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True, slots=True)
class ProvisioningCode:
    """A one-time code waiting to be used: an SMS code (``purpose`` "otp", ``subject``
    the E.164 number) or a pairing code ("pairing", ``subject`` the code's own hash).

    Only ``code_hash`` (an HMAC under the server secret) is stored, never the code.
    ``owner`` is the user name a pairing code signs in, or the user an OTP was sent
    for ("" for a self sign-up). ``attempts`` counts wrong guesses.
    """

    purpose: str
    subject: str
    code_hash: str
    owner: str
    created_at: float
    expires_at: float
    attempts: int = 0


# ---- XCAP documents (RFC 4825) -------------------------------------------------------------

"""Published by put/delete_xcap_document with key ``"AUID OWNER FILENAME"``: every node
drops what it derived from that document (e.g. the privacy rules it enforces)."""


def xcap_key(auid: str, owner: str, filename: str) -> str:
    """The change-feed key of an XCAP document (no part contains a space)."""
    return f"{auid} {owner} {filename}"


@dataclass(frozen=True, slots=True)
class XcapDocument:
    """One XCAP document: ``auid`` (application usage), ``owner`` (the XUI, the user's
    AOR ``sip:alice@example.com``), ``filename`` (the document name below the XUI,
    usually ``index``), the UTF-8 XML ``content`` and its entity tag (RFC 4825 §8.5:
    one etag for the whole document, new on every change)."""

    auid: str
    owner: str
    filename: str
    content: bytes
    etag: str
    updated_at: float = 0.0
