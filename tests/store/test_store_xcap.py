"""XCAP document storage (RFC 4825 §8.5 etags as compare-and-swap), on both engines."""

from __future__ import annotations

from dataclasses import replace

from store_samples import DOMAIN, sample_user

from sipim.store import Store, XcapDocument
from sipim.store.changes import CHANGE_XCAP
from sipim.store.models import xcap_key

OWNER = f"sip:alice@{DOMAIN}"


def document(content: bytes = b"<resource-lists/>", etag: str = "e1", **fields) -> XcapDocument:
    return XcapDocument(auid="resource-lists", owner=OWNER, filename="index", content=content, etag=etag,
                        updated_at=1.0, **fields)


async def test_create_only_when_absent_then_replace_only_with_the_current_etag(store: Store):
    assert await store.put_xcap_document(document(), expected_etag=None)
    assert not await store.put_xcap_document(document(b"<x/>", "e2"), expected_etag=None)
    assert not await store.put_xcap_document(document(b"<x/>", "e2"), expected_etag="stale")
    assert await store.get_xcap_document("resource-lists", OWNER, "index") == document()
    assert await store.put_xcap_document(document(b"<x/>", "e2"), expected_etag="e1")
    assert await store.get_xcap_document("resource-lists", OWNER, "index") == document(b"<x/>", "e2")


async def test_delete_needs_the_current_etag_and_every_write_publishes_a_change(store: Store):
    start = await store.latest_change_id()
    await store.put_xcap_document(document(), expected_etag=None)
    assert not await store.delete_xcap_document("resource-lists", OWNER, "index", "stale")
    assert await store.delete_xcap_document("resource-lists", OWNER, "index", "e1")
    assert await store.get_xcap_document("resource-lists", OWNER, "index") is None
    changes = await store.changes_since(start)
    assert [(c.kind, c.key) for c in changes] == [(CHANGE_XCAP, xcap_key("resource-lists", OWNER, "index"))] * 2


async def test_list_by_usage_and_owner(store: Store):
    await store.put_xcap_document(document(), None)
    await store.put_xcap_document(replace(document(), filename="work"), None)
    await store.put_xcap_document(replace(document(), owner=f"sip:bob@{DOMAIN}"), None)
    await store.put_xcap_document(replace(document(), auid="org.sipim.profile"), None)
    assert [(d.owner, d.filename) for d in await store.list_xcap_documents("resource-lists")] == [
        (OWNER, "index"), (OWNER, "work"), (f"sip:bob@{DOMAIN}", "index")]
    assert len(await store.list_xcap_documents("resource-lists", OWNER)) == 2


async def test_removing_a_user_removes_their_documents_and_the_admin_flag_round_trips(store: Store):
    await store.add_user(replace(sample_user(), admin=True))
    assert (await store.get_user("alice", DOMAIN)).admin
    await store.put_xcap_document(document(), None)
    await store.remove_user("alice", DOMAIN)
    assert await store.get_xcap_document("resource-lists", OWNER, "index") is None
    await store.add_user(sample_user())
    assert not (await store.get_user("alice", DOMAIN)).admin
