"""The `sipim` command: administration works, and bad input gives one line, not a traceback."""

from __future__ import annotations

import json

import pytest

from sipim.cli import users_elsewhere
from sipim.config import Config
from tests.support.server import DOMAIN, SipimProcess, run_cli


def cli(tmp_path, *args, check=False, database=None):
    return run_cli(tmp_path / "data", *args, check=check, database=database)


def assert_one_line_error(result, code, text):
    assert result.returncode == code, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert text in result.stderr


def test_user_add_list_passwd_remove(tmp_path, database_url):
    db = database_url
    out = cli(tmp_path, "user", "add", "alice", "--phone", "+14155550123", "--display-name", "Alice A",
              database=db, check=True)
    assert "added sip:alice@example.test" in out.stdout
    assert "password:" in out.stdout  # generated, shown once
    users = json.loads(cli(tmp_path, "user", "list", "--json", database=db, check=True).stdout)
    assert users == [{"user": "alice", "domain": "example.test", "display_name": "Alice A",
                      "phones": ["+14155550123"], "disabled": False, "admin": False}]
    assert "password changed" in cli(tmp_path, "user", "passwd", "alice", "--password", "pw2",
                                     database=db, check=True).stdout
    assert_one_line_error(cli(tmp_path, "user", "add", "sip:alice@example.test", "--password", "x", database=db),
                          1, "already exists")
    assert "removed" in cli(tmp_path, "user", "remove", "alice", database=db, check=True).stdout
    assert_one_line_error(cli(tmp_path, "user", "remove", "alice", database=db), 1, "no user")


def test_only_ha1_values_are_stored_never_the_password(tmp_path):
    cli(tmp_path, "user", "add", "alice", "--password", "correct-horse-battery", check=True)
    assert b"correct-horse-battery" not in (tmp_path / "data" / "sipim.db").read_bytes()


@pytest.mark.parametrize("args, code, text", [
    (("serve", "--listen", "bogus:1.2.3.4:5"), 2, "unknown transport"),
    (("serve", "--listen", "udp:127.0.0.1:99999"), 2, "port"),
    (("user", "add", "bad name!"), 1, "invalid user name"),
    (("user", "add", "dave", "--phone", "12345"), 1, "invalid phone number"),
    (("user", "add", "dave@other.example"), 1, "not in this server's domain"),
    (("audit", "--since", "yesterday-ish"), 1, "--since"),
    (("device", "revoke", "alice", "urn:uuid:nope"), 1, "no registered device"),
    (("serve", "--config", "/nonexistent/sipim.toml"), 2, "not found"),
])
def test_bad_arguments_give_one_line_and_nonzero_exit(tmp_path, args, code, text):
    assert_one_line_error(cli(tmp_path, *args), code, text)


def test_unknown_config_key_is_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[registrar]\nmin_expirs = 10\n")
    assert_one_line_error(cli(tmp_path, "serve", "--config", str(config)), 2, "min_expirs")


def test_unreachable_postgresql_is_one_line(tmp_path):
    result = cli(tmp_path, "user", "list", database="postgresql://postgres@127.0.0.1:1/test")
    assert_one_line_error(result, 1, "127.0.0.1")


def test_audit_filters_and_json(tmp_path):
    result = cli(tmp_path, "audit", "--json", "--result", "registered", check=True)
    assert json.loads(result.stdout) == []


def test_user_phone_numbers_and_admin_flag(tmp_path):
    def cli(*args, code=0):
        result = run_cli(tmp_path, *args, check=False)
        assert result.returncode == code, result.stderr
        return result

    cli("user", "add", "alice", "--password", "pw", "--phone", "+1 415 555 0123")
    cli("user", "phone", "add", "alice", "+14155550124")
    assert "already has" in cli("user", "phone", "add", "alice", "+14155550124", code=1).stderr
    invalid = cli("user", "phone", "add", "alice", "12345", code=1).stderr
    assert invalid.startswith("sipim: invalid phone number") and "Traceback" not in invalid
    cli("user", "phone", "remove", "alice", "+14155550123")
    cli("user", "admin", "alice")
    cli("user", "passwd", "alice", "--password", "new")  # keeps the flag
    listed = json.loads(cli("user", "list", "--json").stdout)[0]
    assert listed["phones"] == ["+14155550124"] and listed["admin"] is True
    cli("user", "admin", "alice", "--revoke")
    assert json.loads(cli("user", "list", "--json").stdout)[0]["admin"] is False


def test_user_add_says_which_domain_it_chose_and_serve_warns_when_no_user_is_in_its_domain(tmp_path):
    # The trap: users added before the first `sipim serve --domain D` land in the default
    # domain, and cannot register with the server of D.
    data = tmp_path / "data"
    added = run_cli(data, "user", "add", "alice", "--password", "pw", domain=None).stdout
    default = added.split("added sip:alice@", 1)[1].split()[0]
    assert default != DOMAIN
    assert (f"domain {default} (" in added and "no --domain given and no server has run in this data directory; "
            "use --domain D" in added)

    server = SipimProcess(data, listen=("udp:127.0.0.1:0",)).start()
    try:
        banner = "".join(server.output)
    finally:
        server.stop()
    assert f"WARNING: no user of domain {DOMAIN}; this store has users only in {default} (1 user)" in banner
    assert f"sipim serve --domain {default}" in banner and f"sipim user add NAME --domain {DOMAIN}" in banner
    assert f"WARNING sipim: no user of domain {DOMAIN}" in server.log()

    added = run_cli(data, "user", "add", "bob", "--password", "pw", domain=None).stdout
    assert f"added sip:bob@{DOMAIN}" in added
    assert f"domain {DOMAIN} (from the data directory, where `sipim serve` last ran)" in added
    given = run_cli(data, "user", "add", "carol", "--password", "pw").stdout  # --domain: nothing to explain
    assert given.splitlines()[0] == f"added sip:carol@{DOMAIN}" and "domain" not in given.replace(DOMAIN, "")

    server = SipimProcess(data, listen=("udp:127.0.0.1:0",)).start()  # bob and carol are in the domain now
    try:
        assert "no user of domain" not in "".join(server.output)
    finally:
        server.stop()


def test_users_only_in_an_alias_of_the_served_domain_are_not_warned_about():
    config = Config(domain="example.com", domain_aliases=("192.0.2.7",))
    assert users_elsewhere(config, {}) is None  # no users at all: nothing was added in the wrong place
    assert users_elsewhere(config, {"Example.COM": 3}) is None
    assert users_elsewhere(config, {"192.0.2.7": 1, "localhost": 2}) is None
    warning = " ".join(users_elsewhere(config, {"localhost": 2, "other.example": 1}) or [])
    assert "this store has users only in localhost (2 users), other.example (1 user)" in warning
