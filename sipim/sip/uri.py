"""SIP, SIPS and tel URIs, and name-addr / addr-spec header values.

* ``SipURI`` — RFC 3261 §19.1 (syntax), §19.1.4 (comparison), §25.1 (grammar).
* ``TelURI`` — RFC 3966 §3 (syntax), §4 (comparison).
* ``AbsoluteURI`` — any other scheme (RFC 3986), kept verbatim.
* ``NameAddr`` / ``parse_name_addr`` — RFC 3261 §20.10 / §25.1 name-addr and
  addr-spec with header parameters (tag, expires, q, +sip.instance, ...).

Components are stored *unescaped*; ``str()`` re-escapes only what the grammar
requires.  A URI produced by ``parse_uri`` remembers its source text and
serializes to exactly that, so forwarding never rewrites a URI it did not change.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Union

from .errors import SIPParseError
from .grammar import (
    end_of_quoted,
    format_params,
    is_token,
    parse_params,
    parse_simple_params,
    quote,
    split_host_port,
    unquote,
    valid_ascii_hostname,
)

# ---------------------------------------------------------------------------
# %-escaping (RFC 3261 §25.1 escaped = "%" HEXDIG HEXDIG)
# ---------------------------------------------------------------------------

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UNRESERVED = _ALNUM + "-_.!~*'()"
# Characters allowed unescaped in each component (§25.1).
USER_SAFE = _UNRESERVED + "&=+$,;?/"
PASSWORD_SAFE = _UNRESERVED + "&=+$,"
PARAM_SAFE = _UNRESERVED + "[]/:&+$"
HEADER_SAFE = _UNRESERVED + "[]/?:+$"
_HEX = "0123456789abcdefABCDEF"


def unescape(text: str) -> str:
    """Decode %XX escapes.  Escaped bytes are decoded as UTF-8; invalid UTF-8
    is kept with surrogateescape so ``escape`` restores the exact bytes."""
    if "%" not in text:
        return text
    pieces = text.split("%")
    out = bytearray(pieces[0].encode("utf-8", "surrogateescape"))
    for piece in pieces[1:]:
        if len(piece) < 2 or piece[0] not in _HEX or piece[1] not in _HEX:
            raise SIPParseError("Bad %-escape")
        out.append(int(piece[:2], 16))
        out += piece[2:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")


def escape(text: str, safe: str) -> str:
    """Escape every character of ``text`` not in ``safe`` as %XX of its UTF-8 bytes."""
    # str.strip(alphabet) leaves nothing iff every character is in the alphabet.
    if not text.strip(safe):
        return text
    out: list[str] = []
    for ch in text:
        if ch in safe:
            out.append(ch)
        else:
            out.extend(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogateescape"))
    return "".join(out)


def _check_component(text: str, safe: str, what: str) -> None:
    """Reject characters that may not appear unescaped (space, <, >, ", ...)."""
    if text.strip(safe) and text.replace("%", "").strip(safe):
        raise SIPParseError(f"Bad character in URI {what}")


# ---------------------------------------------------------------------------
# SIP / SIPS
# ---------------------------------------------------------------------------

# §19.1.4: these URI parameters must match if present in *either* URI.
_SIGNIFICANT_PARAMS = ("user", "ttl", "method", "maddr", "transport")
DEFAULT_PORTS = {"sip": 5060, "sips": 5061}


class SipURI:
    """``sip:`` / ``sips:`` URI.  ``params`` keys are lower-case, values unescaped
    (None for a flag such as ``;lr``); ``headers`` is the ``?name=value&...`` part.

    Treat as immutable (``with_params`` / ``without_params`` make changed
    copies): ``parse_uri`` hands the same object to every message that
    carries the same text.  A plain class with ``__slots__``, not a frozen dataclass: one is
    built for every Request-URI, From, To and Contact (see Via for why).
    """

    __slots__ = ("scheme", "host", "user", "password", "port", "params", "headers", "_text")

    scheme: str  # "sip" or "sips", lower-case
    host: str  # as written (case preserved); IPv6 with brackets
    user: str | None
    password: str | None
    port: int | None
    params: dict[str, str | None]
    headers: dict[str, str]
    _text: str | None  # the text it was parsed from, written back verbatim

    def __init__(
        self,
        scheme: str,
        host: str,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        params: dict[str, str | None] | None = None,
        headers: dict[str, str] | None = None,
        _text: str | None = None,
    ) -> None:
        if params is None:
            params = {}
        if _text is None:
            # Built in code, not by the parser (which passes its source text
            # and already normalised components): normalise what comparison
            # and serialization assume is normalised.
            scheme = scheme.lower()
            for key in params:
                if key != key.lower():
                    params = {k.lower(): v for k, v in params.items()}
                    break
        self.scheme = scheme
        self.host = host
        self.user = user
        self.password = password
        self.port = port
        self.params = params
        self.headers = {} if headers is None else headers
        self._text = _text

    def __repr__(self) -> str:
        return (
            f"SipURI(scheme={self.scheme!r}, host={self.host!r}, user={self.user!r}, "
            f"password={self.password!r}, port={self.port!r}, params={self.params!r}, "
            f"headers={self.headers!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            SipURI,
            (self.scheme, self.host, self.user, self.password, self.port, self.params, self.headers, self._text),
        )

    # -- RFC 3261 §19.1.4 comparison ---------------------------------------

    def _host_key(self) -> str:
        host = self.host.lower()
        if host.startswith("["):
            # "[2001:DB8:0::1]" and "[2001:db8::1]" are the same address
            try:
                return "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
            except ValueError:
                return host
        return host

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipURI):
            return NotImplemented
        if (
            self.scheme != other.scheme
            # user and password are case-sensitive; compared unescaped (stored so)
            or self.user != other.user
            or self.password != other.password
            or self._host_key() != other._host_key()
            # "A URI omitting any component with a default value will not match
            # a URI explicitly containing that component with its default value."
            or self.port != other.port
        ):
            return False
        mine = {k: (v.lower() if v is not None else None) for k, v in self.params.items()}
        theirs = {k: (v.lower() if v is not None else None) for k, v in other.params.items()}
        for name in _SIGNIFICANT_PARAMS:
            if mine.get(name, _ABSENT) != theirs.get(name, _ABSENT):
                return False
        for name, value in mine.items():
            if name in theirs and theirs[name] != value:
                return False
        # headers: every header must be present in both and match
        return {k.lower(): v for k, v in self.headers.items()} == {
            k.lower(): v for k, v in other.headers.items()
        }

    def __hash__(self) -> int:
        # Only what equality always compares; other params may legitimately differ.
        significant = tuple(
            (name, (self.params[name] or "").lower())
            for name in _SIGNIFICANT_PARAMS
            if name in self.params
        )
        return hash(
            (
                self.scheme,
                self.user,
                self.password,
                self._host_key(),
                self.port,
                significant,
                frozenset((k.lower(), v) for k, v in self.headers.items()),
            )
        )

    # -- conveniences ------------------------------------------------------

    @property
    def aor(self) -> str:
        """Canonical address-of-record string used as the registrar/location key.

        Choice (documented for the core): keep the scheme (sips stays sips,
        RFC 3261 §10.3 step 5 canonicalizes to "sip:" only for user/host
        comparison, but a sips AOR demands TLS so we do not merge them), then
        the unescaped-then-minimally-re-escaped user, the lower-cased host
        (IPv6 in compressed form),
        and the port only when present and not the scheme's default.
        Parameters, password and headers are dropped.
        """
        user = "" if self.user is None else escape(self.user, USER_SAFE) + "@"
        port = ""
        if self.port is not None and self.port != DEFAULT_PORTS.get(self.scheme):
            port = f":{self.port}"
        return f"{self.scheme}:{user}{self._host_key()}{port}"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return "lr" in self.params

    @property
    def maddr(self) -> str | None:
        return self.params.get("maddr")

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, **params: str | None) -> "SipURI":
        merged = dict(self.params)
        merged.update({k.lower(): v for k, v in params.items()})
        return SipURI(self.scheme, self.host, self.user, self.password, self.port, merged, dict(self.headers))

    def without_params(self, *names: str) -> "SipURI":
        drop = {n.lower() for n in names}
        kept = {k: v for k, v in self.params.items() if k not in drop}
        return SipURI(self.scheme, self.host, self.user, self.password, self.port, kept, dict(self.headers))

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(escape(self.user, USER_SAFE))
            if self.password is not None:
                parts.append(":")
                parts.append(escape(self.password, PASSWORD_SAFE))
            parts.append("@")
        parts.append(self.host)
        if self.port is not None:
            parts.append(f":{self.port}")
        for name, value in self.params.items():
            parts.append(";" + escape(name, PARAM_SAFE))
            if value is not None:
                parts.append("=" + escape(value, PARAM_SAFE))
        if self.headers:
            parts.append(
                "?"
                + "&".join(
                    f"{escape(k, HEADER_SAFE)}={escape(v, HEADER_SAFE)}"
                    for k, v in self.headers.items()
                )
            )
        return "".join(parts)


