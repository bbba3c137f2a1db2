"""In-process micro-benchmark of sipim's authenticated REGISTER path (no sockets).

Where ``bench/run.py`` measures the whole server under sipp load, this measures
only the Python CPU the server spends per request, so a change in the SIP
message layer, the core or the app shows up without network or scheduling
noise.

    python bench/hotpath.py 5000                 # 5000 calls = 10000 requests
    python bench/hotpath.py 5000 prof            # + cProfile table by tottime
    python bench/hotpath.py 5000 prof cumulative # + cProfile table by cumtime
    python bench/hotpath.py message 5000         # authenticated MESSAGE relayed to a device
    python bench/hotpath.py message 5000 prof    # + cProfile table
    python bench/hotpath.py micro                # timeit of the sip/ parsing pieces

With ``prof`` the raw profile is also written to /tmp/hotpath.prof, or to
``$HOTPATH_PROF`` (read it with ``pstats.Stats(...).print_callers(...)``).  On a busy machine timings
vary by 10-20 %: compare runs back to back, or count instructions with
``valgrind --tool=callgrind`` (the difference of two call counts).

**path mode.**  A real ``SipimServer`` is started (SQLite store in a temporary
directory, one UDP listener on 127.0.0.1 that receives nothing), 200 users
are provisioned and their HA1s preloaded, and ``transports.send`` is replaced
by a list append.  Each call is a REGISTER without credentials (answered 401
with a challenge) then the same REGISTER with an MD5 Authorization computed
from that challenge (answered 200).  Requests are built and parsed to
``bytes`` *outside* the timed region except for ``parse_message``, which
belongs to the server's cost; the timed region is ``parse_message`` +
``server.router.receive`` (+ waiting for the 200s, whose store commit completes
on the event loop).  Time is ``time.thread_time()`` of the main thread, so
the store's writer thread and idle waiting are not counted: the figure is
main-thread CPU per request, an upper bound on one core's throughput.

Output: ``N requests, server busy Ts = R req/s (U us/req) codes={...}``
(codes of the second round, all 200 when the path works), then the CPU the
SQLite writer thread spent on the same batches (``store thread Ts (U us/req)``).

**message mode.**  The same server; half the users send, the other half
receive (100 each).  Every user is registered first (the senders from the
address they send from, as in ``bench/run.py message``, so no copy goes to a
"sender's other device"; the recipients each from an address of their own).
Each call is the sipp ``message_auth_uac.xml`` exchange: a MESSAGE without
credentials (answered 407), the same MESSAGE with Proxy-Authorization
(stored, committed, then relayed to the recipient's device), and that
device's 200 for the relayed MESSAGE (after which the sender gets 200).  The
device's 200 is built outside the timed region; its ``parse_message`` and
``_on_message`` are timed.  Requests per call: 3 in (2 MESSAGEs, one 200),
3 out (407, the relayed MESSAGE, the 200); figures are per call and per
incoming message (calls x 3).  History and store-and-forward are on (the
defaults): every message is committed with its two history rows before it is
relayed.

**micro mode.**  ``timeit`` of the pieces of ``sipim.sip`` the path runs for
every request: ``parse_message`` of a typical REGISTER (with Authorization)
and MESSAGE, ``parse_name_addr`` of the common shapes, ``Via.parse``, the
typed accessors a server reads, and ``make_response`` + ``to_bytes``.
Figures are the best of 5 repeats, in microseconds per call.
"""

from __future__ import annotations

import asyncio
import cProfile
import functools
import pstats
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import os  # noqa: E402

from sipim.sip.digest import build_authorization, ha1, parse_challenge  # noqa: E402
from sipim.sip.headers import Via  # noqa: E402
from sipim.sip.message import make_response  # noqa: E402
from sipim.sip.parser import parse_message  # noqa: E402
from sipim.sip.uri import parse_name_addr  # noqa: E402

DOMAIN = "bench.example"
USERS = 200
PROFILE_PATH = os.environ.get("HOTPATH_PROF", "/tmp/hotpath.prof")


