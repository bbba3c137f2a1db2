"""Errors of the client library: each one's message is a readable sentence for the user."""

from __future__ import annotations


class ClientError(Exception):
    """Something the user must know about; ``str()`` is one readable line."""


class ServerUnreachable(ClientError):
    """No connection to the server (refused, no route, DNS, timeout)."""


class CertificateUntrusted(ClientError):
    """The server's TLS certificate does not verify against the CA we trust."""


class FlowFailed(ClientError):
    """An established connection to the server broke (RFC 5626 §4.4: flow failure)."""


class RequestFailed(ClientError):
    """The server answered a request with an error status."""

    def __init__(self, status: int, reason: str, message: str | None = None, *,
                 retry_after: int | None = None) -> None:
        super().__init__(message or f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after  # seconds, from a Retry-After header


class RequestTimeout(ClientError):
    """Nobody answered a request in time (RFC 3261 §17.1.2.2 Timer F)."""
