from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from sipim.sip.clock import FakeClock
from sipim.sip.message import Request, Response, make_response
from sipim.sip.parser import parse_message
from sipim.sip.transaction import State, TransactionLayer, new_branch

T1, T2, T4 = 0.5, 4.0, 5.0


@dataclass(frozen=True)
class FakeTarget:
    reliable: bool
    name: str = "peer"


UDP = FakeTarget(reliable=False)
TCP = FakeTarget(reliable=True)


@dataclass
class Harness:
    clock: FakeClock = field(default_factory=FakeClock)
    sent: list = field(default_factory=list)          # (time, message, target)
    acks: list = field(default_factory=list)          # stray ACKs given to on_ack
    failures: list = field(default_factory=list)      # server transactions that failed

    def __post_init__(self) -> None:
        self.layer = TransactionLayer(
            self.clock, self.send, t1=T1, t2=T2, t4=T4,
            on_ack=lambda request, source: self.acks.append(request),
            on_server_failure=self.failures.append)

    def send(self, message, target) -> None:
        self.sent.append((self.clock.now(), message, target))

    def sent_wire(self) -> list[tuple[float, bytes]]:
        """(time, bytes) of what was sent: a transaction lingering in Completed over UDP
        hands the layer's `send` wire bytes, not a message."""
        return [(time, wire(message)) for time, message, _ in self.sent]

    def sent_times(self) -> list[float]:
        return [time for time, _, _ in self.sent]

    def assert_idle(self) -> None:
        """No transaction left in the tables and no timer left running (no leaks)."""
        assert self.layer.server_transaction_count == 0
        assert self.layer.client_transaction_count == 0
        assert self.clock.pending() == 0


def wire(message) -> bytes:
    return message if isinstance(message, bytes) else message.to_bytes()


def status(message) -> int:
    return parse_message(message).status if isinstance(message, bytes) else message.status


@pytest.fixture
def h() -> Harness:
    return Harness()


def request(method: str = "MESSAGE", *, branch: str = "z9hG4bKabc123",
            sent_by: str = "10.0.0.1:5060", cseq: int = 1, routes=()) -> Request:
    headers = [("Via", f"SIP/2.0/UDP {sent_by};branch={branch};rport"),
               ("Via", "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKlower")]
    headers += [("Route", route) for route in routes]
    headers += [
        ("Max-Forwards", "70"),
        ("From", "Alice <sip:alice@example.com>;tag=88sja8x"),
        ("To", "Bob <sip:bob@example.com>"),
        ("Call-ID", "987asjd97y7atg"),
        ("CSeq", f"{cseq} {method}"),
    ]
    return Request(method, "sip:bob@example.com", headers, b"hi" if method == "MESSAGE" else b"")


def ack_for(invite: Request, response: Response) -> Request:
    """What a client transaction sends for a non-2xx (same branch, §17.1.1.3)."""
    return Request("ACK", invite.uri, [
        ("Via", invite.headers.get("Via")),
        ("From", invite.headers.get("From")),
        ("To", response.headers.get("To")),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} ACK"),
    ])


class Recorder:
    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.timeouts = 0

    def on_response(self, response: Response) -> None:
        self.responses.append(response)

    def on_timeout(self) -> None:
        self.timeouts += 1


# ---------------------------------------------------------------------------
# non-INVITE client (§17.1.2)

def test_rfc3261_17_1_2_2_timer_e_doubles_up_to_t2_over_udp_then_timer_f_times_out(h):
    tu = Recorder()
    transaction = h.layer.send_request(request(), UDP, tu.on_response, tu.on_timeout)
    assert transaction.state is State.TRYING

    h.clock.advance(64 * T1 - 0.001)
    # 500 ms, 1 s, 2 s, 4 s, 4 s, ... (§17.1.2.2)
    assert h.sent_times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert tu.timeouts == 0

    h.clock.advance(0.001)   # Timer F = 64*T1
    assert tu.timeouts == 1
    assert transaction.state is State.TERMINATED
    assert len(h.sent) == 11
    h.assert_idle()


