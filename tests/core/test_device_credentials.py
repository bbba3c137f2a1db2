"""Device credentials in the core's user cache: a device's auth username stands for
its owner, tokens resolve to live devices only, and changes invalidate at once."""

from __future__ import annotations

from dataclasses import replace

from sipim.cli import make_user
from sipim.core.auth import UserCache, token_hash
from sipim.provisioning.credentials import new_device

DOMAIN = "example.test"


async def setup(store):
    await store.add_user(make_user("alice", DOMAIN, "alice-secret", display_name="Alice"))
    issued = new_device("alice", DOMAIN, "phone", "urn:uuid:1", 1.0)
    await store.add_device(issued.device)
    return UserCache(store, DOMAIN), issued


async def test_device_auth_username_is_the_owner_with_the_devices_ha1(sqlite_store):
    users, issued = await setup(sqlite_store)
    view = await users.get(issued.device.auth_username)
    assert view.username == "alice" and view.display_name == "Alice"
    assert view.ha1_md5 == issued.device.ha1_md5 and view.ha1_sha256 == issued.device.ha1_sha256
    assert users.peek(issued.device.auth_username) is view  # the hot path needs no store
    assert users.device_of(issued.device.auth_username) == issued.device
    assert await users.get("alice!unknown") is None


async def test_revoked_device_stops_authenticating_once_invalidated(sqlite_store):
    users, issued = await setup(sqlite_store)
    name = issued.device.auth_username
    assert await users.get(name) is not None
    assert await users.device_for_token(issued.token) is not None
    await sqlite_store.revoke_device(issued.device.device_id, 2.0)
    users.invalidate_device(name)
    assert await users.get(name) is None
    assert await users.device_for_token(issued.token) is None


async def test_disabling_the_owner_reaches_the_devices(sqlite_store):
    users, issued = await setup(sqlite_store)
    assert not (await users.get(issued.device.auth_username)).disabled
    alice = await sqlite_store.get_user("alice", DOMAIN)
    await sqlite_store.update_user(replace(alice, disabled=True))
    users.invalidate("alice")
    assert (await users.get(issued.device.auth_username)).disabled


async def test_token_lookup_is_cached_and_only_hashes_are_stored(sqlite_store):
    users, issued = await setup(sqlite_store)
    device, owner = await users.device_for_token(issued.token)
    assert device.device_id == issued.device.device_id and owner.username == "alice"
    assert await sqlite_store.device_by_token_hash(issued.token) is None
    assert await sqlite_store.device_by_token_hash(token_hash(issued.token)) is not None
    assert await users.device_for_token("made-up") is None
