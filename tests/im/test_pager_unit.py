"""The PagerService constructed directly (RFC 3428 pager mode, RFC 5627 GRUUs, RFC 5438
IMDN), fed by the real Registrar as `sipim serve` wires them, on a FakeClock and a
SQLite store.  What would go to a device is recorded by a fake gateway and answered
(or not) by the test: store-and-forward and the delivery wait happen on the clock,
without sockets or sleeps."""

from __future__ import annotations

import asyncio
import email.utils

import pytest

from sipim.sip.message import Response
from tests.support.im import cpim_message, imdn_of
from tests.support.roles import DOMAIN, GUARD, START, Device, make_roles


@pytest.fixture
async def roles(tmp_path):
    async with make_roles(str(tmp_path / "sipim.db")) as built:
        for name in ("alice", "bob"):
            await built.add_user(name)
        yield built


def alice() -> Device:
    return Device("alice", "alice-secret")


def bob() -> Device:
    return Device("bob", "bob-secret")


async def online(roles, *devices: Device) -> None:
    for device in devices:
        assert (await device.register(roles.registrar)).status == 200


def send(roles, sender: Device, to_user: str, body: bytes, *, uri: str | None = None,
         content_type: str = "text/plain") -> asyncio.Task[Response]:
    """The sender's MESSAGE, as the core hands it on once it authenticated the sender."""
    request = sender.request("MESSAGE", uri=uri or f"sip:{to_user}@{DOMAIN}", to=f"<sip:{to_user}@{DOMAIN}>",
                             headers=[("Content-Type", content_type)], body=body)
    return asyncio.ensure_future(roles.pager.handle(request, identity=sender.identity, source=sender.source))


async def answered(task: asyncio.Task[Response]) -> Response:
    return await asyncio.wait_for(task, GUARD)


