"""Pager-mode messages (RFC 3428), per-device delivery and history: the Store contract,
run on both engines (see the database_url fixture)."""

from __future__ import annotations

import dataclasses

import pytest
from store_samples import ALICE, BOB, DOMAIN, T0, sample_binding, sample_history_pair, sample_message

from sipim.store import (
    CLAIM_LEASE,
    HISTORY_IN,
    HISTORY_OUT,
    MESSAGE_DELIVERED,
    MESSAGE_EXPIRED,
    MESSAGE_PENDING,
    BatchResult,
    HistoryEntry,
    Store,
    StoreError,
    WriteBatch,
)

CAROL = f"sip:carol@{DOMAIN}"
PHONE = "<urn:uuid:phone>"
LAPTOP = "<urn:uuid:laptop>"


# ---- accepting messages: write_batch(WriteBatch(messages=..., history=...)) -------------------------


async def test_rfc3428_7_accepted_message_and_history_round_trip_every_field(store: Store):
    message = sample_message(1, target_instance=PHONE)
    minimal = sample_message(2, imdn_message_id=None, disposition_notification=None, body=b"")
    history = sample_history_pair(message) + sample_history_pair(minimal)
    result = await store.write_batch(WriteBatch(messages=[message, minimal], history=history))
    assert result == BatchResult() and result.duplicate_message_ids == frozenset()
    assert await store.get_message(message.id) == message
    assert await store.get_message(minimal.id) == minimal
    assert await store.get_message("f" * 32) is None
    assert await store.messages_pending() == [message, minimal]
    assert await store.query_history(BOB) == sample_history_pair(minimal)[1:] + sample_history_pair(message)[1:]
    assert await store.query_history(ALICE) == [sample_history_pair(minimal)[0], sample_history_pair(message)[0]]


async def test_write_batch_of_bindings_only_returns_an_empty_result(store: Store):
    # Existing callers (the registrar's StoreWriter) ignore the result.
    assert await store.write_batch(WriteBatch(upserts=[sample_binding()])) == BatchResult()
    assert await store.write_batch(WriteBatch()) == BatchResult()


async def test_batch_with_messages_and_history_is_atomic(store: Store):
    message = sample_message(1)
    bad_entry = dataclasses.replace(sample_history_pair(message)[0], direction="sideways")
    with pytest.raises(StoreError):
        await store.write_batch(WriteBatch(
            upserts=[sample_binding()],
            messages=[message, sample_message(2)],
            history=[*sample_history_pair(message)[1:], bad_entry],
        ))
    assert await store.list_bindings() == []
    assert await store.messages_pending() == []
    assert await store.query_history(ALICE) == [] and await store.query_history(BOB) == []
    with pytest.raises(StoreError):  # a bad message (NOT NULL) is an error too, not a "duplicate"
        await store.write_batch(WriteBatch(messages=[sample_message(3, body=None)], history=sample_history_pair(message)))
    assert await store.query_history(BOB) == []


async def test_rfc3428_resent_messages_are_skipped_and_reported_not_failed(store: Store):
    first = sample_message(1)
    await store.write_batch(WriteBatch(messages=[first], history=sample_history_pair(first)))
    # The same request resent (same Call-ID/CSeq, a new server id), the same IMDN
    # Message-ID in a new request, the same message twice in one batch.
    same_cseq = sample_message(10, call_id=first.call_id, cseq=first.cseq)
    same_imdn = sample_message(11, imdn_message_id=first.imdn_message_id)
    new = sample_message(12)
    new_again = sample_message(13, call_id=new.call_id, cseq=new.cseq, imdn_message_id=None)
    other_sender = sample_message(14, sender=CAROL, call_id=first.call_id, cseq=first.cseq,
                                  imdn_message_id=first.imdn_message_id)  # fmt: skip
    batch = [same_cseq, same_imdn, new, new_again, other_sender]
    result = await store.write_batch(WriteBatch(
        upserts=[sample_binding()],
        messages=batch,
        history=[entry for message in batch for entry in sample_history_pair(message)],
    ))
    assert result.duplicate_message_ids == {same_cseq.id, same_imdn.id, new_again.id}
    assert [m.id for m in await store.messages_pending()] == [first.id, new.id, other_sender.id]
    assert await store.list_bindings() == [sample_binding()]
    # history of a skipped message is skipped with it
    assert {e.message_id for e in await store.query_history(BOB)} == {first.id, new.id, other_sender.id}


