"""RFC 3325: the core asserts the authenticated identity and strips what the client claimed."""

from __future__ import annotations

from sipim.config import Config
from sipim.core.auth import Authenticator, UserCache
from sipim.core.lockout import Lockout
from sipim.core.proxy import CoreProxy
from sipim.sip.clock import FakeClock
from sipim.sip.digest import DigestServer, build_authorization, ha1, parse_challenge
from sipim.sip.message import Request
from sipim.store.models import User
from sipim.net import Source

DOMAIN = "example.test"


class CapturingRole:
    def __init__(self):
        self.seen = []

    async def handle(self, request, identity, source):
        from sipim.sip.message import make_response

        self.seen.append((request, identity))
        return make_response(request, 200, "OK")


def message(from_user="alice", extra=()):
    return Request("MESSAGE", f"sip:bob@{DOMAIN}", [
        ("Via", "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK1"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:{from_user}@{DOMAIN}>;tag=1"),
        ("To", f"<sip:bob@{DOMAIN}>"),
        ("Call-ID", "c1"),
        ("CSeq", "1 MESSAGE"),
        *extra,
    ], b"hi")


async def make_proxy(sqlite_store):
    await sqlite_store.add_user(User("alice", DOMAIN, ha1("alice", DOMAIN, "pw", "MD5"),
                                     ha1("alice", DOMAIN, "pw", "SHA-256"), display_name='Alice "A"'))
    clock = FakeClock(1000.0)
    digest = DigestServer(DOMAIN, b"s" * 32, clock)
    auth = Authenticator(realm=DOMAIN, digest=digest, users=UserCache(sqlite_store, DOMAIN),
                         lockout=Lockout(threshold=10, window=300, duration=900), now=clock.now)
    config = Config(domain=DOMAIN)
    role = CapturingRole()
    return CoreProxy(config, authenticator=auth, role=role), role


SOURCE = Source("tls", ("192.0.2.1", 5061), ("127.0.0.1", 5061))


async def authorized(proxy, request_factory):
    first = await proxy.handle(request_factory(()), SOURCE)
    assert first.status == 407
    challenge = parse_challenge(first.headers.get_all("Proxy-Authenticate")[0])
    credentials = build_authorization(challenge, "MESSAGE", f"sip:bob@{DOMAIN}", "alice",
                                      ha1("alice", DOMAIN, "pw", challenge.algorithm))
    return await proxy.handle(request_factory((("Proxy-Authorization", credentials),)), SOURCE)


async def test_rfc3325_9_1_core_asserts_identity_and_strips_client_assertions(sqlite_store):
    proxy, role = await make_proxy(sqlite_store)
    spoof = (("P-Asserted-Identity", "<sip:ceo@example.test>"), ("P-Preferred-Identity", "<sip:ceo@example.test>"))
    response = await authorized(proxy, lambda auth: message(extra=spoof + auth))
    assert response.status == 200
    [(request, identity)] = role.seen
    assert identity.aor == f"sip:alice@{DOMAIN}"
    assert request.headers.get_all("P-Asserted-Identity") == [f'"Alice \\"A\\"" <sip:alice@{DOMAIN}>']
    assert "P-Preferred-Identity" not in request.headers
    assert "Proxy-Authorization" not in request.headers


async def test_from_must_match_the_authenticated_user(sqlite_store):
    proxy, role = await make_proxy(sqlite_store)
    response = await authorized(proxy, lambda auth: message(from_user="bob", extra=auth))
    assert response.status == 403 and "From" in response.reason
    assert role.seen == []


async def test_unauthenticated_request_never_reaches_the_role(sqlite_store):
    proxy, role = await make_proxy(sqlite_store)
    response = await proxy.handle(message(extra=(("P-Asserted-Identity", "<sip:alice@example.test>"),)), SOURCE)
    assert response.status == 407
    assert role.seen == []


async def test_answer_decides_challenges_without_a_coroutine(sqlite_store):
    # RFC 3261 §22.3: the 407 needs no role and no store; CoreProxy.answer gives the
    # Response itself, and an awaitable only for what the role must decide.
    from sipim.sip.message import Response

    proxy, role = await make_proxy(sqlite_store)
    await proxy._auth._users.preload()  # alice's HA1 in memory, as the server keeps it
    first = proxy.answer(message(), SOURCE)
    assert isinstance(first, Response) and first.status == 407
    challenge = parse_challenge(first.headers.get_all("Proxy-Authenticate")[0])
    credentials = build_authorization(challenge, "MESSAGE", f"sip:bob@{DOMAIN}", "alice",
                                      ha1("alice", DOMAIN, "pw", challenge.algorithm))
    pending = proxy.answer(message(extra=(("Proxy-Authorization", credentials),)), SOURCE)
    assert not isinstance(pending, Response)
    assert (await pending).status == 200
    assert [identity.aor for _, identity in role.seen] == [f"sip:alice@{DOMAIN}"]
    cancel = Request("CANCEL", f"sip:bob@{DOMAIN}", [("Via", "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK1"),
                                                     ("From", f"<sip:alice@{DOMAIN}>;tag=1"),
                                                     ("To", f"<sip:bob@{DOMAIN}>"), ("Call-ID", "c1"),
                                                     ("CSeq", "1 CANCEL")])
    assert proxy.answer(cancel, SOURCE).status == 481
