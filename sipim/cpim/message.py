"""message/cpim (RFC 3862): parse, inspect, build, serialize.

In a SIP MESSAGE (RFC 3428) with ``Content-Type: message/cpim`` the SIP
headers play the part of the "MIME headers for the overall message" (§2), so
the SIP body starts directly with the CPIM message headers::

    From: MR SANDERS <im:piglet@100akerwood.com>      <- message headers (§2.2)
    NS: imdn <urn:ietf:params:imdn>
    imdn.Message-ID: 34jk324j
                                                      <- blank line
    Content-Type: text/plain; charset=utf-8           <- encapsulated MIME headers (§2.4)
                                                      <- blank line
    Hello                                             <- content, opaque bytes

Message headers are end-to-end data: "MUST NOT be modified, reformatted or
reordered in transit" and processors "MUST preserve all octets" (§2.2, §6).
So a parsed message keeps the bytes it came from and ``serialize()`` returns
exactly them; an intermediary that wants to change something must wrap the
message in a new one (§6) instead of editing it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime as DateTime
from types import MappingProxyType
from typing import Iterable, Iterator, Mapping, Sequence, Union

from ..sip.errors import SIPParseError
from ..sip.uri import AbsoluteURI, NameAddr, SipURI, TelURI, parse_uri
from .errors import CPIMError
from .escape import escape_header_text, quote_string, unescape_header_text
from .timestamps import format_rfc3339, parse_rfc3339

# RFC 3862 §4 / §7.2: namespace of the headers this RFC defines, and the
# default namespace of message/cpim (§6) for headers without a prefix.
CPIM_NAMESPACE = "urn:ietf:params:cpim-headers:"
# RFC 5438 §6.1; the conventional prefix is "imdn" but any prefix is legal.
IMDN_NAMESPACE = "urn:ietf:params:imdn"
DEFAULT_NAMESPACES: Mapping[str, str] = MappingProxyType({"imdn": IMDN_NAMESPACE})

# Same bound as Config.im_max_message_size: a MESSAGE body is never larger.
DEFAULT_MAX_CPIM_SIZE = 65536
DEFAULT_MAX_CPIM_HEADERS = 128

# §3.6 NAMECHAR: US-ASCII except ".", CTLs and SEPARATORS.
_NAMECHAR_STRING = (
    "!#$%&'*+-^_`|~"
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)
_NAMECHARS = frozenset(_NAMECHAR_STRING)
_ASCII_TOKENCHAR_STRING = _NAMECHAR_STRING + "."
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# RFC 5322 §2.2 field-name (encapsulated MIME headers): printable ASCII but ":".
_MIME_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:", re.ASCII)


def _is_name(text: str) -> bool:
    """§3.6 Name = 1*NAMECHAR."""
    # str.strip(alphabet) leaves nothing iff every character is in it (C speed).
    return bool(text) and not text.strip(_NAMECHAR_STRING)


def _is_tokenchar(ch: str) -> bool:
    """§3.6 TOKENCHAR = NAMECHAR / "." / UCS-high."""
    return ch in _NAMECHARS or ch == "." or ord(ch) >= 0x80


def _is_token(text: str) -> bool:
    if not text:
        return False
    if text.isascii():
        return not text.strip(_ASCII_TOKENCHAR_STRING)
    return all(_is_tokenchar(ch) for ch in text)


def _is_header_name(name: str) -> bool:
    """§3.6 Header-name = [ Name-prefix "." ] Name."""
    prefix, dot, local = name.partition(".")
    return _is_name(local) and _is_name(prefix) if dot else _is_name(name)


def _end_of_string(text: str, start: int) -> int:
    """Index just past the DQUOTE closing the §3.6 String opening at ``start``."""
    i = start + 1
    length = len(text)
    while i < length:
        ch = text[i]
        if ch == "\\":
            i += 2
        elif ch == '"':
            return i + 1
        else:
            i += 1
    raise CPIMError("Unterminated quoted string in message header")


def namespace_key(uri: str) -> str:
    """Comparison form of a namespace URI.

    RFC 2141 §5: the "urn" scheme and the NID are case-insensitive, the NSS
    is not.  A trailing ":" is dropped so ``urn:ietf:params:cpim-headers`` and
    ``urn:ietf:params:cpim-headers:`` (§7.2 spelling) are the same namespace.
    """
    if uri[:4].lower() == "urn:":
        nid, colon, nss = uri[4:].partition(":")
        uri = "urn:" + nid.lower() + colon + nss
    return uri[:-1] if uri.endswith(":") else uri


_CPIM_KEY = namespace_key(CPIM_NAMESPACE)


# ---------------------------------------------------------------------------
# message headers (§2.2, §3)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CPIMHeader:
    """One message header line: ``name`` as written, prefix included
    ("imdn.Message-ID"); ``params`` the §3.6 ``;name=value`` parameters between
    the colon and the space (``Subject:;lang=fr ...``), values as written
    (a String keeps its quotes); ``value`` as written, escapes not decoded.

    Iterates as ``(name, value)`` so ``for name, value in message.headers`` works.
    """

    name: str
    value: str
    params: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.params, tuple):
            object.__setattr__(self, "params", tuple(tuple(p) for p in self.params))
        if not _is_header_name(self.name):
            raise CPIMError(f"Bad message header name {self.name!r}")
        # §2.2: one line, no control characters (escape them, §2.3).
        if _CONTROL.search(self.value):
            raise CPIMError(f"Control character in {self.name} header")
        for param_name, param_value in self.params:
            if not _is_name(param_name):
                raise CPIMError(f"Bad parameter name in {self.name} header")
            if param_value.startswith('"'):
                if _end_of_string(param_value, 0) != len(param_value) or _CONTROL.search(
                    param_value
                ):
                    raise CPIMError(f"Bad parameter value in {self.name} header")
            elif not _is_token(param_value):
                raise CPIMError(f"Bad parameter value in {self.name} header")

    def __iter__(self) -> Iterator[str]:
        yield self.name
        yield self.value

    @property
    def prefix(self) -> str | None:
        """The namespace prefix (§3.4), or None for the default namespace."""
        prefix, dot, _ = self.name.partition(".")
        return prefix if dot else None

    @property
    def local_name(self) -> str:
        return self.name.rpartition(".")[2]

    @property
    def lang(self) -> str | None:
        """§3.3 ``;lang=`` language tag, if any."""
        for param_name, param_value in self.params:
            if param_name == "lang":
                return param_value
        return None

    @property
    def text(self) -> str:
        """The value with §2.3 escapes decoded (for free-text headers such as
        Subject; structured values are parsed from ``value``)."""
        return unescape_header_text(self.value)

    def to_line(self) -> str:
        params = "".join(f";{name}={value}" for name, value in self.params)
        return f"{self.name}:{params} {self.value}"


def _parse_header_line(line: str) -> CPIMHeader:
    """§3.6 Header = Header-name ":" *( ";" Parameter ) SP Header-value."""
    if line[0] in " \t":
        # §2.2: "The entire header MUST be contained on a single line" and no
        # leading whitespace: there is no folding in CPIM.
        raise CPIMError("Folded or indented message header")
    if _CONTROL.search(line):
        raise CPIMError("Control character in message header")
    colon = line.find(":")
    if colon < 0:
        raise CPIMError("Message header without a colon")
    if colon == 0:
        raise CPIMError("Message header without a name")
    name = line[:colon]
    if not _is_header_name(name):
        raise CPIMError(f"Bad message header name {name[:40]!r}")
    length = len(line)
    i = colon + 1
    params: list[tuple[str, str]] = []
    while i < length and line[i] == ";":
        equals = line.find("=", i + 1)
        if equals < 0:
            raise CPIMError(f"Bad parameter in {name} header")
        param_name = line[i + 1 : equals]
        start = equals + 1
        if line.startswith('"', start):
            end = _end_of_string(line, start)
        else:
            end = start
            while end < length and _is_tokenchar(line[end]):
                end += 1
        params.append((param_name, line[start:end]))
        i = end
    if i == length:
        value = ""  # "Name:" with an empty value and its SP lost: tolerated
    elif line[i] == " ":
        value = line[i + 1 :]
    else:
        # §2.2: "There MUST be a single space character (32) following the
        # header name and colon."
        raise CPIMError(f"Missing space after {name}:")
    return CPIMHeader(name, value, tuple(params))


def parse_address(header: CPIMHeader) -> NameAddr:
    """§4.1-4.3 ``[ Formal-name ] "<" URI ">"``; Formal-name = 1*( Token SP ) / String.

    The URI goes through the SIP layer's ``parse_uri`` (sip/sips/tel typed,
    any other scheme such as im: kept as AbsoluteURI).  Lenient on the space
    between a String and "<" (the grammar has none, everyone writes one).
    """
    value = header.value.rstrip(" ")
    display: str | None
    if value.startswith('"'):
        end = _end_of_string(value, 0)
        display = unescape_header_text(value[1 : end - 1])
        rest = value[end:].lstrip(" ")
    else:
        angle = value.find("<")
        if angle < 0:
            raise CPIMError(f"Bad {header.name} header: expected <URI>")
        words = [word for word in value[:angle].split(" ") if word]  # SP only, §3.6
        if not all(_is_token(word) for word in words):
            raise CPIMError(f"Bad {header.name} header: bad formal name")
        display = " ".join(words) if words else None
        rest = value[angle:]
    if not (rest.startswith("<") and rest.endswith(">")) or ">" in rest[:-1]:
        raise CPIMError(f"Bad {header.name} header: expected <URI>")
    try:
        uri = parse_uri(rest[1:-1])
    except SIPParseError as error:
        raise CPIMError(f"Bad {header.name} header: {error.reason}") from None
    return NameAddr(uri=uri, display_name=display)


def _parse_namespace_declaration(header: CPIMHeader) -> tuple[str | None, str]:
    """§4.6 ``NS: [ Name-prefix ] "<" URI ">"`` -> (prefix or None, URI)."""
    value = header.value.rstrip(" ")
    angle = value.find("<")
    if angle < 0 or not value.endswith(">"):
        raise CPIMError("Bad NS header: expected <URI>")
    prefix = value[:angle].strip(" ") or None
    if prefix is not None and not _is_name(prefix):
        raise CPIMError(f"Bad NS header: bad prefix {prefix[:40]!r}")
    uri = value[angle + 1 : -1]
    # §3.4: "MUST be a full absolute-URI" without fragment.
    if not _URI_SCHEME.match(uri) or any(ch in uri for ch in ' <>"#'):
        raise CPIMError("Bad NS header: not an absolute URI")
    return prefix, uri


# ---------------------------------------------------------------------------
# encapsulated MIME headers (§2.4)
# ---------------------------------------------------------------------------


def _check_content_header(name: str, value: str) -> None:
    if not _MIME_FIELD_NAME.fullmatch(name):
        raise CPIMError(f"Bad content header name {name[:40]!r}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise CPIMError(f"Line break in {name} content header")


def _media_type(content_type: str | None) -> str | None:
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------------------
# the message
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CPIMMessage:
    """A message/cpim body.

    ``headers``: the message headers in order (§2.2), prefixes preserved.
    ``content_headers``: the encapsulated MIME headers as (name, value), in
    order (names case-insensitive, MIME rules, unfolded).  ``body``: the
    encapsulated content, opaque bytes.

    Construction validates (CPIMError): header syntax, NS declarations, the
    From/To/cc/DateTime values, and a Content-Type among the content headers
    (§2.4).  The typed accessors therefore never raise.
    """

    headers: tuple[CPIMHeader, ...]
    content_headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    # The exact bytes this message was parsed from (None when built): kept so
    # forwarding never rewrites a byte (§2.2).  dataclasses.replace() drops it.
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)
    # Resolved namespace key of each header (None: undeclared prefix).
    _namespaces: tuple[str | None, ...] = field(default=(), init=False, repr=False, compare=False)
    _declared: Mapping[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)
    _default_namespace: str = field(default=CPIM_NAMESPACE, init=False, repr=False, compare=False)
    _from: NameAddr | None = field(default=None, init=False, repr=False, compare=False)
    _to: tuple[NameAddr, ...] = field(default=(), init=False, repr=False, compare=False)
    _cc: tuple[NameAddr, ...] = field(default=(), init=False, repr=False, compare=False)
    _datetime: DateTime | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__
        headers = tuple(self.headers)
        for header in headers:
            if not isinstance(header, CPIMHeader):
                raise TypeError("CPIMMessage.headers holds CPIMHeader values")
        content_headers = tuple((str(name), str(value)) for name, value in self.content_headers)
        if not isinstance(self.body, bytes):
            setattr_(self, "body", bytes(self.body))
        setattr_(self, "headers", headers)
        setattr_(self, "content_headers", content_headers)

        # §3.4: walk the headers in order; an NS declaration applies to the
        # headers after it ("A namespace prefix declaration MUST precede any
        # use of that prefix").  A header whose prefix was never declared
        # resolves to no namespace: it is not understood and so ignored
        # (§2.2), rather than making the whole message unreadable.
        declared: dict[str, str] = {}
        prefix_keys: dict[str, str] = {}
        default_namespace = CPIM_NAMESPACE
        default_key = _CPIM_KEY
        resolved: list[str | None] = []
        from_: NameAddr | None = None
        to: list[NameAddr] = []
        cc: list[NameAddr] = []
        moment: DateTime | None = None
        for header in headers:
            prefix = header.prefix
            key = default_key if prefix is None else prefix_keys.get(prefix)
            resolved.append(key)
            if key != _CPIM_KEY:
                continue
            local = header.local_name
            if local == "NS":
                ns_prefix, uri = _parse_namespace_declaration(header)
                if ns_prefix is None:
                    default_namespace, default_key = uri, namespace_key(uri)
                else:
                    declared[ns_prefix] = uri
                    prefix_keys[ns_prefix] = namespace_key(uri)
            elif local == "From":
                if from_ is not None:
                    raise CPIMError("More than one From header")
                from_ = parse_address(header)
            elif local == "To":
                to.append(parse_address(header))
            elif local == "cc":
                cc.append(parse_address(header))
            elif local == "DateTime":
                if moment is not None:
                    raise CPIMError("More than one DateTime header")
                try:
                    moment = parse_rfc3339(header.value.rstrip(" "))
                except ValueError:
                    raise CPIMError("Bad DateTime header (RFC 3339 date-time expected)") from None
        for name, value in content_headers:
            _check_content_header(name, value)
        if not any(name.lower() == "content-type" for name, _ in content_headers):
            raise CPIMError("Missing Content-Type in the encapsulated MIME headers")
        setattr_(self, "_namespaces", tuple(resolved))
        setattr_(self, "_declared", MappingProxyType(declared))
        setattr_(self, "_default_namespace", default_namespace)
        setattr_(self, "_from", from_)
        setattr_(self, "_to", tuple(to))
        setattr_(self, "_cc", tuple(cc))
        setattr_(self, "_datetime", moment)

    # -- namespaces (§3.4) -------------------------------------------------

    @property
    def namespaces(self) -> Mapping[str, str]:
        """Declared prefixes -> namespace URI as written (the last declaration
        of a prefix wins here; headers resolve against the one before them)."""
        return self._declared

    @property
    def default_namespace(self) -> str:
        """Namespace of unprefixed headers after the last ``NS: <uri>``."""
        return self._default_namespace

    def namespace_of(self, index: int) -> str | None:
        """Resolved namespace (comparison form) of ``headers[index]``."""
        return self._namespaces[index]

    def headers_in(self, namespace: str, name: str) -> list[CPIMHeader]:
        """Every header whose name is ``name`` (case-sensitive, §2.2) in
        ``namespace``, whatever prefix the message used for it (§3.4)."""
        key = namespace_key(namespace)
        return [
            header
            for header, header_key in zip(self.headers, self._namespaces)
            if header_key == key and header.local_name == name
        ]

    def header(self, namespace: str, name: str) -> str | None:
        """Raw value of the first ``name`` header in ``namespace``, or None."""
        found = self.headers_in(namespace, name)
        return found[0].value if found else None

    # -- RFC 3862 §4 headers -------------------------------------------------

    @property
    def from_(self) -> NameAddr | None:
        return self._from

    @property
    def to(self) -> list[NameAddr]:
        return list(self._to)

    @property
    def cc(self) -> list[NameAddr]:
        return list(self._cc)

    @property
    def datetime(self) -> DateTime | None:
        """The DateTime header as an aware datetime (§4.4, RFC 3339)."""
        return self._datetime

    @property
    def datetime_text(self) -> str | None:
        """The DateTime header as written (what an IMDN must echo, RFC 5438 §11.1.2)."""
        found = self.headers_in(CPIM_NAMESPACE, "DateTime")
        return found[0].value.rstrip(" ") if found else None

    @property
    def subjects(self) -> list[tuple[str, str | None]]:
        """Every Subject as (decoded text, lang or None) (§4.5, §3.3)."""
        return [(header.text, header.lang) for header in self.headers_in(CPIM_NAMESPACE, "Subject")]

    @property
    def subject(self) -> str | None:
        """The first Subject, decoded."""
        subjects = self.subjects
        return subjects[0][0] if subjects else None

    @property
    def require(self) -> list[str]:
        """§4.7 Require: the header names (as written) the receiver must understand."""
        names: list[str] = []
        for header in self.headers_in(CPIM_NAMESPACE, "Require"):
            names.extend(part.strip() for part in header.value.split(",") if part.strip())
        return names

    # -- encapsulated MIME headers (§2.4) ---------------------------------

    def content_header(self, name: str) -> str | None:
        """First encapsulated MIME header called ``name`` (case-insensitive)."""
        wanted = name.lower()
        for header_name, value in self.content_headers:
            if header_name.lower() == wanted:
                return value
        return None

    @property
    def content_type(self) -> str:
        """The encapsulated Content-Type as written (always present)."""
        return self.content_header("Content-Type") or ""

    @property
    def media_type(self) -> str:
        """The encapsulated type/subtype, lower-case, without parameters."""
        return _media_type(self.content_type) or ""

    @property
    def content_disposition(self) -> str | None:
        """The disposition-type of Content-Disposition, lower-case (RFC 2183)."""
        return _media_type(self.content_header("Content-Disposition"))

    # -- bytes -------------------------------------------------------------

    def serialize(self) -> bytes:
        """The message as bytes: exactly the parsed input for a parsed message
        (§2.2 "MUST preserve all octets"), CRLF-terminated lines otherwise."""
        if self._raw is not None:
            return self._raw
        lines = [header.to_line() + "\r\n" for header in self.headers]
        lines.append("\r\n")
        lines.extend(f"{name}: {value}\r\n" for name, value in self.content_headers)
        lines.append("\r\n")
        return "".join(lines).encode("utf-8") + self.body

    def __bytes__(self) -> bytes:
        return self.serialize()


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------


def _next_line(data: bytes, start: int, missing: str) -> tuple[bytes, int]:
    """The line starting at ``start`` (without its line end) and the offset
    after it.  CRLF is the rule (§2.2); a bare LF is tolerated like the SIP
    parser tolerates it."""
    end = data.find(b"\n", start)
    if end < 0:
        raise CPIMError(missing)
    line = data[start:end]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line, end + 1


def _decode(line: bytes, what: str) -> str:
    try:
        return line.decode("utf-8")  # §2.2: "UTF-8 character encoding MUST be used"
    except UnicodeDecodeError:
        raise CPIMError(f"{what} is not UTF-8") from None


def parse_cpim(
    body: bytes,
    *,
    max_size: int = DEFAULT_MAX_CPIM_SIZE,
    max_headers: int = DEFAULT_MAX_CPIM_HEADERS,
) -> CPIMMessage:
    """Parse a message/cpim body (the SIP MESSAGE body).  Raises only CPIMError."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise CPIMError("message/cpim body must be bytes")
    data = bytes(body)
    if len(data) > max_size:
        raise CPIMError(f"message/cpim body larger than {max_size} bytes")
    if not data:
        raise CPIMError("Empty message/cpim body")

    headers: list[CPIMHeader] = []
    position = 0
    while True:
        line, position = _next_line(data, position, "Missing blank line after message headers")
        if not line:
            break
        if len(headers) >= max_headers:
            raise CPIMError(f"More than {max_headers} message headers")
        headers.append(_parse_header_line(_decode(line, "Message header")))

    content_headers: list[tuple[str, str]] = []
    while True:
        line, position = _next_line(
            data, position, "Missing blank line after the encapsulated MIME headers"
        )
        if not line:
            break
        text = _decode(line, "Content header")
        if text[0] in " \t":
            # RFC 5322 §2.2.3 folding is allowed in the MIME part.
            if not content_headers:
                raise CPIMError("Content header continuation without a header")
            name, value = content_headers[-1]
            content_headers[-1] = (name, (value + " " + text.strip(" \t")).strip())
            continue
        if len(content_headers) >= max_headers:
            raise CPIMError(f"More than {max_headers} content headers")
        name, colon, value = text.partition(":")
        if not colon or not _MIME_FIELD_NAME.fullmatch(name):
            raise CPIMError(f"Bad content header {text[:40]!r}")
        content_headers.append((name, value.strip(" \t")))

    message = CPIMMessage(tuple(headers), tuple(content_headers), data[position:])
    object.__setattr__(message, "_raw", data)
    return message


