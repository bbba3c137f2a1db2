"""The Store contract, run on both engines (see the database_url fixture)."""

from __future__ import annotations

import dataclasses

import pytest
from store_samples import DOMAIN, sample_audit, sample_binding, sample_user

from sipim.store import CHANGE_USER, Store, StoreError, UserExists, WriteBatch, user_key

# ---- users ----------------------------------------------------------------------------


async def test_add_then_get_user_round_trips_every_field(store: Store):
    user = sample_user(display_name=None, phones=("+1", "+2"), disabled=True)
    await store.add_user(user)
    assert await store.get_user("alice", DOMAIN) == user
    assert await store.get_user("alice", "other.example") is None
    assert await store.get_user("bob", DOMAIN) is None


async def test_add_existing_user_raises_user_exists(store: Store):
    await store.add_user(sample_user())
    with pytest.raises(UserExists, match="alice@example.com already exists"):
        await store.add_user(sample_user(ha1_md5="f" * 32))
    # the same username in another domain is another user
    await store.add_user(sample_user(domain="other.example"))


async def test_list_users_orders_by_domain_then_username_and_filters_domain(store: Store):
    for username, domain in [("bob", "b.example"), ("carol", "a.example"), ("alice", "b.example")]:
        await store.add_user(sample_user(username, domain))
    assert [(u.domain, u.username) for u in await store.list_users()] == [
        ("a.example", "carol"),
        ("b.example", "alice"),
        ("b.example", "bob"),
    ]
    assert [u.username for u in await store.list_users("b.example")] == ["alice", "bob"]
    assert await store.list_users("nowhere.example") == []


async def test_user_domains_counts_the_users_of_each_domain(store: Store):
    assert await store.user_domains() == {}
    for username, domain in [("bob", "b.example"), ("carol", "a.example"), ("alice", "b.example")]:
        await store.add_user(sample_user(username, domain))
    domains = await store.user_domains()
    assert domains == {"a.example": 1, "b.example": 2} and list(domains) == ["a.example", "b.example"]
    await store.remove_user("carol", "a.example")
    assert await store.user_domains() == {"b.example": 2}


async def test_update_user_replaces_fields_and_reports_missing_user(store: Store):
    await store.add_user(sample_user())
    changed = sample_user(ha1_md5="a" * 32, ha1_sha256="b" * 64, display_name="Al", phones=(), disabled=True)
    assert await store.update_user(changed) is True
    assert await store.get_user("alice", DOMAIN) == changed
    assert await store.update_user(sample_user("nobody")) is False


async def test_remove_user_cascades_to_its_bindings_only(store: Store):
    await store.add_user(sample_user("alice"))
    await store.add_user(sample_user("bob"))
    await store.write_batch(WriteBatch(
        upserts=[
            sample_binding("alice", "k1"),
            sample_binding("alice", "k2", aor=f"sips:alice@{DOMAIN}"),
            sample_binding("bob", "k1"),
        ]
    ))
    assert await store.remove_user("alice", DOMAIN) is True
    assert await store.get_user("alice", DOMAIN) is None
    assert [(b.aor, b.binding_key) for b in await store.list_bindings()] == [(f"sip:bob@{DOMAIN}", "k1")]
    assert await store.remove_user("alice", DOMAIN) is False


async def test_user_mutations_publish_user_changes(store: Store):
    start = await store.latest_change_id()
    await store.add_user(sample_user())
    await store.update_user(sample_user(disabled=True))
    await store.update_user(sample_user("ghost"))  # no such user: no change
    await store.remove_user("alice", DOMAIN)
    changes = await store.changes_since(start)
    assert [(c.kind, c.key) for c in changes] == [(CHANGE_USER, user_key("alice", DOMAIN))] * 3


# ---- bindings (RFC 3261 §10.3, RFC 5626 §6) ---------------------------------------------


async def test_rfc3261_10_3_binding_round_trips_every_field(store: Store):
    binding = sample_binding()
    await store.write_batch(WriteBatch(upserts=[binding]))
    assert await store.list_bindings() == [binding]
    minimal = sample_binding("bob", instance_id=None, reg_id=None, q=None, path=(), flow_id=None, gruu_tag=None)
    await store.write_batch(WriteBatch(upserts=[minimal]))
    assert await store.list_bindings(minimal.aor) == [minimal]


async def test_rfc5626_6_upsert_with_same_key_replaces_binding(store: Store):
    first = sample_binding(key="<urn:uuid:1>;1", cseq=1, contact="<sip:a@192.0.2.1>")
    await store.write_batch(WriteBatch(upserts=[first]))
    refreshed = dataclasses.replace(first, cseq=2, contact="<sip:a@198.51.100.7>", flow_id="flow-9")
    await store.write_batch(WriteBatch(upserts=[refreshed]))
    other_flow = sample_binding(key="<urn:uuid:1>;2", reg_id=2)
    await store.write_batch(WriteBatch(upserts=[other_flow]))
    assert await store.list_bindings(first.aor) == [refreshed, other_flow]


