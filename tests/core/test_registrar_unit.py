"""The Registrar constructed directly: RFC 3261 §10.3 with Outbound (RFC 5626 §6) and
GRUU (RFC 5627 §5), on a FakeClock, the real digest Authenticator and a SQLite store.
No sockets, no sleeps: binding expiry is the clock moving."""

from __future__ import annotations

import pytest

from sipim.core.auth import AUTH_FAILED, CHALLENGED
from sipim.core.registrar import REFRESHED, REFUSED, REGISTERED, REMOVED
from sipim.sip.digest import parse_challenge
from sipim.sip.uri import parse_name_addr
from tests.support.roles import DOMAIN, Device, make_roles, settle


@pytest.fixture
async def roles(tmp_path):
    async with make_roles(str(tmp_path / "sipim.db")) as built:
        await built.add_user("alice")
        await built.add_user("bob")
        yield built


def alice(**kwargs) -> Device:
    return Device("alice", "alice-secret", **kwargs)


def contacts(response) -> list:
    return [parse_name_addr(value) for value in response.headers.get_all("Contact")]


def expires_of(response, device: Device) -> int:
    [contact] = [c for c in contacts(response) if c.params.get("+sip.instance") == f'"{device.instance_urn}"']
    return int(contact.params["expires"])


async def audit(roles, username: str) -> list:
    await roles.committed()
    return list(reversed(await roles.store.query_audit(username=username)))  # oldest first


async def test_rfc3261_10_3_register_is_challenged_then_accepted_and_recorded(roles):
    phone = alice()
    challenged = await settle(roles.registrar.handle(phone.register_request(), phone.source))
    assert challenged.status == 401
    # RFC 8760 §2.4: both algorithms offered, SHA-256 first, with one nonce.
    challenges = [parse_challenge(v) for v in challenged.headers.get_all("WWW-Authenticate")]
    assert [c.algorithm for c in challenges] == ["SHA-256", "MD5"]
    assert {c.realm for c in challenges} == {DOMAIN} and len({c.nonce for c in challenges}) == 1
    assert roles.location.bindings(phone.aor) == []  # nothing bound before authenticating

    authorization = phone.answer_challenge(challenged)
    accepted = await settle(roles.registrar.handle(phone.register_request(authorization=authorization),
                                                   phone.source))
    assert accepted.status == 200
    assert expires_of(accepted, phone) == 600
    assert accepted.headers.get("Date") == "Tue, 14 Nov 2023 22:13:20 GMT"  # the clock's time, §20.17
    [binding] = roles.location.bindings(phone.aor)
    assert (binding.instance_id, binding.expires_at) == (phone.instance_urn, roles.clock.now() + 600)
    # Answered only once durable: the binding is in the store when the 200 is.
    [stored] = await roles.store.list_bindings(phone.aor)
    assert stored.binding_key == binding.binding_key

    records = await audit(roles, "alice")
    assert [r.result for r in records] == [CHALLENGED, REGISTERED]
    assert records[1].username == "alice" and records[1].reason.endswith("digest SHA-256")
    assert records[1].instance_id == phone.instance_urn and records[1].transport == "tls"
    assert records[1].source == f"{phone.host}:{phone.port}" and records[1].ts == roles.clock.now()


async def test_rfc3261_22_wrong_password_is_refused_and_recorded(roles):
    phone = alice()
    refused = await phone.register(roles.registrar, password="not-her-password")
    assert (refused.status, refused.reason) == (403, "Authentication failed")
    assert roles.location.bindings(phone.aor) == []
    records = await audit(roles, "alice")
    assert [r.result for r in records] == [CHALLENGED, AUTH_FAILED]
    assert "wrong password" in records[1].reason and records[1].username is None


async def test_rfc3261_10_3_register_for_another_address_of_record_is_refused(roles):
    mallory = alice()
    first = await settle(roles.registrar.handle(
        mallory.request("REGISTER", to=f"<sip:bob@{DOMAIN}>", headers=[("Contact", mallory.contact())]),
        mallory.source))
    authorization = mallory.answer_challenge(first)
    refused = await settle(roles.registrar.handle(
        mallory.request("REGISTER", to=f"<sip:bob@{DOMAIN}>",
                        headers=[("Contact", mallory.contact()), ("Authorization", authorization)]),
        mallory.source))
    assert refused.status == 403
    assert roles.location.bindings(f"sip:bob@{DOMAIN}") == []
    assert (await audit(roles, "bob"))[-1].result == REFUSED


async def test_rfc3261_10_2_1_a_binding_not_refreshed_expires_on_the_clock(roles):
    phone = alice()
    assert (await phone.register(roles.registrar, expires=600)).status == 200
    roles.clock.advance(599)
    assert roles.registrar.expire() == []
    query = await phone.register(roles.registrar, expires=None, contact="")
    assert query.status == 200 and expires_of(query, phone) == 1  # §10.3 step 8: what is left

    roles.clock.advance(1)
    [expired] = roles.registrar.expire()
    assert expired.instance_id == phone.instance_urn
    assert roles.location.bindings(phone.aor) == []
    await roles.committed()
    assert await roles.store.list_bindings(phone.aor) == []


async def test_rfc3261_10_2_1_refresh_moves_the_expiry_and_is_recorded_as_such(roles):
    phone = alice()
    assert (await phone.register(roles.registrar, expires=600)).status == 200
    roles.clock.advance(500)
    refreshed = await phone.register(roles.registrar, expires=600)
    assert refreshed.status == 200 and expires_of(refreshed, phone) == 600
    roles.clock.advance(500)  # 1000 s after the first REGISTER, 500 after the refresh
    assert roles.registrar.expire() == []
    [binding] = roles.location.bindings(phone.aor, roles.clock.now())
    assert binding.registered_at == roles.clock.now() - 1000  # still the same binding
    assert [r.result for r in await audit(roles, "alice")][-1] == REFRESHED
    roles.clock.advance(100)
    assert len(roles.registrar.expire()) == 1