# ---------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------

Address = Union[NameAddr, SipURI, TelURI, AbsoluteURI, str]


def format_address(address: Address) -> str:
    """§4.1 ``[ Formal-name ] "<" URI ">"`` for a NameAddr, a URI, or text
    ("sip:bob@example.com" or "Bob <sip:bob@example.com>")."""
    if isinstance(address, str):
        if "<" in address:
            address = parse_address(CPIMHeader("To", address))
        else:
            try:
                address = parse_uri(address)
            except SIPParseError as error:
                raise CPIMError(f"Bad address {address!r}: {error.reason}") from None
    if isinstance(address, NameAddr):
        display, uri = address.display_name, address.uri
    else:
        display, uri = None, address
    uri_text = str(uri)
    if any(ch in uri_text for ch in "<> ") or _CONTROL.search(uri_text):
        raise CPIMError(f"URI {uri_text!r} cannot be written in a CPIM header")
    if not display:
        return f"<{uri_text}>"
    words = display.split(" ")
    if all(_is_token(word) for word in words):
        return f"{display} <{uri_text}>"  # 1*( Token SP )
    # String directly followed by "<", exactly as the §3.6 grammar has it
    # (also valid RFC 3261 name-addr, so lenient parsers read it too).
    return f"{quote_string(display)}<{uri_text}>"


