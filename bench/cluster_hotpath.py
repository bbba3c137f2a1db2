"""What being one of N worker processes costs per authenticated REGISTER (in-process, no sipp).

    python bench/cluster_hotpath.py 5000 3      # 5000 calls = 10000 requests, each mode, 3 rounds
    perf stat -e instructions:u python bench/cluster_hotpath.py 5000 1 cluster   # one mode

Runs the ``bench/hotpath.py`` path (REGISTER -> 401 -> REGISTER with MD5 credentials
-> 200, parsed and handled by a real ``SipimServer`` with its store) twice: once as
the single process, once as worker 0 of 2 (``sipim/cluster``: shared nonce-count
table, UDP affinity table, location and lock-out replication over the bus).  In the
second mode the other worker's side of the bus is in the same event loop and applies
what it receives to its own location table, so the figure is the CPU both workers
spend per request.  Time is ``time.thread_time()`` of the main thread (the store's
writer thread is not counted), as in hotpath.py: compare the two lines, run back to back.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_spec = importlib.util.spec_from_file_location("hotpath", ROOT / "bench" / "hotpath.py")
hotpath = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hotpath)

from sipim.sip.digest import build_authorization, ha1, parse_challenge  # noqa: E402
from sipim.sip.parser import parse_message  # noqa: E402

DOMAIN = hotpath.DOMAIN
USERS = hotpath.USERS


async def run(calls: int, cluster: bool) -> float:
    from sipim.app import SipimServer
    from sipim.cli import make_user
    from sipim.cluster.bus import Bus, make_mesh
    from sipim.cluster.shared import SharedMemory
    from sipim.cluster.sockets import bind_group
    from sipim.cluster.worker import ClusterLockout, ClusterWorker, ReplicatedLocation
    from sipim.config import Config
    from sipim.net import Source

    ha1s = {f"user{i}": ha1(f"user{i}", DOMAIN, f"pw{i}") for i in range(USERS)}
    with tempfile.TemporaryDirectory(prefix="sipim-cluster-hotpath-") as data_dir:
        config = Config(data_dir=Path(data_dir), domain=DOMAIN, listen=("udp:127.0.0.1:0?digest=MD5",),
                        allow_insecure=True)
        worker = peer = None
        if cluster:
            config.workers = 2
            sockets = bind_group(config.listeners()[0].spec, 2)
            ends = make_mesh(2, config.cluster_bus_buffer)
            shared = SharedMemory(2, affinity_slots=config.cluster_affinity_slots,
                                  nonce_slots=config.max_tracked_nonces)
            table = shared.worker_table()
            table.started(0, 1, time.time() - 1)
            table.started(1, 2, time.time() - 1)
            worker = ClusterWorker(0, 2, listen_sockets=[sockets[0]], peers={1: ends[(0, 1)]}, shared=shared,
                                   tls_files=None, config=config)
            # The other worker's side: applies what it receives, as a real one does.
            peer = Bus(1, {0: ends[(1, 0)]})
            peer_location = ReplicatedLocation(peer)
            peer_lockout = ClusterLockout(peer, threshold=10, window=300, duration=900)
            peer.on("L+", lambda p, row: peer_location.apply_put(row, p))
            peer.on("L-", lambda p, aor, key, call_id, cseq: peer_location.apply_remove(aor, key, call_id, cseq))
            peer.on("X", lambda p, user, ip, now: peer_lockout.apply_failure(user, ip, now))
            peer.on("S", lambda p, user, ip: peer_lockout.apply_success(user, ip))
            peer.on("M", lambda p, aor, until: None)
            peer.on("N", lambda p: None)
        server = SipimServer(config, cluster=worker)
        await server.start()
        if peer is not None:
            peer.start()
        try:
            for i in range(USERS):
                await server.store.add_user(make_user(f"user{i}", DOMAIN, f"pw{i}"))
            await server.users.preload()
            sent: list[bytes] = []
            server.transports.send = lambda data, target: sent.append(data)
            source = Source("udp", ("127.0.0.1", 5070), ("127.0.0.1", server.listening()[0][2]))
            busy = 0.0
            codes: dict[str, int] = {}
            for start in range(0, calls, 100):
                batch = [(f"user{k % USERS}", uuid.uuid4().hex) for k in range(start, min(start + 100, calls))]
                first = [hotpath.register_bytes(user, 1, call_id, 5070) for user, call_id in batch]
                sent.clear()
                t0 = time.thread_time()
                for data in first:
                    server.router.receive(parse_message(data), source)
                busy += time.thread_time() - t0
                challenges = [parse_challenge(parse_message(m).headers.get("WWW-Authenticate")) for m in sent]
                second = [hotpath.register_bytes(user, 2, call_id, 5070, build_authorization(
                    challenge, "REGISTER", f"sip:{DOMAIN}", user, ha1s[user]))
                    for (user, call_id), challenge in zip(batch, challenges)]
                sent.clear()
                t0 = time.thread_time()
                for data in second:
                    server.router.receive(parse_message(data), source)
                while len(sent) < len(second):  # the 200s wait for the store commit
                    await asyncio.sleep(0.002)
                await asyncio.sleep(0)  # the peer reads what this batch replicated
                busy += time.thread_time() - t0
                for message in sent:
                    code = message.split(b" ", 2)[1].decode()
                    codes[code] = codes.get(code, 0) + 1
            requests = 2 * calls
            label = "worker 0 of 2" if cluster else "one process  "
            print(f"{label}: {requests} requests, {busy / requests * 1e6:.1f} us/req codes={codes}"
                  + (f", peer applied {len(peer_location)} bindings" if peer is not None else ""))
            return busy / requests
        finally:
            if peer is not None:
                peer.stop()
            await server.stop()


def main() -> None:
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if len(sys.argv) > 3:  # one mode only ("single" or "cluster"), e.g. under `perf stat`
        asyncio.run(run(calls, cluster=sys.argv[3] == "cluster"))
        return
    single, clustered = [], []
    for _ in range(rounds):  # alternated, best of each: a busy machine adds noise, never removes it
        single.append(asyncio.run(run(calls, cluster=False)))
        clustered.append(asyncio.run(run(calls, cluster=True)))
    print(f"best: one process {min(single) * 1e6:.1f} us/req, worker 0 of 2 {min(clustered) * 1e6:.1f} us/req; "
          f"cluster overhead {100 * (min(clustered) / min(single) - 1):+.1f} % per request")


if __name__ == "__main__":
    main()
