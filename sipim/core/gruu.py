"""Globally Routable User agent URIs (RFC 5627).

Public GRUU (§5.4, Appendix A.1): the AOR plus ``gr=<instance URN>``; it needs
no state and stays valid as long as the AOR exists.

Temporary GRUU (§5.4, Appendix A.2): the registrar must map it back to its
AOR and instance, and two temporary GRUUs must not reveal whether they belong
to the same user.  We encrypt (AOR, instance, Call-ID) with AES-GCM under a key
from the server secret: no table to keep, and a GRUU whose Call-ID no longer
matches a live binding of that instance is invalid, which is the §5.1 rule
"a new Call-ID invalidates the earlier temporary GRUUs".
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TEMP_GRUU_PREFIX = "tgruu."


def instance_urn(instance_id: str) -> str:
    """``"<urn:uuid:...>"`` (as the +sip.instance parameter carries it) -> ``urn:uuid:...``."""
    return instance_id.strip().strip('"').strip().removeprefix("<").removesuffix(">")


def public_gruu(aor: str, instance_id: str) -> str:
    return f"{aor};gr={instance_urn(instance_id)}"


@dataclass(frozen=True, slots=True)
class TempGruuTarget:
    aor: str
    instance_id: str
    call_id: str


class TempGruuCodec:
    def __init__(self, secret: bytes, domain: str) -> None:
        self._aead = AESGCM(hashlib.sha256(b"sipim temp-gruu\0" + secret).digest())
        self._domain = domain

    def make(self, aor: str, instance_id: str, call_id: str) -> str:
        nonce = os.urandom(12)
        plain = "\n".join((aor, instance_id, call_id)).encode()
        sealed = self._aead.encrypt(nonce, plain, self._domain.encode())
        token = base64.b32encode(nonce + sealed).decode().rstrip("=").lower()
        return f"sip:{TEMP_GRUU_PREFIX}{token}@{self._domain};gr"

    def resolve(self, user_part: str) -> TempGruuTarget | None:
        """The target of a temporary GRUU given its user part, or None if it is not ours."""
        if not user_part.startswith(TEMP_GRUU_PREFIX):
            return None
        token = user_part[len(TEMP_GRUU_PREFIX):].upper()
        try:
            raw = base64.b32decode(token + "=" * (-len(token) % 8))
            plain = self._aead.decrypt(raw[:12], raw[12:], self._domain.encode()).decode()
            aor, instance_id, call_id = plain.split("\n")
        except (ValueError, InvalidTag, UnicodeDecodeError):
            return None
        return TempGruuTarget(aor, instance_id, call_id)