_ABSENT = object()


def _parse_sip_uri(text: str, scheme: str, rest: str) -> SipURI:
    # sip:[userinfo@]hostport[;uri-parameters][?headers]   (§19.1.1, §25.1)
    # '@' may not appear unescaped anywhere but as the userinfo terminator.
    user: str | None = None
    password: str | None = None
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user_text, colon, password_text = userinfo.partition(":")
        if not user_text:
            raise SIPParseError("Empty user part")
        _check_component(user_text, USER_SAFE, "user")
        user = unescape(user_text)
        if colon:
            _check_component(password_text, PASSWORD_SAFE, "password")
            password = unescape(password_text)
    # host ends at the first ';' or '?' (an IPv6 reference contains neither)
    cut = len(rest)
    for mark in (";", "?"):
        pos = rest.find(mark)
        if 0 <= pos < cut:
            cut = pos
    host, port = split_host_port(rest[:cut])
    params: dict[str, str | None] = {}
    headers: dict[str, str] = {}
    tail = rest[cut:]
    if tail:
        param_text, question, header_text = tail.partition("?")
        if param_text:
            for piece in param_text[1:].split(";"):
                if not piece:
                    continue  # tolerate ";;" and a trailing ';'
                name, eq, value = piece.partition("=")
                if not name:
                    raise SIPParseError("Bad URI parameter")
                _check_component(name, PARAM_SAFE, "parameter")
                name = unescape(name).lower()
                if eq:
                    _check_component(value, PARAM_SAFE, "parameter")
                    params[name] = unescape(value)
                else:
                    params[name] = None
        if question:
            for piece in header_text.split("&"):
                if not piece:
                    continue
                name, eq, value = piece.partition("=")
                if not name or not eq:
                    raise SIPParseError("Bad URI header")
                _check_component(name, HEADER_SAFE, "header")
                _check_component(value, HEADER_SAFE, "header")
                headers[unescape(name)] = unescape(value)
    return SipURI(scheme, host, user, password, port, params, headers, text)


