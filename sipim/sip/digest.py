"""SIP digest authentication, server side (RFC 3261 §22.4, RFC 7616, RFC 8760).

Design (see docs/internals.md, "sip: digest"):

* Nonces are signed by the server, so checking one needs no lookup and several
  nodes sharing `secret` accept each other's nonces::

      nonce = base64url( issued_ms[8] || random[12] || HMAC-SHA256(secret, issued_ms || random || realm)[:16] )

  36 bytes -> 48 characters, no padding.  The issue time is inside, so an expired
  but genuine nonce is told apart from a forged one (STALE vs BAD_NONCE).
* Replay protection (RFC 7616 §3.4, §5.3): with qop, a bounded LRU table maps
  nonce -> highest nonce-count accepted; a count not greater than that is a REPLAY.
  When the table overflows, the evicted nonce's issue time becomes a watermark and
  any nonce not in the table issued at or before it is answered STALE, so eviction
  cannot reopen a replay window; the client just retries with a fresh nonce.
  The table is behind a small interface (`NonceCounts`): worker processes share one
  in memory mapped by all of them (sipim/cluster/shared.py) with the same rules.
* The HA1 handed to `verify` is H(username:realm:password) for the hash of the
  credentials' algorithm (the form stored in the database; the security model: "HA1 only,
  never plain passwords").  For the "-sess" algorithms the session key
  H(HA1:nonce:cnonce) is derived here (RFC 7616 §3.4.2).

Client side helpers (`parse_challenge`, `build_authorization`, `digest_response`)
are here too: the Python UA and the tests need them, and they share the parser.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

from .clock import TimeSource

__all__ = [
    "ALGORITHMS",
    "DigestChallenge",
    "DigestCredentials",
    "DigestError",
    "DigestResult",
    "DigestServer",
    "MemoryNonceCounts",
    "NonceCounts",
    "build_authorization",
    "digest_response",
    "ha1",
    "parse_challenge",
    "parse_credentials",
]


class DigestError(ValueError):
    """Malformed or unusable Authorization / WWW-Authenticate value."""


class DigestResult(enum.Enum):
    OK = "ok"
    STALE = "stale"                # genuine nonce, right password, but expired: re-challenge with stale=true
    BAD_NONCE = "bad-nonce"        # not a nonce this server (secret + realm) issued
    BAD_RESPONSE = "bad-response"  # wrong password (or wrong user / HA1)
    REPLAY = "replay"              # nonce-count not greater than one already accepted
    BAD_REALM = "bad-realm"        # credentials for another realm


def _md5_hex(data: str) -> str:
    return hashlib.md5(data.encode()).hexdigest()


def _sha256_hex(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


# algorithm token (upper-cased) -> (hash of a str as lower-case hex, is a "-sess" variant,
# hashlib name for hashing raw bodies).  RFC 7616 §3.3 / RFC 8760 §2.1.
# SHA-512-256 is not offered: few SIP stacks implement it.
ALGORITHMS: dict[str, tuple[Callable[[str], str], bool, str]] = {
    "MD5": (_md5_hex, False, "md5"),
    "MD5-SESS": (_md5_hex, True, "md5"),
    "SHA-256": (_sha256_hex, False, "sha256"),
    "SHA-256-SESS": (_sha256_hex, True, "sha256"),
}
# Canonical spelling for output (RFC 7616 §3.3 tokens).
_CANONICAL_ALGORITHM = {"MD5": "MD5", "MD5-SESS": "MD5-sess",
                        "SHA-256": "SHA-256", "SHA-256-SESS": "SHA-256-sess"}


def _hash_for(algorithm: str) -> tuple[Callable[[str], str], bool, str]:
    try:
        return ALGORITHMS[algorithm.upper()]
    except KeyError:
        raise DigestError(f"Unsupported digest algorithm {algorithm!r}") from None


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username:realm:password) as lower-case hex (RFC 7616 §3.4.2).

    For "MD5-sess"/"SHA-256-sess" this is the same stored value as for the plain
    algorithm; the per-session key is derived at verification time.
    """
    hash_hex = _hash_for(algorithm)[0]
    return hash_hex(f"{username}:{realm}:{password}")