async def test_rfc5438_6_3_find_duplicate_by_imdn_message_id_or_call_id_and_cseq(store: Store):
    stored = sample_message(1)
    no_imdn = sample_message(2, imdn_message_id=None)
    await store.write_batch(WriteBatch(messages=[stored, no_imdn]))
    assert await store.find_duplicate(ALICE, "imdn-1", "another-call", 99) == stored
    assert await store.find_duplicate(ALICE, "imdn-new", "call-1", 1) == stored
    assert await store.find_duplicate(ALICE, None, "call-2", 2) == no_imdn
    assert await store.find_duplicate(ALICE, "imdn-new", "call-1", 2) is None
    assert await store.find_duplicate(CAROL, "imdn-1", "call-1", 1) is None  # another sender's ids


async def test_history_entry_is_stored_once_per_message_owner_and_direction(store: Store):
    message = sample_message(1)
    await store.write_batch(WriteBatch(messages=[message], history=sample_history_pair(message) * 2))
    await store.write_batch(WriteBatch(history=sample_history_pair(message)))
    assert len(await store.query_history(ALICE)) == 1 and len(await store.query_history(BOB)) == 1
    # A note to oneself: one "out" and one "in" entry for the same owner.
    to_self = sample_message(2, recipient=ALICE)
    await store.write_batch(WriteBatch(messages=[to_self], history=sample_history_pair(to_self)))
    assert [e.direction for e in await store.query_history(ALICE, peer=ALICE)] == [HISTORY_IN, HISTORY_OUT]


# ---- per-device delivery -------------------------------------------------------------------


async def test_claim_is_exclusive_until_released_by_a_failed_attempt(store: Store):
    message = sample_message(1)
    await store.write_batch(WriteBatch(messages=[message]))
    now = T0 + 1
    assert await store.claim_delivery(message.id, "phone", "node-a", now) is True
    assert await store.claim_delivery(message.id, "phone", "node-b", now) is False
    assert await store.claim_delivery(message.id, "phone", "node-a", now) is False
    # another device of the same user is claimed independently
    assert await store.claim_delivery(message.id, "laptop", "node-b", now) is True
    # the send failed (e.g. 408): a later attempt may retry
    assert await store.finish_delivery(message.id, "phone", False, now + 1) is False
    assert await store.claim_delivery(message.id, "phone", "node-b", now + 2) is True
    assert (await store.get_message(message.id)).state == MESSAGE_PENDING


async def test_rfc5438_5_1_first_device_delivery_marks_the_message_delivered_once(store: Store):
    message = sample_message(1)
    await store.write_batch(WriteBatch(messages=[message]))
    now = T0 + 1
    for device in ("phone", "laptop"):
        assert await store.claim_delivery(message.id, device, "node-a", now)
    assert await store.finish_delivery(message.id, "phone", True, now) is True
    assert (await store.get_message(message.id)).state == MESSAGE_DELIVERED
    assert await store.messages_pending() == []
    assert await store.finish_delivery(message.id, "laptop", True, now) is False  # not the first
    # a delivered device never gets it again, even after a stray release
    await store.finish_delivery(message.id, "phone", False, now)
    assert await store.claim_delivery(message.id, "phone", "node-a", now + 2 * CLAIM_LEASE) is False


async def test_claim_refused_for_expired_or_unknown_message(store: Store):
    message = sample_message(1, lifetime=10.0)
    await store.write_batch(WriteBatch(messages=[message]))
    assert await store.claim_delivery(message.id, "phone", "node-a", message.expires_at) is False
    assert await store.claim_delivery("0" * 32, "phone", "node-a", T0) is False


