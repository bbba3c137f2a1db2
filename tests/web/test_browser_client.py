"""The browser client end to end: Debian's Chromium (Playwright) running the JsSIP
bundle against a real sipim over WSS, on both storage engines."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import expect

from tests.interop.clients import Baresip, Target, User
from tests.interop.conftest import require_binary
from tests.interop.linphone import Linphone
from tests.support.provision import outbox, wait_for_code
from tests.support.sipua import TestUA
from tests.support.waiting import wait_for

from .conftest import PASSWORDS, PHONES
from .webclient import BrowserUser

pytestmark = pytest.mark.browser
DOMAIN = "example.test"


def aor(name: str) -> str:
    return f"sip:{name}@{DOMAIN}"


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:8]}"


@pytest.fixture
def people(browser, web_server):
    """Open browsers signed in with User ID and password; all closed after the test."""
    opened: list[BrowserUser] = []

    def sign_in(name: str, **kwargs) -> BrowserUser:
        person = BrowserUser(browser, web_server, **kwargs).open()
        opened.append(person)
        return person.sign_in_with_password(name, PASSWORDS[name]).wait_registered()

    yield sign_in
    for person in opened:
        assert not person.errors, f"script errors in the page: {person.errors}"
        person.close()


def live_devices(server, name: str) -> list[dict]:
    return json.loads(server.cli("device", "list", name, "--json").stdout)


def history(server, name: str, peer: str) -> list[dict]:
    return json.loads(server.cli("history", name, "--json", "--with", peer).stdout)


def test_rfc5438_two_browsers_chat_both_ways_with_delivery_then_display_ticks(people, web_server):
    alice, bob = people("alice"), people("bob")
    bob.open_chat("carol")  # bob looks at another conversation: alice's message is delivered, not read

    first = unique("hello bob")
    alice.open_chat("bob")
    alice.send(first)
    bob_conversation = bob.page.locator(f'[data-testid="conversation"][data-peer="{aor("alice")}"]')
    expect(bob_conversation.get_by_test_id("unread")).to_have_text("1")
    # RFC 5438 §7.2.1.1: bob's browser answers positive-delivery at once ...
    alice.expect_tick(first, "delivered")

    # ... and display only once the message is on screen (§7.2.1.2).
    bob.open_conversation(aor("alice"))
    bob.expect_message(first, "in")
    alice.expect_tick(first, "displayed")
    expect(bob_conversation.get_by_test_id("unread")).to_have_count(0)

    reply = unique("hi alice")
    bob.send(reply)
    alice.expect_message(reply, "in")
    bob.expect_tick(reply, "displayed")  # alice has the conversation open

    # The server recorded the recipients' notifications in both users' history.
    statuses = {entry["body"].split("\r\n")[-1]: entry["status"] for entry in history(web_server, "alice", "bob")}
    assert statuses[first] == "displayed" and statuses[reply] == "displayed"


def test_reload_registers_the_same_device_again(people, web_server):
    frank = people("frank")
    instance = frank.instance()
    devices = live_devices(web_server, "frank")
    assert [d["instance"].strip("<>") for d in devices] == [f"urn:uuid:{instance}"]

    note = unique("before the reload")
    frank.open_chat("grace")
    frank.send(note)
    frank.expect_tick(note, "stored")  # grace has no device online

    frank.page.reload()
    frank.wait_registered()
    assert frank.instance() == instance
    # RFC 5626 §4.1: the same +sip.instance replaces the binding; no second device.
    devices = live_devices(web_server, "frank")
    assert [d["instance"].strip("<>") for d in devices] == [f"urn:uuid:{instance}"]
    assert len({d["binding_key"] for d in devices}) == 1
    frank.expect_message(note, "out")  # filled from history

    # Signing out revokes this browser's own credentials (and so its registration).
    device_id = frank.page.evaluate("JSON.parse(localStorage.getItem('sipim.device')).device.id")
    frank.page.get_by_test_id("sign-out").click()
    expect(frank.page.get_by_test_id("signin")).to_be_visible()
    assert frank.page.evaluate("localStorage.getItem('sipim.device')") is None
    assert frank.instance() == instance  # signing in again is still this browser
    credentials = json.loads(web_server.cli("device", "list", "frank", "--json", "--credentials").stdout)
    assert [c["revoked_at"] is not None for c in credentials if c["device_id"] == device_id] == [True]


def test_messages_sent_while_the_browser_was_closed_appear_after_sign_in(people, browser, web_server):
    dave = people("dave")
    returning_profile = dave.context.storage_state()
    dave.close()  # the browser is closed: its WebSocket (and the flow) is gone

    erin = people("erin")
    from_browser = unique("while you were away")
    erin.open_chat("dave")
    erin.send(from_browser)
    erin.expect_tick(from_browser, "stored")  # RFC 3428 §7: 202, kept for later

    from_phone = unique("plain text from a phone")
    with TestUA("tls", "127.0.0.1", web_server.ports["tls"], "grace", PASSWORDS["grace"],
                ca_file=web_server.ca_file) as grace:
        assert grace.message("dave", from_phone).status == 202

    # The same browser comes back: its stored device signs in by itself.
    returning = BrowserUser(browser, web_server, storage_state=returning_profile).open().wait_registered()
    try:
        returning.open_conversation(aor("grace"))
        returning.expect_message(from_phone, "in")
        returning.open_conversation(aor("erin"))
        returning.expect_message(from_browser, "in")
        erin.expect_tick(from_browser, "displayed")
        assert [d["instance"] for d in live_devices(web_server, "dave")] == \
            [f"<urn:uuid:{returning.instance()}>"]
        assert not returning.errors
    finally:
        returning.close()

    # A browser that never signed in before sees the same messages from history.
    other = people("dave")
    other.open_conversation(aor("grace"))
    other.expect_message(from_phone, "in")


def test_wrong_password_is_refused_and_nothing_is_kept(browser, web_server):
    stranger = BrowserUser(browser, web_server).open()
    try:
        stranger.sign_in_with_password("alice", "not-her-password")
        expect(stranger.page.get_by_test_id("signin-error")).not_to_be_empty()
        expect(stranger.page.get_by_test_id("status")).to_have_attribute("data-state", "signed-out")
        expect(stranger.page.get_by_test_id("main")).to_be_hidden()
        expect(stranger.page.get_by_test_id("pair-device")).to_be_hidden()
        assert stranger.page.evaluate("localStorage.getItem('sipim.device')") is None
    finally:
        stranger.close()


@pytest.mark.interop
def test_browser_user_chats_with_linphone_over_tls(people, web_server, tmp_path):
    """liblinphone (linphonec 5.1, Debian) reads the browser's CPIM; its text/plain
    reaches the browser.  (linphonec's own 200 to the MESSAGE is lost here: it sends
    responses over a new TLS connection to 127.0.0.1 and its mbedTLS cannot match IP
    subjectAltNames.  Its IMDNs are deflated; the server inflates them on receipt
    (tests/integration/test_pager.py), but no tick is asserted with this client.)"""
    require_binary("linphonec", "linphone-cli")
    with Linphone("127.0.0.1", web_server.ports["tls"], "tls", "carol", PASSWORDS["carol"], DOMAIN,
                  ca_file=web_server.ca_file, workdir=tmp_path / "linphone") as carol:
        carol.wait_registered()
        heidi = people("heidi")

        to_native = unique("hello from the browser")
        heidi.open_chat("carol")
        heidi.send(to_native)
        assert carol.wait_for_message(to_native, timeout=15).sender.startswith("sip:heidi@example.test")

        to_browser = unique("hello from linphone")
        answer = carol.send_message(aor("heidi"), to_browser, timeout=15)
        assert answer.status == 200  # heidi's browser took it at once
        heidi.expect_message(to_browser, "in")


@pytest.mark.interop
def test_baresip_messages_reach_the_browser(people, web_server, tmp_path):
    """baresip 1.0 sends text/plain and refuses CPIM with 415 (Accept: text/plain): what the
    browser sends it (CPIM) reaches it as the content alone."""
    require_binary("baresip", "baresip-core")
    target = Target("127.0.0.1", web_server.ports["tls"], "tls", DOMAIN, web_server.ca_file)
    heidi = people("heidi")
    with Baresip(target, User("carol", PASSWORDS["carol"]), contacts=[aor("heidi")],
                 workdir=tmp_path / "baresip") as carol:
        assert carol.wait_registered() == 200
        to_browser = unique("hello from baresip")
        carol.send_message(aor("heidi"), to_browser)
        heidi.open_conversation(aor("carol"))
        heidi.expect_message(to_browser, "in")
        # baresip prints its SIP trace as it goes: wait for the 200 to show up there.
        carol.wait_for_output(r"^SIP/2\.0 200 OK(?:\r?\n(?!\r?\n).*)*\r?\nCSeq: \d+ MESSAGE", timeout=10)
        assert 200 in carol.responses_to("MESSAGE")

        to_baresip = unique("hello from the browser")
        heidi.send(to_baresip)
        carol.wait_for_message(to_baresip, timeout=15)  # first as CPIM, which baresip refuses
        wait_for(lambda: [m for m in carol.received_messages()
                          if (m.content_type or "").startswith("text/plain") and m.body.strip() == to_baresip],
                 timeout=15, what="the CPIM content alone at baresip")
        assert any(m.outgoing and m.start_line.startswith("SIP/2.0 415") for m in carol.traced_messages())


def test_pairing_link_gives_a_second_browser_its_own_device(people, browser, web_server):
    judy = people("judy")
    judy.page.get_by_test_id("pair-device").click()
    link = judy.page.get_by_test_id("pairing-link")
    expect(link).to_have_attribute("href", re.compile(r"#pair="))
    expect(judy.page.get_by_test_id("pairing-qr")).to_have_attribute("src", re.compile(r"^data:image/svg\+xml"))
    url = link.get_attribute("href")

    # The new browser opens the link (what scanning the QR code does): no typing.
    second = BrowserUser(browser, web_server).open("#pair=" + url.split("#pair=", 1)[1]).wait_registered()
    try:
        assert "#pair" not in second.page.url  # the single-use code is not kept in the address
        assert second.instance() != judy.instance()
        instances = sorted(d["instance"].strip("<>") for d in live_devices(web_server, "judy"))
        assert instances == sorted([f"urn:uuid:{judy.instance()}", f"urn:uuid:{second.instance()}"])
        device = second.page.evaluate("JSON.parse(localStorage.getItem('sipim.device')).device")
        first = judy.page.evaluate("JSON.parse(localStorage.getItem('sipim.device')).device")
        assert device["auth_username"] != first["auth_username"]  # its own credentials

        # The same code does not work twice.
        third = BrowserUser(browser, web_server).open("#pair=" + url.split("#pair=", 1)[1])
        try:
            expect(third.page.get_by_test_id("signin-error")).not_to_be_empty()
            expect(third.page.get_by_test_id("status")).to_have_attribute("data-state", "signed-out")
        finally:
            third.close()
    finally:
        second.close()


def test_one_time_code_sign_in_from_the_outbox(browser, web_server):
    ivan = BrowserUser(browser, web_server).open()
    try:
        seen = len(outbox(web_server))
        ivan.page.get_by_test_id("otp-phone").fill(PHONES["ivan"])
        ivan.page.get_by_test_id("otp-request").click()
        code = wait_for_code(web_server, PHONES["ivan"], seen)
        ivan.page.get_by_test_id("otp-code").fill(code)
        ivan.page.get_by_test_id("otp-submit").click()
        ivan.wait_registered()
        expect(ivan.page.get_by_test_id("me")).to_contain_text(aor("ivan"))
        assert [d["instance"].strip("<>") for d in live_devices(web_server, "ivan")] == \
            [f"urn:uuid:{ivan.instance()}"]
    finally:
        ivan.close()


def test_zero_typing_sign_in_where_the_mobile_network_vouches_for_the_number(browser, tmp_path):
    """One click on a phone on its operator's network: the network adds the number header
    (simulated here by the browser profile), the server trusts it from that network only."""
    from tests.support.server import SipimProcess

    server = SipimProcess(tmp_path / "network", listen=("wss:127.0.0.1:0",),
                          config_text='provisioning_trusted_networks = ["127.0.0.0/8"]\n').start()
    try:
        server.add_user("nina", "nina-secret", "--phone", "+4915112345602")
        # Without the header (Wi-Fi, not the operator's network): the server says a code is needed.
        laptop = BrowserUser(browser, server).open()
        try:
            laptop.page.get_by_test_id("network-signin").click()
            expect(laptop.page.get_by_test_id("signin-error")).to_contain_text("a code is needed")
            expect(laptop.page.get_by_test_id("signin")).to_be_visible()
        finally:
            laptop.close()
        phone = BrowserUser(browser, server)
        phone.context.set_extra_http_headers({"X-MSISDN": "+4915112345602"})
        try:
            phone.open().page.get_by_test_id("network-signin").click()
            phone.wait_registered()
            expect(phone.page.get_by_test_id("me")).to_contain_text(aor("nina"))
            assert [d["instance"].strip("<>") for d in live_devices(server, "nina")] == \
                [f"urn:uuid:{phone.instance()}"]
            assert phone.errors == []
        finally:
            phone.close()
    finally:
        server.stop()


def test_password_alone_registers_when_the_server_has_no_provisioning(browser, web_server):
    """A sipim without the provisioning endpoints (simulated: /provisioning answers 404):
    the page registers with JsSIP's own MD5 digest and signs its API calls itself."""
    erin = BrowserUser(browser, web_server)
    erin.context.route("**/provisioning/**", lambda route: route.fulfill(status=404, body="404: Not Found"))
    try:
        erin.open().sign_in_with_password("erin", PASSWORDS["erin"]).wait_registered()
        stored = erin.page.evaluate("JSON.parse(localStorage.getItem('sipim.device')).device")
        assert stored["auth_username"] == "erin" and len(stored["ha1"]) == 32
        assert "password" not in stored  # only the HA1 is kept

        text = unique("signed in with the password alone")
        erin.open_chat("grace")
        erin.send(text)
        erin.expect_tick(text, "stored")
        erin.page.reload()
        erin.wait_registered()
        erin.open_conversation(aor("grace"))
        erin.expect_message(text, "out")  # history through HTTP digest computed in the page
        assert not erin.errors
    finally:
        erin.close()


