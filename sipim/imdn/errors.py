"""The one exception type the IMDN layer raises for malformed input."""

from __future__ import annotations


class IMDNError(ValueError):
    """A message/imdn+xml document (RFC 5438 §11) could not be read, or an
    IMDN cannot be built from the given message.  ``reason`` is short and
    human readable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __repr__(self) -> str:
        return f"IMDNError({self.reason!r})"
