"""The request router (sipim/core/router.py): RFC 3261 rules every server applies, and routing.

Driven with a real transaction layer on a fake clock and roles that record what they
see: no sockets, no sleeps.
"""

from __future__ import annotations

import asyncio

import pytest

from sipim.core.identity import Admission, AssertedIdentity
from sipim.core.router import RequestRouter
from sipim.sip.clock import FakeClock
from sipim.sip.errors import SIPParseError
from sipim.sip.message import Request, Response, make_response
from sipim.sip.parser import parse_message
from sipim.sip.transaction import TransactionLayer
from sipim.net import Source

DOMAIN = "example.test"
UDP = Source("udp", ("192.0.2.7", 40000), ("127.0.0.1", 5060))
ALICE = AssertedIdentity("alice", f"sip:alice@{DOMAIN}", None)


def request(method="MESSAGE", uri=f"sip:bob@{DOMAIN}", *, branch="z9hG4bK-1", via_host="192.0.2.7",
            rport=True, to_tag=None, extra=()):
    via = f"SIP/2.0/UDP {via_host}:5060;branch={branch}" + (";rport" if rport else "")
    return Request(method, uri, [
        ("Via", via), ("Max-Forwards", "70"),
        ("From", f"<sip:alice@{DOMAIN}>;tag=a1"),
        ("To", f"<sip:bob@{DOMAIN}>" + (f";tag={to_tag}" if to_tag else "")),
        ("Call-ID", "call-1"), ("CSeq", f"1 {method}"), *extra,
    ], b"")


class Recorder:
    """A role answering 200 (or what `answer` says) and noting what it was given."""

    def __init__(self, answer=None):
        self.seen: list[tuple[Request, Source, AssertedIdentity | None]] = []
        self._answer = answer

    def handle(self, request, source, identity):
        self.seen.append((request, source, identity))
        if self._answer is not None:
            return self._answer(request)
        return make_response(request, 200, "OK")


class Gate:
    """An identity gate admitting alice, refusing everyone else with 403."""

    def __init__(self, pending=False):
        self.pending = pending

    def admit(self, request, source):
        result = (Admission(ALICE, source) if "alice" in request.headers.get("From")
                  else make_response(request, 403, "Forbidden"))
        if not self.pending:
            return result

        async def later():
            return result
        return later()


class Node:
    def __init__(self, gate=None, trust_domain=None):
        self.clock = FakeClock(1000.0)
        self.sent: list[tuple[Response, object]] = []
        self.transactions = TransactionLayer(self.clock, self._send)
        self.router = RequestRouter(self.transactions, self._send, gate=gate, trust_domain=trust_domain)

    def _send(self, message, target):
        data = message if isinstance(message, bytes) else message.to_bytes()
        self.sent.append((parse_message(data), target))

    def answers(self):
        return [message for message, _ in self.sent]


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_rfc3261_11_2_options_lists_the_registered_roles_methods_types_and_options():
    node = Node(gate=Gate())
    node.router.add(Recorder(), ["REGISTER"], supported=("path", "gruu"))
    node.router.add(Recorder(), ["MESSAGE"], identified=True, accept=("text/plain", "message/cpim"))
    node.router.receive(request("OPTIONS"), UDP)
    [answer] = node.answers()
    assert answer.status == 200
    assert ", ".join(answer.headers.get_all("Allow")) == "REGISTER, MESSAGE, OPTIONS, ACK, CANCEL"
    assert ", ".join(answer.headers.get_all("Accept")) == "text/plain, message/cpim"
    assert ", ".join(answer.headers.get_all("Supported")) == "path, gruu"


def test_a_new_role_appears_in_allow_with_no_change_to_the_router():
    node = Node()
    node.router.add(Recorder(), ["SUBSCRIBE", "notify"])
    assert node.router.allow == "SUBSCRIBE, NOTIFY, OPTIONS, ACK, CANCEL"
    node.router.receive(request("SUBSCRIBE"), UDP)
    assert node.answers()[0].status == 200


