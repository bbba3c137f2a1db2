"""In-process micro-benchmark of sipim's authenticated REGISTER path (no sockets).

Where ``bench/run.py`` measures the whole server under sipp load, this measures
only the Python CPU the server spends per request, so a change in the SIP
message layer, the core or the app shows up without network or scheduling
noise.

    python bench/hotpath.py 5000                 # 5000 calls = 10000 requests
    python bench/hotpath.py 5000 prof            # + cProfile table by tottime
    python bench/hotpath.py 5000 prof cumulative # + cProfile table by cumtime
    python bench/hotpath.py micro                # timeit of the sip/ parsing pieces

With ``prof`` the raw profile is also written to /tmp/hotpath.prof (read it
with ``pstats.Stats(...).print_callers(...)``).  On a busy machine timings
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
``server._on_message`` (+ waiting for the 200s, whose store commit completes
on the event loop).  Time is ``time.thread_time()`` of the main thread, so
the store's writer thread and idle waiting are not counted: the figure is
main-thread CPU per request, an upper bound on one core's throughput.

Output: ``N requests, server busy Ts = R req/s (U us/req) codes={...}``
(codes of the second round, all 200 when the path works).

**micro mode.**  ``timeit`` of the pieces of ``sipim.sip`` the path runs for
every request: ``parse_message`` of a typical REGISTER (with Authorization)
and MESSAGE, ``parse_name_addr`` of the common shapes, ``Via.parse``, the
typed accessors a server reads, and ``make_response`` + ``to_bytes``.
Figures are the best of 5 repeats, in microseconds per call.
"""

from __future__ import annotations

import asyncio
import cProfile
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

from sipim.sip.digest import build_authorization, ha1, parse_challenge  # noqa: E402
from sipim.sip.headers import Via  # noqa: E402
from sipim.sip.message import make_response  # noqa: E402
from sipim.sip.parser import parse_message  # noqa: E402
from sipim.sip.uri import parse_name_addr  # noqa: E402

DOMAIN = "bench.example"
USERS = 200


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


async def run_path(calls: int, profile: bool, sort: str) -> None:
    # imported here so `micro` does not pay for the server's imports
    from sipim.app import SipimServer
    from sipim.cli import make_user
    from sipim.config import Config
    from sipim.transport.base import Source

    ha1s = {f"user{i}": ha1(f"user{i}", DOMAIN, f"pw{i}") for i in range(USERS)}
    with tempfile.TemporaryDirectory(prefix="sipim-hotpath-") as data_dir:
        config = Config(
            data_dir=Path(data_dir),
            domain=DOMAIN,
            listen=("udp:127.0.0.1:0?digest=MD5",),
            allow_insecure=True,
        )
        server = SipimServer(config)
        await server.start()
        try:
            for i in range(USERS):
                await server.store.add_user(make_user(f"user{i}", DOMAIN, f"pw{i}"))
            await server.users.preload()
            sent: list[bytes] = []
            server.transports.send = lambda data, target: sent.append(data)
            source = Source("udp", ("127.0.0.1", 5070), ("127.0.0.1", server.listening()[0][2]))
            profiler = cProfile.Profile()
            busy = 0.0
            codes: dict[str, int] = {}
            for start in range(0, calls, 100):
                batch = [(f"user{k % USERS}", uuid.uuid4().hex) for k in range(start, min(start + 100, calls))]
                first = [register_bytes(user, 1, call_id, 5070) for user, call_id in batch]
                sent.clear()
                if profile:
                    profiler.enable()
                t0 = time.thread_time()
                for data in first:
                    server._on_message(parse_message(data), source)
                busy += time.thread_time() - t0
                if profile:
                    profiler.disable()
                challenges = [parse_challenge(parse_message(m).headers.get("WWW-Authenticate")) for m in sent]
                second = [
                    register_bytes(
                        user, 2, call_id, 5070,
                        build_authorization(challenge, "REGISTER", f"sip:{DOMAIN}", user, ha1s[user]),
                    )
                    for (user, call_id), challenge in zip(batch, challenges)
                ]
                sent.clear()
                if profile:
                    profiler.enable()
                t0 = time.thread_time()
                for data in second:
                    server._on_message(parse_message(data), source)
                while len(sent) < len(second):  # the 200s wait for the store commit
                    await asyncio.sleep(0.002)
                busy += time.thread_time() - t0
                if profile:
                    profiler.disable()
                for message in sent:
                    code = message.split(b" ", 2)[1].decode()
                    codes[code] = codes.get(code, 0) + 1
            if profile:
                profiler.dump_stats("/tmp/hotpath.prof")
                pstats.Stats(profiler).sort_stats(sort).print_stats(45)
            requests = 2 * calls
            print(
                f"{requests} requests, server busy {busy:.3f}s = {requests / busy:.0f} req/s "
                f"({busy / requests * 1e6:.1f} us/req) codes={codes}"
            )
        finally:
            await server.stop()


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
    calls = int(argv[1]) if len(argv) > 1 else 5000
    profile = "prof" in argv
    sort = argv[3] if len(argv) > 3 else "tottime"
    try:
        import uvloop  # the server's production loop when installed
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(run_path(calls, profile, sort))


if __name__ == "__main__":
    main(sys.argv)