def digest_response(
    ha1_value: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes | bytearray | memoryview = b"",
) -> str:
    """The `response` value (RFC 7616 §3.4.1, RFC 2069 form when `qop` is None)."""
    hash_hex, is_session, hash_name = _hash_for(algorithm)
    if is_session:
        ha1_value = hash_hex(f"{ha1_value}:{nonce}:{cnonce}")
    if qop == "auth-int":
        # RFC 7616 §3.4.3: A2 = Method ":" request-uri ":" H(entity-body)
        body_hash = hashlib.new(hash_name, body).hexdigest()
        ha2 = hash_hex(f"{method}:{uri}:{body_hash}")
    else:
        ha2 = hash_hex(f"{method}:{uri}")
    if qop is None:
        return hash_hex(f"{ha1_value}:{nonce}:{ha2}")
    return hash_hex(f"{ha1_value}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# ---------------------------------------------------------------------------
# auth-param lists: `Digest name=value, name="quoted", ...`  (RFC 7616 §3.4, RFC 3261 §25.1)

_SCHEME = re.compile(r"[ \t\r\n]*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:[ \t\r\n]+|$)")
# auth-param = token BWS "=" BWS ( token / quoted-string )   (RFC 7235 §2.1, tolerant of LWS)
_PARAM_TEXT = r"""([A-Za-z0-9!#$%&'*+.^_`|~-]+)[ \t\r\n]*=[ \t\r\n]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s",]*))"""
# Leading separators are part of a match so findall steps from param to param.
_PARAM = re.compile(r"[ \t\r\n,]*" + _PARAM_TEXT, re.DOTALL)
# The whole list; empty elements (",,") are allowed by RFC 7230 §7.  Validated once with
# fullmatch, then the params are pulled out with findall: both loops run in C.
_PARAM_LIST = re.compile(
    r"[ \t\r\n,]*(?:{p}(?:[ \t\r\n]*,[ \t\r\n,]*{p})*)?[ \t\r\n,]*".format(
        p=_PARAM_TEXT.replace("(", "(?:").replace("(?:?:", "(?:")),
    re.DOTALL,
)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_MAX_HEADER_LENGTH = 8192


def _parse_auth_params(value: str, what: str) -> dict[str, str]:
    """Scheme check plus param dict (names lower-cased, quotes and escapes removed)."""
    if not isinstance(value, str):
        raise DigestError(f"{what} must be a string")
    if len(value) > _MAX_HEADER_LENGTH:
        raise DigestError(f"{what} too long")
    fast = _parse_simple_auth_params(value)
    if fast is not None:
        return fast
    scheme = _SCHEME.match(value)
    if scheme is None or scheme.group(1).lower() != "digest":
        raise DigestError(f"{what} is not a Digest value")
    start = scheme.end()
    if _PARAM_LIST.fullmatch(value, start) is None:
        raise DigestError(f"Malformed {what}")
    params: dict[str, str] = {}
    for name, quoted, token in _PARAM.findall(value, start):
        name = name.lower()
        if name in params:
            raise DigestError(f"Duplicate {name!r} in {what}")
        if quoted:
            params[name] = _UNESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            params[name] = token
    return params


def _parse_simple_auth_params(value: str) -> dict[str, str] | None:
    """Fast path of ``_parse_auth_params`` for the shape every client sends:
    ``Digest name="quoted", name=token, ...`` with alphanumeric names, quoted
    values without backslashes, alphanumeric/'-' tokens and ", " (or ",")
    between parameters.  Returns None -- never raises -- for anything else
    (other whitespace, escapes, a duplicate, an empty or odd value...), and
    the regular expressions decide; when it returns a dict it is the one they
    build (tests/sip/test_digest.py checks this on generated text).  str.find
    jumps from delimiter to delimiter: linear, no backtracking.
    """
    # (slices and == rather than startswith(x, start) / isascii() per piece:
    # those are plain method calls once compiled, the former are inlined)
    if not value.startswith(("Digest ", "digest ", "DIGEST ")) or not value.isascii():
        return None
    params: dict[str, str] = {}
    end = len(value)
    i = 7
    while True:
        equals = value.find("=", i)
        if equals < 0:
            return None
        name = value[i:equals]
        if not name.isalnum():  # ASCII: a token without LWS
            return None
        name = name.lower()
        if name in params:
            return None
        if value[equals + 1 : equals + 2] == '"':
            close = value.find('"', equals + 2)
            if close < 0:
                return None
            text = value[equals + 2 : close]
            if "\\" in text:
                return None
            after = close + 1
        else:
            comma = value.find(",", equals + 1)
            after = end if comma < 0 else comma
            text = value[equals + 1 : after]
            if not text.isalnum() and not text.replace("-", "").isalnum():
                return None
        params[name] = text
        if after == end:
            return params
        if value[after : after + 1] != ",":
            return None
        i = after + 2 if value[after + 1 : after + 2] == " " else after + 1


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_HEX = frozenset("0123456789abcdefABCDEF")


_CREDENTIAL_FIELDS = ("username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "nc_value",
                      "cnonce", "opaque", "userhash")


class DigestCredentials:
    """A parsed Authorization / Proxy-Authorization value (RFC 7616 §3.4).

    Treat as immutable.  A plain class with ``__slots__`` rather than a frozen
    dataclass: one is built per authenticated request, and a frozen
    dataclass pays an ``object.__setattr__`` per field (it is also slow
    compiled by mypyc, and would not pickle).
    """

    __slots__ = ("username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "nc_value",
                 "cnonce", "opaque", "userhash")

    username: str
    realm: str
    nonce: str
    uri: str
    response: str         # lower-case hex
    algorithm: str        # canonical spelling, e.g. "SHA-256"
    qop: str | None       # "auth" / "auth-int" / None (RFC 2069 form)
    nc: str | None        # as sent (it is hashed verbatim)
    nc_value: int         # nc as a number, for replay checks
    cnonce: str | None
    opaque: str | None
    userhash: bool        # RFC 7616 §3.4.4: username is H(username:realm)

    def __init__(
        self,
        username: str,
        realm: str,
        nonce: str,
        uri: str,
        response: str,
        algorithm: str = "MD5",
        qop: str | None = None,
        nc: str | None = None,
        nc_value: int = 0,
        cnonce: str | None = None,
        opaque: str | None = None,
        userhash: bool = False,
    ) -> None:
        self.username = username
        self.realm = realm
        self.nonce = nonce
        self.uri = uri
        self.response = response
        self.algorithm = algorithm
        self.qop = qop
        self.nc = nc
        self.nc_value = nc_value
        self.cnonce = cnonce
        self.opaque = opaque
        self.userhash = userhash

    def _fields(self) -> tuple[Any, ...]:
        return (self.username, self.realm, self.nonce, self.uri, self.response, self.algorithm, self.qop,
                self.nc, self.nc_value, self.cnonce, self.opaque, self.userhash)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DigestCredentials):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "DigestCredentials(" + ", ".join(
            f"{name}={value!r}" for name, value in zip(_CREDENTIAL_FIELDS, self._fields())) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return (DigestCredentials, self._fields())

    @property
    def ha1_algorithm(self) -> str:
        """Which stored HA1 to pass to `verify`: "MD5" or "SHA-256" (a "-sess"
        variant uses the same stored H(username:realm:password))."""
        return self.algorithm[:-5] if self.algorithm.endswith("-sess") else self.algorithm


