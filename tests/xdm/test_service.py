"""The XDM role over a real store (both engines): compare-and-swap writes, and privacy
rules kept in memory that another node learns through the change feed."""

from __future__ import annotations

import pytest

from sipim.config import Config
from sipim.store import Store
from sipim.xdm.policy import PrivacySettings, build_policy_document
from sipim.xdm.service import Precondition, XdmService
from sipim.xdm.usages import IM_RULES, RESOURCE_LISTS
from sipim.xdm.xcap import XCAPError

BOB = "sip:bob@example.test"
ALICE = "sip:alice@example.test"


def service(store: Store, records: list | None = None) -> XdmService:
    async def no_user(name):
        return None

    return XdmService(Config(domain="example.test"), store=store, get_user=no_user,
                      audit=(records if records is not None else []).append, now=lambda: 1_800_000_000.0)


async def test_rfc4825_7_11_if_match_and_if_none_match(store: Store):
    xdm = service(store)
    document = b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"/>'
    first = await xdm.modify(RESOURCE_LISTS, BOB, "index", lambda current: document, if_none_match="*")
    assert first.created
    with pytest.raises(Precondition) as exists:
        await xdm.modify(RESOURCE_LISTS, BOB, "index", lambda current: document, if_none_match="*")
    assert exists.value.status == 412 and exists.value.etag == first.etag
    second = await xdm.modify(RESOURCE_LISTS, BOB, "index", lambda current: document, if_match=f'"{first.etag}"')
    assert second.etag != first.etag and not second.created
    with pytest.raises(Precondition):
        await xdm.modify(RESOURCE_LISTS, BOB, "index", lambda current: document, if_match=f'"{first.etag}"')
    with pytest.raises(XCAPError) as invalid:
        await xdm.modify(RESOURCE_LISTS, BOB, "index", lambda current: b"<oops/>")
    assert invalid.value.status == 409
    assert (await store.get_xcap_document(RESOURCE_LISTS, BOB, "index")).etag == second.etag


async def test_privacy_rules_change_on_one_node_reaches_the_other_through_the_change_feed(store: Store):
    writer, reader = service(store), service(store)
    await reader.start()
    last = await store.latest_change_id()
    assert reader.privacy.message_allowed(BOB, ALICE)  # no rules: the server default
    blocking = build_policy_document(PrivacySettings(blocked_users=(ALICE,)))
    await writer.modify(IM_RULES, BOB, "index", lambda current: blocking)
    assert not writer.privacy.message_allowed(BOB, ALICE)  # the writing node at once
    assert reader.privacy.message_allowed(BOB, ALICE)  # the other node not yet...
    for change in await store.changes_since(last):
        await reader.on_change(change.key)  # ...until it reads the feed (sipim/app.py polls it)
    assert not reader.privacy.message_allowed(BOB, ALICE)
    assert reader.privacy.message_allowed(BOB, "sip:carol@example.test")
    # A restarted node loads every user's rules at start.
    fresh = service(store)
    await fresh.start()
    assert not fresh.privacy.message_allowed(BOB, ALICE)


def test_remembered_answers_are_dropped_when_rules_change_and_timed_rules_follow_the_clock():
    from sipim.xdm.service import PrivacyRules
    from sipim.xdm.usages import CP_NS, IR_NS

    clock = [1_800_000_000.0]
    rules = PrivacyRules(lambda: clock[0])
    rules.set(BOB, build_policy_document(PrivacySettings()))
    assert rules.message_allowed(BOB, ALICE)  # remembered now
    rules.set(BOB, build_policy_document(PrivacySettings(blocked_users=(ALICE,))))
    assert not rules.message_allowed(BOB, ALICE)
    timed = (f'<ruleset xmlns="{CP_NS}" xmlns:ir="{IR_NS}"><rule id="t"><conditions><validity>'
             "<from>2027-01-01T00:00:00Z</from><until>2027-02-01T00:00:00Z</until></validity></conditions>"
             "<actions><ir:im-handling>allow</ir:im-handling></actions></rule></ruleset>").encode()
    rules.set(BOB, timed)
    assert rules.message_allowed(BOB, ALICE)  # 2027-01-15
    clock[0] += 30 * 86400
    assert not rules.message_allowed(BOB, ALICE)  # the validity period ended
