"""The provisioning service on a real store (both engines) with a fake clock:
expiry, attempt limits, rate limits, single use, re-issue, pairing lifetime."""

from __future__ import annotations

import pytest
from aiohttp import web

from sipim.cli import make_user
from sipim.config import Config
from sipim.core.auth import UserCache
from sipim.core.lockout import Lockout
from sipim.provisioning.document import Endpoints
from sipim.provisioning.service import Client, DeviceWish, ProvisioningRefused, ProvisioningService
from sipim.provisioning.sms import SmsError, SmsMessage, WebhookGateway
from sipim.store import Store, WriteBatch

DOMAIN = "example.com"
PHONE = "+4915112345678"
CLIENT = Client("192.0.2.7", 40000, "TestPhone/1.0")
ENDPOINTS = Endpoints("sip.example.com", 8443, 5061)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Gateway:
    def __init__(self) -> None:
        self.sent: list[SmsMessage] = []

    async def send(self, message: SmsMessage) -> None:
        self.sent.append(message)

    async def close(self) -> None:
        pass


@pytest.fixture
async def setup(store: Store):
    await store.add_user(make_user("alice", DOMAIN, "alice-secret", phones=(PHONE,)))
    config = Config(domain=DOMAIN, otp_rate_per_number=3, otp_rate_per_source=5, otp_max_attempts=3,
                    provisioning_attempts_per_source=100)
    clock, gateway, audit = Clock(), Gateway(), []
    service = ProvisioningService(config, store=store, users=UserCache(store, DOMAIN),
                                  lockout=Lockout(threshold=3, window=60, duration=600), audit=audit.append,
                                  secret=b"s" * 32, gateway=gateway, now=clock)
    yield service, clock, gateway, audit
    await service.close()


async def send_code(service, gateway) -> str:
    await service.request_otp(PHONE, CLIENT)
    await service.close()  # lets the background send finish
    return gateway.sent[-1].code


def results(audit) -> list[str]:
    return [record.result for record in audit]


async def test_code_works_once_within_its_lifetime(setup):
    service, clock, gateway, audit = setup
    code = await send_code(service, gateway)
    clock.now += 299
    document = await service.config_with_code(PHONE, code, DeviceWish(), CLIENT, ENDPOINTS)
    assert document["user_id"] == f"sip:alice@{DOMAIN}" and document["device"]["name"] == "TestPhone"
    with pytest.raises(ProvisioningRefused) as refused:
        await service.config_with_code(PHONE, code, DeviceWish(), CLIENT, ENDPOINTS)
    assert refused.value.status == 403
    assert results(audit) == ["otp-sent", "config-issued", "otp-failed"]


async def test_expired_code_is_refused_and_recorded(setup):
    service, clock, gateway, audit = setup
    code = await send_code(service, gateway)
    clock.now += 300  # otp_lifetime
    with pytest.raises(ProvisioningRefused) as refused:
        await service.config_with_code(PHONE, code, DeviceWish(), CLIENT, ENDPOINTS)
    assert refused.value.status == 403
    assert audit[-1].result == "otp-expired" and audit[-1].aor == f"sip:alice@{DOMAIN}"


async def test_too_many_wrong_attempts_void_the_code(setup):
    service, clock, gateway, audit = setup
    code = await send_code(service, gateway)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(3):
        with pytest.raises(ProvisioningRefused):
            await service.config_with_code(PHONE, wrong, DeviceWish(), CLIENT, ENDPOINTS)
    assert "code void" in audit[-1].reason
    with pytest.raises(ProvisioningRefused):  # even the right code is now refused
        await service.config_with_code(PHONE, code, DeviceWish(), CLIENT, ENDPOINTS)


