"""SIP requests and responses (RFC 3261 §7) with lazily parsed, cached typed
accessors, ``make_response`` (§8.2.6) and ``make_error_response`` (the same
for a request that failed to parse).

Header values stay raw strings in ``Headers``; an accessor parses the value the
first time it is asked for and caches the result in the headers' cache, which
any header mutation clears.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Sequence

from .errors import SIPParseError
from .headers import CSeq, Headers, Via
from .uri import URI, NameAddr, parse_name_addr, parse_uri

SIP_VERSION = "SIP/2.0"

_MISSING = object()  # "not cached yet", where None is a cached value

# RFC 3261 §21 reason phrases, plus the extensions this service uses.
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    412: "Conditional Request Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    429: "Provide Referrer Identity",
    430: "Flow Failed",
    433: "Anonymity Disallowed",
    439: "First Hop Lacks Outbound Support",
    440: "Max-Breadth Exceeded",
    470: "Consent Needed",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    494: "Security Agreement Required",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
}


def default_reason(status: int) -> str:
    """§21 phrase for ``status``; for unknown codes the class's x00 phrase."""
    return REASON_PHRASES.get(status) or REASON_PHRASES.get(status // 100 * 100, "Unknown")


class Message:
    """What Request and Response share: headers, body and the typed accessors."""

    __slots__ = ("headers", "body")

    headers: Headers
    body: bytes

    # -- typed accessors (cached in headers) --------------------------------

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first (a fresh list each call; elements cached)."""
        return list(self.headers.cached("vias", self._parse_vias))

    def _parse_vias(self) -> tuple[Via, ...]:
        values = self.headers.get_all("Via")
        if not values:
            return ()
        # the top one is usually parsed (and cached) already: the parser
        # validated it, a server may have stamped it (Headers.remember)
        top = self.top_via
        vias: list[Via] = [] if top is None else [top]
        for value in values[1:]:
            vias.append(Via.parse(value))
        return tuple(vias)

    @property
    def top_via(self) -> Via | None:
        """The first Via, or None when there is none (parses only that one)."""
        cache = self.headers._cache  # inline fast path of Headers.cached
        value = cache.get("top_via", _MISSING)
        if value is _MISSING:
            value = cache["top_via"] = self._parse_top_via()
        via: Via | None = value  # what _parse_top_via returned (the cache holds Any)
        return via

    def _parse_top_via(self) -> Via | None:
        value = self.headers.get("Via")
        return None if value is None else Via.parse(value)

    @property
    def from_(self) -> NameAddr:
        cache = self.headers._cache  # inline fast path of Headers.cached
        value = cache.get("from")
        if value is None:
            value = cache["from"] = self._name_addr("From")
        return value

    @property
    def to(self) -> NameAddr:
        cache = self.headers._cache
        value = cache.get("to")
        if value is None:
            value = cache["to"] = self._name_addr("To")
        return value

    def _name_addr(self, name: str) -> NameAddr:
        value = self.headers.get(name)
        if value is None:
            raise SIPParseError(f"Missing {name}")
        try:
            return parse_name_addr(value)
        except SIPParseError as error:
            raise SIPParseError(f"Bad {name} header: {error.reason}") from None

    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if not value:
            raise SIPParseError("Missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        cache = self.headers._cache
        value = cache.get("cseq")
        if value is None:
            value = cache["cseq"] = self._parse_cseq()
        return value

    def _parse_cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise SIPParseError("Missing CSeq")
        return CSeq.parse(value)

    @property
    def contacts(self) -> list[NameAddr] | Literal["*"]:
        """Contact values; ``"*"`` for the wildcard of a REGISTER (§10.2.2)."""
        result = self.headers.cached("contacts", self._parse_contacts)
        return result if result == "*" else list(result)

    def _parse_contacts(self) -> tuple[NameAddr, ...] | str:
        values = self.headers.get_all("Contact")
        if len(values) == 1 and values[0] == "*":
            return "*"
        try:
            return tuple(parse_name_addr(value) for value in values)
        except SIPParseError as error:
            raise SIPParseError(f"Bad Contact header: {error.reason}") from None

    @property
    def expires(self) -> int | None:
        """The Expires header (delta-seconds), None when absent."""
        cache = self.headers._cache
        value = cache.get("expires", _MISSING)
        if value is _MISSING:
            value = cache["expires"] = self._int_header("Expires", 0xFFFFFFFF)
        expires: int | None = value
        return expires

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (0-255, §20.22), None when absent."""
        cache = self.headers._cache
        value = cache.get("max_forwards", _MISSING)
        if value is _MISSING:
            value = cache["max_forwards"] = self._int_header("Max-Forwards", 255)
        max_forwards: int | None = value
        return max_forwards

    def _int_header(self, name: str, maximum: int) -> int | None:
        value = self.headers.get(name)
        if value is None:
            return None
        if not value.isascii() or not value.isdigit() or len(value) > 10 or int(value) > maximum:
            raise SIPParseError(f"Bad {name} header")
        return int(value)

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")

    # -- serialization -------------------------------------------------------

    def _start_line(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is always written, from ``len(body)``
        (any Content-Length header present is replaced)."""
        body = self.body
        # one flat list, one join: no intermediate string per header line
        parts: list[str] = [self._start_line(), "\r\n"]
        for key, name, value in self.headers._items:
            if key != "content-length":
                parts += (name, ": ", value, "\r\n")
        parts += ("Content-Length: ", str(len(body)), "\r\n\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _same_headers(mine: Headers, theirs: Headers) -> bool:
    """Header equality for messages: Content-Length is derived from the body
    (``to_bytes`` rewrites it), so it is left out of the comparison."""
    return [(k, v) for k, _, v in mine._items if k != "content-length"] == [
        (k, v) for k, _, v in theirs._items if k != "content-length"
    ]


def _as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


class Request(Message):
    """A SIP request.  ``uri`` accepts a parsed URI or a string (parsed here)."""

    __slots__ = ("method", "uri")

    method: str
    uri: URI

    def __init__(
        self,
        method: str,
        uri: URI | str,
        headers: Headers | Iterable[Sequence[str]] | None = None,
        body: bytes | bytearray | memoryview | str = b"",
    ) -> None:
        self.method = method
        self.uri = parse_uri(uri) if isinstance(uri, str) else uri
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = body if type(body) is bytes else _as_bytes(body)

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return (
            self.method == other.method
            and str(self.uri) == str(other.uri)
            and _same_headers(self.headers, other.headers)
            and self.body == other.body
        )

    def __hash__(self) -> int:  # mutable (an explicit method: mypyc ignores `__hash__ = None`)
        raise TypeError("unhashable type: 'Request'")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Request, (self.method, self.uri, self.headers, self.body))


class Response(Message):
    """A SIP response."""

    __slots__ = ("status", "reason")

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Headers | Iterable[Sequence[str]] | None = None,
        body: bytes | bytearray | memoryview | str = b"",
    ) -> None:
        self.status = status
        self.reason = default_reason(status) if reason is None else reason
        self.headers = headers if isinstance(headers, Headers) else Headers(headers or ())
        self.body = body if type(body) is bytes else _as_bytes(body)

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (
            self.status == other.status
            and self.reason == other.reason
            and _same_headers(self.headers, other.headers)
            and self.body == other.body
        )

    def __hash__(self) -> int:
        raise TypeError("unhashable type: 'Response'")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Response, (self.status, self.reason, self.headers, self.body))


def _has_to_tag(request: Request) -> bool:
    try:
        return request.to.tag is not None
    except SIPParseError:
        # Answering a malformed request (SIPParseError.partial): its To is
        # copied verbatim, without a tag we could not place reliably.
        return True


# §8.2.6.2: what a response copies from its request, in this order
_COPIED_HEADERS = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[Sequence[str]] = (),
    body: bytes | bytearray | memoryview | str = b"",
) -> Response:
    """Build a response to ``request`` as RFC 3261 §8.2.6.2 says.

    Copies every Via (in order, verbatim), From, Call-ID and CSeq; copies To
    and appends ``;tag=to_tag`` when a tag is given and To has none (the raw
    text is kept so the rest of To is byte-identical).  ``headers`` are
    appended after those; nothing else is added — Content-Length is written
    by ``to_bytes``.
    """
    # Straight from the request's look-up index (key -> values in order):
    # these five are known names, always spelled canonically.
    index = request.headers._index
    if index is None:
        index = request.headers._build_index()
    triples: list[tuple[str, str, str]] = []
    out_index: dict[str, list[str]] = {}
    for key, name in _COPIED_HEADERS:
        values = index.get(key)
        if values is not None:
            if key == "to" and to_tag is not None and not _has_to_tag(request):
                values = [f"{value};tag={to_tag}" for value in values]
            else:
                values = list(values)
            out_index[key] = values
            for value in values:
                triples.append((key, name, value))
    out = Headers._from_triples(triples, out_index)
    for name, value in headers:  # (name, value) pairs, tuples or not
        out.add(name, value)
    return Response(status, reason, out, body)


def make_error_response(request: Request, status: int, reason: str, *, to_tag: str | None = None) -> Response:
    """The answer to a request that failed to parse: ``SIPParseError.partial``
    with the error's status (400, 505, 513...) and reason, which names the
    problem as §21.4.1 asks ("Missing Call-ID, CSeq", "Bad CSeq header").

    Such a request may lack any of Via, From, To, Call-ID and CSeq, or carry
    them malformed.  Those it has are copied verbatim (§8.2.6.2), the others
    are left out.  ``to_tag`` is added only to a To that exists, parses and
    has no tag yet; a To that does not parse is copied as it is.  The caller
    decides whether the answer can be routed: back over the connection the
    request came on, or (UDP) by a top Via that parses (``readable_top_via``,
    §18.2.2); and never answers an ACK (a response to ACK is disallowed, §17).
    """
    if "\r" in reason or "\n" in reason:  # it must fit on the Status-Line (§7.2)
        reason = " ".join(reason.splitlines())
    return make_response(request, status, reason, to_tag=to_tag)


def readable_top_via(message: Message) -> Via | None:
    """The top Via, or None when there is none or it does not parse (never raises)."""
    try:
        return message.top_via
    except SIPParseError:
        return None
