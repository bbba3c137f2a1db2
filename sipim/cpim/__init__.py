"""message/cpim (RFC 3862), sans-IO: parse, inspect, build, serialize.

No sockets, no asyncio, no storage.  URIs in From/To/cc are parsed by
``sipim.sip.uri.parse_uri`` and returned as ``NameAddr`` values.
"""

from .errors import CPIMError
from .escape import escape_header_text, quote_string, unescape_header_text
from .message import (
    CPIM_NAMESPACE,
    DEFAULT_MAX_CPIM_HEADERS,
    DEFAULT_MAX_CPIM_SIZE,
    DEFAULT_NAMESPACES,
    IMDN_NAMESPACE,
    CPIMHeader,
    CPIMMessage,
    build_cpim,
    format_address,
    namespace_key,
    parse_address,
    parse_cpim,
)
from .timestamps import format_rfc3339, parse_rfc3339

__all__ = [
    "CPIM_NAMESPACE",
    "DEFAULT_MAX_CPIM_HEADERS",
    "DEFAULT_MAX_CPIM_SIZE",
    "DEFAULT_NAMESPACES",
    "IMDN_NAMESPACE",
    "CPIMError",
    "CPIMHeader",
    "CPIMMessage",
    "build_cpim",
    "escape_header_text",
    "format_address",
    "format_rfc3339",
    "namespace_key",
    "parse_address",
    "parse_cpim",
    "parse_rfc3339",
    "quote_string",
    "unescape_header_text",
]
