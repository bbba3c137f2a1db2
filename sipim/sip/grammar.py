"""The RFC 3261 §25.1 grammar the header and URI parsers share: tokens,
quoted strings, comma lists, parameters and hosts (in the manner of h11's
``_abnf.py``: the basic rules in one place, under public names).

Sans-IO, ``str`` only, and no regular expression: every check is a
``str.strip`` / ``str.find`` pass that cannot backtrack on untrusted input.
Errors are ``SIPParseError`` with a short reason ("Bad host", "Malformed
parameter") that callers prefix with the header or URI they were reading.
"""

from __future__ import annotations

from .errors import SIPParseError

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)


def is_token(text: str) -> bool:
    """True when ``text`` is a non-empty RFC 3261 token.

    ``str.strip`` with the token alphabet removes every token character from
    both ends; only a pure token leaves nothing behind.  This is C-speed and
    cannot backtrack.
    """
    return bool(text) and not text.strip(TOKEN_CHARS)


# ---------------------------------------------------------------------------
# quoted strings, comma lists, parameters
# ---------------------------------------------------------------------------


def quote(text: str) -> str:
    """Make a quoted-string, escaping backslash and double quote (§25.1 quoted-pair)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote(text: str) -> str:
    """Undo ``quote``; a value that is not a quoted string is returned as is."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        if "\\" not in inner:
            return inner
        out: list[str] = []
        i = 0
        n = len(inner)
        while i < n:
            ch = inner[i]
            if ch == "\\" and i + 1 < n:
                out.append(inner[i + 1])
                i += 2
            else:
                out.append(ch)
                i += 1
        return "".join(out)
    return text


def end_of_quoted(text: str, start: int) -> int:
    """Index just past the closing quote of the quoted string opening at ``start``.

    Jumps from quote to quote with str.find; a quote preceded by an odd
    number of backslashes is a quoted-pair (§25.1) and does not close.
    Raises SIPParseError when the string is not terminated.
    """
    i = start + 1
    while True:
        close = text.find('"', i)
        if close < 0:
            raise SIPParseError("Unterminated quoted string")
        backslash = close - 1
        while backslash > start and text[backslash] == "\\":
            backslash -= 1
        if (close - 1 - backslash) % 2 == 0:
            return close + 1
        i = close + 1


def split_outside_quotes(text: str, separator: str, *, angle: bool = True) -> list[str]:
    """Split on ``separator`` where it is not inside a quoted string or ``<...>``.

    Single left-to-right pass; no regex, so no backtracking.
    """
    if '"' not in text and (not angle or "<" not in text):
        return text.split(separator)
    parts: list[str] = []
    i = 0
    n = len(text)
    begin = 0
    while i < n:
        ch = text[i]
        if ch == '"':
            i = end_of_quoted(text, i)
            continue
        if angle and ch == "<":
            close = text.find(">", i + 1)
            if close < 0:
                raise SIPParseError("Unterminated <")
            i = close + 1
            continue
        if ch == separator:
            parts.append(text[begin:i])
            begin = i + 1
        i += 1
    parts.append(text[begin:])
    return parts


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value (§7.3.1) respecting quotes and <>."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    return [part.strip() for part in split_outside_quotes(value, ",") if part.strip()]


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (leading ';' optional) into an ordered dict.

    Names are lower-cased (parameter names are case-insensitive, §7.3.1);
    values are kept verbatim, quotes included, so serialization is exact.
    A parameter without '=' maps to None.  Empty segments (``;;``) are skipped.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    pieces = split_outside_quotes(text, ";", angle=False) if '"' in text else text.split(";")
    for piece in pieces:
        name, sep, value = piece.partition("=")
        if name.strip(TOKEN_CHARS):  # not a bare token: allow surrounding LWS
            name = name.strip(" \t")
            if name.strip(TOKEN_CHARS):
                raise SIPParseError("Malformed parameter")
        if not name:
            if sep:
                raise SIPParseError("Malformed parameter")
            continue
        if sep:
            value = value.strip(" \t")
            if value[:1] == '"' and end_of_quoted(value, 0) != len(value):
                raise SIPParseError("Malformed parameter")
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


