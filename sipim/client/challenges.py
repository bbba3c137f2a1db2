"""Answering digest challenges as a client (RFC 3261 §22.2, RFC 8760 §2.4, RFC 7616 §3.4).

Sans-IO: a 401/407 (SIP) or 401 (HTTP) and the credentials in, the header to add
out.  The same code serves SIP requests and HTTP API calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipim.sip.digest import DigestChallenge, DigestError, build_authorization, ha1, parse_challenge

from .errors import ClientError


class AuthenticationFailed(ClientError):
    """The server refused the credentials (or offered nothing we can answer)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    realm: str | None = None  # the realm these credentials are for (None: any)


def choose_challenge(values: list[str], realm: str | None = None) -> DigestChallenge | None:
    """RFC 8760 §2.4: the topmost challenge we support ("MUST ignore any challenge
    it does not understand"); one for our realm first when we know it."""
    usable: list[DigestChallenge] = []
    for value in values:
        if not value[:7].lower().startswith("digest"):
            continue  # another scheme (Bearer...): not ours to answer
        try:
            usable.append(parse_challenge(value))
        except DigestError:
            continue
    if realm is not None:
        for challenge in usable:
            if challenge.realm == realm:
                return challenge
    return usable[0] if usable else None


def answer_challenge(status: int, challenge_values: list[str], method: str, uri: str, credentials: Credentials,
                     *, already_answered: bool) -> tuple[str, str]:
    """The (header name, value) that answers a 401 or 407.

    ``already_answered``: this request already carried our answer.  Being
    challenged again then means the credentials are wrong (RFC 3261 §22.2: "the
    UAC MAY NOT re-attempt requests with the credentials that have just been
    rejected"), unless the server says the nonce was merely stale (RFC 7616 §3.3).
    """
    challenge = choose_challenge(challenge_values, credentials.realm)
    if challenge is None:
        raise AuthenticationFailed("the server asks for an authentication method this client does not support")
    if already_answered and not challenge.stale:
        raise AuthenticationFailed("wrong user name or password")
    header = "Authorization" if status == 401 else "Proxy-Authorization"
    key = ha1(credentials.username, challenge.realm, credentials.password, challenge.algorithm)
    return header, build_authorization(challenge, method, uri, credentials.username, key)
