"""External-core mode pieces without sockets: trust domain, asserted identity, the
third-party REGISTER report, configuration checks (RFC 3325, RFC 3261 §10.2)."""

from __future__ import annotations

import pytest

from sipim.config import Config, ConfigError
from sipim.external.gateway import core_target
from sipim.external.proxy import asserted_identity, device_source
from sipim.external.registrations import read_report
from sipim.external.trust import TrustedCores
from sipim.sip.parser import parse_message
from sipim.net import Source

CORE = Source("tcp", ("10.0.0.5", 40000), ("10.0.0.9", 5080))


def request(*headers: str, method: str = "MESSAGE") -> object:
    text = (f"{method} sip:bob@example.com SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 10.0.0.5:5070;branch=z9hG4bK-core\r\n"
            "Via: SIP/2.0/TLS dev.invalid:5061;branch=z9hG4bK-dev;received=198.51.100.7;rport=50443\r\n"
            "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
            f"Call-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 69\r\n"
            + "".join(h + "\r\n" for h in headers) + "Content-Length: 0\r\n\r\n")
    return parse_message(text.encode())


def config(**values) -> Config:
    cfg = Config(domain="example.com", listen=("tcp:0.0.0.0:5080",))
    for name, value in values.items():
        setattr(cfg, name, value)
    return cfg


def test_rfc3325_trust_domain_is_addresses_and_ranges():
    trusted = TrustedCores(["10.0.0.0/24", "192.0.2.1", "::1"])
    assert "10.0.0.200" in trusted and "192.0.2.1" in trusted and "::1" in trusted
    assert "::ffff:10.0.0.3" in trusted  # an IPv4 peer on a dual-stack socket
    assert "10.0.1.1" not in trusted and "192.0.2.2" not in trusted and "not-an-ip" not in trusted


def test_rfc3325_9_1_identity_is_the_sip_uri_of_our_domain_in_pai():
    cfg = config()
    identity = asserted_identity(request('P-Asserted-Identity: "Alice" <sip:alice@example.com>',
                                         "P-Asserted-Identity: <tel:+15551234567>"), cfg)
    assert identity is not None
    assert (identity.username, identity.aor, identity.display_name) == ("alice", "sip:alice@example.com", "Alice")
    assert asserted_identity(request("P-Asserted-Identity: <sip:alice@elsewhere.org>"), cfg) is None
    assert asserted_identity(request(), cfg) is None


def test_rfc3581_device_source_read_from_the_devices_via():
    source = device_source(request(), CORE)
    assert (source.transport, source.remote) == ("tls", ("198.51.100.7", 50443))
    assert source.flow is None


def test_rfc3261_10_2_third_party_report_is_read():
    report = read_report(request('Sipim-Registration: result=auth-failed;source="198.51.100.7:50443";'
                                 'transport=tls;auth-user="alice"', method="REGISTER"), CORE)
    assert (report.result, report.source, report.transport, report.auth_user) == (
        "auth-failed", "198.51.100.7:50443", "tls", "alice")
    # Without the header: a plain third-party REGISTER, from the core itself.
    plain = read_report(request(method="REGISTER"), CORE)
    assert (plain.result, plain.source, plain.transport, plain.auth_user) == (
        "registered", "10.0.0.5:40000", "tcp", None)


def test_external_core_config_needs_trusted_cores_and_core_uri():
    with pytest.raises(ConfigError, match="trusted_cores"):
        config(external_core=True, core_uri="sip:10.0.0.5:5070;transport=tcp").validate()
    with pytest.raises(ConfigError, match="core_uri"):
        config(external_core=True, trusted_cores=("10.0.0.5",)).validate()
    with pytest.raises(ConfigError, match="not an IP"):
        config(external_core=True, trusted_cores=("core.example",), core_uri="sip:10.0.0.5").validate()
    with pytest.raises(ConfigError, match="sip: URI"):
        config(external_core=True, trusted_cores=("10.0.0.5",), core_uri="tel:+1555").validate()
    config(external_core=True, trusted_cores=("10.0.0.0/8",), core_uri="sip:10.0.0.5:5070;transport=tcp").validate()


def test_core_target_from_core_uri():
    assert (lambda t: (t.transport, t.host, t.port))(core_target("sip:10.0.0.5:5070;transport=tcp")) == \
        ("tcp", "10.0.0.5", 5070)
    assert (lambda t: (t.transport, t.port))(core_target("sips:core.example.com")) == ("tls", 5061)
    assert (lambda t: (t.transport, t.port))(core_target("sip:10.0.0.5")) == ("udp", 5060)
