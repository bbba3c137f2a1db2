"""What worker processes keep in step over the bus (sipim/cluster/worker.py), with two
buses in one event loop standing for two workers."""

from __future__ import annotations

import asyncio

from sipim.cluster.bus import Bus, make_mesh
from sipim.cluster.worker import ClusterLockout, ReplicatedLocation, ReplicatedMailboxes, branch_owner
from sipim.sip import transaction
from sipim.store.models import Binding
from sipim.transport import base


def two_buses():
    ends = make_mesh(2, 1 << 20)
    buses = [Bus(i, {1 - i: ends[(i, 1 - i)]}) for i in range(2)]
    for bus in buses:
        bus.start()
    return buses


async def settle():
    for _ in range(5):
        await asyncio.sleep(0.01)


def binding(key="k1", call_id="c1", cseq=1, expires_at=2000.0, flow_id=None, aor="sip:alice@example.test"):
    return Binding(aor=aor, binding_key=key, contact=f"<sip:alice@192.0.2.1:5060;k={key}>", expires_at=expires_at,
                   call_id=call_id, cseq=cseq, flow_id=flow_id, source="192.0.2.1:5060", transport="udp")


def replicated_pair():
    buses = two_buses()
    locations = [ReplicatedLocation(bus) for bus in buses]
    for bus, location in zip(buses, locations):
        bus.on("L+", lambda peer, row, location=location: location.apply_put(row))
        bus.on("L-", lambda peer, aor, key, call_id, cseq, location=location:
               location.apply_remove(aor, key, call_id, cseq))
    return buses, locations


def test_branch_and_flow_ids_name_their_worker():
    assert branch_owner("z9hG4bKw1.0123abcd") == 1
    assert branch_owner("z9hG4bKw12.0123abcd") == 12
    assert branch_owner("z9hG4bK0123abcd") is None
    assert branch_owner("z9hG4bKwhatever") is None
    assert branch_owner(None) is None
    assert base.flow_owner("w2.tls-abcd-5") == 2
    assert base.flow_owner("wss-abcd-5") is None and base.flow_owner("ws-abcd-5") is None
    assert base.flow_owner("tls-abcd-5") is None


def test_a_worker_process_names_itself_in_new_branches_and_flow_ids():
    from sipim.cluster.worker import ClusterWorker
    from sipim.sip.clock import FakeClock

    worker = ClusterWorker.__new__(ClusterWorker)  # only its index matters here
    worker.index = 3
    layer = transaction.TransactionLayer(FakeClock(), lambda message, target: None,
                                         branch_owner=worker.branch_owner)
    assert branch_owner(layer.new_branch()) == 3
    ids = worker.flow_ids()
    assert base.flow_owner(ids.new("tls")) == 3
    # A single process names no owner, and no two issuers repeat each other's ids.
    assert base.flow_owner(base.FlowIds().new("tls")) is None
    assert base.FlowIds().new("tls") != base.FlowIds().new("tls")


async def test_puts_and_removes_reach_the_other_worker_once():
    buses, (a, b) = replicated_pair()
    a.put(binding())
    a.put(binding(key="k2"))
    await settle()
    assert {x.binding_key for x in b.bindings("sip:alice@example.test")} == {"k1", "k2"}
    a.remove("sip:alice@example.test", "k1")
    await settle()
    assert [x.binding_key for x in b.bindings("sip:alice@example.test")] == ["k2"]
    # Applied silently: nothing went back.
    assert buses[1].sent_datagrams == 0


async def test_a_refresh_replaces_the_copy_and_an_older_one_never_wins():
    buses, (a, b) = replicated_pair()
    a.put(binding(cseq=2, expires_at=3000.0))
    await settle()
    b.put(binding(cseq=3, expires_at=4000.0))  # refreshed at the other worker meanwhile
    a.put(binding(cseq=1, expires_at=2000.0))  # an older copy arrives late
    await settle()
    assert b.get("sip:alice@example.test", "k1").expires_at == 4000.0
    assert a.get("sip:alice@example.test", "k1").cseq == 3


async def test_a_remove_does_not_undo_a_newer_registration():
    buses, (a, b) = replicated_pair()
    a.put(binding(call_id="old", cseq=5))
    await settle()
    a.remove("sip:alice@example.test", "k1")        # unregistered at worker A ...
    b.put(binding(call_id="new", cseq=1))           # ... and registered again at worker B
    await settle()
    assert b.get("sip:alice@example.test", "k1").call_id == "new"
    assert a.get("sip:alice@example.test", "k1").call_id == "new"


