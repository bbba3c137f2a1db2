"""The client's settings file: the same TOML rules as the server's, without the server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sipim.client.config import ClientConfig, ConfigError


def test_toml_keys_in_any_table_set_the_fields_with_their_types(tmp_path):
    settings = tmp_path / "client.toml"
    settings.write_text("client_register_expires = 300\n[timers]\nclient-t1 = 1\n"
                        "[recovery]\nclient_recovery_max = 60\n")
    config = ClientConfig()
    config.load_toml(settings)
    assert config.client_register_expires == 300
    assert config.client_t1 == 1.0 and isinstance(config.client_t1, float)
    assert config.client_recovery_max == 60.0
    assert config.client_keepalive_timeout == ClientConfig().client_keepalive_timeout


@pytest.mark.parametrize("text, message", [
    ("min_expires = 60\n", "unknown client setting 'min_expires'"),  # a server key is not a client key
    ("client_register_expires = true\n", "bad value for 'client_register_expires'"),
    ("client_t1 = [\n", "client.toml"),
])
def test_a_wrong_setting_is_a_config_error_naming_it(tmp_path, text, message):
    settings = tmp_path / "client.toml"
    settings.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        ClientConfig().load_toml(settings)
    with pytest.raises(ConfigError, match="not found"):
        ClientConfig().load_toml(tmp_path / "missing.toml")


def test_the_client_does_not_load_the_server_configuration():
    code = "import sys, sipim.client.cli; print('sipim.config' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
