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
    request as far as it could be read, set when a Request-Line (of any SIP
    version) and the whole head were read, so the server can answer instead
    of silently dropping (RFC 3261 §8.2.6, §21.4.1; RFC 4475 expects 400s and
    505s).  It may lack any header, Via included: ``make_error_response``
    copies what it has, and the server decides whether the answer can be
    routed (§18.2.2: by the top Via, or back over the connection it came
    on).  Its headers are raw: an accessor on the offending header raises
    SIPParseError again.

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