def test_rfc3261_17_1_2_2_timer_e_fires_at_t2_once_proceeding(h):
    tu = Recorder()
    original = request()
    h.layer.send_request(original, UDP, tu.on_response, tu.on_timeout)
    h.clock.advance(0.2)
    assert h.layer.receive_response(make_response(original, 100))
    assert tu.responses[0].status == 100
    h.clock.advance(10)
    # E was armed for 0.5 while Trying; after that it runs every T2.
    assert h.sent_times() == [0, 0.5, 4.5, 8.5]


def test_rfc3261_17_1_2_2_final_response_goes_to_tu_once_and_timer_k_cleans_up(h):
    tu = Recorder()
    original = request()
    transaction = h.layer.send_request(original, UDP, tu.on_response, tu.on_timeout)
    ok = make_response(original, 200, to_tag="xyz")
    assert h.layer.receive_response(ok)
    assert transaction.state is State.COMPLETED
    assert h.layer.receive_response(ok)      # retransmission: matched, absorbed
    assert [r.status for r in tu.responses] == [200]

    h.clock.advance(10)
    assert len(h.sent) == 1                  # no retransmission after Completed
    h.clock.advance(T4 - 10 + 10)
    assert transaction.state is State.TERMINATED
    assert tu.timeouts == 0
    h.assert_idle()
    assert not h.layer.receive_response(ok)  # gone after Timer K


def test_rfc3261_17_1_2_2_timer_k_is_t4_on_udp(h):
    tu = Recorder()
    original = request()
    transaction = h.layer.send_request(original, UDP, tu.on_response, tu.on_timeout)
    h.layer.receive_response(make_response(original, 404))
    h.clock.advance(T4 - 0.01)
    assert transaction.state is State.COMPLETED
    h.clock.advance(0.01)
    assert transaction.state is State.TERMINATED
    h.assert_idle()


def test_rfc3261_17_1_2_2_reliable_transport_no_retransmission_and_zero_timer_k(h):
    tu = Recorder()
    original = request()
    transaction = h.layer.send_request(original, TCP, tu.on_response, tu.on_timeout)
    h.clock.advance(20)
    assert len(h.sent) == 1                      # Timer E not started
    assert h.clock.pending() == 1                # only Timer F
    h.layer.receive_response(make_response(original, 202))
    assert transaction.state is State.TERMINATED  # K = 0: no timer scheduled at all
    h.assert_idle()


def test_rfc3261_17_1_2_2_timer_f_also_runs_over_reliable_transports(h):
    tu = Recorder()
    h.layer.send_request(request(), TCP, tu.on_response, tu.on_timeout)
    h.clock.advance(64 * T1)
    assert tu.timeouts == 1
    h.assert_idle()


def test_rfc3261_17_1_3_response_matches_on_branch_and_cseq_method(h):
    tu = Recorder()
    original = request("MESSAGE")
    h.layer.send_request(original, UDP, tu.on_response, tu.on_timeout)
    other_branch = make_response(request("MESSAGE", branch="z9hG4bKother"), 200)
    assert not h.layer.receive_response(other_branch)
    same_branch_cancel = make_response(original, 200)
    same_branch_cancel.headers.set("CSeq", "1 CANCEL")
    assert not h.layer.receive_response(same_branch_cancel)
    assert tu.responses == []
    assert h.layer.receive_response(make_response(original, 200))


def test_rfc3261_17_1_4_transport_error_informs_tu_and_terminates(h):
    tu = Recorder()
    transaction = h.layer.send_request(request(), UDP, tu.on_response, tu.on_timeout)
    h.layer.transport_error(transaction)
    assert tu.timeouts == 1
    assert transaction.state is State.TERMINATED
    h.assert_idle()
    h.clock.advance(100)
    assert tu.timeouts == 1


def test_send_request_refuses_missing_branch_ack_and_duplicate(h):
    tu = Recorder()
    with pytest.raises(ValueError):
        h.layer.send_request(request(branch="1234"), UDP, tu.on_response, tu.on_timeout)
    with pytest.raises(ValueError):
        h.layer.send_request(request("ACK"), UDP, tu.on_response, tu.on_timeout)
    h.layer.send_request(request(), UDP, tu.on_response, tu.on_timeout)
    with pytest.raises(ValueError):
        h.layer.send_request(request(), UDP, tu.on_response, tu.on_timeout)


