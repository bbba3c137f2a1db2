"""Values the store reads and writes: frozen dataclasses, no behaviour beyond helpers.

Times are POSIX timestamps (float seconds, time.time()) everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


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


# Change kinds the store itself publishes. Others are free-form strings chosen by callers.
CHANGE_USER = "user"
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