async def test_claim_abandoned_by_a_dead_node_is_taken_over_after_the_lease(store: Store):
    message = sample_message(1)
    await store.write_batch(WriteBatch(messages=[message]))
    now = T0 + 1
    assert await store.claim_delivery(message.id, "phone", "node-a", now)
    assert await store.undelivered_for_device(BOB, "phone", PHONE, now + 1) == []
    later = now + CLAIM_LEASE
    assert await store.undelivered_for_device(BOB, "phone", PHONE, later) == [message]
    assert await store.claim_delivery(message.id, "phone", "node-b", later - 1) is False
    assert await store.claim_delivery(message.id, "phone", "node-b", later) is True
    assert await store.claim_delivery(message.id, "phone", "node-c", later + 1) is False


async def test_rfc3428_6_device_registering_later_gets_older_messages_oldest_first(store: Store):
    messages = [sample_message(n, created_at=T0 + (n // 2)) for n in range(1, 6)]  # equal created_at pairs
    await store.write_batch(WriteBatch(messages=list(reversed(messages[:3])) + messages[3:]))
    now = T0 + 10
    phone_queue = await store.undelivered_for_device(BOB, "phone", PHONE, now)
    assert [m.id for m in phone_queue] == [messages[0].id, messages[2].id, messages[1].id,
                                           messages[3].id, messages[4].id]  # fmt: skip
    for m in phone_queue[:2]:
        assert await store.claim_delivery(m.id, "phone", "node-a", now)
        await store.finish_delivery(m.id, "phone", True, now)
    assert await store.claim_delivery(phone_queue[2].id, "phone", "node-a", now)  # in flight
    assert [m.id for m in await store.undelivered_for_device(BOB, "phone", PHONE, now)] == [
        messages[3].id, messages[4].id,
    ]  # fmt: skip
    # The laptop registers later: it still gets everything, delivered-to-phone included.
    laptop_queue = await store.undelivered_for_device(BOB, "laptop", LAPTOP, now)
    assert [m.id for m in laptop_queue] == [m.id for m in phone_queue]
    assert [m.state for m in laptop_queue] == [MESSAGE_DELIVERED] * 2 + [MESSAGE_PENDING] * 3
    assert len(await store.undelivered_for_device(BOB, "laptop", LAPTOP, now, limit=2)) == 2
    assert await store.undelivered_for_device(ALICE, "laptop", LAPTOP, now) == []
    # Once expired (by time, before any sweep) nothing is offered.
    assert await store.undelivered_for_device(BOB, "laptop", LAPTOP, messages[0].expires_at + 5) == []


async def test_rfc5627_message_to_a_gruu_reaches_only_its_instance(store: Store):
    to_phone = sample_message(1, target_instance=PHONE)
    to_all = sample_message(2)
    await store.write_batch(WriteBatch(messages=[to_phone, to_all]))
    now = T0 + 1
    assert await store.undelivered_for_device(BOB, "phone;reg-id=1", PHONE, now) == [to_phone, to_all]
    assert await store.undelivered_for_device(BOB, "laptop", LAPTOP, now) == [to_all]
    # a device without +sip.instance cannot be the target of a GRUU
    assert await store.undelivered_for_device(BOB, "<sip:bob@192.0.2.5>", None, now) == [to_all]


async def test_rfc3428_7_expired_never_delivered_messages_are_reported_once(store: Store):
    delivered = sample_message(1, lifetime=100.0)
    never = sample_message(2, lifetime=100.0)
    in_flight = sample_message(3, lifetime=100.0)
    still_live = sample_message(4, lifetime=1000.0)
    await store.write_batch(WriteBatch(messages=[delivered, never, in_flight, still_live]))
    assert await store.claim_delivery(delivered.id, "phone", "n", T0 + 1)
    await store.finish_delivery(delivered.id, "phone", True, T0 + 1)
    assert await store.claim_delivery(in_flight.id, "phone", "n", T0 + 1)

    assert await store.expire_messages(T0 + 99) == []
    expired = await store.expire_messages(T0 + 100)
    assert expired == [dataclasses.replace(m, state=MESSAGE_EXPIRED) for m in (never, in_flight)]
    assert await store.expire_messages(T0 + 100) == []
    assert await store.expire_messages(T0 + 500) == []
    assert (await store.get_message(delivered.id)).state == MESSAGE_EXPIRED
    assert (await store.get_message(still_live.id)).state == MESSAGE_PENDING
    assert await store.messages_pending() == [still_live]
    # An expired message is no longer offered or claimable, even to an earlier "now".
    assert await store.undelivered_for_device(BOB, "laptop", LAPTOP, T0 + 1) == [still_live]
    assert await store.claim_delivery(never.id, "laptop", "n", T0 + 1) is False
    assert await store.finish_delivery(in_flight.id, "phone", True, T0 + 101) is False
    assert (await store.get_message(in_flight.id)).state == MESSAGE_EXPIRED


async def test_purge_removes_old_finished_messages_and_their_claims_only(store: Store):
    expired = sample_message(1, lifetime=10.0)
    delivered_dead = sample_message(2, lifetime=10.0)
    delivered_live = sample_message(3, lifetime=1000.0)
    pending_unswept = sample_message(4, lifetime=10.0)
    await store.write_batch(WriteBatch(messages=[expired, delivered_dead, delivered_live]))
    for m in (delivered_dead, delivered_live):
        assert await store.claim_delivery(m.id, "phone", "n", T0)
        await store.finish_delivery(m.id, "phone", True, T0)
    await store.expire_messages(T0 + 10)
    await store.write_batch(WriteBatch(messages=[pending_unswept]))
    assert await store.purge_messages(T0 + 10) == 0  # expires_at must be strictly older
    assert await store.purge_messages(T0 + 500) == 2
    assert await store.get_message(expired.id) is None and await store.get_message(delivered_dead.id) is None
    assert (await store.get_message(delivered_live.id)).state == MESSAGE_DELIVERED
    assert await store.messages_pending() == [pending_unswept]
    # The purged ids are free again: a message reusing one is claimable from scratch.
    await store.write_batch(WriteBatch(messages=[dataclasses.replace(delivered_dead, expires_at=T0 + 5000)]))
    assert await store.claim_delivery(delivered_dead.id, "phone", "n", T0 + 600) is True


# ---- history ---------------------------------------------------------------------------------


def _history(owner: str, peer: str, n: int, ts: float, direction: str = HISTORY_IN) -> HistoryEntry:
    return HistoryEntry(
        owner=owner, peer=peer, direction=direction, message_id=f"m{n}", imdn_message_id=None,
        content_type="text/plain", body=f"#{n}".encode(), ts=ts,
    )  # fmt: skip


async def test_history_pages_return_every_entry_once_newest_first_with_equal_timestamps(store: Store):
    # 30 entries over only 4 distinct timestamps, written in several batches.
    entries = [_history(BOB, ALICE if n % 3 else CAROL, n, T0 + n % 4) for n in range(30)]
    for start in range(0, 30, 7):
        await store.write_batch(WriteBatch(history=entries[start : start + 7]))
    expected = sorted(entries, key=lambda e: (e.ts, int(e.message_id[1:])), reverse=True)
    for page_size in (1, 4, 7, 30):
        seen: list[HistoryEntry] = []
        cursor = None
        while page := await store.query_history(BOB, before=cursor, limit=page_size):
            assert len(page) <= page_size
            seen += page
            cursor = page[-1].cursor
        assert seen == expected, f"page size {page_size}"
    row_ids = [e.row_id for e in seen]
    assert all(r > 0 for r in row_ids) and len(set(row_ids)) == 30


async def test_history_filters_by_peer_and_since(store: Store):
    entries = [_history(BOB, ALICE if n % 2 else CAROL, n, T0 + n) for n in range(10)]
    entries.append(_history(ALICE, BOB, 99, T0 + 5, HISTORY_OUT))
    await store.write_batch(WriteBatch(history=entries))
    assert [e.message_id for e in await store.query_history(BOB, peer=CAROL)] == ["m8", "m6", "m4", "m2", "m0"]
    assert [e.message_id for e in await store.query_history(BOB, since=T0 + 7)] == ["m9", "m8", "m7"]
    first = await store.query_history(BOB, peer=ALICE, since=T0 + 2, limit=2)
    assert [e.message_id for e in first] == ["m9", "m7"]
    rest = await store.query_history(BOB, peer=ALICE, since=T0 + 2, before=first[-1].cursor)
    assert [e.message_id for e in rest] == ["m5", "m3"]
    assert await store.query_history(BOB, limit=0) == []
    assert [e.message_id for e in await store.query_history(ALICE)] == ["m99"]


async def test_rfc5438_history_status_updates_both_owners_entries(store: Store):
    message = sample_message(1)
    other = sample_message(2)
    history = sample_history_pair(message) + sample_history_pair(other)
    await store.write_batch(WriteBatch(messages=[message, other], history=history))
    assert await store.update_history_status(message.id, "delivered") == 2
    assert await store.update_history_status(message.id, "displayed") == 2
    assert await store.update_history_status("nope", "failed") == 0
    for owner in (ALICE, BOB):
        statuses = {e.message_id: e.status for e in await store.query_history(owner)}
        assert statuses == {message.id: "displayed", other.id: ""}


async def test_prune_history_deletes_only_older_entries(store: Store):
    await store.write_batch(WriteBatch(history=[_history(BOB, ALICE, n, T0 + n) for n in range(5)]))
    assert await store.prune_history(T0 + 3) == 3
    assert [e.message_id for e in await store.query_history(BOB)] == ["m4", "m3"]
    assert await store.prune_history(T0 + 3) == 0


async def test_live_delivery_is_recorded_without_a_claim_and_blocks_later_claims(store: Store):
    message = sample_message(1)
    await store.write_batch(WriteBatch(messages=[message]))
    assert await store.claim_delivery(message.id, "laptop", "node-b", T0)  # another node catching up
    assert await store.finish_delivery(message.id, "phone", True, T0) is True  # answered live, no claim
    assert await store.claim_delivery(message.id, "phone", "node-b", T0) is False
    assert await store.undelivered_for_device(BOB, "phone", PHONE, T0) == []
    assert await store.finish_delivery("0" * 32, "phone", True, T0) is False  # unknown: nothing recorded


async def test_a_message_taken_at_once_is_not_offered_to_later_devices(store):
    from sipim.store.models import StoredMessage

    now = 1_000_000.0
    owed = StoredMessage(id="m-owed", sender="sip:a@x", recipient="sip:b@x", target_instance=None, call_id="c1",
                         cseq=1, imdn_message_id=None, content_type="text/plain", body=b"stored",
                         disposition_notification=None, created_at=now, expires_at=now + 60, state="pending")
    taken = StoredMessage(id="m-taken", sender="sip:a@x", recipient="sip:b@x", target_instance=None, call_id="c2",
                          cseq=1, imdn_message_id=None, content_type="text/plain", body=b"live",
                          disposition_notification=None, created_at=now + 1, expires_at=now + 90, state="pending")
    await store.write_batch(WriteBatch(messages=[owed, taken]))
    assert await store.recipients_owed_messages(now) == {"sip:b@x": now + 90}
    await store.taken_at_once("m-taken")
    later = await store.undelivered_for_device("sip:b@x", "laptop", None, now + 2)
    assert [m.id for m in later] == ["m-owed"]
    assert await store.recipients_owed_messages(now) == {"sip:b@x": now + 60}
    assert await store.recipients_owed_messages(now + 61) == {}


async def test_rfc5438_7_1_2_history_status_never_moves_backwards(store: Store):
    """Notifications for one message are applied concurrently: a late "delivered"
    must not undo "displayed", nor a "failed" undo a delivery."""
    message = sample_message(1)
    await store.write_batch(WriteBatch(messages=[message], history=sample_history_pair(message)))
    await store.write_batch(WriteBatch(history_status=[(message.id, "stored")]))
    await store.write_batch(WriteBatch(history_status=[(message.id, "displayed")]))
    await store.write_batch(WriteBatch(history_status=[(message.id, "delivered")]))
    assert await store.update_history_status(message.id, "failed") == 0
    for owner in (ALICE, BOB):
        assert [e.status for e in await store.query_history(owner)] == ["displayed"]
    other = sample_message(2)
    await store.write_batch(WriteBatch(messages=[other], history=sample_history_pair(other)))
    await store.write_batch(WriteBatch(history_status=[(other.id, "stored")]))
    assert await store.update_history_status(other.id, "failed") == 2  # expiry after storing


async def test_one_batch_records_deliveries_and_taken_at_once_like_separate_batches(store: Store):
    # write_batch may fold "delivered" and "taken at once" of one message into one
    # statement; the outcome must be the one of recording them one after the other.
    from sipim.store.models import StoredMessage

    now = 1_000_000.0

    def message(mid: str, call_id: str) -> StoredMessage:
        return StoredMessage(id=mid, sender="sip:a@x", recipient="sip:b@x", target_instance=None, call_id=call_id,
                             cseq=1, imdn_message_id=None, content_type="text/plain", body=b"hi",
                             disposition_notification=None, created_at=now, expires_at=now + 60, state="pending")

    both, delivered, taken, neither = (message("m-both", "c1"), message("m-delivered", "c2"),
                                       message("m-taken", "c3"), message("m-neither", "c4"))
    await store.write_batch(WriteBatch(messages=[both, delivered, taken, neither]))
    # m-both answered by two devices, one of them twice (a retransmitted 200)
    await store.write_batch(WriteBatch(deliveries=[("m-both", "phone", now), ("m-both", "laptop", now),
                                        ("m-both", "phone", now + 1), ("m-delivered", "phone", now)],
                            taken_at_once=["m-both", "m-taken"]))
    states = {mid: (await store.get_message(mid)).state for mid in ("m-both", "m-delivered", "m-taken", "m-neither")}
    assert states == {"m-both": MESSAGE_DELIVERED, "m-delivered": MESSAGE_DELIVERED,
                      "m-taken": MESSAGE_PENDING, "m-neither": MESSAGE_PENDING}
    # Later devices are owed what was neither taken at once: m-delivered and m-neither.
    later = await store.undelivered_for_device("sip:b@x", "tablet", None, now + 2)
    assert sorted(m.id for m in later) == ["m-delivered", "m-neither"]
    assert await store.claim_delivery("m-both", "phone", "node-b", now) is False  # delivered there already
    # Delivered again after it was delivered and taken: nothing changes, nothing fails.
    await store.write_batch(WriteBatch(deliveries=[("m-both", "tablet", now + 3)], taken_at_once=["m-both"]))
    assert (await store.get_message("m-both")).state == MESSAGE_DELIVERED


async def test_a_large_batch_of_deliveries_records_each_and_skips_unknown_messages(store: Store):
    # Deliveries of 40 messages in one batch (the SQLite engine writes them many rows per
    # statement), half of them also taken at once, plus one for a message never stored.
    from sipim.store.models import StoredMessage

    now = 1_000_000.0
    messages = [StoredMessage(id=f"m{i:02d}", sender="sip:a@x", recipient="sip:b@x", target_instance=None,
                              call_id=f"c{i}", cseq=1, imdn_message_id=None, content_type="text/plain", body=b"hi",
                              disposition_notification=None, created_at=now, expires_at=now + 60, state="pending")
                for i in range(40)]
    await store.write_batch(WriteBatch(messages=messages))
    await store.write_batch(WriteBatch(deliveries=[(m.id, "phone", now) for m in messages] + [("unknown", "phone", now)],
                            taken_at_once=[m.id for m in messages[::2]]))
    assert {(await store.get_message(m.id)).state for m in messages} == {MESSAGE_DELIVERED}
    assert await store.get_message("unknown") is None
    later = await store.undelivered_for_device("sip:b@x", "tablet", None, now + 1)
    assert sorted(m.id for m in later) == [m.id for m in messages[1::2]]
    assert await store.claim_delivery("m39", "phone", "node-b", now) is False