# The shape nearly every Request-URI, From, To and Contact has: only
# unreserved characters (§25.1) plus the delimiters below — hence no escapes,
# no IPv6 reference, no '?' headers, no whitespace or quotes.
_SIMPLE_URI_CHARS = _UNRESERVED + ":@;="


def _parse_simple_sip_uri(text: str) -> SipURI | None:
    """Fast path of ``parse_uri`` for ``sip:[user@]host[:port][;name[=value]]*``
    written with ``_SIMPLE_URI_CHARS`` only.  Returns None — never raises — for
    anything it is not sure about (a password, a bad host or port, ...), and
    the full parser decides; when it returns a URI, it is the one the full
    parser builds (tests/sip/test_properties.py checks this on generated text).
    """
    if text.strip(_SIMPLE_URI_CHARS) or not text.startswith("sip:"):
        return None
    rest = text[4:]
    at = rest.find("@")
    user: str | None = None
    if at >= 0:
        user = rest[:at]
        rest = rest[at + 1 :]
        # every unreserved character, ';' and '=' is USER_SAFE; ':' starts a password
        if not user or ":" in user or "@" in rest:
            return None
    semi = rest.find(";")
    host, colon, port_text = (rest if semi < 0 else rest[:semi]).partition(":")
    # the character check above made the text ASCII, without '[' (no IPv6)
    if not host or not valid_ascii_hostname(host):
        return None
    port: int | None = None
    if colon:
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        port = int(port_text)
        if port > 65535:
            return None
    params: dict[str, str | None] = {}
    if semi >= 0:
        for piece in rest[semi + 1 :].split(";"):
            if not piece:
                continue  # ";;" and a trailing ';' are tolerated, as in the full parser
            name, eq, value = piece.partition("=")
            # '=' is not PARAM_SAFE: "a=b=c" is an error the full parser reports
            if not name or "=" in value:
                return None
            params[name.lower()] = value if eq else None
    return SipURI("sip", host, user, None, port, params, {}, text)


