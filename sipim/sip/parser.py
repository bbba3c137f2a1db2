"""Bytes -> messages: ``parse_message`` for datagrams, ``StreamFramer`` for
byte streams (RFC 3261 §7, §18.3; RFC 5626 §4.4.1 keep-alives).

Framing uses ``bytes.find`` only; header lines are split with ``str.split`` /
``str.partition``; no regular expression touches untrusted input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .errors import SIPParseError
from .grammar import is_token
from .headers import CANONICAL_NAMES, COMPACT_FORMS, KNOWN_METHODS, Headers
from .message import Request, Response
from .uri import URI, SipURI, parse_uri


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Hard bounds on untrusted input."""

    max_message_size: int = 65535  # whole message, head + body -> 513
    max_headers: int = 128  # header fields (after unfolding) -> 400
    max_line_length: int = 8192  # any physical line of the head -> 400
    max_uri_length: int = 4096  # Request-URI -> 414

    def __reduce__(self) -> tuple[Any, ...]:
        # explicit: a frozen dataclass compiled by mypyc cannot restore its state otherwise
        return (ParserLimits, (self.max_message_size, self.max_headers, self.max_line_length, self.max_uri_length))


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A RFC 5626 §4.4.1 CRLFCRLF ping on a stream; answer with a CRLF pong."""


DEFAULT_LIMITS = ParserLimits()

# What parse_message and StreamFramer.feed take.  Spelled out (not just
# ``bytes``) because once compiled by mypyc an argument of the wrong type is
# refused at the call, where the Python code would have copied it to bytes.
Buffer = Union[bytes, bytearray, memoryview]

_CRLF2 = b"\r\n\r\n"
_LF2 = b"\n\n"


def _find_head_end(data: bytes | bytearray, start: int, search_from: int | None = None) -> tuple[int, int]:
    """(end of head, start of body) or (-1, -1).

    The head ends at the first empty line.  Lines are CRLF-terminated
    (§7); bare-LF line ends are tolerated for robustness.
    """
    begin = start if search_from is None else max(start, search_from)
    crlf = data.find(_CRLF2, begin)
    lf = data.find(_LF2, begin, crlf + 4 if crlf >= 0 else len(data))
    if lf < 0:
        return (crlf, crlf + 4) if crlf >= 0 else (-1, -1)
    # "\r\n\n" ends a head too: cut the head before its '\r'
    head_end = lf - 1 if lf > start and data[lf - 1] == 13 else lf
    return head_end, lf + 2


class _Head:
    """Start line and headers of a message whose head has been read."""

    __slots__ = ("method", "uri", "status", "reason", "headers", "deferred", "version_error")

    def __init__(self) -> None:
        self.method = ""
        self.uri: URI | None = None  # set for a request only
        self.status = 0
        self.reason = ""
        self.headers: Headers
        # A problem in a header line that does not stop us from reading the
        # others: raised after the message is built so `partial` can be set.
        self.deferred: SIPParseError | None = None
        # A request of another SIP version (RFC 4475 "badvers"): its
        # head is read as a SIP/2.0 one, so that the 505 can be answered and a
        # stream framed by its Content-Length stays in sync; raised first.
        self.version_error: SIPParseError | None = None

    def build(self, body: bytes = b"") -> Request | Response:
        uri = self.uri
        if uri is not None:
            return Request(self.method, uri, self.headers, body)
        return Response(self.status, self.reason, self.headers, body)


# raw header name -> (look-up key, wire spelling, single-valued?); doubles as
# the token check.
_NAME_CACHE: dict[str, tuple[str, str, bool]] = {}
_NAME_CACHE_LIMIT = 2048  # peers choose names: bound the memory they can claim


def _learn_header_name(name: str) -> tuple[str, str, bool] | None:
    if not is_token(name):
        return None
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    known = (key, CANONICAL_NAMES.get(key, name if len(name) > 1 else key), key in _SINGLE_VALUED)
    if len(_NAME_CACHE) < _NAME_CACHE_LIMIT:
        _NAME_CACHE[name] = known
    return known


def _decode_head(head: bytes) -> str:
    if b"\x00" in head:
        raise SIPParseError("NUL byte in header section")
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError:
        # Not UTF-8 (§7.3.1 says UTF-8 but legacy agents send latin-1 display
        # names): every byte decodes as latin-1, so this cannot fail.
        return head.decode("latin-1")


def _parse_head(head: bytes, limits: ParserLimits, crlf_framed: bool = False) -> _Head | None:
    """Start line and header fields of ``head`` (without its empty line).

    ``crlf_framed``: the caller cut the head at the first CRLFCRLF without
    looking for a bare-LF empty line before it (that would be a second scan
    of every datagram); such a line needs a bare LF, so when the head has
    none this is the right cut, and when it has some we return None and the
    caller frames again the careful way.
    """
    text = _decode_head(head)
    lines = text.split("\r\n")
    if text.count("\n") != len(lines) - 1:
        if crlf_framed:
            return None
        # bare LF line ends somewhere: normalise, then any CR left is stray
        lines = text.replace("\r\n", "\n").split("\n")
        if "\r" in text.replace("\r\n", ""):
            raise SIPParseError("Bare CR in header section")
    elif text.count("\r") != len(lines) - 1:
        raise SIPParseError("Bare CR in header section")
    if len(text) > limits.max_line_length and max(map(len, lines)) > limits.max_line_length:
        first_line = lines[0]
        if len(first_line) > limits.max_line_length and not first_line.startswith("SIP/"):
            # The start line: a long Request-URI gets its own answer.
            raise SIPParseError("Request-URI Too Long", 414)
        raise SIPParseError("Header line too long")

    result = _Head()
    _parse_start_line(lines[0], result, limits)
    del lines[0]
    if len(lines) > limits.max_headers:
        lines = _unfold(lines, result)
        if len(lines) > limits.max_headers:
            raise SIPParseError("Too many headers")
    if not _read_fields(lines, result):
        # §7.3.1 folding (rare, so found on the way rather than searched for
        # first): unfold, then read every field again
        result.deferred = None
        _read_fields(_unfold(lines, result), result)
    return result


def _unfold(lines: list[str], result: _Head) -> list[str]:
    """§7.3.1 folding: a line starting with SP/HT continues the previous one;
    the fold (CRLF + whitespace) is equivalent to a single SP."""
    unfolded: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not unfolded:
                if result.deferred is None:
                    result.deferred = SIPParseError("Malformed header line")
                continue
            unfolded[-1] = unfolded[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            unfolded.append(line)
    return unfolded


def _read_fields(lines: list[str], result: _Head) -> bool:
    """Sort the header lines into ``result.headers``; False, with nothing
    done, when one of them is a continuation line (folding)."""
    triples: list[tuple[str, str, str]] = []
    # key -> values in order: Headers' look-up index, built in this same pass
    # (and it tells whether a single-valued header was already seen)
    index: dict[str, list[str]] = {}
    names = _NAME_CACHE
    for line in lines:
        # HCOLON = *( SP / HTAB ) ":" SWS; the cache holds the names seen
        # before, so a known name costs one dict look-up (no rstrip/token
        # check).  A continuation line never hits it: no name has blanks.
        name, colon, value = line.partition(":")
        known = names.get(name) if colon else None
        if known is None:
            if line[:1] in (" ", "\t"):
                return False
            known = _learn_header_name(name.rstrip(" \t")) if colon and name else None
            if known is None:
                if result.deferred is None:
                    result.deferred = SIPParseError("Malformed header line")
                continue
        key, spelled, single_valued = known
        value = value.strip(" \t")
        values = index.get(key)
        if values is None:
            index[key] = [value]
        elif single_valued:
            # RFC 4475 torture test "multi01": a second From/To/Call-ID/CSeq/
            # Max-Forwards makes the request ambiguous (Content-Length: see
            # _content_length, repeated identical values are tolerated).
            if result.deferred is None:
                result.deferred = SIPParseError(f"Multiple {spelled} headers")
            continue
        else:
            values.append(value)
        triples.append((key, spelled, value))
    result.headers = Headers._from_triples(triples, index)
    return True


# Headers that may appear at most once (§20: no "#" list form in their grammar).
_SINGLE_VALUED = frozenset({"from", "to", "call-id", "cseq", "max-forwards"})


def _parse_start_line(line: str, result: _Head, limits: ParserLimits) -> None:
    if line.startswith("SIP/"):
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase (§7.2)
        parts = line.split(" ", 2)
        if len(parts) < 2:
            raise SIPParseError("Malformed Status-Line")
        version, code = parts[0], parts[1]
        if version.upper() != "SIP/2.0":
            raise SIPParseError("Version Not Supported", 505)
        if len(code) != 3 or not code.isascii() or not code.isdigit() or not "100" <= code <= "699":
            raise SIPParseError("Bad status code")
        result.status = int(code)
        result.reason = parts[2] if len(parts) == 3 else ""
        return
    # Request-Line = Method SP Request-URI SP SIP-Version CRLF (§7.1): exactly
    # single spaces; RFC 4475 "lwsstart" / "trws": extra whitespace is rejected.
    parts = line.split(" ")
    if len(parts) != 3:
        if len(line) > limits.max_uri_length and len(parts) >= 2 and len(parts[1]) > limits.max_uri_length:
            raise SIPParseError("Request-URI Too Long", 414)
        raise SIPParseError("Malformed Request-Line")
    method, uri_text, version = parts
    if method not in KNOWN_METHODS and not is_token(method):
        raise SIPParseError("Malformed Request-Line")
    if version != "SIP/2.0":
        if not version.startswith(("SIP/", "sip/")):
            raise SIPParseError("Malformed Request-Line")
        if version.upper() != "SIP/2.0":
            # §21.5.7, RFC 4475 "badvers": answered with 505 once the head is read
            result.version_error = SIPParseError("Version Not Supported", 505)
    if len(uri_text) > limits.max_uri_length:
        raise SIPParseError("Request-URI Too Long", 414)
    try:
        uri = parse_uri(uri_text)
    except SIPParseError:
        raise SIPParseError("Malformed Request-URI") from None
    if isinstance(uri, SipURI) and uri.headers:
        # §19.1.1 table: headers are not allowed in a Request-URI (RFC 4475 "escruri").
        raise SIPParseError("Malformed Request-URI")
    result.uri = uri
    result.method = method


def _index(headers: Headers) -> dict[str, list[str]]:
    index = headers._index
    return headers._build_index() if index is None else index


def _content_length(headers: Headers) -> int | None:
    values = _index(headers).get("content-length")
    if values is None:
        return None
    value = values[0]
    if not value.isascii() or not value.isdigit() or len(value) > 10:
        raise SIPParseError("Bad Content-Length")
    for other in values[1:]:
        if other != value:
            raise SIPParseError("Bad Content-Length")
    return int(value)


def _validate(message: Request | Response) -> None:
    """RFC 3261 §8.1.1: the header fields every request (and, copied from it
    by §8.2.6.2, every response) must have.  All that are missing are named
    in one reason phrase ("Missing Call-ID, CSeq", §21.4.1 asks the phrase to
    identify the problem); then the top Via must parse.  From, To and CSeq are
    only checked for presence here: a request that has them all can still be
    answered with a 400 naming a malformed one (``_validate_fields``).
    """
    index = _index(message.headers)
    for key, _ in _MANDATORY_HEADERS:
        values = index.get(key)
        if values is None or not values[0]:
            missing = [name for wanted, name in _MANDATORY_HEADERS if not index.get(wanted, _NO_VALUE)[0]]
            raise SIPParseError("Missing " + ", ".join(missing))
    message.top_via  # raises "Bad Via header: ..." when unparsable


# §8.1.1 (Max-Forwards aside: a missing one is taken as 70, as most proxies
# do), in the order §8.2.6.2 copies them into a response.  None of them is a
# list header but Via, whose first line holds the top value.
_MANDATORY_HEADERS = (("via", "Via"), ("from", "From"), ("to", "To"), ("call-id", "Call-ID"), ("cseq", "CSeq"))
_NO_VALUE = [""]


def _validate_fields(message: Request | Response, head: _Head) -> None:
    """The rest of §8.1.1 and §7.3, for a message that has every mandatory header."""
    # Each accessor raises "Bad X header" and caches its result.
    message.from_
    message.to
    cseq = message.cseq
    if head.deferred is not None:
        raise head.deferred
    if isinstance(message, Request):
        if cseq.method != message.method:
            raise SIPParseError("CSeq method does not match request method")
        message.max_forwards  # validates the value if present


def _finish(head: _Head, message: Request | Response) -> Request | Response:
    """Validate a framed message.  A request that fails carries itself as the
    error's ``partial``, whatever is wrong with it: whoever answers copies
    what it has (``make_error_response``) and decides whether the answer can
    be routed at all (§18.2.2: by the top Via, or back over the connection)."""
    try:
        if head.version_error is not None:
            raise head.version_error
        _validate(message)
        _validate_fields(message, head)
    except SIPParseError as error:
        error.partial = message if isinstance(message, Request) else None
        raise
    return message


def _framing_error(head: _Head, reason: str, status: int = 400) -> SIPParseError:
    """The error for a message whose extent is unknown or refused (Content-
    Length, size), carrying the request as ``partial``.  A request of an
    unknown SIP version is answered 505 all the same: that is what is wrong
    with it first."""
    partial = _partial(head)
    error = head.version_error
    if error is None:
        return SIPParseError(reason, status, partial)
    error.partial = partial
    return error


def _partial(head: _Head) -> Request | None:
    message = head.build()
    return message if isinstance(message, Request) else None


def _skip_leading_crlf(data: bytes | bytearray) -> int:
    """§7.5: CRLFs before the start line are ignored."""
    start = 0
    n = len(data)
    while start < n and data[start] in (13, 10):
        start += 1
    return start


def parse_message(data: Buffer, limits: ParserLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one datagram (UDP, or a WebSocket message).

    §18.3: without Content-Length the body is the rest of the datagram; a
    Content-Length larger than what arrived is an error; bytes beyond it are
    ignored.  Raises only SIPParseError.
    """
    try:
        return _parse_datagram(bytes(data), limits)
    except SIPParseError:
        raise
    except Exception as error:  # pragma: no cover - a bug, but never leak it
        raise SIPParseError(f"Malformed message ({type(error).__name__})") from error