def test_rfc3261_8_2_1_a_method_no_role_serves_gets_405_with_allow():
    node = Node()
    node.router.add(Recorder(), ["REGISTER"])
    node.router.receive(request("INVITE"), UDP)
    [answer] = node.answers()
    assert answer.status == 405
    assert ", ".join(answer.headers.get_all("Allow")) == "REGISTER, OPTIONS, ACK, CANCEL"


def test_rfc3261_9_2_cancel_matching_no_transaction_gets_481():
    node = Node()
    node.router.receive(request("CANCEL"), UDP)
    assert [a.status for a in node.answers()] == [481]


def test_rfc3261_17_2_3_ack_is_never_answered():
    node = Node()
    node.router.receive(request("ACK", to_tag="x"), UDP)
    assert node.sent == []


def test_rfc3261_8_2_6_2_final_responses_get_a_to_tag_and_keep_an_existing_one():
    node = Node()
    node.router.add(Recorder(), ["MESSAGE"])
    node.router.receive(request(branch="z9hG4bK-a"), UDP)
    node.router.receive(request(branch="z9hG4bK-b", to_tag="theirs"), UDP)
    first, second = node.answers()
    assert first.to.tag
    assert second.to.tag == "theirs"


def test_rfc3581_4_response_goes_to_the_source_address_and_via_is_stamped():
    node = Node()
    role = Recorder()
    node.router.add(role, ["MESSAGE"])
    node.router.receive(request(via_host="10.9.9.9", rport=True), UDP)
    [(seen, _, _)] = role.seen
    assert seen.top_via.received == "192.0.2.7" and seen.top_via.rport == 40000
    [(answer, target)] = node.sent
    assert (target.host, target.port) == ("192.0.2.7", 40000)
    assert answer.top_via.received == "192.0.2.7"


def test_rfc3261_18_2_2_without_rport_the_response_goes_to_received_and_the_via_port():
    node = Node()
    node.router.add(Recorder(), ["MESSAGE"])
    node.router.receive(request(via_host="10.9.9.9", rport=False), UDP)
    [(_, target)] = node.sent
    assert (target.host, target.port) == ("192.0.2.7", 5060)


def test_rfc3261_17_2_1_a_retransmission_is_answered_by_the_transaction_not_the_role():
    node = Node()
    role = Recorder()
    node.router.add(role, ["MESSAGE"])
    node.router.receive(request(), UDP)
    node.router.receive(request(), UDP)
    assert len(role.seen) == 1
    assert [a.status for a in node.answers()] == [200, 200]


def test_routes_with_a_request_uri_test_come_before_the_catch_all():
    node = Node()
    users, rooms = Recorder(), Recorder()
    node.router.add(users, ["MESSAGE"])
    node.router.add(rooms, ["MESSAGE"], accepts=lambda r: r.uri.user.startswith("room-"))
    node.router.receive(request(uri=f"sip:room-1@{DOMAIN}", branch="z9hG4bK-r"), UDP)
    node.router.receive(request(uri=f"sip:bob@{DOMAIN}", branch="z9hG4bK-u"), UDP)
    assert [r.uri.user for r, _, _ in rooms.seen] == ["room-1"]
    assert [r.uri.user for r, _, _ in users.seen] == ["bob"]


def test_two_catch_all_roles_for_one_method_are_refused():
    node = Node()
    node.router.add(Recorder(), ["MESSAGE"])
    with pytest.raises(ValueError, match="MESSAGE"):
        node.router.add(Recorder(), ["MESSAGE"])
    with pytest.raises(ValueError, match="identity gate"):
        node.router.add(Recorder(), ["PUBLISH"], identified=True)


