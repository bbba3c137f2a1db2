"""The Config object: which host names mean this server, and that serving changes no setting."""

from __future__ import annotations

from sipim.config import Config


def test_served_domains_are_the_domain_and_its_aliases_only():
    config = Config(domain="Example.test", domain_aliases=("chat.example.test",),
                    listen=("tls:192.0.2.10:5061", "wss:0.0.0.0:8443"))
    assert config.served_domains() == {"example.test", "chat.example.test"}


def test_local_domains_add_the_listening_addresses_and_loopback_but_not_wildcards():
    # Simple clients address the server by IP: such a Request-URI means our domain.
    config = Config(domain="example.test", listen=("tls:192.0.2.10:5061", "wss:0.0.0.0:8443", "tcp:[::]:5060"))
    local = config.local_domains()
    assert {"example.test", "192.0.2.10", "localhost", "127.0.0.1", "::1", "[::1]"} <= local
    assert "0.0.0.0" not in local and "::" not in local


def test_local_domains_follow_settings_changed_before_start():
    config = Config(domain="example.test", listen=("tls:127.0.0.1:5061",))
    assert "192.0.2.20" not in config.local_domains()
    config.listen = ("tls:192.0.2.20:5061",)
    config.domain = "other.test"
    assert {"192.0.2.20", "other.test"} <= config.local_domains()
    assert "example.test" not in config.local_domains()


async def test_starting_a_server_changes_no_setting(tmp_path):
    import dataclasses

    from sipim.app import SipimServer

    config = Config(domain="example.test", data_dir=tmp_path, listen=("udp:127.0.0.1:0",), allow_insecure=True)
    before = dataclasses.asdict(config)
    server = SipimServer(config)
    await server.start()
    try:
        assert dataclasses.asdict(config) == before
    finally:
        await server.stop()