def parse_credentials(value: str) -> DigestCredentials:
    """Parse a Digest Authorization value; raises only DigestError.

    Tolerant where real clients differ: any case of param names and algorithm,
    unquoted or quoted values, arbitrary whitespace, empty list elements.
    """
    try:
        return _parse_credentials(value)
    except DigestError:
        raise
    except Exception as exc:  # never let a parser bug escape as something else
        raise DigestError(f"Malformed Authorization: {type(exc).__name__}") from None


def _parse_credentials(value: str) -> DigestCredentials:
    params = _parse_auth_params(value, "Authorization")

    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise DigestError(f"Missing {required} in Authorization")

    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in ALGORITHMS:
        raise DigestError(f"Unsupported digest algorithm {params['algorithm']!r}")

    response = params["response"].lower()
    if not response or not _HEX.issuperset(response):
        raise DigestError("Digest response is not hex")

    qop = params.get("qop")
    nc = cnonce = None
    nc_value = 0
    if qop is not None:
        qop = qop.lower()
        if qop not in ("auth", "auth-int"):
            raise DigestError(f"Unsupported qop {params['qop']!r}")
        nc = params.get("nc")
        cnonce = params.get("cnonce")
        if nc is None or cnonce is None:
            raise DigestError("qop requires nc and cnonce")
        # RFC 7616 §3.4: nc = 8LHEX.  Tolerate shorter counts, not longer ones.
        if not 1 <= len(nc) <= 8 or not _HEX.issuperset(nc):
            raise DigestError("Bad nc in Authorization")
        nc_value = int(nc, 16)
    elif _canonical_is_session(algorithm):
        raise DigestError("-sess algorithms require qop")

    userhash = params.get("userhash")
    return DigestCredentials(
        params["username"], params["realm"], params["nonce"], params["uri"], response,
        _CANONICAL_ALGORITHM[algorithm], qop, nc, nc_value, cnonce, params.get("opaque"),
        userhash is not None and userhash.lower() == "true",
    )