async def test_rfc3261_10_3_step_7_out_of_order_cseq_is_refused(roles):
    phone = alice()
    assert (await phone.register(roles.registrar)).status == 200
    phone.cseq -= 2  # same Call-ID, a CSeq not higher than the stored one
    assert (await phone.register(roles.registrar)).status == 400


async def test_rfc3261_10_2_2_expires_zero_removes_that_binding_only(roles):
    phone, laptop = alice(), alice()
    assert (await phone.register(roles.registrar)).status == 200
    assert (await laptop.register(roles.registrar)).status == 200
    removed = await phone.register(roles.registrar, expires=0)
    assert removed.status == 200
    assert [c.params.get("+sip.instance") for c in contacts(removed)] == [f'"{laptop.instance_urn}"']
    assert [b.instance_id for b in roles.location.bindings(phone.aor)] == [laptop.instance_urn]
    assert [r.result for r in await audit(roles, "alice")][-1] == REMOVED


async def test_rfc3261_10_3_step_6_star_removes_every_binding_only_with_expires_zero(roles):
    phone, laptop = alice(), alice()
    assert (await phone.register(roles.registrar)).status == 200
    assert (await laptop.register(roles.registrar)).status == 200
    assert (await phone.register(roles.registrar, contact="*", expires=60)).status == 400
    assert len(roles.location.bindings(phone.aor)) == 2
    cleared = await phone.register(roles.registrar, contact="*", expires=0)
    assert cleared.status == 200 and contacts(cleared) == []
    assert roles.location.bindings(phone.aor) == []
    await roles.committed()
    assert await roles.store.list_bindings(phone.aor) == []


async def test_rfc3261_10_3_step_7_interval_too_brief_gives_423_with_min_expires(roles):
    phone = alice()
    too_brief = await phone.register(roles.registrar, expires=roles.config.min_expires - 1)
    assert too_brief.status == 423
    assert too_brief.headers.get("Min-Expires") == str(roles.config.min_expires)
    assert roles.location.bindings(phone.aor) == []
    assert (await audit(roles, "alice"))[-1].result == REFUSED
    # The minimum itself is fine, and a too long interval is cut to max_expires.
    assert expires_of(await phone.register(roles.registrar, expires=roles.config.min_expires), phone) == 60
    assert expires_of(await phone.register(roles.registrar, expires=10 ** 7), phone) == roles.config.max_expires


async def test_rfc5627_5_each_device_of_a_user_has_its_own_binding_and_gruus(roles):
    phone, laptop = alice(), alice()
    assert (await phone.register(roles.registrar)).status == 200
    answer = await laptop.register(roles.registrar)
    assert answer.status == 200
    listed = {c.params["+sip.instance"].strip('"'): c for c in contacts(answer)}
    assert set(listed) == {phone.instance_urn, laptop.instance_urn}
    for device in (phone, laptop):
        # RFC 5627 §5.2: pub-gruu = the AOR with gr= the instance; a temp-gruu of its own.
        assert listed[device.instance_urn].params["pub-gruu"] == f'"sip:alice@{DOMAIN};gr=urn:uuid:{device.instance}"'
        temp = listed[device.instance_urn].params["temp-gruu"].strip('"')
        resolved = roles.temp_gruus.resolve(temp.split(":", 1)[1].split("@", 1)[0])
        assert (resolved.aor, resolved.instance_id) == (device.aor, device.instance_urn)
        [binding] = roles.location.bindings_for_instance(device.aor, device.instance_urn)
        assert parse_name_addr(binding.contact).uri.port == device.port
    # Re-registering a device replaces its binding rather than adding a third.
    assert len(contacts(await phone.register(roles.registrar))) == 2


async def test_rfc5626_6_reg_id_binds_the_flow_and_the_answer_requires_outbound(roles):
    phone = alice()
    answer = await phone.register(roles.registrar)
    assert answer.status == 200
    assert answer.headers.get("Require") == "outbound"
    assert answer.headers.get("Flow-Timer") == str(roles.config.flow_timer)
    [binding] = roles.location.bindings(phone.aor)
    assert (binding.reg_id, binding.flow_id) == (1, phone.flow.id)
    assert roles.location.bindings_on_flow(phone.flow.id) == [binding]
    # A second flow of the same instance (reg-id 2, its own connection) is a second binding.
    backup = Device("alice", "alice-secret", instance=phone.instance, reg_id=2)
    assert (await backup.register(roles.registrar)).status == 200
    assert {(b.reg_id, b.flow_id) for b in roles.location.bindings(phone.aor)} == \
        {(1, phone.flow.id), (2, backup.flow.id)}
    # One flow per REGISTER.
    two = f"{phone.contact(reg_id=3)}, {phone.contact(reg_id=4)}"
    assert (await phone.register(roles.registrar, contact=two)).status == 400


async def test_rfc3261_26_2_register_over_a_plain_transport_is_refused_without_allow_insecure(roles):
    plain = alice(transport="udp")
    refused = await settle(roles.registrar.handle(plain.register_request(), plain.source))
    assert refused.status == 403 and "secure transport" in refused.reason
    [record] = await audit(roles, "alice")
    assert (record.result, record.transport) == (REFUSED, "udp")