# ---------------------------------------------------------------------------
# tel (RFC 3966)
# ---------------------------------------------------------------------------

_VISUAL_SEPARATORS = "-.()"
_GLOBAL_DIGITS = "0123456789" + _VISUAL_SEPARATORS
_LOCAL_DIGITS = "0123456789abcdefABCDEF*#" + _VISUAL_SEPARATORS


def _strip_separators(number: str) -> str:
    for sep in _VISUAL_SEPARATORS:
        if sep in number:
            number = number.replace(sep, "")
    return number


class TelURI:
    """``tel:`` URI (RFC 3966).  ``number`` is as written (visual separators
    kept, '+' included for global numbers); ``params`` lower-case keys, raw values.
    Treat as immutable."""

    __slots__ = ("number", "params", "_text")

    number: str
    params: dict[str, str | None]
    _text: str | None

    def __init__(self, number: str, params: dict[str, str | None] | None = None, _text: str | None = None) -> None:
        self.number = number
        self.params = {} if params is None else params
        self._text = _text

    @property
    def scheme(self) -> str:
        return "tel"

    def __repr__(self) -> str:
        return f"TelURI(number={self.number!r}, params={self.params!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (TelURI, (self.number, self.params, self._text))

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators, lower-case (the comparison form)."""
        return _strip_separators(self.number).lower()

    @property
    def phone_context(self) -> str | None:
        return self.params.get("phone-context")

    def _comparison_key(self) -> tuple[Any, ...]:
        # RFC 3966 §4: same kind, digits equal without separators, the same
        # parameter names in any order, case-insensitive values; phone-context
        # and ext compared without visual separators when they are digits.
        params: list[tuple[str, str | None]] = []
        for name, value in self.params.items():
            if value is not None:
                value = value.lower()
                if name in ("phone-context", "ext", "isub") and not value[:1].isalpha():
                    value = _strip_separators(value)
            params.append((name, value))
        return (self.is_global, self.digits, frozenset(params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TelURI):
            return NotImplemented
        return self._comparison_key() == other._comparison_key()

    def __hash__(self) -> int:
        return hash(self._comparison_key())

    @property
    def aor(self) -> str:
        return f"tel:{self.digits}" + (
            "" if self.is_global else f";phone-context={(self.phone_context or '').lower()}"
        )

    def __str__(self) -> str:
        if self._text is not None:
            return self._text
        return "tel:" + self.number + format_params(self.params)


def _parse_tel_uri(text: str, rest: str) -> TelURI:
    number, semi, param_text = rest.partition(";")
    if number.startswith("+"):
        digits = number[1:]
        if not digits or digits.strip(_GLOBAL_DIGITS) or not any(c.isdigit() for c in digits):
            raise SIPParseError("Bad tel number")
    else:
        if not number or number.strip(_LOCAL_DIGITS) or _strip_separators(number) == "":
            raise SIPParseError("Bad tel number")
    params: dict[str, str | None] = {}
    if semi:
        for piece in param_text.split(";"):
            name, eq, value = piece.partition("=")
            if not is_token(name):
                raise SIPParseError("Bad tel parameter")
            if eq and (not value or any(ch in value for ch in ' <>"\t,')):
                raise SIPParseError("Bad tel parameter")
            params[name.lower()] = value if eq else None
    # §5.1.5: local numbers MUST carry a phone-context
    if not number.startswith("+") and not params.get("phone-context"):
        raise SIPParseError("tel local number without phone-context")
    return TelURI(number, params, text)


# ---------------------------------------------------------------------------
# anything else
# ---------------------------------------------------------------------------


class AbsoluteURI:
    """A URI of a scheme this layer does not interpret (urn:, mailto:, im:, ...)."""

    __slots__ = ("scheme", "rest")

    scheme: str  # lower-case
    rest: str  # everything after the first ':' as written

    def __init__(self, scheme: str, rest: str) -> None:
        self.scheme = scheme
        self.rest = rest

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AbsoluteURI):
            return NotImplemented
        return self.scheme == other.scheme and self.rest == other.rest

    def __hash__(self) -> int:
        return hash((self.scheme, self.rest))

    def __repr__(self) -> str:
        return f"AbsoluteURI(scheme={self.scheme!r}, rest={self.rest!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (AbsoluteURI, (self.scheme, self.rest))

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


URI = Union[SipURI, TelURI, AbsoluteURI]

_SCHEME_CHARS = _ALNUM + "+-."


# Parsed URIs by their text.  A server sees the same few URIs over and over
# (its Request-URIs, every user's AOR in From and To, each device's Contact):
# parsing one costs more than a dict look-up.  Values are shared between
# messages, which is why URI objects must never be changed in place
# (with_params / without_params make copies).  Bounded: emptied when full,
# and long texts are not kept, so a peer sending random URIs costs us no
# more than parsing them.
_URI_CACHE: dict[str, URI] = {}
_URI_CACHE_LIMIT = 4096
_URI_CACHE_MAX_TEXT = 256


def _remember_uri(text: str, uri: URI) -> None:
    if len(text) <= _URI_CACHE_MAX_TEXT:
        if len(_URI_CACHE) >= _URI_CACHE_LIMIT:
            _URI_CACHE.clear()
        _URI_CACHE[text] = uri


def parse_uri(text: str) -> URI:
    """Parse a URI; raises SIPParseError("Malformed URI: ...") on bad syntax.

    The result may be shared with other callers (see _URI_CACHE): treat it
    as immutable."""
    uri = _URI_CACHE.get(text)
    if uri is not None:
        return uri
    if text.startswith("sip:"):
        uri = _parse_simple_sip_uri(text)
    if uri is None:
        try:
            uri = _parse_uri(text)
        except SIPParseError as error:
            raise SIPParseError(f"Malformed URI: {error.reason}") from None
    _remember_uri(text, uri)
    return uri


def _parse_uri(text: str) -> URI:
    if text.startswith("sip:"):  # the hot path: skip the generic scheme checks
        if not text.isprintable() or " " in text or "<" in text or ">" in text or '"' in text:
            raise SIPParseError("bad character")
        return _parse_sip_uri(text, "sip", text[4:])
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or not scheme[0].isalpha() or scheme.strip(_SCHEME_CHARS):
        raise SIPParseError("no scheme")
    if not text.isprintable() or " " in text or "<" in text or ">" in text or '"' in text:
        raise SIPParseError("bad character")
    scheme = scheme.lower()
    if scheme == "sip" or scheme == "sips":
        return _parse_sip_uri(text, scheme, rest)
    if scheme == "tel":
        return _parse_tel_uri(text, rest)
    if not rest:
        raise SIPParseError("empty")
    return AbsoluteURI(scheme, rest)


# ---------------------------------------------------------------------------
# name-addr / addr-spec (RFC 3261 §20.10, §25.1)
# ---------------------------------------------------------------------------


class NameAddr:
    """``"Display" <uri>;param=value`` (or addr-spec ``uri;param``).

    ``display_name`` is unquoted (None when absent); ``params`` are the header
    parameters (lower-case keys, raw values incl. quotes, e.g. +sip.instance).
    Treat as immutable (``with_params`` makes a changed copy).
    """

    __slots__ = ("uri", "display_name", "params")

    uri: URI
    display_name: str | None
    params: dict[str, str | None]

    def __init__(
        self, uri: URI, display_name: str | None = None, params: dict[str, str | None] | None = None
    ) -> None:
        self.uri = uri
        self.display_name = display_name
        self.params = {} if params is None else params

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return self.uri == other.uri and self.display_name == other.display_name and self.params == other.params

    def __repr__(self) -> str:
        return f"NameAddr(uri={self.uri!r}, display_name={self.display_name!r}, params={self.params!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (NameAddr, (self.uri, self.display_name, self.params))

    def __hash__(self) -> int:
        return hash((self.uri, self.display_name, tuple(self.params.items())))

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        value = self.params.get("expires")
        if value is None or not value.isdigit():
            return None
        return int(value)

    @property
    def q(self) -> float | None:
        value = self.params.get("q")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def with_params(self, **params: str | None) -> "NameAddr":
        merged = dict(self.params)
        merged.update({k.lower(): v for k, v in params.items()})
        return NameAddr(self.uri, self.display_name, merged)

    def with_tag(self, tag: str) -> "NameAddr":
        return self.with_params(tag=tag)

    def __str__(self) -> str:
        # Always the name-addr form: it is valid for every URI, whereas
        # addr-spec is not when the URI has ',', ';' or '?' (§20.10).
        display = "" if self.display_name is None else quote(self.display_name) + " "
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(text: str) -> NameAddr:
    """Parse a From/To/Contact/Route... value (one element, not a list)."""
    value = _parse_simple_name_addr(text)
    if value is not None:
        return value
    try:
        return _parse_name_addr(text)
    except SIPParseError as error:
        reason = error.reason
        if not reason.startswith("Malformed URI"):
            reason = f"Malformed name-addr: {reason}"
        raise SIPParseError(reason) from None


def _parse_name_addr(text: str) -> NameAddr:
    text = text.strip(" \t")
    display: str | None = None
    if text.startswith('"'):
        end = end_of_quoted(text, 0)
        display = unquote(text[:end])
        rest = text[end:].lstrip(" \t")
        if not rest.startswith("<"):
            raise SIPParseError("expected <")
    else:
        open_angle = text.find("<")
        if open_angle >= 0:
            display_text = text[:open_angle].strip(" \t")
            if display_text:
                # *(token LWS) — tokens separated by whitespace
                if not all(is_token(word) for word in display_text.split()):
                    raise SIPParseError("bad display name")
                display = " ".join(display_text.split())
            rest = text[open_angle:]
        else:
            rest = None
    if rest is not None:
        close = rest.find(">")
        if close < 0:
            raise SIPParseError("missing >")
        uri = parse_uri(rest[1:close].strip(" \t"))
        param_text = rest[close + 1 :].strip(" \t")
        if param_text and not param_text.startswith(";"):
            raise SIPParseError("junk after >")
        return NameAddr(uri, display, parse_params(param_text) if param_text else {})
    # addr-spec: any ';' after the host part starts the header parameters
    # (§20.10: "URI parameters" cannot appear in this form).
    at = text.find("@")
    semi = text.find(";", at + 1 if at >= 0 else 0)
    if semi >= 0:
        uri_text, param_text = text[:semi], text[semi:]
    else:
        uri_text, param_text = text, ""
    if not uri_text:
        raise SIPParseError("empty")
    return NameAddr(parse_uri(uri_text.rstrip(" \t")), None, parse_params(param_text))


def _parse_simple_name_addr(text: str) -> NameAddr | None:
    """Fast path of ``parse_name_addr`` for ``["display"] <simple sip URI>;p=v...``
    (see ``_parse_simple_sip_uri``) with token parameters.  Returns None —
    never raises — for any other shape, and the full parser decides; when it
    returns a value, it is the one the full parser builds (property-tested).
    """
    first = text[:1]
    if first == "<":
        display = None
        rest = text
    elif first == '"':
        end = text.find('"', 1)
        if end < 0:
            return None
        display = text[1:end]
        if "\\" in display:  # a quoted-pair: leave unquoting to the full parser
            return None
        rest = text[end + 1 :].lstrip(" \t")
        if rest[:1] != "<":
            return None
    else:
        return None
    close = rest.find(">")
    if close < 0:
        return None
    uri_text = rest[1:close]
    uri = _URI_CACHE.get(uri_text)  # whatever parse_uri(uri_text) returned before
    if uri is None:
        uri = _parse_simple_sip_uri(uri_text)
        if uri is None:
            return None
        _remember_uri(uri_text, uri)
    param_text = rest[close + 1 :]
    if param_text:
        if param_text[0] != ";":
            return None
        params = parse_simple_params(param_text)
        if params is None:
            return None
    else:
        params = {}
    return NameAddr(uri, display, params)
