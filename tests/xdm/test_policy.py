"""Privacy rules: the RFC 4745 common-policy subset sipim evaluates (sipim/xdm/policy.py)."""

from __future__ import annotations

import pytest

from sipim.xdm.policy import (
    ALLOW_ALL,
    PrivacySettings,
    build_policy_document,
    canonical_identity,
    parse_policy,
    permissions_for,
    read_settings,
)
from sipim.xdm.usages import CP_NS, IR_NS
from sipim.xdm.xcap import XCAPError

NOW = 1_800_000_000.0  # 2027-01-15


def ruleset(*rules: str) -> bytes:
    return f'<ruleset xmlns="{CP_NS}" xmlns:ir="{IR_NS}">{"".join(rules)}</ruleset>'.encode()


def rule(rule_id: str, conditions: str = "", actions: str = "", transformations: str = "") -> str:
    return (f'<rule id="{rule_id}"><conditions>{conditions}</conditions><actions>{actions}</actions>'
            f"<transformations>{transformations}</transformations></rule>")


ALLOW = "<ir:im-handling>allow</ir:im-handling>"
BLOCK = "<ir:im-handling>block</ir:im-handling>"


def test_no_document_means_the_server_default_everything_allowed():
    assert permissions_for(None, "sip:anyone@example.net", NOW) == ALLOW_ALL


def test_rfc4745_7_1_2_one_matches_exactly_that_identity_after_uri_canonicalisation():
    policy = parse_policy(ruleset(rule("r", '<identity><one id="sip:Bob@Example.COM;transport=tcp"/></identity>', ALLOW)))
    assert policy.evaluate("sip:Bob@example.com", NOW).may_message
    assert not policy.evaluate("sip:bob@example.com", NOW).may_message  # user parts are case-sensitive
    assert not policy.evaluate("sip:carol@example.com", NOW).may_message


def test_rfc4745_7_1_3_2_many_with_except_matches_everyone_but_the_enumerated():
    policy = parse_policy(ruleset(rule(
        "r", '<identity><many><except id="sip:mallory@example.com"/><except domain="Spam.Example"/></many></identity>',
        ALLOW)))
    assert policy.evaluate("sip:alice@example.com", NOW).may_message
    assert not policy.evaluate("sip:mallory@example.com", NOW).may_message
    assert not policy.evaluate("sip:anyone@spam.example", NOW).may_message


def test_rfc4745_7_1_3_3_many_with_a_domain_matches_only_that_domain():
    policy = parse_policy(ruleset(rule(
        "r", '<identity><many domain="example.com"><except id="sip:bob@example.com"/></many></identity>', ALLOW)))
    assert policy.evaluate("sip:carol@example.com", NOW).may_message
    assert not policy.evaluate("sip:bob@example.com", NOW).may_message
    assert not policy.evaluate("sip:carol@example.org", NOW).may_message


def test_rfc4745_7_1_1_identity_children_are_ored_and_conditions_are_anded():
    policy = parse_policy(ruleset(rule(
        "r", '<identity><one id="sip:a@x.test"/><one id="sip:b@x.test"/></identity>'
             '<validity><from>2026-01-01T00:00:00Z</from><until>2028-01-01T00:00:00+00:00</until></validity>',
        ALLOW)))
    assert policy.evaluate("sip:a@x.test", NOW).may_message and policy.evaluate("sip:b@x.test", NOW).may_message
    assert not policy.evaluate("sip:a@x.test", 1_900_000_000.0).may_message  # after <until>


def test_rfc4745_7_4_validity_is_true_within_any_from_until_pair():
    policy = parse_policy(ruleset(rule(
        "r", "<validity><from>2020-01-01T00:00:00Z</from><until>2021-01-01T00:00:00Z</until>"
             "<from>2027-01-01T00:00:00Z</from><until>2027-02-01T00:00:00Z</until></validity>", ALLOW)))
    assert policy.evaluate("sip:a@x.test", NOW).may_message
    assert not policy.evaluate("sip:a@x.test", 1_700_000_000.0).may_message


def test_rfc4745_7_sphere_and_unknown_conditions_evaluate_to_false():
    sphere = parse_policy(ruleset(rule("r", '<sphere value="work"/>', ALLOW)))
    unknown = parse_policy(ruleset(rule("r", '<x:mood xmlns:x="urn:example:mood">happy</x:mood>', ALLOW)))
    assert not sphere.evaluate("sip:a@x.test", NOW).may_message
    assert not unknown.evaluate("sip:a@x.test", NOW).may_message


def test_rfc4745_10_2_permissions_combine_by_maximum_and_absent_means_lowest():
    policy = parse_policy(ruleset(
        rule("everyone", "<identity><many/></identity>", ALLOW),
        rule("bob-blocked", '<identity><one id="sip:bob@x.test"/></identity>', BLOCK),
        rule("friends", '<identity><one id="sip:carol@x.test"/></identity>', "",
             "<ir:provide-profile>true</ir:provide-profile>")))
    # A "block" rule cannot take away what another matching rule grants (§10.2).
    assert policy.evaluate("sip:bob@x.test", NOW).may_message
    carol = policy.evaluate("sip:carol@x.test", NOW)
    assert carol.may_message and carol.provide_profile and not carol.provide_number
    assert not policy.evaluate("sip:dave@x.test", NOW).provide_profile  # stated nowhere: false
    assert not parse_policy(ruleset()).evaluate("sip:dave@x.test", NOW).may_message  # no rule: nothing granted


@pytest.mark.parametrize("bad", [
    ruleset(rule("a"), rule("a")),  # §6.1: ids unique
    ruleset('<rule><conditions/></rule>'),  # id required
    ruleset(rule("r", '<identity><one id="sip:a@x" domain="x"/></identity>')),  # §7.2
    ruleset(rule("r", '<identity><many><except id="sip:a@x" domain="x"/></many></identity>')),  # §7.1.3
    ruleset(rule("r", "<validity><from>2026-01-01T00:00:00Z</from></validity>")),  # §7.4 pairs
    ruleset(rule("r", "", "<ir:im-handling>maybe</ir:im-handling>")),
    ruleset(rule("r", "", "", "<ir:provide-number>yes</ir:provide-number>")),
    b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"/>',
])
def test_rfc4825_8_2_5_invalid_rule_documents_are_refused_with_409(bad):
    with pytest.raises(XCAPError) as refused:
        parse_policy(bad)
    assert refused.value.status == 409
    assert refused.value.error_element in ("schema-validation-error", "uniqueness-failure")


def test_the_json_apis_document_blocks_by_exception_and_reads_back():
    settings = PrivacySettings(blocked_users=("sip:mallory@x.test",), blocked_domains=("spam.example",),
                               profile_visible=False, number_discoverable=True)
    document = build_policy_document(settings)
    policy = parse_policy(document)
    assert not policy.evaluate("sip:mallory@x.test", NOW).may_message
    assert not policy.evaluate("sip:eve@spam.example", NOW).provide_number
    friend = policy.evaluate("sip:carol@x.test", NOW)
    assert friend.may_message and friend.provide_number and not friend.provide_profile
    assert read_settings(document) == settings
    assert read_settings(None) == PrivacySettings()
    assert read_settings(ruleset(rule("other", "", ALLOW))) is None  # written another way over XCAP


def test_identities_compare_as_canonical_uris():
    assert canonical_identity("sips:Alice@EXAMPLE.com;transport=tls") == "sip:Alice@example.com"
    assert canonical_identity("tel:+1-415-555-0101") == "tel:+14155550101"
