"""XDM over HTTPS with a third-party HTTP client: `requests` and its own digest
(RFC 7616) implementation, against a real `sipim serve` and its private CA.

XCAP (RFC 4825) on contact lists with etags and conflicts, the JSON API over the
same documents, the directory, privacy rules enforced in messaging, admin scope,
and the audit trail -- on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest
import requests
from requests.auth import HTTPDigestAuth

from tests.support.im import cpim_message, wait_imdn
from tests.support.sipua import TestUA

RL = "urn:ietf:params:xml:ns:resource-lists"
DOMAIN = "example.test"
ALICE_LISTS = f"/xcap/resource-lists/users/sip:alice@{DOMAIN}/index"


@pytest.fixture(scope="module")
def xdm(server):
    server.add_user("dave", "dave-secret", "--phone", "+14155550104")
    server.add_user("erin", "erin-secret", "--phone", "+14155550199")
    server.add_user("frank", "frank-secret", "--phone", "+14155550199")
    server.add_user("olive", "olive-secret", "--admin")
    return server


class Client:
    def __init__(self, server, user: str, password: str | None = None) -> None:
        self.base = f"https://127.0.0.1:{server.ports['wss']}"
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would replace the server's CA
        self.session.verify = str(server.ca_file)
        self.session.auth = HTTPDigestAuth(user, password or f"{user}-secret")

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session.request(method, self.base + path, timeout=10, **kwargs)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, data, content_type, **kw):
        headers = {"Content-Type": content_type, **kw.pop("headers", {})}
        return self.request("PUT", path, data=data, headers=headers, **kw)


def selector(path: str) -> str:
    return "/~~/" + quote(path, safe="/")


def audit(server, *args) -> list[dict]:
    return json.loads(server.cli("audit", "--json", *args).stdout)


def lists_document(*entries: str) -> bytes:
    items = "".join(f'<entry uri="{uri}"/>' for uri in entries)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<resource-lists xmlns="{RL}">'
            f'<list name="friends">{items}</list></resource-lists>').encode()


def test_rfc4825_contact_list_created_read_and_updated_with_etags(xdm):
    alice = Client(xdm, "alice")
    alice.request("DELETE", ALICE_LISTS)  # the module's server is shared
    created = alice.put(ALICE_LISTS, lists_document(f"sip:bob@{DOMAIN}"), "application/resource-lists+xml",
                        headers={"If-None-Match": "*"})
    assert created.status_code == 201, created.text
    etag = created.headers["ETag"]

    fetched = alice.get(ALICE_LISTS)
    assert fetched.status_code == 200
    assert fetched.headers["Content-Type"].startswith("application/resource-lists+xml")  # §8.3
    assert fetched.headers["ETag"] == etag and b"sip:bob@example.test" in fetched.content
    assert alice.get(ALICE_LISTS, headers={"If-None-Match": etag}).status_code == 304  # §7.11

    # §7.4: insert an element, conditional on the etag just read.
    entry_path = ALICE_LISTS + selector('resource-lists/list[@name="friends"]/entry[@uri="sip:carol@example.test"]')
    inserted = alice.put(entry_path, b'<entry uri="sip:carol@example.test"><display-name>Carol</display-name></entry>',
                         "application/xcap-el+xml", headers={"If-Match": etag})
    assert inserted.status_code == 201, inserted.text
    assert inserted.headers["ETag"] != etag  # §8.5: one new etag for the whole document

    # Another client still holding the old etag loses: 412, and nothing changes.
    stale = alice.put(entry_path, b'<entry uri="sip:carol@example.test"/>', "application/xcap-el+xml",
                      headers={"If-Match": etag})
    assert stale.status_code == 412
    element = alice.get(entry_path)
    assert element.headers["Content-Type"].startswith("application/xcap-el+xml")  # §8.3
    assert b"<display-name>Carol</display-name>" in element.content
    name = alice.get(ALICE_LISTS + selector('resource-lists/list[@name="friends"]/@name'))
    assert name.content == b"friends" and name.headers["Content-Type"].startswith("application/xcap-att+xml")

    # The JSON API reads the same document.
    contacts = alice.get("/api/v1/contacts").json()
    assert {c["uri"] for c in contacts["contacts"]} == {"sip:bob@example.test", "sip:carol@example.test"}
    assert f'"{contacts["etag"]}"' == inserted.headers["ETag"]

    # §8.4: delete the element; the answer carries the document's new etag.
    deleted = alice.request("DELETE", entry_path)
    assert deleted.status_code == 200 and deleted.headers["ETag"] not in (etag, inserted.headers["ETag"])
    assert alice.get(entry_path).status_code == 404


def test_rfc4826_3_4_5_duplicate_entry_uri_is_a_uniqueness_failure(xdm):
    alice = Client(xdm, "alice")
    alice.request("DELETE", ALICE_LISTS)
    duplicate = lists_document("sip:bob@example.test", "sip:bob@example.test")
    conflict = alice.put(ALICE_LISTS, duplicate, "application/resource-lists+xml")
    assert conflict.status_code == 409
    assert conflict.headers["Content-Type"].startswith("application/xcap-error+xml")  # §11
    assert b"<uniqueness-failure" in conflict.content and b"entry/@uri" in conflict.content
    assert alice.put(ALICE_LISTS, b"<resource-lists", "application/resource-lists+xml").status_code == 409
    assert alice.get(ALICE_LISTS).status_code == 404  # nothing was stored


def test_another_users_documents_are_refused_and_recorded(xdm):
    alice, bob = Client(xdm, "alice"), Client(xdm, "bob")
    alice.put(ALICE_LISTS, lists_document(), "application/resource-lists+xml")
    assert bob.get(ALICE_LISTS).status_code == 403
    assert bob.put(ALICE_LISTS, lists_document(), "application/resource-lists+xml").status_code == 403
    # Someone else's tree is 403 whether or not that user exists (no probing for users).
    assert bob.get(ALICE_LISTS.replace("alice", "nobody")).status_code == 403
    refused = audit(xdm, "--user", "bob", "--result", "xdm refused")
    assert any(r["transport"] == "https" and r["aor"] == "sip:alice@example.test" for r in refused)


def test_admin_scope_reaches_any_users_documents_and_the_directory(xdm):
    olive = Client(xdm, "olive")
    alice = Client(xdm, "alice")
    alice.put(ALICE_LISTS, lists_document("sip:bob@example.test"), "application/resource-lists+xml")
    assert olive.get(ALICE_LISTS).status_code == 200
    assert olive.request("PUT", "/api/v1/users/dave/phones", json={"phones": ["+1 415 555 0104", "+14155550114"]}).json() == {
        "user_id": "sip:dave@example.test", "phones": ["+14155550104", "+14155550114"]}
    assert olive.request("PUT", "/api/v1/users/dave/phones", json={"phones": ["12"]}).status_code == 400
    assert alice.get("/api/v1/users/dave/phones").status_code == 403
    assert any(r["aor"] == "sip:alice@example.test" for r in audit(xdm, "--user", "olive", "--result", "admin access"))


def test_wrong_credentials_are_refused_and_recorded(xdm):
    intruder = Client(xdm, "carol", "not-her-password")
    assert intruder.get("/api/v1/contacts").status_code == 403
    failures = audit(xdm, "--user", "carol", "--result", "auth failed")
    assert any(f["transport"] == "https" and "/api/v1/contacts" in f["reason"] for f in failures)


def test_a_raw_number_is_refused_then_lookup_and_add_works(xdm):
    alice = Client(xdm, "alice")
    for raw in ("tel:+14155550104", "sip:+14155550104@example.test;user=phone", "+14155550104"):
        refused = alice.request("POST", "/api/v1/contacts", json={"uri": raw})
        assert refused.status_code == 409 and "look the number up first" in refused.json()["error"]
    alice.request("DELETE", ALICE_LISTS)
    alice.put(ALICE_LISTS, lists_document(), "application/resource-lists+xml")
    xcap_refused = alice.put(ALICE_LISTS + selector('resource-lists/list[@name="friends"]/entry[@uri="tel:+14155550104"]'),
                             b'<entry uri="tel:+14155550104"/>', "application/xcap-el+xml")
    assert xcap_refused.status_code == 409
    assert b"<constraint-failure" in xcap_refused.content and b"look the number up first" in xcap_refused.content

    found = alice.get("/api/v1/lookup", params={"number": "+1 (415) 555-0104"})
    assert found.status_code == 200 and found.json()["user_id"] == "sip:dave@example.test"
    added = alice.request("POST", "/api/v1/contacts", json={"uri": found.json()["user_id"], "display_name": "Dave"})
    assert added.status_code == 201
    assert {"uri": "sip:dave@example.test", "display_name": "Dave", "list": "default"} in \
        alice.get("/api/v1/contacts").json()["contacts"]
    again = alice.request("POST", "/api/v1/contacts", json={"uri": "sip:dave@example.test"})
    assert again.status_code == 409
    assert alice.request("DELETE", "/api/v1/contacts", params={"uri": "sip:dave@example.test"}).status_code == 204


def test_lookup_invalid_unknown_ambiguous_and_hidden(xdm):
    alice, dave = Client(xdm, "alice"), Client(xdm, "dave")
    assert alice.get("/api/v1/lookup", params={"number": "12"}).status_code == 400
    assert alice.get("/api/v1/lookup", params={"number": "+14155550177"}).status_code == 404
    assert alice.get("/api/v1/lookup", params={"number": "+14155550199"}).status_code == 409
    assert dave.request("PUT", "/api/v1/privacy", json={"number_discoverable": False}).status_code == 200
    try:
        assert alice.get("/api/v1/lookup", params={"number": "+14155550104"}).status_code == 404  # like unknown
    finally:
        dave.request("PUT", "/api/v1/privacy", json={})


def test_profile_is_readable_by_others_only_as_the_owners_rules_allow(xdm):
    alice, bob = Client(xdm, "alice"), Client(xdm, "bob")
    put = alice.request("PUT", "/api/v1/profile", json={"display_name": "Alice A.", "status_text": "hi",
                                                        "avatar_url": "https://example.test/a.png"})
    assert put.status_code == 200, put.text
    assert bob.get("/api/v1/users/alice/profile").json()["status_text"] == "hi"
    profile_path = f"/xcap/org.sipim.profile/users/sip:alice@{DOMAIN}/index"
    assert bob.get(profile_path).status_code == 200
    alice.request("PUT", "/api/v1/privacy", json={"profile_visible": False})
    try:
        assert bob.get("/api/v1/users/alice/profile").status_code == 404
        assert bob.get(profile_path).status_code == 403
        assert alice.get("/api/v1/profile").json()["display_name"] == "Alice A."
    finally:
        alice.request("PUT", "/api/v1/privacy", json={})
    reads = audit(xdm, "--user", "bob", "--result", "profile read")
    assert any(r["aor"] == "sip:alice@example.test" for r in reads)
    assert audit(xdm, "--user", "alice", "--result", "rules changed")


def test_a_blocked_senders_message_never_reaches_the_recipients_devices_or_store(xdm):
    bob_http = Client(xdm, "bob")
    blocked = bob_http.request("PUT", "/api/v1/privacy", json={"blocked_users": ["alice"]})
    assert blocked.status_code == 200 and blocked.json()["blocked_users"] == ["sip:alice@example.test"]
    alice = TestUA("tls", "127.0.0.1", xdm.ports["tls"], "alice", "alice-secret", ca_file=xdm.ca_file,
                   instance=str(uuid.uuid4())).connect()
    bob = TestUA("tls", "127.0.0.1", xdm.ports["tls"], "bob", "bob-secret", ca_file=xdm.ca_file,
                 instance=str(uuid.uuid4())).connect()
    carol = TestUA("tls", "127.0.0.1", xdm.ports["tls"], "carol", "carol-secret", ca_file=xdm.ca_file,
                   instance=str(uuid.uuid4())).connect()
    try:
        for agent in (alice, carol):
            assert agent.register().status == 200
        # bob is offline: a message that was not blocked would be stored for his devices (202).
        while_offline = f"stored for later? no {uuid.uuid4()}"
        assert alice.message("bob", while_offline).status == 202
        assert bob.register().status == 200
        secret = f"you will never see this {uuid.uuid4()}"
        # Silent by default: the answer a delivered message gets (bob is online).
        assert alice.message("bob", secret).status == 200
        allowed = f"carol is not blocked {uuid.uuid4()}"
        assert carol.message("bob", allowed).status == 200
        assert bob.wait_request("MESSAGE", body=allowed.encode()).body == allowed.encode()
        seen = [r.body for r in bob.drain(timeout=1.0)]
        assert secret.encode() not in seen and while_offline.encode() not in seen
        for owner in ("bob", "alice"):
            history = json.loads(xdm.cli("history", owner, "--json", "--limit", "200").stdout)
            assert all(entry["body"] not in (secret, while_offline) for entry in history)
    finally:
        bob_http.request("PUT", "/api/v1/privacy", json={})
        for agent in (alice, bob, carol):
            agent.close()


def test_a_silent_block_looks_to_the_sender_like_an_accepted_message(xdm):
    # What alice sees of a message to offline dave, blocked or not: 202, the copy on her
    # other device, the "stored" processing notification she asked for (RFC 5438 §8.1).
    # (dave and erin have never registered: no binding of theirs outlives an earlier test.)
    dave_http = Client(xdm, "dave")
    assert dave_http.request("PUT", "/api/v1/privacy", json={"blocked_users": ["alice"]}).status_code == 200

    def connect(user):
        agent = TestUA("tls", "127.0.0.1", xdm.ports["tls"], user, f"{user}-secret", ca_file=xdm.ca_file,
                       instance=str(uuid.uuid4())).connect()
        assert agent.register().status == 200
        return agent

    phone, laptop = connect("alice"), connect("alice")
    try:
        seen = {}
        for recipient in ("dave", "erin"):  # erin does not block alice
            body, imdn_id = cpim_message("alice", recipient, f"hello {recipient}", "positive-delivery, processing")
            assert phone.message(recipient, body, content_type="message/cpim").status == 202
            copy = laptop.wait_request("MESSAGE", body=body)
            _, report = wait_imdn(phone, imdn_id)
            seen[recipient] = (copy.from_.uri.user, report.kind, report.status)
        assert seen["dave"] == seen["erin"] == ("alice", "processing", "stored")
        dave = connect("dave")
        try:
            assert [r.body for r in dave.drain(timeout=1.0) if b"hello dave" in r.body] == []
        finally:
            dave.close()
    finally:
        dave_http.request("PUT", "/api/v1/privacy", json={})
        phone.close()
        laptop.close()


def test_number_lookups_share_one_bound_over_https_and_messages_to_numbers(make_server):
    # A 404 to a MESSAGE for tel:+N tells whether N is a user's number as well as the
    # lookup API does: both count against directory_lookups_per_minute.
    server = make_server(config_text="directory_lookups_per_minute = 3\n", domain="example.test")
    for name in ("alice", "bob"):
        server.add_user(name, f"{name}-secret")
    server.add_user("carol", "carol-secret", "--phone", "+14155550103")
    alice_http = Client(server, "alice")
    alice = TestUA("tls", "127.0.0.1", server.ports["tls"], "alice", "alice-secret", ca_file=server.ca_file,
                   instance=str(uuid.uuid4())).connect()
    try:
        assert alice_http.get("/api/v1/lookup", params={"number": "+14155550103"}).status_code == 200
        assert alice_http.get("/api/v1/lookup", params={"number": "+14155550100"}).status_code == 404
        assert alice.message("carol", "by number", uri="tel:+14155550103").status == 202
        refused = alice.message("carol", "harvesting?", uri="tel:+14155550104")
        assert refused.status == 403 and 1 <= int(refused.headers.get("Retry-After")) <= 60
        limited = alice_http.get("/api/v1/lookup", params={"number": "+14155550103"})
        assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
        # Per user: bob still looks up; alice still writes to User IDs.
        assert Client(server, "bob").get("/api/v1/lookup", params={"number": "+14155550103"}).status_code == 200
        assert alice.message("carol", "by User ID").status == 202
    finally:
        alice.close()


def test_openapi_document_is_served_without_credentials(xdm):
    session = requests.Session()
    session.trust_env = False
    response = session.get(f"https://127.0.0.1:{xdm.ports['wss']}/api/v1/openapi.json",
                           verify=str(xdm.ca_file), timeout=10)
    assert response.status_code == 200 and "/api/v1/lookup" in response.json()["paths"]


def test_im_blocked_answer_403_and_a_blocked_domain(make_server):
    server = make_server(config_text='im_blocked_answer = "403"\n', domain="example.test")
    for name in ("alice", "bob"):
        server.add_user(name, f"{name}-secret")
    bob_http = Client(server, "bob")
    # Blocking the sender's whole domain (RFC 4745 §7.1.3.2 <except domain>) over XCAP itself.
    rules = (b'<ruleset xmlns="urn:ietf:params:xml:ns:common-policy" xmlns:ir="urn:sipim:xml:ns:im-rules">'
             b'<rule id="all-but-example"><conditions><identity><many><except domain="example.test"/></many>'
             b'</identity></conditions><actions><ir:im-handling>allow</ir:im-handling></actions></rule></ruleset>')
    put = bob_http.put(f"/xcap/org.sipim.im-rules/users/sip:bob@{DOMAIN}/index", rules, "application/auth-policy+xml")
    assert put.status_code == 201, put.text
    assert bob_http.get("/api/v1/privacy").json()["custom"] is True
    alice = TestUA("tls", "127.0.0.1", server.ports["tls"], "alice", "alice-secret", ca_file=server.ca_file,
                   instance=str(uuid.uuid4())).connect()
    try:
        assert alice.register().status == 200
        assert alice.message("bob", "blocked by domain").status == 403
    finally:
        alice.close()
    assert json.loads(server.cli("history", "bob", "--json").stdout) == []
    assert audit(server, "--user", "bob", "--result", "rules changed")