async def test_expiry_and_forget_stay_local():
    buses, (a, b) = replicated_pair()
    a.put(binding(expires_at=100.0))
    await settle()
    sent = buses[0].sent_datagrams
    assert [x.binding_key for x in a.pop_expired(200.0)] == ["k1"]
    b.forget("sip:alice@example.test", "k1")
    await settle()
    assert buses[0].sent_datagrams == sent and buses[1].sent_datagrams == 0


async def test_lockout_counts_each_failure_once_across_workers():
    buses = two_buses()
    settings = dict(threshold=4, window=300, duration=900)
    a, b = ClusterLockout(buses[0], **settings), ClusterLockout(buses[1], **settings)
    buses[0].on("X", lambda peer, user, ip, now: a.apply_failure(user, ip, now))
    buses[1].on("X", lambda peer, user, ip, now: b.apply_failure(user, ip, now))
    buses[0].on("S", lambda peer, user, ip: a.apply_success(user, ip))
    buses[1].on("S", lambda peer, user, ip: b.apply_success(user, ip))
    a.record_failure("alice", "192.0.2.1", 1.0)
    b.record_failure("alice", "192.0.2.2", 2.0)
    a.record_failure("alice", "192.0.2.3", 3.0)
    await settle()
    assert a.check("alice", "192.0.2.9", 4.0) is None and b.check("alice", "192.0.2.9", 4.0) is None
    assert b.record_failure("alice", "192.0.2.4", 4.0) is not None  # the 4th, wherever it lands
    await settle()
    assert a.check("alice", "198.51.100.1", 5.0).subject == "user alice"
    # A success clears the counters everywhere (and costs no message when there are none).
    a.record_failure("bob", "192.0.2.50", 6.0)
    await settle()
    b.record_success("bob", "192.0.2.50")
    await settle()
    assert "user bob" not in a._failures
    sent = buses[0].sent_datagrams
    a.record_success("carol", "192.0.2.60")
    await settle()
    assert buses[0].sent_datagrams == sent


async def test_mailboxes_are_told_to_the_other_workers():
    buses = two_buses()
    a, b = ReplicatedMailboxes(buses[0], {}), ReplicatedMailboxes(buses[1], {"sip:bob@example.test": 50.0})
    buses[1].on("M", lambda peer, aor, until: b.apply(aor, until))
    a["sip:bob@example.test"] = 100.0
    a["sip:carol@example.test"] = 10.0
    await settle()
    assert dict(b) == {"sip:bob@example.test": 100.0, "sip:carol@example.test": 10.0}
    b.apply("sip:bob@example.test", 20.0)  # never shortened
    assert b["sip:bob@example.test"] == 100.0


async def test_mailbox_moves_under_a_second_are_not_told():
    buses = two_buses()
    a, b = ReplicatedMailboxes(buses[0], {}), ReplicatedMailboxes(buses[1], {})
    buses[1].on("M", lambda peer, aor, until: b.apply(aor, until))
    for step in range(10):
        a["sip:bob@example.test"] = 1000.0 + step * 0.05  # a message every 50 ms
    await settle()
    assert b["sip:bob@example.test"] == 1000.0
    a["sip:bob@example.test"] = 1001.5
    await settle()
    assert b["sip:bob@example.test"] == 1001.5
    del a["sip:bob@example.test"]  # lapsed here: told again when it comes back
    a["sip:bob@example.test"] = 1001.6
    await settle()
    assert b["sip:bob@example.test"] == 1001.6


async def test_provisioning_rate_limits_count_hits_of_every_worker():
    from sipim.cluster.worker import ReplicatedRateLimiter

    buses = two_buses()
    a = ReplicatedRateLimiter(buses[0], "otp-number", 3, 900)
    b = ReplicatedRateLimiter(buses[1], "otp-number", 3, 900)
    buses[1].on("H", lambda peer, name, key, now: b.apply(key, now))
    buses[0].on("H", lambda peer, name, key, now: a.apply(key, now))
    assert a.hit("+4915112345678", 1.0) is None
    assert a.hit("+4915112345678", 2.0) is None
    await settle()
    assert b.hit("+4915112345678", 3.0) is None
    await settle()
    assert a.hit("+4915112345678", 4.0) is not None  # the 4th, counted over both workers
    assert b.hit("+4915112345678", 4.0) is not None
    assert b.hit("+4915112345679", 4.0) is None       # another key is not limited
