"""The device configuration document and its per-profile storage."""

from __future__ import annotations

import json
import stat

import pytest

from sipim.client.profile import DeviceConfig, ProfileError, ProfileStore, client_home, local_password_config

DOCUMENT = {
    "user_id": "sip:alice@example.com", "username": "alice", "domain": "example.com", "display_name": "Alice",
    "device": {"id": "d-1", "name": "laptop", "instance_id": "urn:uuid:11111111-2222-3333-4444-555555555555",
               "auth_username": "alice.d-1", "password": "pw", "token": "tok"},
    "sip": {"realm": "example.com", "registrar": "sip:example.com",
            "outbound_proxy": {"tls": "sips:im.example.com:5062;transport=tls", "wss": "wss://im.example.com:8443/"}},
    "http": {"api": "https://im.example.com:8443/api/v1", "xcap_root": "https://im.example.com:8443/xcap"},
    "ca_pem": "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n",
    "future_field": {"kept": True},
}


def test_contract_document_is_read():
    config = DeviceConfig.from_document(DOCUMENT)
    assert config.user_id == "sip:alice@example.com"
    assert config.auth_username == "alice.d-1" and config.token == "tok"
    assert config.sip_server() == ("im.example.com", 5062)
    assert config.api_base == "https://im.example.com:8443"


@pytest.mark.parametrize("broken, message", [
    ({"user_id": "alice"}, "user_id"),
    ({"device": {**DOCUMENT["device"], "password": ""}}, "device.password"),
    ({"sip": {"outbound_proxy": {}}}, "sip.outbound_proxy.tls"),
    ({"http": {"api": "http://im.example.com/api/v1"}}, "https"),
])
def test_unusable_documents_are_refused_with_a_reason(broken, message):
    with pytest.raises(ProfileError, match=message):
        DeviceConfig.from_document({**DOCUMENT, **broken})


def test_saved_profile_is_private_and_round_trips(tmp_path):
    store = ProfileStore(tmp_path)
    path = store.save("work", DeviceConfig.from_document(DOCUMENT))
    assert path == tmp_path / "profiles" / "work.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert store.load("work") == DeviceConfig.from_document(DOCUMENT)
    assert json.loads(path.read_text())["future_field"] == {"kept": True}


def test_missing_profile_says_how_to_make_one(tmp_path):
    with pytest.raises(ProfileError, match="sipim client setup --profile other"):
        ProfileStore(tmp_path).load("other")


@pytest.mark.parametrize("name", ["../x", "", "a/b", ".hidden"])
def test_profile_names_cannot_escape_the_directory(tmp_path, name):
    with pytest.raises(ProfileError):
        ProfileStore(tmp_path).path(name)


def test_config_directory_follows_xdg_and_the_override(monkeypatch, tmp_path):
    monkeypatch.delenv("SIPIM_CLIENT_HOME", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert client_home() == tmp_path / "xdg" / "sipim"
    monkeypatch.setenv("SIPIM_CLIENT_HOME", str(tmp_path / "override"))
    assert client_home() == tmp_path / "override"


def test_local_password_profile_uses_the_user_credentials():
    config = local_password_config(user="bob", password="pw", domain="example.test", sip_host="::1", sip_port=5061,
                                   https_base="https://[::1]:8443", ca_pem=None)
    assert config.auth_username == "bob" and config.token is None
    assert config.sip_server() == ("::1", 5061)
    assert config.instance_id.startswith("urn:uuid:")
