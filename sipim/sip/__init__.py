"""Sans-IO SIP message layer (RFC 3261 §7, §19, §20, §25; RFC 3966)."""

from .errors import SIPParseError
from .headers import (
    COMPACT_FORMS,
    CSeq,
    Headers,
    Via,
    canonical_name,
    format_params,
    is_token,
    parse_params,
    quote,
    split_list,
    unquote,
)
from .message import REASON_PHRASES, Message, Request, Response, default_reason, make_response
from .parser import KeepAlive, ParserLimits, StreamFramer, parse_message
from .uri import URI, AbsoluteURI, NameAddr, SipURI, TelURI, parse_name_addr, parse_uri

__all__ = [
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
    "canonical_name",
    "default_reason",
    "format_params",
    "is_token",
    "make_response",
    "parse_message",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "quote",
    "split_list",
    "unquote",
]