@pytest.mark.parametrize("pending", [False, True])
async def test_identified_routes_pass_the_gate_and_get_the_asserted_identity(pending):
    node = Node(gate=Gate(pending=pending))
    role, registrar = Recorder(), Recorder()
    node.router.add(role, ["MESSAGE"], identified=True)
    node.router.add(registrar, ["REGISTER"])
    node.router.receive(request(), UDP)
    node.router.receive(request("REGISTER", uri=f"sip:{DOMAIN}", branch="z9hG4bK-reg"), UDP)
    await settle()
    assert [identity for _, _, identity in role.seen] == [ALICE]
    assert [identity for _, _, identity in registrar.seen] == [None]  # REGISTER authenticates itself


async def test_a_request_the_gate_refuses_never_reaches_the_role():
    node = Node(gate=Gate())
    role = Recorder()
    node.router.add(role, ["MESSAGE"], identified=True)
    bad = Request("MESSAGE", f"sip:bob@{DOMAIN}", [
        ("Via", "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK-m;rport"), ("From", f"<sip:mallory@{DOMAIN}>;tag=m"),
        ("To", f"<sip:bob@{DOMAIN}>"), ("Call-ID", "c-m"), ("CSeq", "1 MESSAGE")], b"")
    node.router.receive(bad, UDP)
    await settle()
    assert role.seen == [] and [a.status for a in node.answers()] == [403]


async def test_awaited_answers_and_failures_of_a_role():
    async def later(request):
        return make_response(request, 202, "Accepted")

    def broken(request):
        raise RuntimeError("bug")

    def lazy_header(request):
        raise SIPParseError("Bad Contact", 400)

    node = Node()
    node.router.add(Recorder(later), ["MESSAGE"])
    node.router.add(Recorder(broken), ["PUBLISH"])
    node.router.add(Recorder(lazy_header), ["SUBSCRIBE"])
    node.router.receive(request("MESSAGE", branch="z9hG4bK-1"), UDP)
    node.router.receive(request("PUBLISH", branch="z9hG4bK-2"), UDP)
    node.router.receive(request("SUBSCRIBE", branch="z9hG4bK-3"), UDP)
    await settle()
    assert sorted((a.status, a.reason) for a in node.answers()) == [
        (202, "Accepted"), (400, "Bad Contact"), (500, "Server Internal Error")]


async def test_a_future_answer_is_sent_when_it_resolves():
    futures = []

    def deferred(request):
        future = asyncio.get_running_loop().create_future()
        futures.append((future, request))
        return future

    node = Node()
    node.router.add(Recorder(deferred), ["REGISTER"])
    node.router.receive(request("REGISTER", uri=f"sip:{DOMAIN}"), UDP)
    assert node.sent == []
    future, seen = futures[0]
    future.set_result(make_response(seen, 200, "OK"))
    await settle()
    assert [a.status for a in node.answers()] == [200]


def test_rfc3325_2_outside_the_trust_domain_only_403_and_never_for_ack():
    node = Node(trust_domain={"203.0.113.5"})
    role = Recorder()
    node.router.add(role, ["MESSAGE"])
    node.router.receive(request(), UDP)
    node.router.receive(request("ACK", to_tag="x", branch="z9hG4bK-ack"), UDP)
    assert role.seen == []
    assert [a.status for a in node.answers()] == [403]
    trusted = Source("udp", ("203.0.113.5", 5060), UDP.local)
    node.router.receive(request(branch="z9hG4bK-t"), trusted)
    assert len(role.seen) == 1


def test_challenges_keep_no_transaction():
    # RFC 3261 §8.2.7 / §26.1.5: a 401/407 is sent statelessly; the authenticated
    # retry (same branch is not reused by clients, but a retransmission of the
    # challenged request must reach the role again rather than a stored 407).
    calls = []

    def challenge(request):
        calls.append(request)
        return make_response(request, 407, "Proxy Authentication Required")

    node = Node()
    node.router.add(Recorder(challenge), ["MESSAGE"])
    node.router.receive(request(), UDP)
    node.router.receive(request(), UDP)
    assert len(calls) == 2 and [a.status for a in node.answers()] == [407, 407]
