"""Phone numbers: E.164 normalisation and which URIs name a number."""

import pytest

from sipim.sip.uri import parse_uri
from sipim.phone import InvalidNumber, normalise_e164, number_of


@pytest.mark.parametrize("text", ["+14155550123", "+1 (415) 555-0123", "+1-415-555-0123", "+1.415.555.0123"])
def test_e164_normalisation_removes_visual_separators(text):
    assert normalise_e164(text) == "+14155550123"


@pytest.mark.parametrize("text", ["4155550123", "+1", "+999123", "not a number", ""])
def test_invalid_numbers_are_refused_with_a_reason(text):
    with pytest.raises(InvalidNumber, match="invalid phone number"):
        normalise_e164(text)


@pytest.mark.parametrize("uri, number", [
    ("tel:+1-415-555-0123", "+1-415-555-0123"),                  # RFC 3966 global number
    ("tel:5550123;phone-context=example.com", None),            # local: not looked up
    ("sip:+14155550123@example.com;user=phone", "+14155550123"),  # RFC 3261 §19.1.1
    ("sip:+14155550123@example.com", "+14155550123"),            # user=phone left out
    ("sip:alice@example.com", None),
    ("sip:+alice@example.com", None),
])
def test_which_uris_name_a_phone_number(uri, number):
    assert number_of(parse_uri(uri)) == number