# What parse_simple_params accepts: tokens, '=' and ';' — no LWS, no quotes
# (a value may hold '=': parse_params keeps "a=b=c" as a -> "b=c").
_SIMPLE_VALUE_CHARS = TOKEN_CHARS + "="


def parse_simple_params(text: str, ascii_known: bool = False) -> dict[str, str | None] | None:
    """Fast path of ``parse_params`` for ``;name=value;flag`` made of token
    characters, ';' and '=' only: the same dict, or None (never an error) when
    the text is anything else or would be refused, so the caller falls back
    to ``parse_params``."""
    if not ascii_known and not text.isascii():
        return None
    params: dict[str, str | None] = {}
    for piece in text.split(";"):
        # the name stops at the first '=': with the character check it is a token
        name, sep, value = piece.partition("=")
        if not name:
            if sep:
                return None  # "Malformed parameter": let parse_params say it
            continue
        # isalnum is the cheap check that nearly always answers (tag, branch,
        # z9hG4bK..., rport, expires, transport=UDP); strip the complete one
        if not name.isalnum() and name.strip(TOKEN_CHARS):
            return None
        if sep:
            if value and not value.isalnum() and value.strip(_SIMPLE_VALUE_CHARS):
                return None
            params[name.lower()] = value
        else:
            params[name.lower()] = None
    return params


def format_params(params: dict[str, str | None]) -> str:
    """Inverse of ``parse_params``: ``;name=value;flag`` (empty string when none)."""
    if not params:
        return ""
    parts: list[str] = []
    for name, value in params.items():
        if value is None:
            parts += (";", name)
        else:
            parts += (";", name, "=", value)
    return "".join(parts)


# ---------------------------------------------------------------------------
# hosts (hostport, hostname / IPv4address / IPv6reference)
# ---------------------------------------------------------------------------


def split_host_port(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]`` where host may be an IPv6 reference ``[...]``.

    Raises SIPParseError with reason "Bad host" / "Bad port".
    """
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise SIPParseError("Bad host")
        host = text[: close + 1]
        rest = text[close + 1 :]
        if not valid_ipv6_reference(host):
            raise SIPParseError("Bad host")
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SIPParseError("Bad host")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.partition(":")
        if not valid_host(host):
            raise SIPParseError("Bad host")
        if not sep:
            return host, None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise SIPParseError("Bad port")
    port = int(port_text)
    if port > 65535:
        raise SIPParseError("Bad port")
    return host, port


_HOSTNAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-."
_IPV6_CHARS = "0123456789abcdefABCDEF:."


def valid_ipv6_reference(host: str) -> bool:
    """IPv6reference = "[" IPv6address "]" (§25.1), checked lightly: hex,
    colons and (for the embedded IPv4 form) dots, at least two colons."""
    inner = host[1:-1]
    return (
        host.endswith("]")
        and 2 <= len(inner) <= 45
        and not inner.strip(_IPV6_CHARS)
        and inner.count(":") >= 2
    )


def valid_host(host: str) -> bool:
    """hostname / IPv4address / IPv6reference (§25.1), checked without regex."""
    if not host:
        return False
    if host[0] == "[":
        return valid_ipv6_reference(host)
    return host.isascii() and valid_ascii_hostname(host)


def valid_ascii_hostname(host: str) -> bool:
    """valid_host for a non-empty ASCII host that is not an IPv6 reference."""
    # "127.0.0.1", "pc33.example.com": letters and digits once the dots are
    # gone (isalnum is the cheap test); '-' and the rest take the full one
    if not host.replace(".", "").isalnum() and host.strip(_HOSTNAME_CHARS):
        return False
    if "-" not in host and ".." not in host and host[0] != ".":
        return True
    # labels may not be empty (except a trailing dot) nor start/end with '-'
    labels = host[:-1].split(".") if host.endswith(".") and len(host) > 1 else host.split(".")
    for label in labels:
        if not label or label[0] == "-" or label[-1] == "-":
            return False
    return True