async def test_write_batch_applies_deletes_upserts_and_audit_together(store: Store):
    await store.write_batch(WriteBatch(upserts=[sample_binding("alice", "k1"), sample_binding("alice", "k2")]))
    await store.write_batch(WriteBatch(
        upserts=[sample_binding("bob", "k1")],
        deletes=[(f"sip:alice@{DOMAIN}", "k1"), (f"sip:alice@{DOMAIN}", "absent")],
        audit=[sample_audit(10.0), sample_audit(11.0, "bob", "bob")],
    ))
    assert [(b.aor, b.binding_key) for b in await store.list_bindings()] == [
        (f"sip:alice@{DOMAIN}", "k2"),
        (f"sip:bob@{DOMAIN}", "k1"),
    ]
    assert [a.ts for a in await store.query_audit()] == [11.0, 10.0]


async def test_write_batch_is_atomic_one_bad_row_rolls_back_everything(store: Store):
    await store.write_batch(WriteBatch(upserts=[sample_binding("alice", "kept")]))
    bad = sample_binding("carol", "k", contact=None)  # violates NOT NULL
    with pytest.raises(StoreError):
        await store.write_batch(WriteBatch(
            upserts=[sample_binding("bob", "k"), bad],
            deletes=[(f"sip:alice@{DOMAIN}", "kept")],
            audit=[sample_audit(5.0)],
        ))
    assert [(b.aor, b.binding_key) for b in await store.list_bindings()] == [(f"sip:alice@{DOMAIN}", "kept")]
    assert await store.query_audit() == []
    # the store is still usable after the rollback
    await store.write_batch(WriteBatch(upserts=[sample_binding("bob", "k")]))
    assert len(await store.list_bindings()) == 2


@pytest.mark.parametrize("size", [1, 2, 31, 32, 33, 95])
async def test_write_batch_stores_every_row_of_a_batch_of_any_size(store: Store, size: int):
    # The SQLite engine writes many rows per statement (32, 16, ... 1): every size must
    # land whole, each row with its own values, and a second batch updates them all.
    bindings = [sample_binding(f"user{i:03d}", f"k{i}", cseq=i) for i in range(size)]
    audit = [sample_audit(float(i), username=f"user{i:03d}") for i in range(size)]
    await store.write_batch(WriteBatch(upserts=bindings, audit=audit))
    assert await store.list_bindings() == bindings
    assert await store.query_audit(limit=1000) == audit[::-1]
    refreshed = [dataclasses.replace(b, cseq=b.cseq + 1000) for b in bindings]
    await store.write_batch(WriteBatch(upserts=refreshed))
    assert await store.list_bindings() == refreshed


async def test_write_batch_last_upsert_of_a_key_wins(store: Store):
    await store.write_batch(WriteBatch(upserts=[sample_binding(cseq=1), sample_binding(cseq=2)]))
    assert [b.cseq for b in await store.list_bindings()] == [2]


async def test_write_batch_rejects_key_both_upserted_and_deleted(store: Store):
    binding = sample_binding()
    with pytest.raises(ValueError, match="both upserted and deleted"):
        await store.write_batch(WriteBatch(upserts=[binding], deletes=[(binding.aor, binding.binding_key)]))
    assert await store.list_bindings() == []


async def test_rfc3261_10_3_expired_bindings_are_deleted_at_their_expiry_time(store: Store):
    await store.write_batch(WriteBatch(
        upserts=[
            sample_binding("alice", "past", expires_at=100.0),
            sample_binding("alice", "now", expires_at=200.0),
            sample_binding("alice", "future", expires_at=200.5),
        ]
    ))
    assert await store.delete_expired_bindings(200.0) == 2
    assert [b.binding_key for b in await store.list_bindings()] == ["future"]
    assert await store.delete_expired_bindings(200.0) == 0


async def test_delete_bindings_removes_every_binding_of_one_aor(store: Store):
    await store.write_batch(WriteBatch(
        upserts=[sample_binding("alice", "k1"), sample_binding("alice", "k2"), sample_binding("bob", "k1")]
    ))
    assert await store.delete_bindings(f"sip:alice@{DOMAIN}") == 2
    assert [b.aor for b in await store.list_bindings()] == [f"sip:bob@{DOMAIN}"]
    assert await store.delete_bindings(f"sip:alice@{DOMAIN}") == 0


# ---- audit ------------------------------------------------------------------------------


