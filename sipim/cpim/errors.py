"""The one exception type the CPIM layer raises for malformed input."""

from __future__ import annotations


class CPIMError(ValueError):
    """A message/cpim body (RFC 3862) could not be parsed.

    ``reason`` is short and human readable ("Missing blank line after message
    headers", "Bad DateTime header"); the IM role may use it as a SIP reason
    phrase when it refuses the MESSAGE with 400.  It is a ValueError so the
    builders can raise it for bad arguments too.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"CPIMError({self.reason!r})"