def test_contact_list_from_the_xdm_side_and_a_phone_number_opens_the_users_chat(people, web_server):
    grace = people("grace")
    expect(grace.page.get_by_test_id("contacts-note")).to_have_text("No contacts yet.")

    grace.open_chat(PHONES["ivan"])  # looked up in the directory: the chat is with the user
    expect(grace.page.get_by_test_id("chat-peer")).to_have_attribute("data-peer", aor("ivan"))
    grace.page.get_by_test_id("add-contact").click()
    contact = grace.page.locator(f'[data-testid="contact"][data-uri="{aor("ivan")}"]')
    expect(contact).to_have_count(1)
    expect(grace.page.get_by_test_id("add-contact")).to_be_hidden()

    grace.page.reload()
    grace.wait_registered()
    expect(contact).to_have_count(1)  # kept on the server (GET /api/v1/contacts)


def test_a_revoked_browser_is_signed_out_and_says_why(people, web_server):
    kate = people("kate")
    device_id = kate.page.evaluate("JSON.parse(localStorage.getItem('sipim.device')).device.id")
    web_server.cli("device", "revoke", "kate", device_id)
    # The server closes its connection; JsSIP reconnects and its credentials are refused.
    expect(kate.page.get_by_test_id("signin")).to_be_visible()
    expect(kate.page.get_by_test_id("signin-error")).to_contain_text("revoked")
    assert kate.page.evaluate("localStorage.getItem('sipim.device')") is None
