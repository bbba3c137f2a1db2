"""The one exception type the SIP message layer raises for malformed input."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .message import Request


class SIPParseError(Exception):
    """A message (or part of one) could not be parsed.

    ``reason`` is short enough to be used as a SIP reason phrase
    ("Bad CSeq header", "Missing Via").  ``status`` is the response code a
    server should answer with (400, 414, 505, 513).  ``partial`` is the
    request as far as it could be read, set when the start line was valid,
    the top Via parsed and From, To, Call-ID and CSeq were present, so the
    server can answer (``make_response`` copies those verbatim) instead of
    silently dropping (RFC 3261 §8.2.6; RFC 4475 expects 400s).  Its headers are raw:
    an accessor on the offending header raises SIPParseError again.

    ``recoverable`` is only meaningful for StreamFramer: True when the
    offending message was fully framed and consumed, so the stream is still in
    sync and the connection may be kept open; False when framing is lost.
    """

    def __init__(
        self,
        reason: str,
        status: int = 400,
        partial: "Request | None" = None,
        *,
        recoverable: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial
        self.recoverable = recoverable

    def __repr__(self) -> str:
        return f"SIPParseError({self.reason!r}, status={self.status})"
