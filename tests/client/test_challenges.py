"""Choosing and answering digest challenges (RFC 8760 §2.4)."""

from __future__ import annotations

import pytest

from sipim.client.challenges import AuthenticationFailed, Credentials, answer_challenge, choose_challenge

SHA = 'Digest realm="example.test", nonce="n1", algorithm=SHA-256, qop="auth"'
MD5 = 'Digest realm="example.test", nonce="n2", algorithm=MD5, qop="auth"'
UNKNOWN = 'Digest realm="example.test", nonce="n3", algorithm=SHA-512-256, qop="auth"'
OTHER_REALM = 'Digest realm="elsewhere", nonce="n4", algorithm=MD5'


def test_rfc8760_2_4_topmost_supported_challenge_wins():
    assert choose_challenge([MD5, SHA]).algorithm == "MD5"
    assert choose_challenge([SHA, MD5]).algorithm == "SHA-256"


def test_rfc8760_2_4_challenges_not_understood_are_ignored():
    assert choose_challenge(['Bearer realm="x"', UNKNOWN, MD5]).nonce == "n2"
    assert choose_challenge([UNKNOWN]) is None


def test_our_realm_is_preferred():
    assert choose_challenge([OTHER_REALM, MD5], "example.test").nonce == "n2"


def test_nothing_answerable_fails_readably():
    with pytest.raises(AuthenticationFailed, match="does not support"):
        answer_challenge(401, ['Bearer realm="x"'], "GET", "/", Credentials("a", "b"), already_answered=False)


def test_401_and_407_pick_their_header():
    credentials = Credentials("alice", "pw")
    assert answer_challenge(401, [MD5], "MESSAGE", "sip:bob@x", credentials, already_answered=False)[0] == \
        "Authorization"
    assert answer_challenge(407, [MD5], "MESSAGE", "sip:bob@x", credentials, already_answered=False)[0] == \
        "Proxy-Authorization"