async def test_codes_per_number_are_rate_limited_until_the_window_passes(setup):
    service, clock, gateway, audit = setup
    for _ in range(3):
        await service.request_otp(PHONE, CLIENT)
    with pytest.raises(ProvisioningRefused) as refused:
        await service.request_otp(PHONE, CLIENT)
    assert refused.value.status == 429 and refused.value.retry_after == 900
    clock.now += 900
    await service.request_otp(PHONE, CLIENT)
    assert "rate-limited" in results(audit)


async def test_codes_per_source_address_are_rate_limited(setup):
    service, clock, gateway, audit = setup
    for n in range(5):
        await service.request_otp(f"+49151123456{n:02d}", CLIENT)
    with pytest.raises(ProvisioningRefused) as refused:
        await service.request_otp("+4915112345699", CLIENT)
    assert refused.value.status == 429
    await service.request_otp("+4915112345699", Client("192.0.2.8", 1))  # another source


async def test_unknown_number_is_answered_alike_but_gets_no_code(setup):
    service, clock, gateway, audit = setup
    assert await service.request_otp("+4915112345600", CLIENT) == 300
    await service.close()
    assert gateway.sent == [] and audit[-1].result == "otp-not-sent"


async def test_reissue_for_the_same_instance_keeps_the_device(setup):
    service, clock, gateway, audit = setup
    wish = DeviceWish(name="tablet", instance_id="urn:uuid:11111111-2222-3333-4444-555555555555")
    first = await service.signin("alice", "alice-secret", wish, CLIENT, ENDPOINTS)
    second = await service.signin("alice", "alice-secret", wish, CLIENT, ENDPOINTS)
    assert first["device"]["id"] == second["device"]["id"]
    assert first["device"]["token"] != second["device"]["token"]
    assert "re-issued" in audit[-1].reason


async def test_signin_lockout_applies(setup):
    service, clock, gateway, audit = setup
    for _ in range(3):
        with pytest.raises(ProvisioningRefused):
            await service.signin("alice", "wrong", DeviceWish(), CLIENT, ENDPOINTS)
    with pytest.raises(ProvisioningRefused):
        await service.signin("alice", "alice-secret", DeviceWish(), CLIENT, ENDPOINTS)
    assert "locked out" in audit[-1].reason


async def test_pairing_code_expires(setup):
    service, clock, gateway, audit = setup
    alice = await service._users.get("alice")
    code, lifetime = await service.create_pairing(alice, None, CLIENT)
    clock.now += lifetime
    with pytest.raises(ProvisioningRefused) as refused:
        await service.pair(code, DeviceWish(), CLIENT, ENDPOINTS)
    assert refused.value.status == 403 and audit[-1].result == "pairing-failed"


async def test_device_limit_is_enforced(setup):
    service, clock, gateway, audit = setup
    service._config.max_devices_per_user = 2
    for _ in range(2):
        await service.signin("alice", "alice-secret", DeviceWish(), CLIENT, ENDPOINTS)
    with pytest.raises(ProvisioningRefused) as refused:
        await service.signin("alice", "alice-secret", DeviceWish(), CLIENT, ENDPOINTS)
    assert refused.value.status == 403 and "device limit" in refused.value.reason


# -- the webhook SMS gateway against a local HTTP server -------------------------------------

async def test_webhook_gateway_posts_json_with_the_configured_authorization():
    received = []

    async def sms(request: web.Request) -> web.Response:
        received.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response({"queued": True}, status=202 if len(received) == 1 else 500)

    app = web.Application()
    app.router.add_post("/sms", sms)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    gateway = WebhookGateway(f"http://127.0.0.1:{port}/sms", timeout=5, authorization="Bearer provider-key")
    try:
        await gateway.send(SmsMessage(PHONE, "Your code is 123456", "123456"))
        assert received == [("Bearer provider-key", {"to": PHONE, "text": "Your code is 123456", "code": "123456"})]
        with pytest.raises(SmsError, match="500"):
            await gateway.send(SmsMessage(PHONE, "again", "1"))
    finally:
        await gateway.close()
        await runner.cleanup()
    unreachable = WebhookGateway(f"http://127.0.0.1:{port}/sms", timeout=2)
    with pytest.raises(SmsError):
        await unreachable.send(SmsMessage(PHONE, "nobody listens", "1"))
    await unreachable.close()


