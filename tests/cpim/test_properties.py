"""Property tests: hostile bytes raise only CPIMError; what parses serializes back
byte-exact; built messages survive the parser unchanged."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipim.cpim import CPIMError, build_cpim, parse_cpim
from sipim.sip.uri import NameAddr, parse_uri

from .test_cpim import RFC3862_EXAMPLE

# SIPIM_FUZZ_SCALE=50 pytest tests/cpim -> a long fuzzing run
SCALE = int(os.environ.get("SIPIM_FUZZ_SCALE", "1"))
SETTINGS = settings(max_examples=300 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes biased towards what the grammar cares about.
_INTERESTING = st.sampled_from(
    [b"\r\n", b"\n", b"\r", b":", b": ", b";", b"=", b".", b"<", b">", b'"', b"\\", b" ", b"NS",
     b"From", b"To", b"DateTime", b"Content-Type", b"imdn", b"<urn:ietf:params:imdn>", b"\xc3\xa9",
     b"\xff", b"\x00", b"2001-02-02T10:48:54Z", b"im:a@b", b"sip:x@y"]
)
_GRAMMARISH = st.lists(st.one_of(_INTERESTING, st.binary(max_size=4)), max_size=60).map(b"".join)


@SETTINGS
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_cpim_error(data):
    try:
        message = parse_cpim(data)
    except CPIMError:
        return
    assert message.serialize() == data


@SETTINGS
@given(_GRAMMARISH)
def test_grammar_shaped_noise_raises_only_cpim_error(data):
    try:
        message = parse_cpim(data)
    except CPIMError:
        return
    assert message.serialize() == data
    # every typed accessor works on whatever was accepted
    message.from_, message.to, message.cc, message.datetime, message.subjects, message.require


@SETTINGS
@given(st.integers(min_value=0, max_value=len(RFC3862_EXAMPLE) - 1), st.binary(min_size=0, max_size=3),
       st.integers(min_value=0, max_value=3))
def test_mutated_rfc_example_raises_only_cpim_error(position, insert, delete):
    data = RFC3862_EXAMPLE[:position] + insert + RFC3862_EXAMPLE[position + delete:]
    try:
        message = parse_cpim(data)
    except CPIMError:
        return
    assert message.serialize() == data


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_DISPLAY = st.one_of(st.none(), _TEXT)
_OFFSET = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda m: timezone(timedelta(minutes=m)))


@SETTINGS
@given(
    display=_DISPLAY,
    user=st.from_regex(r"[a-z][a-z0-9.]{0,10}", fullmatch=True),
    subject=st.one_of(st.none(), _TEXT),
    moment=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=_OFFSET),
    body=st.binary(max_size=64),
    message_id=st.from_regex(r"[A-Za-z0-9_-]{1,22}", fullmatch=True),
)
def test_built_messages_round_trip(display, user, subject, moment, body, message_id):
    sender = NameAddr(uri=parse_uri(f"sip:{user}@example.com"), display_name=display)
    built = build_cpim(sender, f"sip:{user}2@example.com", moment, "text/plain", body, subject=subject,
                       extra_headers=[("imdn.Message-ID", message_id)])
    parsed = parse_cpim(built.serialize())
    assert parsed == built
    assert parsed.serialize() == built.serialize()
    assert parsed.from_.display_name == (display or None)
    assert parsed.datetime == moment
    assert parsed.subject == subject
    assert parsed.body == body
