"""SIP header fields: the ordered multi-dict, Via and CSeq (the §25.1 basic
rules they are made of are in grammar.py).

Everything here is sans-IO and works on ``str``.  Header values are kept as the
raw text received; typed views (Via, CSeq, NameAddr...) are built on demand and
cached by the message (see ``Headers.cached``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

from .errors import SIPParseError
from .grammar import (
    format_params,
    is_token,
    parse_simple_params,
    split_host_port,
    split_list,
    valid_ascii_hostname,
)

# Code outside sipim/sip imports these from here: re-exported explicitly.
from .grammar import parse_params as parse_params
from .grammar import quote as quote
from .grammar import unquote as unquote

# Methods seen every day: their token check is skipped (any other token is fine too).
KNOWN_METHODS = frozenset({
    "REGISTER", "MESSAGE", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "PRACK", "UPDATE", "REFER",
})


# RFC 3261 §7.3.3 compact forms, plus the ones later RFCs registered
# (RFC 6665 o/u, RFC 3515 r, RFC 3892 b, RFC 3841 a/j/d, RFC 4028 x, RFC 4474 y/n).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "x": "session-expires",
    "y": "identity",
    "n": "identity-info",
}

# Canonical spelling used when serializing (keys are lower-case long names).
_CANONICAL_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
    "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
    "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date",
    "Error-Info", "Event", "Expires", "From", "History-Info", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version",
    "Organization", "P-Asserted-Identity", "P-Associated-URI",
    "P-Preferred-Identity", "Path", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route",
    "Refer-To", "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition",
    "Require", "Retry-After", "Route", "RSeq", "Server", "Service-Route",
    "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate", "Min-SE", "Flow-Timer", "Security-Client",
    "Security-Server", "Security-Verify",
]
CANONICAL_NAMES: dict[str, str] = {name.lower(): name for name in _CANONICAL_NAMES}

# Headers whose grammar is `header = name HCOLON value *(COMMA value)` and that
# therefore may be combined on one line (RFC 3261 §7.3.1).  Not included:
# WWW-Authenticate & co (commas separate auth-params), Date, Subject,
# User-Agent, Server, Call-ID... whose values may contain bare commas.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "path", "service-route",
        "supported", "require", "proxy-require", "unsupported", "allow",
        "allow-events", "accept", "accept-encoding", "accept-language",
        "content-encoding", "content-language", "in-reply-to", "alert-info",
        "call-info", "error-info", "reply-to", "p-asserted-identity",
        "p-preferred-identity", "p-associated-uri", "history-info", "reason",
        "accept-contact", "reject-contact", "request-disposition", "warning",
        "security-client", "security-server", "security-verify",
    }
)


def _slow_header_key(name: str) -> str:
    key = name.lower()
    return COMPACT_FORMS.get(key, key)


# Exact spelling -> look-up key for the names code and peers usually write
# (canonical, lower-case and compact forms of every known header): a hit
# costs one dict look-up instead of lower() + a second look-up.
_KEY_OF_SPELLING: dict[str, str] = {}
for _key, _name in CANONICAL_NAMES.items():
    for _spelling in (_name, _key, _name.upper()):
        _KEY_OF_SPELLING[_spelling] = _key
for _compact, _key in COMPACT_FORMS.items():
    _KEY_OF_SPELLING[_compact] = _KEY_OF_SPELLING[_compact.upper()] = _key
del _key, _name, _spelling, _compact
_key_of_spelling = _KEY_OF_SPELLING.get


def header_key(name: str) -> str:
    """Lower-case long form of a header name: the key used for look-ups."""
    return _key_of_spelling(name) or _slow_header_key(name)


def canonical_name(name: str) -> str:
    """The spelling written on the wire: long form, conventional case."""
    key = header_key(name)
    return CANONICAL_NAMES.get(key, name if len(name) > 1 else key)


# name as code writes it -> (key, wire spelling), for Headers.add/set_all;
# bounded because a name could come from data.
_KEY_AND_SPELLING: dict[str, tuple[str, str]] = {}
_KEY_AND_SPELLING_LIMIT = 1024


def _key_and_spelling(name: str) -> tuple[str, str]:
    known = _KEY_AND_SPELLING.get(name)
    if known is None:
        known = (header_key(name), canonical_name(name))
        if len(_KEY_AND_SPELLING) < _KEY_AND_SPELLING_LIMIT:
            _KEY_AND_SPELLING[name] = known
    return known


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------


def _checked(value: str) -> str:
    """Refuse values that would break the framing when written out (a CR or
    LF would let a value inject header lines).  A programming error, not a
    parse error, hence ValueError."""
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"header value contains CR, LF or NUL: {value!r}")
    return value


# Which header each typed view of Message is computed from (see Headers._forget).
_SLOT_HEADERS = {
    "vias": "via", "top_via": "via", "from": "from", "to": "to", "cseq": "cseq",
    "contacts": "contact", "expires": "expires", "max_forwards": "max-forwards",
}
_VIEW_SOURCES = frozenset(_SLOT_HEADERS.values())


class Headers:
    """Ordered multi-dict of header fields.

    Stored as a list of ``(key, name, value)`` where ``key`` is the lower-case
    long name used for look-ups, ``name`` the spelling written on the wire and
    ``value`` the raw text (whitespace-trimmed, folding already undone).

    Beside the list, an index ``key -> [raw value of each line, in order]``
    makes every look-up one dict access instead of a scan.  The parser builds
    it in the same pass as the list; ``add`` and ``remove_first`` keep it up
    to date; other mutations drop it and the next look-up rebuilds it.  Code
    that edits ``_items`` directly must call ``_changed``.

    Typed views computed from the values are kept in a small cache which every
    mutation clears, so a message's accessors never go stale.
    """

    __slots__ = ("_items", "_index", "_cache")

    _items: list[tuple[str, str, str]]
    _index: dict[str, list[str]] | None
    _cache: dict[str, Any]

    def __init__(self, items: Iterable[Sequence[str]] = ()) -> None:
        triples: list[tuple[str, str, str]] = []
        for name, value in items:
            key, spelled = _key_and_spelling(name)
            triples.append((key, spelled, _checked(value)))
        self._items = triples
        self._index = None
        self._cache = {}

    @staticmethod
    def _from_triples(
        triples: list[tuple[str, str, str]], index: dict[str, list[str]] | None = None
    ) -> "Headers":
        """Fast constructor for the parser, which has already canonicalized
        (and may pass the index it built along the way)."""
        headers = Headers()
        headers._items = triples
        headers._index = index
        return headers

    def _build_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for key, _, value in self._items:
            values = index.get(key)
            if values is None:
                index[key] = [value]
            else:
                values.append(value)
        self._index = index
        return index

    def _changed(self) -> None:
        """``_items`` was edited in place: the index must be rebuilt."""
        self._index = None

    # -- reading -----------------------------------------------------------

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value; for list headers the first comma-separated element."""
        key = _key_of_spelling(name) or _slow_header_key(name)
        index = self._index
        if index is None:
            index = self._build_index()
        values = index.get(key)
        if values is None:
            return default
        value = values[0]
        if "," in value and key in LIST_HEADERS:
            parts = split_list(value)
            return parts[0] if parts else default
        return value

    def get_all(self, name: str) -> list[str]:
        """Every value, in order; list headers are split on commas (§7.3.1)."""
        key = _key_of_spelling(name) or _slow_header_key(name)
        index = self._index
        if index is None:
            index = self._build_index()
        values = index.get(key)
        if values is None:
            return []
        if key in LIST_HEADERS:
            out: list[str] = []
            for value in values:
                out.extend(split_list(value))
            return out
        return list(values)

    def raw_values(self, name: str) -> list[str]:
        """One entry per header line, never split (to copy headers verbatim)."""
        key = _key_of_spelling(name) or _slow_header_key(name)
        index = self._index
        if index is None:
            index = self._build_index()
        values = index.get(key)
        return [] if values is None else list(values)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index
        if index is None:
            index = self._build_index()
        return (_key_of_spelling(name) or _slow_header_key(name)) in index

    def __iter__(self) -> Iterator[tuple[str, str]]:
        # a list's iterator: mypyc would turn a generator expression into a list anyway
        return iter([(name, value) for _, name, value in self._items])

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __hash__(self) -> int:  # mutable (an explicit method: mypyc ignores `__hash__ = None`)
        raise TypeError("unhashable type: 'Headers'")

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # the typed-view cache is left behind: it is rebuilt on demand
        return (_headers_from_state, (self._items,))

    def copy(self) -> "Headers":
        return Headers._from_triples(list(self._items))

    # -- writing -----------------------------------------------------------

    def add(self, name: str, value: str, *, first: bool = False) -> None:
        """Append a header line; ``first=True`` puts it before every existing
        line of the same name (or at the very top), as a proxy does with Via
        (§16.6 step 8) or Record-Route."""
        key, spelled = _key_and_spelling(name)
        item = (key, spelled, _checked(value))
        self._forget(key)
        index = self._index
        values = None if index is None else index.get(key)
        if first:
            if values is not None:
                values.insert(0, value)
            elif index is not None:
                index[key] = [value]
            items = self._items
            for position, (item_key, _, _) in enumerate(items):
                if item_key == key:
                    items.insert(position, item)
                    return
            items.insert(0, item)
        else:
            if values is not None:
                values.append(value)
            elif index is not None:
                index[key] = [value]
            self._items.append(item)

    def set(self, name: str, value: str) -> None:
        """Replace every line of ``name`` by one line, where the first one was."""
        self.set_all(name, [value])

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace every line of ``name`` by one line per value, keeping position."""
        key, spelled = _key_and_spelling(name)
        new_items = [(key, spelled, _checked(value)) for value in values]
        position = None
        kept: list[tuple[str, str, str]] = []
        for item in self._items:
            if item[0] == key:
                if position is None:
                    position = len(kept)
            else:
                kept.append(item)
        if position is None:
            position = len(kept)
        kept[position:position] = new_items
        self._items = kept
        index = self._index
        if index is not None:
            if new_items:
                index[key] = [item[2] for item in new_items]
            else:
                index.pop(key, None)
        self._forget(key)

    def remove(self, name: str) -> int:
        """Remove every line of ``name``; returns how many were removed."""
        key = header_key(name)
        index = self._index
        if index is None:
            index = self._build_index()
        if key not in index:
            return 0  # a proxy strips headers that are usually absent: nothing changes
        before = len(self._items)
        self._items = [item for item in self._items if item[0] != key]
        del index[key]
        self._forget(key)
        return before - len(self._items)

    def remove_first(self, name: str) -> str | None:
        """Remove the first *value* of a (list) header, e.g. the top Via or a
        Route entry (§16.4, §18.2.1 response processing); returns it."""
        key = header_key(name)
        items = self._items
        for position, (item_key, spelled, value) in enumerate(items):
            if item_key == key:
                parts = split_list(value) if key in LIST_HEADERS else [value]
                self._forget(key)
                index = self._index
                if len(parts) <= 1:
                    del items[position]
                    if index is not None:
                        values = index[key]
                        del values[0]
                        if not values:
                            del index[key]
                else:
                    rest = ", ".join(parts[1:])
                    items[position] = (item_key, spelled, rest)
                    if index is not None:
                        index[key][0] = rest
                return parts[0] if parts else None
        return None

    def replace_first(self, name: str, value: str) -> bool:
        """Replace the first *value* of ``name`` where it stands -- the top Via a
        server stamps with received/rport (§18.2.1), a To that gets its tag
        (§8.2.6.2) -- without rebuilding the list.  False when there is none."""
        key = header_key(name)
        value = _checked(value)
        items = self._items
        for position, (item_key, spelled, old) in enumerate(items):
            if item_key == key:
                parts = split_list(old) if key in LIST_HEADERS and "," in old else [old]
                new = value if len(parts) <= 1 else ", ".join([value, *parts[1:]])
                items[position] = (item_key, spelled, new)
                if self._index is not None:
                    self._index[key][0] = new
                self._forget(key)
                return True
        return False

    # -- typed-view cache --------------------------------------------------

    def remember(self, slot: str, value: Any) -> None:
        """Store a view computed elsewhere (e.g. the Via a server just stamped)."""
        self._cache[slot] = value

    def _forget(self, key: str) -> None:
        """Drop the cached views derived from header ``key`` (and any view of
        unknown origin).  Stamping a Via must not cost re-parsing From and To."""
        cache = self._cache
        if cache:
            if key in _VIEW_SOURCES:
                stale = [slot for slot in cache if _SLOT_HEADERS.get(slot, key) == key]
            else:  # a header no known view is made of: only views of unknown origin go
                stale = [slot for slot in cache if slot not in _SLOT_HEADERS]
            for slot in stale:
                del cache[slot]

    def cached(self, slot: str, compute: Callable[[], Any]) -> Any:
        """Memoize a value derived from the headers until the next mutation."""
        cache = self._cache
        try:
            return cache[slot]
        except KeyError:
            value = cache[slot] = compute()
            return value


def _headers_from_state(items: list[tuple[str, str, str]]) -> Headers:
    """Unpickling helper of ``Headers.__reduce__``."""
    return Headers._from_triples(items)


# ---------------------------------------------------------------------------
# Via (RFC 3261 §20.42, §18.2.1, RFC 3581 rport)
# ---------------------------------------------------------------------------


class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=z9hG4bK...;received=...``.

    ``params`` keys are lower-case; a flag parameter (``rport`` without
    value) maps to None.  Treat a Via as immutable (it is cached and shared
    by the message it came from): a proxy adds ``received``/``rport`` with
    ``via.with_params(received=ip, rport=str(port))`` and writes it back.

    A plain class with ``__slots__`` rather than a frozen dataclass: building
    one is on the hot path (one per request), and a frozen dataclass's
    ``__init__`` costs an ``object.__setattr__`` per field; it also compiles
    to a native class with mypyc (see sipim/sip/_accel.py).
    """

    __slots__ = ("transport", "host", "port", "params", "protocol")

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]
    protocol: str

    def __init__(
        self,
        transport: str,
        host: str,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        protocol: str = "SIP/2.0",
    ) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.protocol = protocol

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (
            self.transport == other.transport
            and self.host == other.host
            and self.port == other.port
            and self.params == other.params
            and self.protocol == other.protocol
        )

    def __hash__(self) -> int:
        return hash((self.transport, self.host.lower(), self.port, tuple(self.params.items())))

    def __repr__(self) -> str:
        return (
            f"Via(transport={self.transport!r}, host={self.host!r}, port={self.port!r}, "
            f"params={self.params!r}, protocol={self.protocol!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # explicit, so a compiled (mypyc) Via pickles like the pure-Python one
        return (Via, (self.transport, self.host, self.port, self.params, self.protocol))

    @staticmethod
    def parse(text: str) -> "Via":
        via = _parse_simple_via(text)
        if via is not None:
            return via
        try:
            return Via._parse(text)
        except SIPParseError as error:
            raise SIPParseError(f"Bad Via header: {error.reason}") from None

    @staticmethod
    def _parse(text: str) -> "Via":
        # via-parm = sent-protocol LWS sent-by *( SEMI via-params )
        # sent-protocol = protocol-name SLASH protocol-version SLASH transport,
        # SLASH = SWS "/" SWS, so whitespace may surround the slashes.
        if text.startswith("SIP/2.0/"):  # the usual spelling, no LWS
            name, version, rest = "SIP", "2.0", text[8:]
        else:
            pieces = text.split("/", 2)
            if len(pieces) != 3:
                raise SIPParseError("sent-protocol")
            name = pieces[0].strip(" \t")
            version = pieces[1].strip(" \t")
            if not is_token(name) or not is_token(version):
                raise SIPParseError("sent-protocol")
            rest = pieces[2].lstrip(" \t")
        # transport LWS sent-by: split once on the first whitespace run
        words = rest.split(None, 1)
        if len(words) != 2 or not is_token(words[0]):
            raise SIPParseError("transport")
        transport = words[0]
        sent_by, semi, param_text = words[1].partition(";")
        sent_by = sent_by.rstrip(" \t")
        # LWS may also surround the port colon ("host : 5060"): remove it.
        if " " in sent_by or "\t" in sent_by:
            sent_by = "".join(sent_by.split())
        host, port = split_host_port(sent_by)
        params = parse_params(param_text) if semi else {}
        protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name.upper()}/{version}"
        return Via(transport.upper(), host, port, params, protocol)

    def __str__(self) -> str:
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {self.host}{port}{format_params(self.params)}"

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def has_rport(self) -> bool:
        """True when the rport parameter is present, with or without a value
        (RFC 3581 §4: an empty ``rport`` asks the server to fill it in)."""
        return "rport" in self.params

    @property
    def rport(self) -> int | None:
        """The numeric rport value, None when absent *or* empty (see has_rport)."""
        value = self.params.get("rport")
        if value is None or not value.isdigit():
            return None
        return int(value)

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def ttl(self) -> int | None:
        value = self.params.get("ttl")
        return int(value) if value is not None and value.isdigit() else None

    def with_params(self, **params: str | None) -> "Via":
        """A copy with parameters added or replaced (None = flag without value)."""
        merged = dict(self.params)
        for name, value in params.items():
            merged[name.lower()] = value
        return Via(self.transport, self.host, self.port, merged, self.protocol)