async def loop_turns(count: int = 10) -> None:
    """Let the loop run what is ready now (no time passes: these are not sleeps)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def owed(roles, device: Device) -> list:
    """What the store still owes ``device`` (it registered under its instance id)."""
    await roles.committed()
    return await roles.store.undelivered_for_device(device.aor, device.instance_urn, device.instance_urn,
                                                    roles.clock.now())


async def test_rfc3428_7_a_message_reaches_every_device_and_the_senders_other_devices_get_a_copy(roles):
    bob_phone, bob_laptop, alice_phone, alice_laptop = bob(), bob(), alice(), alice()
    await online(roles, bob_phone, bob_laptop, alice_phone, alice_laptop)
    task = send(roles, alice_phone, "bob", b"to all of bob")
    await roles.gateway.wait_for(3, unless_done=task)
    [to_phone], [to_laptop] = roles.gateway.to(bob_phone), roles.gateway.to(bob_laptop)
    [copy] = roles.gateway.to(alice_laptop)
    assert roles.gateway.to(alice_phone) == []  # the sending device has it already
    for delivery, device in ((to_phone, bob_phone), (to_laptop, bob_laptop)):
        request = delivery.request
        assert request.body == b"to all of bob" and request.uri.port == device.port
        # The asserted sender, never what the client wrote (RFC 3325 §9.1).
        assert str(request.from_.uri) == alice_phone.aor
        assert request.headers.get_all("P-Asserted-Identity") == [f"<{alice_phone.aor}>"]
        assert request.headers.get("Date") is None  # sent live, not from the store
    # The copy is marked as sent by alice: From = her, To = bob.
    assert (str(copy.request.from_.uri), str(copy.request.to.uri)) == (alice_phone.aor, bob_phone.aor)

    assert not task.done()  # the sender waits for a device
    to_laptop.answer(480)
    await loop_turns()
    assert not task.done()  # one device failing is not the end: the other may take it
    to_phone.answer(200)
    response = await answered(task)
    assert (response.status, response.reason) == (200, "OK")
    await roles.quiet()
    # Taken at once: a device registering again is not sent it a second time.
    await online(roles, bob_laptop)
    await roles.quiet()
    assert len(roles.gateway.to(bob_laptop)) == 1


async def test_rfc3428_7_offline_recipient_gets_202_and_each_device_gets_it_when_it_registers(roles):
    sender = alice()
    response = await answered(send(roles, sender, "bob", b"while you were away"))
    assert (response.status, response.reason) == (202, "Accepted")
    assert roles.gateway.deliveries == []
    [stored] = await roles.store.messages_pending(f"sip:bob@{DOMAIN}")
    assert stored.body == b"while you were away" and stored.created_at == START

    roles.clock.advance(3600)
    phone = bob()
    await online(roles, phone)  # the registration tells the pager (registrar.on_registered)
    [delivery] = await roles.gateway.wait_for(1)
    assert delivery.binding.instance_id == phone.instance_urn
    assert delivery.request.body == b"while you were away"
    # When it was really sent, for a device catching up (RFC 3261 §20.17).
    assert delivery.request.headers.get("Date") == email.utils.formatdate(START, usegmt=True)
    delivery.answer(200)
    await roles.quiet()
    assert await owed(roles, phone) == []

    laptop = bob()  # a device registering later still gets it, once
    await online(roles, laptop)
    late = (await roles.gateway.wait_for(2))[1]
    assert late.binding.instance_id == laptop.instance_urn and late.request.body == b"while you were away"
    late.answer(200)
    await roles.quiet()
    await online(roles, phone, laptop)  # refreshes owe nothing more
    await roles.quiet()
    assert len(roles.gateway.deliveries) == 2


async def test_rfc3428_7_a_device_silent_past_im_delivery_wait_is_owed_it_and_sent_it_again_later(roles):
    phone = bob()
    await online(roles, phone)
    task = send(roles, alice(), "bob", b"are you there?")
    [first] = await roles.gateway.wait_for(1, unless_done=task)
    wait = roles.config.im_delivery_wait
    roles.clock.advance(wait - 0.5)
    await loop_turns()
    assert not task.done()
    roles.clock.advance(0.5)  # im_delivery_wait passed on the clock: the sender hears 202
    await loop_turns()
    assert task.done() and task.result().status == 202
    first.answer(408)  # later, the device's transaction times out (RFC 3261 §17.1.2.2)
    [stored] = await owed(roles, phone)
    assert stored.body == b"are you there?"

    roles.clock.advance(300)
    await online(roles, phone)  # its next refresh: the message is sent again
    [_, again] = await roles.gateway.wait_for(2)
    assert again.request.body == b"are you there?" and again.request.headers.get("Date")
    again.answer(200)
    await roles.quiet()
    assert await owed(roles, phone) == []


async def test_rfc3428_7_an_answer_after_the_202_counts_and_the_device_is_not_sent_it_again(roles):
    phone = bob()
    await online(roles, phone)
    task = send(roles, alice(), "bob", b"late but taken")
    [first] = await roles.gateway.wait_for(1, unless_done=task)
    roles.clock.advance(roles.config.im_delivery_wait)
    assert (await answered(task)).status == 202
    first.answer(200)
    assert await owed(roles, phone) == []
    await online(roles, phone)
    await roles.quiet()
    assert len(roles.gateway.deliveries) == 1


async def test_rfc5627_3_a_message_to_a_gruu_reaches_only_that_device(roles):
    phone, laptop = bob(), bob()
    await online(roles, phone, laptop)
    task = send(roles, alice(), "bob", b"just the phone", uri=f"sip:bob@{DOMAIN};gr=urn:uuid:{phone.instance}")
    [delivery] = await roles.gateway.wait_for(1, unless_done=task)
    assert delivery.binding.instance_id == phone.instance_urn
    delivery.answer(200)
    assert (await answered(task)).status == 200
    await online(roles, laptop)
    await roles.quiet()
    assert roles.gateway.to(laptop) == []


async def test_rfc3261_17_2_a_resent_message_is_delivered_once(roles):
    phone, sender = bob(), alice()
    await online(roles, phone)
    request = sender.request("MESSAGE", uri=f"sip:bob@{DOMAIN}", to=f"<sip:bob@{DOMAIN}>",
                             headers=[("Content-Type", "text/plain")], body=b"once")
    task = asyncio.ensure_future(roles.pager.handle(request, identity=sender.identity, source=sender.source))
    [delivery] = await roles.gateway.wait_for(1, unless_done=task)
    delivery.answer(200)
    assert (await answered(task)).status == 200
    again = await answered(asyncio.ensure_future(
        roles.pager.handle(request, identity=sender.identity, source=sender.source)))
    assert again.status == 200
    await roles.quiet()
    assert len(roles.gateway.deliveries) == 1


async def test_rfc5438_8_1_a_stored_message_gives_the_sender_a_processing_notification(roles):
    sender = alice()
    await online(roles, sender)
    body, imdn_id = cpim_message("alice", "bob", "store me", "positive-delivery, processing")
    assert (await answered(send(roles, sender, "bob", body, content_type="message/cpim"))).status == 202
    [report] = await roles.gateway.wait_for(1)
    assert report.binding.instance_id == sender.instance_urn
    assert str(report.request.from_.uri) == f"sip:{DOMAIN}"  # the IM server itself (§7.2)
    notification = imdn_of(report.request)
    assert (notification.message_id, notification.kind, notification.status) == (imdn_id, "processing", "stored")
    report.answer(200)
    await roles.quiet()


async def test_rfc5438_8_2_an_expired_stored_message_is_not_delivered_and_the_sender_hears_it_failed(roles):
    sender = alice()
    await online(roles, sender)
    body, imdn_id = cpim_message("alice", "bob", "nobody reads this", "positive-delivery, negative-delivery")
    assert (await answered(send(roles, sender, "bob", body, content_type="message/cpim"))).status == 202
    await roles.committed()
    lifetime = roles.config.deferred_lifetime
    roles.clock.advance(lifetime - 1)
    assert await roles.pager.expire() == []

    roles.clock.advance(1)
    await online(roles, sender)  # the sender's device, back (its registration lapsed within the week)
    expiring = asyncio.ensure_future(roles.pager.expire())
    [report] = await roles.gateway.wait_for(1, unless_done=expiring)
    notification = imdn_of(report.request)
    assert (notification.message_id, notification.kind, notification.status) == (imdn_id, "delivery", "failed")
    report.answer(200)
    [expired] = await asyncio.wait_for(expiring, GUARD)
    assert expired.imdn_message_id == imdn_id
    await roles.committed()
    history = await roles.store.query_history(sender.aor, peer=f"sip:bob@{DOMAIN}")
    assert {entry.status for entry in history} == {"failed"}

    phone = bob()
    await online(roles, phone)  # too late: an expired message is not delivered any more
    await roles.quiet()
    assert roles.gateway.to(phone) == []


async def test_stop_waits_for_deliveries_under_way_for_its_grace_on_the_clock(roles):
    assert (await answered(send(roles, alice(), "bob", b"owed"))).status == 202
    await online(roles, bob())
    [catching_up] = await roles.gateway.wait_for(1)
    stopping = asyncio.ensure_future(roles.pager.stop(grace=2.0))
    await loop_turns()
    assert not stopping.done()  # the device may still answer
    roles.clock.advance(2.0)
    await loop_turns()
    assert stopping.done()
    assert catching_up.status is None  # given up on, not answered for the device