async def test_audit_is_newest_first_and_filters_by_username_since_result_and_limit(store: Store):
    await store.write_batch(WriteBatch(
        audit=[
            sample_audit(1.0, "alice", "alice", "ok"),
            sample_audit(2.0, "alice", None, "challenged"),  # no credentials: found via the AOR
            sample_audit(3.0, "bob", "alice", "forbidden"),  # alice's credentials for bob's AOR
            sample_audit(4.0, "bob", "bob", "ok"),
            sample_audit(5.0, "carol", None, "challenged"),
        ]
    ))
    assert [a.ts for a in await store.query_audit()] == [5.0, 4.0, 3.0, 2.0, 1.0]
    assert [a.ts for a in await store.query_audit(username="alice")] == [3.0, 2.0, 1.0]
    assert [a.ts for a in await store.query_audit(username="bob")] == [4.0, 3.0]
    assert [a.ts for a in await store.query_audit(since=3.0)] == [5.0, 4.0, 3.0]
    assert [a.ts for a in await store.query_audit(result="challenged")] == [5.0, 2.0]
    assert [a.ts for a in await store.query_audit(username="alice", since=2.0, result="challenged")] == [2.0]
    assert [a.ts for a in await store.query_audit(limit=2)] == [5.0, 4.0]
    record = (await store.query_audit(username="carol"))[0]
    assert record == sample_audit(5.0, "carol", None, "challenged")


async def test_prune_audit_deletes_only_older_records(store: Store):
    await store.write_batch(WriteBatch(audit=[sample_audit(float(ts)) for ts in range(1, 6)]))
    assert await store.prune_audit(3.0) == 2
    assert [a.ts for a in await store.query_audit()] == [5.0, 4.0, 3.0]


# ---- change feed --------------------------------------------------------------------------


async def test_change_feed_returns_changes_after_an_id_in_publication_order(store: Store):
    assert await store.latest_change_id() == 0
    assert await store.changes_since(0) == []
    ids = [await store.publish_change("user", f"u{i}@{DOMAIN}") for i in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert await store.latest_change_id() == ids[-1]
    after_second = await store.changes_since(ids[1])
    assert [(c.id, c.key) for c in after_second] == [(ids[i], f"u{i}@{DOMAIN}") for i in (2, 3, 4)]
    assert all(c.kind == "user" and c.ts > 0 for c in after_second)


async def test_prune_changes_keeps_the_newest_so_latest_id_never_goes_back(store: Store):
    ids = [await store.publish_change("contacts", str(i)) for i in range(3)]
    assert await store.prune_changes(before_ts=float("inf")) == 2
    assert await store.latest_change_id() == ids[-1]
    assert [c.id for c in await store.changes_since(0)] == [ids[-1]]
    assert await store.publish_change("contacts", "3") > ids[-1]
    # a cut-off in the past keeps everything
    assert await store.prune_changes(before_ts=0.0) == 0


async def test_users_by_phone_finds_every_holder_of_a_number_in_the_domain(store):
    from sipim.store.models import User

    def user(name, *phones, domain="example.test"):
        return User(name, domain, "h1", "h2", phones=phones)

    await store.add_user(user("alice", "+14155550101"))
    await store.add_user(user("bob", "+14155550102", "+14155550199"))
    await store.add_user(user("carol", "+14155550199"))
    await store.add_user(user("alice", "+14155550101", domain="other.test"))
    assert [u.username for u in await store.users_by_phone("+14155550101", "example.test")] == ["alice"]
    assert [u.username for u in await store.users_by_phone("+14155550199", "example.test")] == ["bob", "carol"]
    assert await store.users_by_phone("+14155550100", "example.test") == []


async def test_change_listeners_hear_each_committed_change_and_nothing_else(store: Store):
    heard: list[tuple[str, str]] = []
    store.add_change_listener(lambda kind, key: heard.append((kind, key)))
    alice = sample_user()
    await store.add_user(alice)
    assert heard == [(CHANGE_USER, user_key(alice.username, alice.domain))]
    with pytest.raises(UserExists):
        await store.add_user(alice)                        # rolled back: nothing told
    assert not await store.update_user(sample_user("nobody"))   # nothing changed
    assert len(heard) == 1
    await store.publish_change("contacts", "alice@example.com")
    assert heard[-1] == ("contacts", "alice@example.com")
    assert [(c.kind, c.key) for c in await store.changes_since(0)] == heard   # the feed says the same


async def test_a_failing_change_listener_does_not_fail_the_change(store: Store):
    def broken(kind: str, key: str) -> None:
        raise RuntimeError("listener bug")

    store.add_change_listener(broken)
    await store.add_user(sample_user())
    assert await store.get_user("alice", DOMAIN) == sample_user()