# transport as written -> as stored (upper-case), for the registered ones
# (RFC 3261 §20.42 and RFC 7118 for WS/WSS)
_SIMPLE_TRANSPORTS = {
    spelling: name
    for name in ("UDP", "TCP", "TLS", "SCTP", "WS", "WSS", "TLS-SCTP")
    for spelling in (name, name.lower())
}


def _parse_simple_via(text: str) -> Via | None:
    """Fast path of ``Via.parse`` for ``SIP/2.0/UDP host[:port][;token params]``
    with single spaces and no LWS anywhere else.  Returns None — never raises —
    for any other shape, and the full parser decides; when it returns a Via it
    is the one the full parser builds (tests/sip/test_properties.py)."""
    if not text.startswith("SIP/2.0/") or not text.isascii():
        return None
    space = text.find(" ", 8)
    if space < 0:
        return None
    transport = _SIMPLE_TRANSPORTS.get(text[8:space])
    if transport is None:
        return None
    sent_by, semi, param_text = text[space + 1 :].partition(";")
    host, colon, port_text = sent_by.partition(":")
    # a valid host has no LWS, so sent-by has none to remove
    if not host or host[0] == "[" or not valid_ascii_hostname(host):
        return None
    port: int | None = None
    if colon:
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        port = int(port_text)
        if port > 65535:
            return None
    if semi:
        params = parse_simple_params(param_text, ascii_known=True)
        if params is None:
            return None
    else:
        params = {}
    return Via(transport, host, port, params)


