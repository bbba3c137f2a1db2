"""Per-device credentials and one-time provisioning codes, on both engines."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from sipim.store import DeviceExists, Store
from sipim.store.changes import CHANGE_DEVICE
from sipim.store.models import DeviceCredential, ProvisioningCode

DOMAIN = "example.com"


def device(n: int = 1, *, instance: str | None = None, user: str = "alice") -> DeviceCredential:
    return DeviceCredential(
        device_id=f"d-{n}", username=user, domain=DOMAIN, name=f"phone {n}",
        instance_id=instance or f"urn:uuid:00000000-0000-0000-0000-{n:012d}",
        auth_username=f"{user}!{n:04d}", ha1_md5=f"md5-{n}", ha1_sha256=f"sha-{n}",
        token_hash=f"token-{n}", created_at=100.0 + n)


async def test_device_round_trip_and_lookups(store: Store):
    first, second = device(1), device(2)
    before = await store.latest_change_id()
    await store.add_device(first)
    await store.add_device(second)
    assert await store.get_device("d-1") == first
    assert await store.device_by_auth_username("alice!0002") == second
    assert await store.device_by_token_hash("token-1") == first
    assert await store.live_device_by_instance("alice", DOMAIN, second.instance_id) == second
    assert await store.list_devices("alice", DOMAIN) == [first, second]
    assert await store.list_devices("bob", DOMAIN) == []
    changes = await store.changes_since(before)
    assert [(c.kind, c.key) for c in changes] == [(CHANGE_DEVICE, "alice!0001"), (CHANGE_DEVICE, "alice!0002")]


async def test_one_live_device_per_instance_and_unique_auth_username(store: Store):
    await store.add_device(device(1))
    with pytest.raises(DeviceExists):
        await store.add_device(replace(device(2), instance_id=device(1).instance_id))
    with pytest.raises(DeviceExists):
        await store.add_device(replace(device(3), auth_username="alice!0001"))
    # A revoked device frees its instance id for a new device.
    assert (await store.revoke_device("d-1", 500.0)).revoked_at == 500.0
    await store.add_device(replace(device(2), instance_id=device(1).instance_id))
    assert (await store.live_device_by_instance("alice", DOMAIN, device(1).instance_id)).device_id == "d-2"


async def test_reissue_replaces_secrets_of_a_live_device_only(store: Store):
    await store.add_device(device(1))
    reissued = replace(device(1), name="new name", ha1_md5="m2", ha1_sha256="s2", token_hash="t2")
    before = await store.latest_change_id()
    assert await store.update_device(reissued)
    assert await store.get_device("d-1") == reissued
    assert await store.device_by_token_hash("token-1") is None
    assert [c.key for c in await store.changes_since(before)] == ["alice!0001"]
    await store.revoke_device("d-1", 9.0)
    assert not await store.update_device(reissued)
    assert await store.revoke_device("d-1", 10.0) is None  # already revoked
    assert (await store.get_device("d-1")).revoked_at == 9.0


async def test_touch_devices_never_moves_last_use_back(store: Store):
    await store.add_device(device(1))
    await store.touch_devices([("d-1", 50.0)])
    await store.touch_devices([("d-1", 40.0), ("d-unknown", 1.0)])
    assert (await store.get_device("d-1")).last_used_at == 50.0


def code(subject: str = "+4915112345678", code_hash: str = "h1", expires_at: float = 1000.0) -> ProvisioningCode:
    return ProvisioningCode(purpose="otp", subject=subject, code_hash=code_hash, owner="alice",
                            created_at=700.0, expires_at=expires_at)


async def test_code_is_single_use(store: Store):
    await store.put_code(code())
    assert await store.take_code("otp", "+4915112345678", "wrong", 800.0) is None
    assert await store.take_code("otp", "+4915112345678", "h1", 800.0) == code()
    assert await store.take_code("otp", "+4915112345678", "h1", 800.0) is None


async def test_two_takers_of_one_code_get_it_once(store: Store):
    await store.put_code(code())
    results = await asyncio.gather(*(store.take_code("otp", "+4915112345678", "h1", 800.0) for _ in range(5)))
    assert sum(r is not None for r in results) == 1


async def test_expired_code_cannot_be_taken_and_is_pruned(store: Store):
    await store.put_code(code(expires_at=1000.0))
    assert await store.take_code("otp", "+4915112345678", "h1", 1000.0) is None
    assert await store.prune_codes(1000.5) == 1
    assert await store.get_code("otp", "+4915112345678") is None


async def test_a_new_code_replaces_the_old_one_and_resets_attempts(store: Store):
    await store.put_code(code())
    assert await store.count_code_failure("otp", "+4915112345678") == 1
    assert await store.count_code_failure("otp", "+4915112345678") == 2
    assert await store.count_code_failure("otp", "+490000") == 0
    await store.put_code(code(code_hash="h2"))
    stored = await store.get_code("otp", "+4915112345678")
    assert stored.attempts == 0 and stored.code_hash == "h2"
    assert await store.delete_code("otp", "+4915112345678")
    assert not await store.delete_code("otp", "+4915112345678")


async def test_removing_a_user_revokes_its_devices(store: Store):
    from store_samples import sample_user

    user = sample_user()
    await store.add_user(user)
    await store.add_device(device(1, user=user.username))
    assert await store.remove_user(user.username, user.domain)
    assert (await store.get_device("d-1")).revoked
    assert await store.live_device_by_instance(user.username, user.domain, device(1).instance_id) is None
