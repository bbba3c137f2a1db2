"""One-time codes: generation, hashing for storage, and the verdict on a presented code.

Sans-IO: values in, values out.  The store keeps only an HMAC of each code under the
server secret -- a copy of the database does not give away the codes, and a 6-digit
code cannot be recovered by hashing all million candidates without the secret.
Presented codes are compared in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets

from sipim.store.models import ProvisioningCode

OTP = "otp"
PAIRING = "pairing"

# No 0/O, 1/I/L: a pairing code may be read off one screen and typed on another.
PAIRING_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


def new_otp(length: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(length))


def new_pairing_code(length: int) -> str:
    return "".join(secrets.choice(PAIRING_ALPHABET) for _ in range(length))


def normalise_code(text: str) -> str:
    """What a person typed or a link carried: spaces and dashes dropped, upper case."""
    return "".join(ch for ch in text.upper() if ch not in " -\t")


def code_hash(secret: bytes, purpose: str, subject: str, code: str) -> str:
    # surrogatepass: JSON may carry lone surrogates ("\ud800"); they hash, they never match.
    message = f"{purpose}\0{subject}\0{normalise_code(code)}".encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def pairing_subject(secret: bytes, code: str) -> str:
    """A pairing code is looked up by itself: its subject is its own hash."""
    return code_hash(secret, PAIRING, "", code)


class Verdict(enum.Enum):
    OK = "ok"
    NO_CODE = "no code pending"
    EXPIRED = "code expired"
    WRONG = "wrong code"
    EXHAUSTED = "too many wrong attempts"


def judge(stored: ProvisioningCode | None, presented_hash: str, now: float, max_attempts: int) -> Verdict:
    """The verdict on a presented code (its hash) against the stored one.

    ``OK`` still has to win the store's atomic take (single use across nodes).
    """
    if stored is None:
        return Verdict.NO_CODE
    if stored.expires_at <= now:
        return Verdict.EXPIRED
    if stored.attempts >= max_attempts:
        return Verdict.EXHAUSTED
    if not hmac.compare_digest(presented_hash.encode(), stored.code_hash.encode()):
        return Verdict.WRONG
    return Verdict.OK