def _parse_datagram(data: bytes, limits: ParserLimits) -> Request | Response:
    start = _skip_leading_crlf(data)
    if start == len(data):
        raise SIPParseError("Empty message")
    too_big = len(data) - start > limits.max_message_size
    # the usual case: the head ends at the first CRLFCRLF (see _parse_head)
    head_end = data.find(_CRLF2, start)
    head: _Head | None = None
    if 0 <= head_end - start <= limits.max_message_size:
        body_start = head_end + 4
        head = _parse_head(data[start:head_end], limits, crlf_framed=True)
    if head is None:
        head_end, body_start = _find_head_end(data, start)
        if head_end < 0:
            if too_big:
                raise SIPParseError("Message Too Large", 513)
            raise SIPParseError("Missing end of header section")
        if head_end - start > limits.max_message_size:
            raise SIPParseError("Message Too Large", 513)
        head = _parse_head(data[start:head_end], limits)
        if head is None:  # cannot happen: only crlf_framed heads are refused
            raise SIPParseError("Malformed message")
    if too_big:
        raise _framing_error(head, "Message Too Large", 513)
    try:
        length = _content_length(head.headers)
    except SIPParseError as error:
        raise _framing_error(head, error.reason) from None
    if length is None:
        body = data[body_start:]
    else:
        if body_start + length > len(data):
            raise _framing_error(head, "Content-Length mismatch")
        body = data[body_start : body_start + length]
    return _finish(head, head.build(body))


