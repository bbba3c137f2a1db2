"""Sans-IO provisioning pieces: codes, the verdict on a presented code, rate limits,
new device credentials and the configuration document."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from sipim.core.auth import token_hash
from sipim.core.ratelimit import RateLimiter
from sipim.provisioning import codes
from sipim.provisioning.codes import Verdict, judge
from sipim.provisioning.credentials import BadDeviceRequest, new_device, normalise_instance, normalise_name, reissue
from sipim.provisioning.document import Endpoints, build_device_config
from sipim.sip.digest import ha1
from sipim.store.models import ProvisioningCode, User

SECRET = b"k" * 32


def stored(code: str, *, expires_at: float = 100.0, attempts: int = 0) -> ProvisioningCode:
    return ProvisioningCode("otp", "+4915112345678", codes.code_hash(SECRET, "otp", "+4915112345678", code),
                            "alice", 0.0, expires_at, attempts)


def test_otp_has_the_configured_number_of_digits():
    for length in (4, 6, 10):
        code = codes.new_otp(length)
        assert len(code) == length and code.isdigit()


def test_pairing_codes_avoid_look_alike_characters():
    code = codes.new_pairing_code(12)
    assert len(code) == 12 and not set(code) & set("01OIL")


def test_code_hash_depends_on_secret_purpose_and_subject_and_ignores_spacing():
    base = codes.code_hash(SECRET, "otp", "+1", "123456")
    assert codes.code_hash(SECRET, "otp", "+1", "123 456") == base
    assert codes.code_hash(b"x" * 32, "otp", "+1", "123456") != base
    assert codes.code_hash(SECRET, "pairing", "+1", "123456") != base
    assert codes.code_hash(SECRET, "otp", "+2", "123456") != base
    assert codes.pairing_subject(SECRET, "abcd-efgh") == codes.pairing_subject(SECRET, "ABCDEFGH")


@pytest.mark.parametrize("record, presented, now, verdict", [
    (None, "123456", 1.0, Verdict.NO_CODE),
    (stored("123456"), "123456", 1.0, Verdict.OK),
    (stored("123456"), "123457", 1.0, Verdict.WRONG),
    (stored("123456", expires_at=100.0), "123456", 100.0, Verdict.EXPIRED),
    (stored("123456", attempts=5), "123456", 1.0, Verdict.EXHAUSTED),
])
def test_verdict_on_a_presented_code(record, presented, now, verdict):
    assert judge(record, codes.code_hash(SECRET, "otp", "+4915112345678", presented), now, 5) is verdict


def test_rate_limiter_allows_limit_hits_per_window_and_says_how_long_to_wait():
    limiter = RateLimiter(2, 60)
    assert limiter.hit("a", 0.0) is None and limiter.hit("a", 10.0) is None
    assert limiter.hit("a", 20.0) == 40  # the first hit leaves the window at 60
    assert limiter.hit("b", 20.0) is None  # keys are independent
    assert limiter.hit("a", 60.0) is None  # refused hits were not counted
    assert limiter.hit("a", 61.0) == 9


def test_rate_limiter_memory_is_bounded():
    limiter = RateLimiter(1, 60, max_keys=10)
    for n in range(100):
        limiter.hit(f"k{n}", float(n))
    assert len(limiter._hits) <= 10


@given(st.lists(st.floats(min_value=0, max_value=1000), min_size=1, max_size=40))
def test_rate_limiter_never_allows_more_than_limit_in_any_window(times):
    limiter = RateLimiter(3, 100)
    allowed = [t for t in sorted(times) if limiter.hit("k", t) is None]
    for t in allowed:
        assert sum(1 for u in allowed if t - 100 < u <= t) <= 3


def test_instance_ids_are_urns_and_angle_brackets_are_dropped():
    assert normalise_instance("<urn:uuid:ABC-1>") == "urn:uuid:abc-1"
    assert normalise_instance(None).startswith("urn:uuid:")
    for bad in ("not-a-urn", "urn:uuid:", 'urn:uuid:"x"', 42, "urn:uuid:" + "a" * 300):
        with pytest.raises(BadDeviceRequest):
            normalise_instance(bad)


def test_device_names_are_short_printable_text():
    assert normalise_name("  my   phone ", "x") == "my phone"
    assert normalise_name(None, "Firefox") == "Firefox"
    for bad in ("a" * 65, "bell\x07", 3):
        with pytest.raises(BadDeviceRequest):
            normalise_name(bad, "x")


def test_new_device_keeps_only_ha1_values_and_a_token_hash():
    issued = new_device("alice", "example.com", "phone", "urn:uuid:1", 5.0)
    device = issued.device
    assert device.auth_username == f"alice!{device.device_id[2:]}"
    assert device.ha1_md5 == ha1(device.auth_username, "example.com", issued.password, "MD5")
    assert device.ha1_sha256 == ha1(device.auth_username, "example.com", issued.password, "SHA-256")
    assert device.token_hash == token_hash(issued.token) and issued.token not in device.token_hash
    again = reissue(device, None)
    assert again.device.device_id == device.device_id and again.device.name == "phone"
    assert again.password != issued.password and again.device.token_hash != device.token_hash


def test_device_config_document_follows_the_contract():
    issued = new_device("alice", "example.com", "phone", "urn:uuid:1", 5.0)
    user = User("alice", "example.com", "", "", display_name="Alice")
    document = build_device_config(user, issued, Endpoints("sip.example.com", 8443, 5061), "PEM")
    assert document["user_id"] == "sip:alice@example.com" and document["display_name"] == "Alice"
    assert document["device"]["password"] == issued.password and document["device"]["token"] == issued.token
    assert document["sip"] == {"realm": "example.com", "registrar": "sip:example.com", "outbound_proxy": {
        "tls": "sips:sip.example.com:5061;transport=tls", "wss": "wss://sip.example.com:8443/"}}
    assert document["http"] == {"api": "https://sip.example.com:8443/api/v1",
                                "xcap_root": "https://sip.example.com:8443/xcap"}
    assert document["ca_pem"] == "PEM"
    v6 = build_device_config(user, issued, Endpoints("::1", 8443, None), None)
    assert v6["sip"]["outbound_proxy"] == {"wss": "wss://[::1]:8443/"}