def _canonical_is_session(algorithm_upper: str) -> bool:
    return ALGORITHMS[algorithm_upper][1]


# ---------------------------------------------------------------------------
# server

_NONCE_CHARS = 48            # base64url of 36 bytes, no padding
_RANDOM_BYTES = 12
_MAC_BYTES = 16
_CLOCK_SKEW = 5.0            # seconds a nonce may appear to come from the future (nodes' clocks)
_SHA256_BLOCK = 64
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_pack_time = struct.Struct(">q").pack
_unpack_time = struct.Struct(">q").unpack_from


class NonceCounts(Protocol):
    """Where the highest nonce-count of each nonce in use is kept (RFC 7616 §3.3)."""

    def known(self, nonce: str) -> float | None:
        """The issue time of a tracked nonce (proven genuine when it was first
        accepted), or None: then the caller checks its signature."""

    def advance(self, nonce: str, issued_at: float, nc: int, now: float) -> DigestResult:
        """Record ``nc`` for a genuine, unexpired nonce whose response was right, in
        one step: OK, REPLAY (not above the count already accepted) or STALE (not
        tracked, and its count may have been evicted)."""

    def __len__(self) -> int: ...


class MemoryNonceCounts:
    """The table of one process: an LRU of at most ``max_tracked`` nonces."""

    __slots__ = ("max_tracked", "nonce_lifetime", "_counts", "_evicted_watermark")

    def __init__(self, max_tracked: int, nonce_lifetime: float) -> None:
        self.max_tracked = max(1, max_tracked)
        self.nonce_lifetime = nonce_lifetime
        # nonce -> (issued_at seconds, highest nc accepted); order = least recently used
        # first.  Tuples of numbers, not lists: the garbage collector stops tracking them,
        # so up to max_tracked entries (one per registration in the last few minutes) cost
        # nothing at each full collection.
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # Issue time of the newest nonce ever evicted from _counts (see module docstring).
        self._evicted_watermark = float("-inf")

    def known(self, nonce: str) -> float | None:
        entry = self._counts.get(nonce)
        return entry[0] if entry is not None else None

    def advance(self, nonce: str, issued_at: float, nc: int, now: float) -> DigestResult:
        counts = self._counts
        entry = counts.get(nonce)
        if entry is None:
            if issued_at <= self._evicted_watermark:
                # Its count may have been evicted: force a fresh nonce instead of risking a replay.
                return DigestResult.STALE
            counts[nonce] = (issued_at, nc)
            self._evict(now)
            return DigestResult.OK
        if nc <= entry[1]:
            return DigestResult.REPLAY
        counts[nonce] = (entry[0], nc)
        counts.move_to_end(nonce)
        return DigestResult.OK

    def _evict(self, now: float) -> None:
        counts = self._counts
        # Drop expired entries from the cold end (cheap, bounded work per insert) ...
        for _ in range(2):
            oldest_nonce = next(iter(counts))
            if now - counts[oldest_nonce][0] <= self.nonce_lifetime:
                break
            del counts[oldest_nonce]   # expired nonces are answered STALE anyway
        # ... then enforce the bound.
        while len(counts) > self.max_tracked:
            _, (issued_at, _) = counts.popitem(last=False)
            if issued_at > self._evicted_watermark:
                self._evicted_watermark = issued_at

    def __len__(self) -> int:
        return len(self._counts)