class StreamFramer:
    """Incremental framing of a byte stream (TCP, TLS) into messages.

    ``feed(data)`` accepts bytes in arbitrary pieces and returns every
    message completed so far (and ``KeepAlive`` for each CRLFCRLF ping).

    Errors: ``SIPParseError`` with ``recoverable=False`` means framing is lost
    (bad/missing Content-Length, oversized or garbled head): answer it if it
    carries a ``partial``, then close the connection; every later ``feed``
    raises the same error.  With ``recoverable=True`` the bad message was
    framed and dropped (a request carries ``partial`` to answer 400 or 505);
    the stream is still in sync and ``feed`` may continue.  Messages completed
    before an error in the same ``feed`` call are returned first and the
    error is raised by the next call.
    """

    def __init__(self, limits: ParserLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._scanned = 0  # head-terminator search resumes here
        self._head: _Head | None = None  # parsed head waiting for its body
        self._body_start = 0
        self._body_length = 0
        self._pending_error: SIPParseError | None = None
        self._broken: SIPParseError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buffer)

    def feed(self, data: Buffer) -> list[Request | Response | KeepAlive]:
        if self._broken is not None:
            raise self._broken
        self._buffer += data
        if self._pending_error is not None:
            error, self._pending_error = self._pending_error, None
            raise error
        out: list[Request | Response | KeepAlive] = []
        while True:
            try:
                item = self._next()
            except SIPParseError as error:
                if not error.recoverable:
                    self._broken = error
                    self._buffer = bytearray()
                if out:
                    self._pending_error = error
                    return out
                raise
            except Exception as error:  # pragma: no cover - a bug, never leak it
                wrapped = SIPParseError(f"Malformed message ({type(error).__name__})")
                self._broken = wrapped
                raise wrapped from error
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Request | Response | KeepAlive | None:
        buffer = self._buffer
        limits = self.limits
        if self._head is None:
            # Between messages: CRLFCRLF is a ping, a lone CRLF is skipped.
            while buffer and buffer[0] in (13, 10):
                if buffer.startswith(_CRLF2):
                    del buffer[:4]
                    self._scanned = 0
                    return KeepAlive()
                if _CRLF2.startswith(bytes(buffer[:4])):
                    return None  # could still become a ping: wait
                del buffer[: 2 if buffer.startswith(b"\r\n") else 1]
                self._scanned = 0
            if not buffer:
                return None
            head_end, body_start = _find_head_end(buffer, 0, self._scanned)
            if head_end < 0:
                if len(buffer) > limits.max_message_size:
                    raise SIPParseError("Message Too Large", 513)
                self._scanned = max(0, len(buffer) - 3)
                return None
            self._scanned = 0
            if head_end > limits.max_message_size:
                raise SIPParseError("Message Too Large", 513)
            parsed = _parse_head(bytes(buffer[:head_end]), limits)
            if parsed is None:  # cannot happen: only crlf_framed heads are refused
                raise SIPParseError("Malformed message")
            head = parsed
            try:
                length = _content_length(head.headers)
            except SIPParseError as error:
                raise _framing_error(head, error.reason) from None
            if length is None:
                # §18.3: "In the case of stream-oriented transports such as
                # TCP, the Content-Length header field indicates the size of
                # the body. [...] MUST be used with stream oriented transports."
                raise _framing_error(head, "Missing Content-Length")
            if body_start + length > limits.max_message_size:
                raise _framing_error(head, "Message Too Large", 513)
            self._head = head
            self._body_start = body_start
            self._body_length = length
        end = self._body_start + self._body_length
        if len(buffer) < end:
            return None
        head = self._head
        body = bytes(buffer[self._body_start : end])
        del buffer[:end]
        self._head = None
        message = head.build(body)
        try:
            return _finish(head, message)
        except SIPParseError as error:
            error.recoverable = True
            raise