# ---------------------------------------------------------------------------
# CSeq (RFC 3261 §20.16, §8.1.1.5)
# ---------------------------------------------------------------------------


class CSeq:
    """The CSeq value: sequence number and method (treat as immutable)."""

    __slots__ = ("seq", "method")

    seq: int
    method: str

    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CSeq):
            return NotImplemented
        return self.seq == other.seq and self.method == other.method

    def __hash__(self) -> int:
        return hash((self.seq, self.method))

    def __repr__(self) -> str:
        return f"CSeq(seq={self.seq!r}, method={self.method!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (CSeq, (self.seq, self.method))

    @staticmethod
    def parse(text: str) -> "CSeq":
        # CSeq = 1*DIGIT LWS Method
        parts = text.split()
        if len(parts) != 2:
            raise SIPParseError("Bad CSeq header")
        number, method = parts
        # §8.1.1.5: the sequence number MUST be expressible as a 32-bit unsigned integer.
        if (
            not number.isascii()
            or not number.isdigit()
            or len(number) > 10
            or (method not in KNOWN_METHODS and not is_token(method))
        ):
            raise SIPParseError("Bad CSeq header")
        seq = int(number)
        if seq > 0xFFFFFFFF:
            raise SIPParseError("Bad CSeq header")
        return CSeq(seq, method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"
