"""Phone numbers: E.164 normalisation, and the number a tel: or SIP URI names.

A phone number never stands for a user by itself: it is normalised with
`phonenumbers` (Google's libphonenumber metadata) and looked up to exactly
one User ID, by the server, never by the device (the directory, sipim/xdm).

Pure functions low in the stack, so that every side may use them: the IM role
(a MESSAGE to a number), the XDM and provisioning roles, the `sipim` command and
the user agent (sipim/client), none of which may import another.
"""

from __future__ import annotations

import phonenumbers

from sipim.sip.uri import SipURI, TelURI


class InvalidNumber(ValueError):
    """Not a valid phone number in international (E.164) form; the message says why."""


def normalise_e164(number: str) -> str:
    """``+1 (415) 555-0123`` -> ``+14155550123``; InvalidNumber otherwise."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"invalid phone number {number!r}: give it in E.164 form, e.g. +14155550123 "
                            f"({exc})") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidNumber(f"invalid phone number {number!r}: not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_NUMBER_CHARS = frozenset("0123456789-.()")


def number_of(uri: object) -> str | None:
    """The number a request is addressed to, if it names one: ``tel:+1-415-555-0123``
    (RFC 3966), ``sip:+14155550123@domain;user=phone`` (RFC 3261 §19.1.1), or a SIP
    user part that is a global number without ``user=phone`` (many clients leave it
    out; no User ID can start with "+", so it cannot mean a user)."""
    if isinstance(uri, TelURI):
        return uri.number if uri.is_global else None
    if isinstance(uri, SipURI) and uri.user:
        user = uri.user.split(";", 1)[0]
        if uri.params.get("user") == "phone":
            return user
        if user.startswith("+") and len(user) > 1 and set(user[1:]) <= _NUMBER_CHARS:
            return user
    return None
