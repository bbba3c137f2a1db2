"""RFC 3862 §2.3 character escape mechanism for CPIM message header values.

Header values are UTF-8 text without control characters (§2.2); a control
character, a backslash, and a quote inside a quoted string are written as
Java-style escapes (``\\uXXXX``, ``\\\\``, ``\\"``, ``\\'``, ``\\b``, ``\\t``,
``\\n``, ``\\r``).  The escape applies to UCS-2 code points, not to UTF-8
octets (§2.3), so characters outside the BMP arrive as surrogate pairs.
"""

from __future__ import annotations

# §2.3: the special sequences introduced by "\".
_SPECIAL_DECODE = {
    "\\": "\\",
    '"': '"',
    "'": "'",
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "r": "\r",
}
# §2.3.1: these MUST be written with their special sequence when generating.
_SPECIAL_ENCODE = {
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\r": "\\r",
}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def is_control(ch: str) -> bool:
    """RFC 3862 §3.6 CTL: U+0000..U+001F and U+007F."""
    code = ord(ch)
    return code < 0x20 or code == 0x7F


def escape_header_text(text: str, *, quote: str | None = None) -> str:
    """Encode ``text`` for use in a header value (§2.3.1).

    Backslash and the control characters are always escaped; ``quote`` ('"' or
    "'") additionally escapes that quote character, for text that will sit
    inside a string delimited by it.  Nothing else is escaped ("All other
    characters MUST NOT be represented using an escape sequence").
    """
    if not any(is_control(ch) or ch == "\\" or ch == quote for ch in text):
        return text
    out: list[str] = []
    for ch in text:
        if ch in _SPECIAL_ENCODE:
            out.append(_SPECIAL_ENCODE[ch])
        elif is_control(ch):
            out.append(f"\\u{ord(ch):04x}")
        elif ch == quote:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def quote_string(text: str) -> str:
    """A §3.6 ``String``: DQUOTE *(Str-char / Escape) DQUOTE."""
    return '"' + escape_header_text(text, quote='"') + '"'


def unescape_header_text(text: str) -> str:
    """Decode §2.3 escapes.

    Following §2.3.1: every backslash introduces an escape; an unrecognised
    escape stands for the character after the backslash; an isolated backslash
    ending the text is ignored.  ``\\uXXXX`` surrogate pairs are combined;
    a lone surrogate (which UTF-8 cannot carry) becomes U+FFFD.
    """
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    length = len(text)
    while i < length:
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 == length:
            break  # isolated trailing backslash: ignored
        following = text[i + 1]
        if following == "u" and _is_hex4(text, i + 2):
            code = int(text[i + 2 : i + 6], 16)
            i += 6
            if 0xD800 <= code <= 0xDBFF and text.startswith("\\u", i) and _is_hex4(text, i + 2):
                low = int(text[i + 2 : i + 6], 16)
                if 0xDC00 <= low <= 0xDFFF:
                    out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                    i += 6
                    continue
            out.append("\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code))
            continue
        out.append(_SPECIAL_DECODE.get(following, following))
        i += 2
    return "".join(out)


def _is_hex4(text: str, start: int) -> bool:
    digits = text[start : start + 4]
    return len(digits) == 4 and all(ch in _HEX_DIGITS for ch in digits)
