"""Sample values for store tests (a plain module: `from store_samples import ...`)."""

from __future__ import annotations

from sipim.store import (
    HISTORY_IN,
    HISTORY_OUT,
    MESSAGE_PENDING,
    AuditRecord,
    Binding,
    HistoryEntry,
    StoredMessage,
    User,
)

DOMAIN = "example.com"


def sample_user(username: str = "alice", domain: str = DOMAIN, **changes) -> User:
    fields = dict(
        username=username,
        domain=domain,
        ha1_md5="0" * 32,
        ha1_sha256="1" * 64,
        display_name=username.title(),
        phones=("+33123456789",),
        created_at=1_700_000_000.0,
    )
    fields.update(changes)
    return User(**fields)


def sample_binding(
    user: str = "alice", key: str = "<urn:uuid:1>;1", expires_at: float = 2_000_000_000.0, **changes
) -> Binding:
    fields = dict(
        aor=f"sip:{user}@{DOMAIN}",
        binding_key=key,
        contact=f"<sip:{user}@192.0.2.1:5060;transport=tcp;ob>;+sip.instance=\"<urn:uuid:1>\";reg-id=1",
        expires_at=expires_at,
        instance_id="<urn:uuid:1>",
        reg_id=1,
        q=0.5,
        call_id="call-1",
        cseq=1,
        path=("<sip:edge.example.com;lr;ob>",),
        source="192.0.2.1:5060",
        transport="tcp",
        flow_id="flow-7",
        node_id="node-a",
        gruu_tag="tgruu.1",
        user_agent="baresip",
        registered_at=1_700_000_000.0,
    )
    fields.update(changes)
    return Binding(**fields)


def sample_audit(ts: float, user: str = "alice", username: str | None = "alice", result: str = "ok") -> AuditRecord:
    return AuditRecord(
        ts=ts,
        aor=f"sip:{user}@{DOMAIN}",
        username=username,
        instance_id=None,
        user_agent="sipp",
        source="192.0.2.9:5060",
        transport="udp",
        result=result,
        reason="",
    )


ALICE = f"sip:alice@{DOMAIN}"
BOB = f"sip:bob@{DOMAIN}"
T0 = 1_700_000_000.0


def sample_message(
    n: int = 1,
    sender: str = ALICE,
    recipient: str = BOB,
    *,
    created_at: float = T0,
    lifetime: float = 3600.0,
    **changes,
) -> StoredMessage:
    """Message number ``n``: its id, Call-ID, CSeq and IMDN Message-ID derive from n."""
    fields = dict(
        id=f"{n:032x}",
        sender=sender,
        recipient=recipient,
        target_instance=None,
        call_id=f"call-{n}",
        cseq=n,
        imdn_message_id=f"imdn-{n}",
        content_type="text/plain",
        body=f"hello {n}\x00\xff".encode("latin-1"),
        disposition_notification="positive-delivery, negative-delivery, display",
        created_at=created_at,
        expires_at=created_at + lifetime,
        state=MESSAGE_PENDING,
    )
    fields.update(changes)
    return StoredMessage(**fields)


def sample_history_pair(message: StoredMessage, ts: float | None = None) -> list[HistoryEntry]:
    """The sender's "out" entry and the recipient's "in" entry of a message."""
    common = dict(
        message_id=message.id,
        imdn_message_id=message.imdn_message_id,
        content_type=message.content_type,
        body=message.body,
        ts=message.created_at if ts is None else ts,
    )
    return [
        HistoryEntry(owner=message.sender, peer=message.recipient, direction=HISTORY_OUT, **common),
        HistoryEntry(owner=message.recipient, peer=message.sender, direction=HISTORY_IN, **common),
    ]