async def test_a_bad_instance_id_is_refused_before_the_code_is_used(setup):
    service, clock, gateway, audit = setup
    code = await send_code(service, gateway)
    with pytest.raises(ProvisioningRefused) as refused:
        await service.config_with_code(PHONE, code, DeviceWish(instance_id="not a urn"), CLIENT, ENDPOINTS)
    assert refused.value.status == 400 and audit[-1].result == "bad-request"
    document = await service.config_with_code(PHONE, code, DeviceWish(), CLIENT, ENDPOINTS)
    assert document["username"] == "alice"


def test_an_operators_own_sms_gateway_is_loaded_from_module_and_factory(tmp_path):
    from sipim.provisioning.sms import OutboxGateway, make_gateway

    config = Config(domain=DOMAIN, data_dir=tmp_path, sms_gateway="tests.provisioning.test_service:custom_gateway")
    config.validate_provisioning()
    assert isinstance(make_gateway(config), Gateway)
    assert isinstance(make_gateway(Config(domain=DOMAIN, data_dir=tmp_path)), OutboxGateway)


def custom_gateway(config) -> Gateway:
    return Gateway()


async def test_disabled_account_gets_no_code(setup, store):
    from dataclasses import replace

    service, clock, gateway, audit = setup
    alice = await store.get_user("alice", DOMAIN)
    await store.update_user(replace(alice, disabled=True))
    assert await service.request_otp(PHONE, CLIENT) == 300
    await service.close()
    assert gateway.sent == [] and audit[-1].reason == "account disabled; no code sent"


async def test_pairing_codes_per_user_are_rate_limited(setup):
    service, clock, gateway, audit = setup
    alice = await service._users.get("alice")
    for _ in range(10):
        await service.create_pairing(alice, None, CLIENT)
    with pytest.raises(ProvisioningRefused) as refused:
        await service.create_pairing(alice, None, CLIENT)
    assert refused.value.status == 429 and audit[-1].result == "rate-limited"


ODD_VALUES = [None, True, 0, -1, 1.5, "", " ", "x" * 5000, "\x00\n", "+4915112345678", "+49 151 123 456 78",
              "<urn:uuid:1>", "urn:uuid:", "ÿ\ud800", [], ["+4915112345678"], {}, {"a": {"b": [1]}}]


async def test_any_json_values_get_an_answer_or_a_clear_refusal(setup, store):
    service, clock, gateway, audit = setup
    odd_agent = Client("192.0.2.9", 1, "Ph\ud800one\x07/1.0")
    for value in ODD_VALUES:
        for wish in (DeviceWish(name=value), DeviceWish(instance_id=value)):
            for attempt in (lambda: service.request_otp(value, CLIENT),
                            lambda: service.config_with_code(value, value, wish, CLIENT, ENDPOINTS),
                            lambda: service.config_with_code(PHONE, value, wish, CLIENT, ENDPOINTS),
                            lambda: service.config_trusted(value if isinstance(value, str) else None, wish, CLIENT,
                                                           ENDPOINTS),
                            lambda: service.signin(value, value, wish, CLIENT, ENDPOINTS),
                            lambda: service.signin("alice", value, wish, CLIENT, ENDPOINTS),
                            lambda: service.pair(value, wish, CLIENT, ENDPOINTS)):
                try:
                    await attempt()
                except ProvisioningRefused as refused:
                    assert 400 <= refused.status < 600 and refused.reason
    document = await service.signin("alice", "alice-secret", DeviceWish(), odd_agent, ENDPOINTS)
    assert document["device"]["name"] == "device"
    await service.close()
    await store.write_batch(WriteBatch(audit=audit))  # every record is storable, whatever the client sent
    assert len(await store.query_audit(limit=10_000)) == len(audit)
