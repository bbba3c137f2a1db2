"""Sans-IO SIP message layer (RFC 3261 §7, §19, §20, §25; RFC 3966)."""

# First of all: decide whether the mypyc build of grammar/headers/uri/message/
# parser/digest may be imported, or the .py files must be (see _accel.py).
from ._accel import install_guard as _install_guard
from ._accel import summary as accel_summary

ACCELERATED = _install_guard().active

from .errors import SIPParseError  # noqa: E402
from .grammar import format_params, is_token, parse_params, quote, split_list, unquote  # noqa: E402
from .headers import COMPACT_FORMS, CSeq, Headers, Via, canonical_name  # noqa: E402
from .message import (  # noqa: E402
    REASON_PHRASES,
    Message,
    Request,
    Response,
    default_reason,
    make_error_response,
    make_response,
    readable_top_via,
)
from .parser import KeepAlive, ParserLimits, StreamFramer, parse_message  # noqa: E402
from .uri import URI, AbsoluteURI, NameAddr, SipURI, TelURI, parse_name_addr, parse_uri  # noqa: E402

__all__ = [
    "ACCELERATED",
    "AbsoluteURI",
    "COMPACT_FORMS",
    "CSeq",
    "Headers",
    "KeepAlive",
    "Message",
    "NameAddr",
    "ParserLimits",
    "REASON_PHRASES",
    "Request",
    "Response",
    "SIPParseError",
    "SipURI",
    "StreamFramer",
    "TelURI",
    "URI",
    "Via",
    "accel_summary",
    "canonical_name",
    "default_reason",
    "format_params",
    "is_token",
    "make_error_response",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "quote",
    "readable_top_via",
    "split_list",
    "unquote",
]