def test_new_branch_carries_the_magic_cookie_and_is_unique():
    branches = {new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(branch.startswith("z9hG4bK") for branch in branches)


# ---------------------------------------------------------------------------
# INVITE client (§17.1.1)

def test_rfc3261_17_1_1_2_timer_a_doubles_and_timer_b_times_out_after_seven_requests(h):
    tu = Recorder()
    transaction = h.layer.send_request(request("INVITE"), UDP, tu.on_response, tu.on_timeout)
    assert transaction.state is State.CALLING
    h.clock.advance(64 * T1)
    # "64*T1 is ... the time required to send seven requests" (§17.1.1.2)
    assert h.sent_times() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tu.timeouts == 1
    assert not any(m.method == "ACK" for _, m, _ in h.sent)   # Timer B: MUST NOT ACK
    h.assert_idle()


def test_rfc3261_17_1_1_2_provisional_stops_retransmissions_and_goes_to_tu(h):
    tu = Recorder()
    invite = request("INVITE")
    transaction = h.layer.send_request(invite, UDP, tu.on_response, tu.on_timeout)
    h.clock.advance(0.6)
    assert h.layer.receive_response(make_response(invite, 180, to_tag="t"))
    assert transaction.state is State.PROCEEDING
    h.layer.receive_response(make_response(invite, 183, to_tag="t"))
    h.clock.advance(60)
    assert h.sent_times() == [0, 0.5]
    assert [r.status for r in tu.responses] == [180, 183]
    assert tu.timeouts == 0                      # Timer B only runs in Calling


def test_rfc3261_17_1_1_3_ack_for_non_2xx_is_built_from_request_and_response(h):
    tu = Recorder()
    invite = request("INVITE", cseq=986759, routes=("<sip:p1.example.com;lr>",
                                                     "<sip:p2.example.com;lr>"))
    h.layer.send_request(invite, UDP, tu.on_response, tu.on_timeout)
    busy = make_response(invite, 486, to_tag="99sa0xk")
    assert h.layer.receive_response(busy)

    _, ack, target = h.sent[-1]
    assert ack.method == "ACK"
    assert target is UDP                                  # same destination as the INVITE
    assert str(ack.uri) == str(invite.uri)                # Request-URI
    assert ack.call_id == invite.call_id
    assert ack.headers.get("From") == invite.headers.get("From")
    assert ack.headers.get("To") == busy.headers.get("To")
    assert ack.to.tag == "99sa0xk"
    assert (ack.cseq.seq, ack.cseq.method) == (986759, "ACK")
    assert ack.headers.get_all("Via") == [invite.headers.get("Via")]   # single, top Via
    assert ack.headers.get_all("Route") == invite.headers.get_all("Route")
    assert ack.headers.get("Max-Forwards") == "70"
    assert [r.status for r in tu.responses] == [486]
    assert b"ACK sip:bob@example.com SIP/2.0" in ack.to_bytes()


def test_rfc3261_17_1_1_2_retransmitted_final_response_re_sends_ack_not_to_tu(h):
    tu = Recorder()
    invite = request("INVITE")
    transaction = h.layer.send_request(invite, UDP, tu.on_response, tu.on_timeout)
    busy = make_response(invite, 486, to_tag="x")
    h.layer.receive_response(busy)
    assert transaction.state is State.COMPLETED
    h.clock.advance(1)
    assert h.layer.receive_response(busy)
    acks = [m for _, m, _ in h.sent if m.method == "ACK"]
    assert len(acks) == 2 and acks[0] is acks[1]
    assert [r.status for r in tu.responses] == [486]
    h.clock.advance(31.0 - 0.01)                 # Timer D: 32 s on UDP
    assert transaction.state is State.COMPLETED
    h.clock.advance(0.01)
    assert transaction.state is State.TERMINATED
    h.assert_idle()


def test_rfc3261_17_1_1_2_2xx_terminates_at_once_and_later_2xx_go_to_the_core(h):
    tu = Recorder()
    invite = request("INVITE")
    transaction = h.layer.send_request(invite, UDP, tu.on_response, tu.on_timeout)
    ok = make_response(invite, 200, to_tag="x")
    assert h.layer.receive_response(ok)
    assert transaction.state is State.TERMINATED
    assert [m.method for _, m, _ in h.sent] == ["INVITE"]   # the transaction does not ACK a 2xx
    assert [r.status for r in tu.responses] == [200]
    h.assert_idle()
    assert not h.layer.receive_response(ok)    # retransmitted 2xx: no match, core handles it


def test_rfc3261_17_1_1_2_reliable_invite_no_timer_a_ack_still_sent_timer_d_zero(h):
    tu = Recorder()
    invite = request("INVITE")
    transaction = h.layer.send_request(invite, TCP, tu.on_response, tu.on_timeout)
    h.clock.advance(10)
    assert len(h.sent) == 1
    h.layer.receive_response(make_response(invite, 603, to_tag="x"))
    assert [m.method for _, m, _ in h.sent] == ["INVITE", "ACK"]
    assert transaction.state is State.TERMINATED
    h.assert_idle()


def test_invite_proceeding_guard_releases_a_transaction_the_far_end_forgot(h):
    tu = Recorder()
    invite = request("INVITE")
    h.layer.send_request(invite, UDP, tu.on_response, tu.on_timeout)
    h.layer.receive_response(make_response(invite, 180, to_tag="x"))
    h.clock.advance(100)
    h.layer.receive_response(make_response(invite, 180, to_tag="x"))  # re-arms the guard
    h.clock.advance(184)
    assert tu.timeouts == 0
    h.clock.advance(1)
    assert tu.timeouts == 1
    h.assert_idle()


# ---------------------------------------------------------------------------
# non-INVITE server (§17.2.2)

def test_rfc3261_17_2_2_retransmission_in_trying_is_discarded(h):
    original = request()
    transaction = h.layer.receive_request(original, UDP)
    assert transaction is not None and transaction.state is State.TRYING
    assert transaction.request is original
    assert h.layer.receive_request(request(), UDP) is None
    assert h.sent == []


def test_rfc3261_17_2_2_retransmitted_request_resends_last_provisional(h):
    transaction = h.layer.receive_request(request(), UDP)
    trying = make_response(transaction.request, 100)
    assert h.layer.respond(transaction, trying)
    assert transaction.state is State.PROCEEDING
    assert h.layer.receive_request(request(), UDP) is None
    assert [m for _, m, _ in h.sent] == [trying, trying]


def test_rfc3261_17_2_2_retransmitted_request_resends_final_and_timer_j_cleans_up(h):
    original = request()
    transaction = h.layer.receive_request(original, UDP)
    accepted = make_response(transaction.request, 202, to_tag="s1")
    h.layer.respond(transaction, accepted)
    assert transaction.state is State.COMPLETED
    assert transaction.request is None              # lingering: only the response's bytes are kept
    assert transaction.last_response == accepted.to_bytes()
    h.clock.advance(10)
    assert h.layer.receive_request(request(), UDP) is None
    assert h.sent_wire() == [(0, accepted.to_bytes()), (10, accepted.to_bytes())]
    assert not h.layer.respond(transaction, make_response(original, 500))
    assert len(h.sent) == 2                       # other finals discarded in Completed

    h.clock.advance(64 * T1 - 10 - 0.01)
    assert h.layer.server_transaction_count == 1
    h.clock.advance(0.01)                         # Timer J = 64*T1 on UDP
    assert transaction.state is State.TERMINATED
    h.assert_idle()
    # After J the same request is a new transaction again.
    assert h.layer.receive_request(request(), UDP) is not None


def test_rfc3261_17_2_2_reliable_transport_timer_j_is_zero(h):
    transaction = h.layer.receive_request(request(), TCP)
    h.layer.respond(transaction, make_response(transaction.request, 200, to_tag="s"))
    assert transaction.state is State.TERMINATED
    h.assert_idle()


def test_rfc3261_17_2_2_server_never_retransmits_on_its_own(h):
    transaction = h.layer.receive_request(request(), UDP)
    h.layer.respond(transaction, make_response(transaction.request, 200, to_tag="s"))
    h.clock.advance(64 * T1)
    assert len(h.sent) == 1


def test_rfc3261_17_2_3_same_branch_from_another_sent_by_is_a_new_transaction(h):
    first = h.layer.receive_request(request(sent_by="10.0.0.1:5060"), UDP)
    second = h.layer.receive_request(request(sent_by="10.0.0.2:5060"), UDP)
    assert first is not None and second is not None and first is not second


def test_rfc3261_17_2_3_sent_by_host_compares_case_insensitively(h):
    assert h.layer.receive_request(request(sent_by="PC33.Example.com"), UDP) is not None
    assert h.layer.receive_request(request(sent_by="pc33.example.COM"), UDP) is None


def test_rfc3261_17_2_3_same_branch_other_method_is_another_transaction(h):
    assert h.layer.receive_request(request("MESSAGE"), UDP) is not None
    assert h.layer.receive_request(request("OPTIONS"), UDP) is not None
    assert h.layer.server_transaction_count == 2


def test_rfc3261_17_2_3_rfc2543_request_without_cookie_still_absorbs_retransmissions(h):
    transaction = h.layer.receive_request(request(branch="oldstyle1"), UDP)
    assert transaction is not None
    assert h.layer.receive_request(request(branch="oldstyle1"), UDP) is None
    assert h.layer.receive_request(request(branch="oldstyle1", cseq=2), UDP) is not None


def test_rfc3261_17_2_4_server_transport_error_terminates_and_tells_tu(h):
    transaction = h.layer.receive_request(request(), UDP)
    h.layer.transport_error(transaction)
    assert h.failures == [transaction]
    h.assert_idle()
    assert not h.layer.respond(transaction, make_response(transaction.request, 200))


# ---------------------------------------------------------------------------
# INVITE server (§17.2.1)

def test_rfc3261_17_2_1_sends_100_trying_after_200ms_when_tu_is_silent(h):
    transaction = h.layer.receive_request(request("INVITE"), UDP)
    assert transaction.state is State.PROCEEDING
    h.clock.advance(0.199)
    assert h.sent == []
    h.clock.advance(0.001)
    [(time, trying, target)] = h.sent
    assert (time, trying.status, target) == (0.2, 100, UDP)
    assert trying.to.tag is None                  # §17.2.1: SHOULD NOT add a To tag
    assert trying.headers.get_all("Via") == transaction.request.headers.get_all("Via")


def test_rfc3261_17_2_1_no_100_trying_when_tu_answers_within_200ms(h):
    transaction = h.layer.receive_request(request("INVITE"), UDP)
    h.clock.advance(0.1)
    ringing = make_response(transaction.request, 180, to_tag="t")
    h.layer.respond(transaction, ringing)
    h.clock.advance(1)
    assert [m.status for _, m, _ in h.sent] == [180]


def test_rfc3261_8_2_6_1_100_trying_copies_timestamp(h):
    invite = request("INVITE")
    invite.headers.add("Timestamp", "54")
    h.layer.receive_request(invite, UDP)
    h.clock.advance(0.2)
    assert h.sent[0][1].headers.get("Timestamp") == "54"


def test_rfc3261_17_2_1_retransmitted_invite_gets_last_provisional(h):
    transaction = h.layer.receive_request(request("INVITE"), UDP)
    # Before anything was sent, a retransmission is answered with 100 at once.
    assert h.layer.receive_request(request("INVITE"), UDP) is None
    assert [m.status for _, m, _ in h.sent] == [100]
    h.clock.advance(1)
    assert len(h.sent) == 1                       # the 200 ms timer was cancelled
    ringing = make_response(transaction.request, 180, to_tag="t")
    h.layer.respond(transaction, ringing)
    h.layer.receive_request(request("INVITE"), UDP)
    assert [m.status for _, m, _ in h.sent] == [100, 180, 180]


def test_rfc3261_17_2_1_final_error_retransmitted_by_timer_g_until_timer_h(h):
    transaction = h.layer.receive_request(request("INVITE"), UDP)
    busy = make_response(transaction.request, 486, to_tag="t")
    h.layer.respond(transaction, busy)
    assert transaction.state is State.COMPLETED
    h.clock.advance(64 * T1 - 0.001)
    # G: T1, 2*T1, 4*T1, ... capped at T2
    assert h.sent_times() == [0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert h.failures == []
    h.clock.advance(0.001)                        # Timer H: no ACK came
    assert h.failures == [transaction]
    assert transaction.state is State.TERMINATED
    h.assert_idle()


def test_rfc3261_17_2_1_retransmitted_invite_in_completed_resends_final(h):
    transaction = h.layer.receive_request(request("INVITE"), TCP)
    busy = make_response(transaction.request, 486, to_tag="t")
    h.layer.respond(transaction, busy)
    h.layer.receive_request(request("INVITE"), TCP)
    assert [m for _, m, _ in h.sent] == [busy, busy]


def test_rfc3261_17_2_1_ack_confirms_stops_g_and_timer_i_cleans_up(h):
    transaction = h.layer.receive_request(request("INVITE"), UDP)
    busy = make_response(transaction.request, 486, to_tag="t")
    h.layer.respond(transaction, busy)
    h.clock.advance(0.7)                          # one G retransmission at 0.5
    assert h.layer.receive_request(ack_for(transaction.request, busy), UDP) is None
    assert transaction.state is State.CONFIRMED
    assert h.layer.receive_request(ack_for(transaction.request, busy), UDP) is None  # absorbed
    assert h.layer.receive_request(request("INVITE"), UDP) is None   # absorbed in Confirmed
    assert h.acks == []                           # not handed to the TU
    h.clock.advance(T4 - 0.01)
    assert len(h.sent) == 2
    assert transaction.state is State.CONFIRMED
    h.clock.advance(0.01)                         # Timer I = T4
    assert transaction.state is State.TERMINATED
    assert h.failures == []
    h.assert_idle()


def test_rfc3261_17_2_1_reliable_transport_no_timer_g_and_timer_i_zero(h):
    transaction = h.layer.receive_request(request("INVITE"), TCP)
    busy = make_response(transaction.request, 486, to_tag="t")
    h.layer.respond(transaction, busy)
    assert h.clock.pending() == 1                 # Timer H only
    h.clock.advance(10)
    assert len(h.sent) == 1
    h.layer.receive_request(ack_for(transaction.request, busy), TCP)
    assert transaction.state is State.TERMINATED
    h.assert_idle()


def test_rfc3261_17_2_1_2xx_terminates_and_its_ack_goes_to_the_tu(h):
    transaction = h.layer.receive_request(request("INVITE"), UDP)
    ok = make_response(transaction.request, 200, to_tag="t")
    assert h.layer.respond(transaction, ok)
    assert transaction.state is State.TERMINATED
    h.assert_idle()
    # §13.2.2.4: the ACK for a 2xx has its own branch; it is not part of the transaction.
    ack = ack_for(transaction.request, ok)
    ack.headers.set("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnewbranch")
    assert h.layer.receive_request(ack, UDP) is None
    assert h.acks == [ack]
    h.clock.advance(64 * T1)
    assert len(h.sent) == 1                       # no retransmission of the 2xx by the layer


def test_rfc3261_9_2_cancel_finds_the_invite_server_transaction(h):
    invite_transaction = h.layer.receive_request(request("INVITE"), UDP)
    cancel = request("CANCEL")
    cancel_transaction = h.layer.receive_request(cancel, UDP)
    assert cancel_transaction is not None and cancel_transaction is not invite_transaction
    assert h.layer.find_server_transaction_for_cancel(cancel) is invite_transaction
    other = request("CANCEL", branch="z9hG4bKunknown")
    assert h.layer.find_server_transaction_for_cancel(other) is None
    # TU answers 200 to CANCEL and 487 to the INVITE (§9.2)
    h.layer.respond(cancel_transaction, make_response(cancel, 200, to_tag="t"))
    h.layer.respond(invite_transaction,
                    make_response(invite_transaction.request, 487, to_tag="t"))
    assert [status(m) for _, m, _ in h.sent] == [200, 487]


def test_invite_trying_delay_zero_sends_100_at_once_without_timer():
    clock = FakeClock()
    sent = []
    layer = TransactionLayer(clock, lambda m, t: sent.append(m), invite_trying_delay=0)
    layer.receive_request(request("INVITE"), TCP)
    assert [m.status for m in sent] == [100]
    assert clock.pending() == 0


# ---------------------------------------------------------------------------
# no leaks

def test_tables_and_timers_are_empty_after_every_transaction_has_run_out(h):
    tu = Recorder()
    for index in range(200):
        target = UDP if index % 2 else TCP
        branch = f"z9hG4bK{index}"
        server = h.layer.receive_request(request("MESSAGE", branch=branch), target)
        h.layer.respond(server, make_response(server.request, 200, to_tag="t"))
        invite_server = h.layer.receive_request(request("INVITE", branch=branch), target)
        h.layer.respond(invite_server, make_response(invite_server.request, 480, to_tag="t"))
        client_request = request("OPTIONS", branch=branch + "c")
        h.layer.send_request(client_request, target, tu.on_response, tu.on_timeout)
        if index % 3:
            h.layer.receive_response(make_response(client_request, 200))
        invite = request("INVITE", branch=branch + "c")
        h.layer.send_request(invite, target, tu.on_response, tu.on_timeout)
        if index % 5 == 0:
            h.layer.receive_response(make_response(invite, 503, to_tag="u"))
    assert h.layer.server_transaction_count > 0 and h.layer.client_transaction_count > 0
    h.clock.advance(64 * T1 + 1)
    h.assert_idle()


# ---------------------------------------------------------------------------
# what a finished transaction keeps

def test_client_transaction_lets_go_of_the_tu_once_it_has_its_final_answer(h):
    # §17.1.2.2: after the final response the TU hears nothing more (Completed absorbs
    # retransmissions); the transaction lingers for Timer K without holding the TU's
    # callbacks, and a late transport error (§17.1.4) does not reach the TU twice.
    import weakref

    tu = Recorder()
    transaction = h.layer.send_request(request(), UDP, tu.on_response, tu.on_timeout)
    held = weakref.ref(tu)
    h.layer.receive_response(make_response(transaction.request, 200, to_tag="t"))
    assert transaction.state is State.COMPLETED and len(tu.responses) == 1
    h.layer.transport_error(transaction)
    assert tu.timeouts == 0
    del tu
    assert held() is None                          # nothing in the layer keeps the TU alive
    h.clock.advance(T4)
    h.assert_idle()


def test_client_transaction_that_timed_out_lets_go_of_the_tu(h):
    import weakref

    tu = Recorder()
    h.layer.send_request(request(), TCP, tu.on_response, tu.on_timeout)
    held = weakref.ref(tu)
    h.clock.advance(64 * T1)                       # Timer F
    assert tu.timeouts == 1
    del tu
    assert held() is None
    h.assert_idle()


def test_rfc3261_8_2_7_stateless_answer_keeps_nothing_and_a_retransmission_is_new(h):
    first = request("REGISTER")
    transaction = h.layer.receive_request(first, UDP)
    challenge = make_response(first, 401, to_tag="t1")
    assert h.layer.respond_statelessly(transaction, challenge)
    assert transaction.state is State.TERMINATED and transaction.last_response is challenge
    assert [m for _, m, _ in h.sent] == [challenge]
    h.assert_idle()                                # no transaction, no Timer J
    again = h.layer.receive_request(request("REGISTER"), UDP)
    assert again is not None and again is not transaction   # answered anew by the TU
    assert not h.layer.respond_statelessly(transaction, challenge)
    with pytest.raises(ValueError):
        h.layer.respond_statelessly(again, make_response(first, 100))


def test_completed_transactions_keep_only_what_retransmissions_need(h):
    # Timer J (32 s over UDP) and Timer K (T4) keep transactions around: they answer
    # retransmissions from last_response and absorb late responses without the request.
    import gc

    original = request("REGISTER")
    server = h.layer.receive_request(original, UDP)
    h.layer.respond(server, make_response(original, 200, to_tag="s"))
    relayed = request(branch=new_branch())
    client = h.layer.send_request(relayed, UDP, lambda response: None, lambda: None)
    h.layer.receive_response(make_response(relayed, 200, to_tag="d"))
    assert server.state is client.state is State.COMPLETED
    assert server.request is None and client.request is None
    # The server side keeps its final response as wire bytes only: no parsed headers.
    assert isinstance(server.last_response, bytes) and server.last_response.startswith(b"SIP/2.0 200 ")
    for message in (original, relayed):
        assert not [r for r in gc.get_referrers(message) if r is server or r is client]
    assert "REGISTER" in repr(server) and "MESSAGE" in repr(client)
    h.layer.receive_request(request("REGISTER"), UDP)           # a retransmission, answered
    assert status(h.sent[-1][1]) == 200
    h.clock.advance(64 * T1)
    h.assert_idle()