class DigestServer:
    """Issues challenges and verifies credentials for one realm.

    `clock` only needs `now()`.  Give it wall time (`clock.WallTime`) in production
    so nonces survive a restart and are accepted by other nodes sharing `secret`.
    `counts` keeps the nonce-counts (default: this process's own table).
    """

    __slots__ = ("realm", "_secret", "_realm_bytes", "_inner", "_outer", "_clock", "nonce_lifetime",
                 "max_tracked_nonces", "_counts")

    def __init__(
        self,
        realm: str,
        secret: bytes,
        clock: TimeSource,
        nonce_lifetime: float = 300,
        max_tracked_nonces: int = 100_000,
        counts: NonceCounts | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("digest secret must be at least 16 bytes")
        self.realm = realm
        self._secret = secret
        self._realm_bytes = realm.encode()
        # HMAC-SHA256 (RFC 2104) with the keyed inner and outer hash states
        # computed once: a per-nonce hmac.digest() spends most of its time
        # setting up the key, this pays two hash copies instead.
        key = hashlib.sha256(secret).digest() if len(secret) > _SHA256_BLOCK else secret
        key = key.ljust(_SHA256_BLOCK, b"\0")
        self._inner = hashlib.sha256(bytes([byte ^ 0x36 for byte in key]))
        self._outer = hashlib.sha256(bytes([byte ^ 0x5C for byte in key]))
        self._clock = clock
        self.nonce_lifetime = nonce_lifetime
        self.max_tracked_nonces = max(1, max_tracked_nonces)
        self._counts: NonceCounts = (counts if counts is not None
                                     else MemoryNonceCounts(self.max_tracked_nonces, nonce_lifetime))

    # -- nonces -------------------------------------------------------------

    def new_nonce(self) -> str:
        stamp = _pack_time(int(self._clock.now() * 1000)) + os.urandom(_RANDOM_BYTES)
        # base64url without padding (36 bytes: none needed), as base64.urlsafe_b64encode
        return binascii.b2a_base64(stamp + self._mac(stamp), newline=False).translate(_TO_URLSAFE).decode("ascii")

    def _mac(self, stamp: bytes) -> bytes:
        """HMAC-SHA256(secret, stamp || realm), truncated to _MAC_BYTES."""
        inner = self._inner.copy()
        inner.update(stamp)
        inner.update(self._realm_bytes)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_BYTES]

    def nonce_issued_at(self, nonce: str) -> float | None:
        """Issue time of a nonce this server signed, or None for a forged/mangled one."""
        if len(nonce) != _NONCE_CHARS:
            return None
        try:
            # what base64.b64decode(altchars=b"-_", validate=True) does, minus its Python layers
            raw = binascii.a2b_base64(nonce.encode("ascii").translate(_FROM_URLSAFE), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return None
        stamp = raw[:-_MAC_BYTES]
        if not hmac.compare_digest(self._mac(stamp), raw[-_MAC_BYTES:]):
            return None
        milliseconds: int = _unpack_time(raw)[0]
        return milliseconds / 1000.0

    # -- challenges ---------------------------------------------------------

    def challenges(
        self,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
        *,
        stale: bool = False,
        opaque: str | None = None,
    ) -> list[str]:
        """One WWW-Authenticate/Proxy-Authenticate value per algorithm, most preferred
        first, all with the same nonce (RFC 8760 §2.3: distinct algorithms per realm,
        in order of preference)."""
        nonce = self.new_nonce()
        tail = ', qop="auth"'
        if stale:
            tail += ", stale=true"  # RFC 7616 §3.3
        if opaque is not None:
            tail += f", opaque={_quote(opaque)}"
        head = f"Digest realm={_quote(self.realm)}, nonce=\"{nonce}\", algorithm="
        values = []
        seen = set()
        for algorithm in algorithms:
            key = algorithm.upper()
            if key not in ALGORITHMS:
                raise ValueError(f"unsupported digest algorithm {algorithm!r}")
            if key in seen:
                continue
            seen.add(key)
            values.append(head + _CANONICAL_ALGORITHM[key] + tail)
        return values

    # -- verification -------------------------------------------------------

    @staticmethod
    def parse_credentials(value: str) -> DigestCredentials:
        """The module's ``parse_credentials`` (a real method: a class attribute
        holding a staticmethod is not one once compiled by mypyc)."""
        return parse_credentials(value)

    def verify(
        self,
        credentials: DigestCredentials,
        method: str,
        ha1_value: str,
        *,
        body: bytes | bytearray | memoryview = b"",
    ) -> DigestResult:
        """Check credentials against the stored HA1 for their algorithm.

        The response is computed over `credentials.uri`, not the Request-URI: RFC 8760
        §2.6 item 6 lets the two differ in SIP, and sipp signs a different uri.
        """
        if credentials.realm != self.realm:
            return DigestResult.BAD_REALM
        nonce = credentials.nonce
        issued_at = self._counts.known(nonce)   # a tracked nonce was proven genuine already
        if issued_at is None:
            issued_at = self.nonce_issued_at(nonce)
            if issued_at is None:
                return DigestResult.BAD_NONCE

        hash_hex, is_session, hash_name = ALGORITHMS[credentials.algorithm.upper()]
        qop = credentials.qop
        if is_session:
            ha1_value = hash_hex(f"{ha1_value}:{nonce}:{credentials.cnonce}")
        if qop == "auth-int":
            body_hash = hashlib.new(hash_name, body).hexdigest()
            ha2 = hash_hex(f"{method}:{credentials.uri}:{body_hash}")
        else:
            ha2 = hash_hex(f"{method}:{credentials.uri}")
        if qop is None:
            expected = hash_hex(f"{ha1_value}:{nonce}:{ha2}")
        else:
            expected = hash_hex(
                f"{ha1_value}:{nonce}:{credentials.nc}:{credentials.cnonce}:{qop}:{ha2}")
        if not hmac.compare_digest(expected, credentials.response):
            return DigestResult.BAD_RESPONSE

        # RFC 7616 §3.3: stale only when the digest itself was right.
        now = self._clock.now()
        age = now - issued_at
        if age > self.nonce_lifetime or age < -_CLOCK_SKEW:
            return DigestResult.STALE
        if qop is None:
            # RFC 2069 compatibility: no nonce-count, so no replay detection within the lifetime.
            return DigestResult.OK

        return self._counts.advance(nonce, issued_at, credentials.nc_value, now)

    def tracked_nonces(self) -> int:
        return len(self._counts)


# ---------------------------------------------------------------------------
# client side


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A parsed WWW-Authenticate / Proxy-Authenticate Digest value."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop_options: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (DigestChallenge, (self.realm, self.nonce, self.algorithm, self.qop_options, self.opaque, self.stale))


def parse_challenge(value: str) -> DigestChallenge:
    try:
        params = _parse_auth_params(value, "WWW-Authenticate")
    except DigestError:
        raise
    except Exception as exc:
        raise DigestError(f"Malformed WWW-Authenticate: {exc}") from None
    if "realm" not in params or "nonce" not in params:
        raise DigestError("Challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in ALGORITHMS:
        raise DigestError(f"Unsupported digest algorithm {params['algorithm']!r}")
    qop_options = tuple(
        option.strip().lower() for option in params.get("qop", "").split(",") if option.strip())
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=_CANONICAL_ALGORITHM[algorithm],
        qop_options=qop_options,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def build_authorization(
    challenge: DigestChallenge,
    method: str,
    uri: str,
    username: str,
    ha1_value: str,
    *,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """An Authorization value answering `challenge` (qop=auth when offered)."""
    qop = "auth" if "auth" in challenge.qop_options else None
    if qop is not None or ALGORITHMS[challenge.algorithm.upper()][1]:
        cnonce = cnonce or base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
    nc_text = f"{nc:08x}" if qop else None
    response = digest_response(
        ha1_value, challenge.nonce, method, uri, algorithm=challenge.algorithm,
        qop=qop, nc=nc_text, cnonce=cnonce)
    parts = [
        f"Digest username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response=\"{response}\"",
        f"algorithm={challenge.algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce or '')}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return ", ".join(parts)