def register_bytes(user: str, cseq: int, call_id: str, port: int, authorization: str | None = None) -> bytes:
    """A REGISTER as sipp's register_auth.xml sends it (bench/scenarios)."""
    lines = [
        f"REGISTER sip:{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{DOMAIN}>;tag=abc{cseq}",
        f"To: <sip:{user}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:{port};transport=UDP>",
        "Expires: 3600",
        "User-Agent: sipp-bench",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def message_bytes(sender: str, recipient: str, cseq: int, call_id: str, port: int,
                  authorization: str | None = None) -> bytes:
    """A MESSAGE as sipp's message_auth_uac.xml sends it (bench/scenarios)."""
    body = f"Hello {recipient}, this is message {call_id[:8]} from {sender}.\r\n"
    lines = [
        f"MESSAGE sip:{recipient}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex[:12]};rport",
        "Max-Forwards: 70",
        f"From: <sip:{sender}@{DOMAIN}>;tag=1234M{call_id[:6]}",
        f"To: <sip:{recipient}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} MESSAGE",
    ]
    if authorization:
        lines.append(f"Proxy-Authorization: {authorization}")
    lines += ["Content-Type: text/plain", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def device_answer(relayed: bytes) -> bytes:
    """The recipient device's 200 for a relayed MESSAGE, as message_answer_ooc.xml builds it."""
    request = parse_message(relayed)
    lines = ["SIP/2.0 200 OK"]
    lines += [f"Via: {via}" for via in request.headers.raw_values("Via")]
    lines += [
        f"From: {request.headers.get('From')}",
        f"To: {request.headers.get('To')};tag=dev{uuid.uuid4().hex[:6]}",
        f"Call-ID: {request.headers.get('Call-ID')}",
        f"CSeq: {request.headers.get('CSeq')}",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


MESSAGE_BYTES = (
    "MESSAGE sip:user1@bench.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK7a8b9c0d1e2f;rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: \"User Zero\" <sip:user0@bench.example>;tag=3f2a1b\r\n"
    "To: <sip:user1@bench.example>\r\n"
    "Call-ID: 6c1f0e2d3b4a59687766554433221100@127.0.0.1\r\n"
    "CSeq: 2 MESSAGE\r\n"
    "Proxy-Authorization: Digest username=\"user0\", realm=\"bench.example\", "
    "nonce=\"abcdef0123456789\", uri=\"sip:user1@bench.example\", response=\"0123456789abcdef0123456789abcdef\", "
    "algorithm=MD5, cseq=2\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 5\r\n\r\nhello"
).encode()


class Bench:
    """A started SipimServer with USERS users, sends captured, main-thread and
    store-thread CPU accounted."""

    def __init__(self, profile: bool) -> None:
        self.profile = profile
        self.profiler = cProfile.Profile()
        self.busy = 0.0
        self.sent: list[tuple[bytes, object]] = []
        self.ha1s = {f"user{i}": ha1(f"user{i}", DOMAIN, f"pw{i}") for i in range(USERS)}

    async def start(self, data_dir: str) -> None:
        from sipim.app import SipimServer
        from sipim.cli import make_user
        from sipim.config import Config

        config = Config(
            data_dir=Path(data_dir),
            domain=DOMAIN,
            listen=("udp:127.0.0.1:0?digest=MD5",),
            allow_insecure=True,
        )
        self.server = server = SipimServer(config)
        await server.start()
        for i in range(USERS):
            await server.store.add_user(make_user(f"user{i}", DOMAIN, f"pw{i}"))
        await server.users.preload()
        server.transports.send = lambda data, target: self.sent.append((data, target))
        self.port = server.listening()[0][2]

    def source(self, port: int):
        from sipim.net import Source
        return Source("udp", ("127.0.0.1", port), ("127.0.0.1", self.port))

    def store_thread_time(self) -> float:
        """CPU time of the SQLite store's worker thread (0 for other stores)."""
        executor = getattr(self.server.store, "_executor", None)
        return executor.submit(time.thread_time).result() if executor is not None else 0.0

    async def feed(self, items: list[tuple[bytes, object]], expect: int,
                   requests: bool = False, to=None) -> list[tuple[bytes, object]]:
        """Parse and hand ``items`` to the server (timed), run the loop until ``expect``
        distinct responses (or requests) went out (timed: the work they wait for runs
        on this thread), return them.  Retransmissions (a slow run, e.g. under
        valgrind, lets timers E and F fire) are left out: they are byte-identical."""
        sent = self.sent
        sent.clear()
        on_message = self.server.router.receive
        seen: dict[bytes, object] = {}

        def collect() -> int:
            for data, target in sent:
                if data.startswith(b"SIP/2.0 ") != requests and data not in seen and (
                        to is None or target.port in to):
                    seen[data] = target
            sent.clear()
            return len(seen)

        if self.profile:
            self.profiler.enable()
        t0 = time.thread_time()
        for data, source in items:
            on_message(parse_message(data), source)
        while collect() < expect:
            await asyncio.sleep(0)
            if collect() < expect:
                await asyncio.sleep(0.001)
        self.busy += time.thread_time() - t0
        if self.profile:
            self.profiler.disable()
        return list(seen.items())

    async def register(self, user: str, port: int) -> None:
        """Register ``user`` from 127.0.0.1:``port`` (not timed)."""
        busy = self.busy
        call_id = uuid.uuid4().hex
        source = self.source(port)
        profile, self.profile = self.profile, False
        (challenge, _), = await self.feed([(register_bytes(user, 1, call_id, port), source)], 1)
        header = parse_challenge(parse_message(challenge).headers.get("WWW-Authenticate"))
        authorization = build_authorization(header, "REGISTER", f"sip:{DOMAIN}", user, self.ha1s[user])
        (ok, _), = await self.feed([(register_bytes(user, 2, call_id, port, authorization), source)], 1)
        assert ok.startswith(b"SIP/2.0 200"), ok[:40]
        self.profile = profile
        self.busy = busy

    def report(self, label: str, units: int, store_cpu: float, codes: dict[str, int], per: str = "req") -> None:
        if self.profile:
            self.profiler.dump_stats(PROFILE_PATH)
            pstats.Stats(self.profiler).sort_stats(self.sort).print_stats(45)
        busy = self.busy
        print(
            f"{label}, server busy {busy:.3f}s = {units / busy:.0f} {per}/s "
            f"({busy / units * 1e6:.1f} us/{per}) codes={codes}; "
            f"store thread {store_cpu:.3f}s ({store_cpu / units * 1e6:.1f} us/{per})"
        )


async def run_path(calls: int, profile: bool, sort: str) -> None:
    bench = Bench(profile)
    bench.sort = sort
    with tempfile.TemporaryDirectory(prefix="sipim-hotpath-") as data_dir:
        await bench.start(data_dir)
        try:
            source = bench.source(5070)
            codes: dict[str, int] = {}
            store0 = bench.store_thread_time()
            for start in range(0, calls, 100):
                batch = [(f"user{k % USERS}", uuid.uuid4().hex) for k in range(start, min(start + 100, calls))]
                first = [(register_bytes(user, 1, call_id, 5070), source) for user, call_id in batch]
                sent = await bench.feed(first, len(first))
                challenges = [parse_challenge(parse_message(m).headers.get("WWW-Authenticate")) for m, _ in sent]
                second = [
                    (register_bytes(
                        user, 2, call_id, 5070,
                        build_authorization(challenge, "REGISTER", f"sip:{DOMAIN}", user, bench.ha1s[user]),
                    ), source)
                    for (user, call_id), challenge in zip(batch, challenges)
                ]
                # the 200s wait for the store commit
                for message, _ in await bench.feed(second, len(second)):
                    code = message.split(b" ", 2)[1].decode()
                    codes[code] = codes.get(code, 0) + 1
            store_cpu = bench.store_thread_time() - store0
            bench.report(f"{2 * calls} requests", 2 * calls, store_cpu, codes)
        finally:
            await bench.server.stop()


async def run_message(calls: int, profile: bool, sort: str, elsewhere: bool = False) -> None:
    bench = Bench(profile)
    bench.sort = sort
    senders = [f"user{i}" for i in range(USERS // 2)]
    recipients = [f"user{i}" for i in range(USERS // 2, USERS)]
    sender_port = 5070
    with tempfile.TemporaryDirectory(prefix="sipim-hotpath-") as data_dir:
        await bench.start(data_dir)
        try:
            for user in senders:
                # "elsewhere": the sender's registered device is not the one sending (as when
                # a first sipp registered it and exited): every message is copied to it, and
                # the copy is retransmitted until Timer F, 32 s later.
                await bench.register(user, sender_port + 1 if elsewhere else sender_port)
            for n, user in enumerate(recipients):
                await bench.register(user, 6000 + n)
            source = bench.source(sender_port)
            device_sources = {6000 + n: bench.source(6000 + n) for n in range(len(recipients))}
            codes: dict[str, int] = {}
            relayed_total = 0
            store0 = bench.store_thread_time()
            for start in range(0, calls, 100):
                batch = [(senders[k % len(senders)], recipients[k % len(recipients)], uuid.uuid4().hex)
                         for k in range(start, min(start + 100, calls))]
                first = [(message_bytes(s, r, 1, call_id, sender_port), source) for s, r, call_id in batch]
                sent = await bench.feed(first, len(first))
                challenges = [parse_challenge(parse_message(m).headers.get("Proxy-Authenticate")) for m, _ in sent]
                second = [
                    (message_bytes(
                        s, r, 2, call_id, sender_port,
                        build_authorization(challenge, "MESSAGE", f"sip:{r}@{DOMAIN}", s, bench.ha1s[s]),
                    ), source)
                    for (s, r, call_id), challenge in zip(batch, challenges)
                ]
                # committed, then relayed to the recipients' devices
                relayed = await bench.feed(second, len(second), requests=True, to=device_sources)
                relayed_total += len(relayed)
                answers = [(device_answer(m), device_sources[target.port]) for m, target in relayed]
                for message, _ in await bench.feed(answers, len(answers)):
                    code = message.split(b" ", 2)[1].decode()
                    codes[code] = codes.get(code, 0) + 1
            if elsewhere:
                # The copies' retransmissions and Timer F belong to the calls: wait them out.
                copies = [0]
                bench.sent.clear()
                t0 = time.thread_time()
                await asyncio.sleep(64 * bench.server.config.t1 + 1)
                bench.busy += time.thread_time() - t0
                copies[0] = len(bench.sent)
                print(f"after the calls: {copies[0]} retransmissions to the senders' other devices")
            store_cpu = bench.store_thread_time() - store0
            assert relayed_total == calls, relayed_total
            bench.report(f"{calls} calls ({3 * calls} messages in)", calls, store_cpu, codes, per="call")
        finally:
            await bench.server.stop()


def run_micro() -> None:
    register = register_bytes(
        "user7", 2, "0f1e2d3c4b5a69788796a5b4c3d2e1f0", 5070,
        'Digest username="user7", realm="bench.example", nonce="MTcwMDAwMDAwMC4wOmFiY2RlZg", '
        'uri="sip:bench.example", response="0123456789abcdef0123456789abcdef", algorithm=MD5',
    )
    via_text = "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK0123456789ab;rport"
    parsed_register = parse_message(register)

    def accessors() -> None:
        # what the registrar reads from a fresh REGISTER
        message = parse_message(register)
        message.top_via, message.from_, message.to, message.cseq, message.call_id
        message.contacts, message.expires, message.headers.get("Authorization")
        message.headers.get_all("Require"), message.headers.get_all("Supported")

    def respond() -> bytes:
        response = make_response(parsed_register, 200, to_tag="a1b2c3", headers=[("Expires", "3600")])
        return response.to_bytes()

    cases = [
        ("parse_message(REGISTER + Authorization)", lambda: parse_message(register)),
        ("parse_message(MESSAGE)", lambda: parse_message(MESSAGE_BYTES)),
        ("parse + registrar accessors", accessors),
        ("parse_name_addr('<sip:u@h>;tag=x')", lambda: parse_name_addr("<sip:user7@bench.example>;tag=abc2")),
        ("parse_name_addr(Contact, port+transport)",
         lambda: parse_name_addr("<sip:user7@127.0.0.1:5070;transport=UDP>;expires=3600")),
        ("parse_name_addr('\"Name\" <sip:u@h>;tag=x')",
         lambda: parse_name_addr('"User Zero" <sip:user0@bench.example>;tag=3f2a1b')),
        ("Via.parse", lambda: Via.parse(via_text)),
        ("make_response + to_bytes", respond),
    ]
    for label, function in cases:
        timer = timeit.Timer(function)
        number, _ = timer.autorange()
        best = min(timer.repeat(5, number)) / number
        print(f"{best * 1e6:8.2f} us  {label}")


def main(argv: list[str]) -> None:
    if len(argv) > 1 and argv[1] == "micro":
        run_micro()
        return
    mode = run_path
    if len(argv) > 1 and argv[1] == "register":
        argv = argv[1:]
    elif len(argv) > 1 and argv[1] == "message":
        mode = run_message
        argv = argv[1:]
        if "elsewhere" in argv:
            argv = [a for a in argv if a != "elsewhere"]
            mode = functools.partial(run_message, elsewhere=True)
    calls = int(argv[1]) if len(argv) > 1 else 5000
    profile = "prof" in argv
    sort = argv[3] if len(argv) > 3 else "tottime"
    try:
        import uvloop  # the server's production loop when installed
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(mode(calls, profile, sort))


if __name__ == "__main__":
    main(sys.argv)