def build_cpim(
    from_: Address,
    to: Address | Sequence[Address],
    datetime: DateTime | None,
    content_type: str,
    body: bytes,
    *,
    cc: Sequence[Address] = (),
    subject: str | None = None,
    subject_lang: str | None = None,
    extra_headers: Iterable[tuple[str, str] | CPIMHeader] = (),
    namespaces: Mapping[str, str] = DEFAULT_NAMESPACES,
    content_headers: Iterable[tuple[str, str]] = (),
    content_length: bool = False,
) -> CPIMMessage:
    """Build a message/cpim message.

    Header order: From, To..., cc..., DateTime, Subject, the NS declarations
    of the prefixes ``extra_headers`` use (from ``namespaces``; a prefix used
    but not in ``namespaces`` is an error: §3.4 declaration before use), then
    ``extra_headers`` as given.  Extra header values are written as given
    (they must already be valid: no control characters, §2.3 escapes done by
    the caller, see ``escape_header_text``); ``subject`` is plain text and is
    escaped here.  ``content_headers`` follow Content-Type; ``content_length``
    adds a Content-Length like the RFC 5438 examples.  Raises CPIMError
    (a ValueError) for arguments that cannot make a valid message.
    """
    headers: list[CPIMHeader] = [CPIMHeader("From", format_address(from_))]
    recipients = [to] if isinstance(to, (str, NameAddr, SipURI, TelURI, AbsoluteURI)) else list(to)
    headers.extend(CPIMHeader("To", format_address(recipient)) for recipient in recipients)
    headers.extend(CPIMHeader("cc", format_address(copy)) for copy in cc)
    if datetime is not None:
        try:
            headers.append(CPIMHeader("DateTime", format_rfc3339(datetime)))
        except ValueError as error:
            raise CPIMError(str(error)) from None
    if subject is not None:
        params = (("lang", subject_lang),) if subject_lang else ()
        headers.append(CPIMHeader("Subject", escape_header_text(subject), params))

    extras = [
        header if isinstance(header, CPIMHeader) else CPIMHeader(header[0], header[1])
        for header in extra_headers
    ]
    used_prefixes: list[str] = []
    for header in extras:
        prefix = header.prefix
        if prefix is not None and prefix not in used_prefixes:
            if prefix not in namespaces:
                raise CPIMError(f"Namespace prefix {prefix!r} is not declared")
            used_prefixes.append(prefix)
    for prefix in namespaces:
        if prefix in used_prefixes:
            headers.append(CPIMHeader("NS", f"{prefix} <{namespaces[prefix]}>"))
    headers.extend(extras)

    mime: list[tuple[str, str]] = [("Content-Type", content_type)]
    mime.extend((str(name), str(value)) for name, value in content_headers)
    if content_length:
        mime.append(("Content-Length", str(len(body))))
    return CPIMMessage(tuple(headers), tuple(mime), bytes(body))
