"""RFC 3325: the core asserts the authenticated identity and strips what the client claimed."""

from __future__ import annotations

from sipim.config import Config
from sipim.core.auth import Authenticator, UserCache
from sipim.core.identity import Admission
from sipim.core.lockout import Lockout
from sipim.core.proxy import CoreProxy
from sipim.sip.clock import FakeClock
from sipim.sip.digest import DigestServer, build_authorization, ha1, parse_challenge
from sipim.sip.message import Request, Response
from sipim.store.models import User
from sipim.net import Source

DOMAIN = "example.test"


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
    return CoreProxy(Config(domain=DOMAIN), authenticator=auth)


SOURCE = Source("tls", ("192.0.2.1", 5061), ("127.0.0.1", 5061))


async def admit(proxy, request):
    result = proxy.admit(request, SOURCE)
    return result if isinstance(result, (Admission, Response)) else await result


async def authorized(proxy, request_factory):
    first = await admit(proxy, request_factory(()))
    assert isinstance(first, Response) and first.status == 407
    challenge = parse_challenge(first.headers.get_all("Proxy-Authenticate")[0])
    credentials = build_authorization(challenge, "MESSAGE", f"sip:bob@{DOMAIN}", "alice",
                                      ha1("alice", DOMAIN, "pw", challenge.algorithm))
    request = request_factory((("Proxy-Authorization", credentials),))
    return request, await admit(proxy, request)


async def test_rfc3325_9_1_core_asserts_identity_and_strips_client_assertions(sqlite_store):
    proxy = await make_proxy(sqlite_store)
    spoof = (("P-Asserted-Identity", "<sip:ceo@example.test>"), ("P-Preferred-Identity", "<sip:ceo@example.test>"))
    request, admission = await authorized(proxy, lambda auth: message(extra=spoof + auth))
    assert isinstance(admission, Admission)
    assert admission.identity.aor == f"sip:alice@{DOMAIN}" and admission.source == SOURCE
    assert request.headers.get_all("P-Asserted-Identity") == [f'"Alice \\"A\\"" <sip:alice@{DOMAIN}>']
    assert "P-Preferred-Identity" not in request.headers
    assert "Proxy-Authorization" not in request.headers


async def test_from_must_match_the_authenticated_user(sqlite_store):
    proxy = await make_proxy(sqlite_store)
    _, refusal = await authorized(proxy, lambda auth: message(from_user="bob", extra=auth))
    assert isinstance(refusal, Response) and refusal.status == 403 and "From" in refusal.reason


async def test_rfc3261_22_3_unauthenticated_request_is_challenged_whatever_it_claims(sqlite_store):
    proxy = await make_proxy(sqlite_store)
    result = await admit(proxy, message(extra=(("P-Asserted-Identity", "<sip:alice@example.test>"),)))
    assert isinstance(result, Response) and result.status == 407


async def test_challenges_are_decided_without_a_coroutine(sqlite_store):
    # RFC 3261 §22.3: the 407 needs no store once the user's HA1 is cached; admit
    # gives the Response itself, and an awaitable only for what needs the store.
    proxy = await make_proxy(sqlite_store)
    await proxy._auth._users.preload()  # alice's HA1 in memory, as the server keeps it
    first = proxy.admit(message(), SOURCE)
    assert isinstance(first, Response) and first.status == 407
    challenge = parse_challenge(first.headers.get_all("Proxy-Authenticate")[0])
    credentials = build_authorization(challenge, "MESSAGE", f"sip:bob@{DOMAIN}", "alice",
                                      ha1("alice", DOMAIN, "pw", challenge.algorithm))
    admission = proxy.admit(message(extra=(("Proxy-Authorization", credentials),)), SOURCE)
    assert isinstance(admission, Admission) and admission.identity.username == "alice"
