"""Application usages (RFC 4825 §5): document validation and constraints, and the JSON
API's helpers that edit the same documents (sipim/xdm/usages.py, documents.py)."""

from __future__ import annotations

import pytest

from sipim.xdm.documents import (
    add_contact,
    build_profile,
    canonical_contact_uri,
    list_contacts,
    read_profile,
    remove_contact,
)
from sipim.xdm.usages import PF_NS, PROFILE, RESOURCE_LISTS, RL_NS, USAGES, is_raw_number, xcap_caps_document
from sipim.xdm.xcap import XCAPError, get_node

LISTS = USAGES[RESOURCE_LISTS]


def lists(inner: str) -> bytes:
    return f'<resource-lists xmlns="{RL_NS}">{inner}</resource-lists>'.encode()


def refused(usage, document: bytes) -> XCAPError:
    with pytest.raises(XCAPError) as caught:
        usage.validate(document)
    assert caught.value.status == 409
    return caught.value


@pytest.mark.parametrize("inner, field", [
    ('<list name="a"/><list name="a"/>', b"resource-lists/list/@name"),
    ('<list name="a"><entry uri="sip:b@x"/><entry uri="sip:b@x"/></list>', b"list%5B@name=%22a%22%5D/entry/@uri"),
    ('<list name="a"><entry-ref ref="r/1"/><entry-ref ref="r/1"/></list>', b"entry-ref/@ref"),
    ('<list name="a"><external anchor="http://x/l"/><external anchor="http://x/l"/></list>', b"external/@anchor"),
    ('<list name="a"><list name="b"/><list name="b"/></list>', b"list%5B@name=%22a%22%5D/list/@name"),
])
def test_rfc4826_3_4_5_uniqueness_among_siblings_is_a_uniqueness_failure(inner, field):
    error = refused(LISTS, lists(inner))
    assert error.error_element == "uniqueness-failure"
    assert b"<exists field=" in error.body() and field in error.body()  # RFC 4825 §11, percent-encoded


def test_rfc4826_3_4_5_the_same_uri_in_two_lists_is_fine_and_comparison_is_case_sensitive():
    LISTS.validate(lists('<list name="a"><entry uri="sip:b@x"/></list><list name="b"><entry uri="sip:b@x"/></list>'))
    LISTS.validate(lists('<list name="a"><entry uri="sip:b@x"/><entry uri="sip:B@x"/></list>'))


@pytest.mark.parametrize("uri", ["tel:+14155550101", "sip:+14155550101@example.test;user=phone",
                                 "sip:+14155550101@example.test", "+14155550101"])
def test_a_raw_number_in_a_contact_list_is_a_constraint_failure_saying_look_it_up(uri):
    error = refused(LISTS, lists(f'<list name="a"><entry uri="{uri}"/></list>'))
    assert error.error_element == "constraint-failure"
    assert b"look the number up first" in error.body()


def test_user_ids_are_not_raw_numbers():
    assert not is_raw_number("sip:bob@example.test")
    assert not is_raw_number("sip:bob@example.test;user=ip")


@pytest.mark.parametrize("document", [
    b'<other xmlns="urn:x"/>',
    lists('<entry uri="sip:b@x"/>'),  # entries live in lists
    lists('<list><entry/></list>'),  # uri is required
    lists('<list><entry uri="not a uri"/></list>'),
    lists('<list><display-name>a</display-name><display-name>b</display-name></list>'),
])
def test_rfc4825_8_2_5_schema_violations_are_schema_validation_errors(document):
    assert refused(LISTS, document).error_element == "schema-validation-error"


def test_rfc4825_8_2_5_elements_of_unknown_namespaces_are_allowed():
    LISTS.validate(lists('<list name="a"><x:tag xmlns:x="urn:example:ext">kept</x:tag></list>'))


def test_rfc4825_8_2_2_doctype_and_entities_are_refused():
    error = refused(LISTS, b'<!DOCTYPE r [<!ENTITY a "aaaa">]>' + lists(""))
    assert error.error_element == "not-well-formed"


def test_profile_usage_fields_and_limits():
    USAGES[PROFILE].validate(build_profile({"display_name": "Alice", "avatar_url": "https://x.test/a.png"}))
    assert refused(USAGES[PROFILE], build_profile({"avatar_url": "javascript:alert(1)"})).error_element == \
        "constraint-failure"
    assert refused(USAGES[PROFILE], f'<profile xmlns="{PF_NS}"><age>3</age></profile>'.encode()).error_element == \
        "schema-validation-error"
    with pytest.raises(XCAPError):
        build_profile({"display_name": "x" * 101})
    assert read_profile(build_profile({"status_text": "a < b & c"}))["status_text"] == "a < b & c"


def test_contacts_are_added_and_removed_with_xcap_operations_keeping_the_rest():
    document = lists('<!-- mine --><list name="default"><x:note xmlns:x="urn:example:n">n</x:note></list>')
    document = add_contact(document, "sip:bob@x.test", "Bob")
    document = add_contact(document, "sip:bob@x.test", None, "work")
    assert b"<!-- mine -->" in document and b"urn:example:n" in document
    LISTS.validate(document)
    assert [(c.uri, c.display_name, c.list) for c in list_contacts(document)] == [
        ("sip:bob@x.test", "Bob", "default"), ("sip:bob@x.test", None, "work")]
    with pytest.raises(XCAPError) as duplicate:
        add_contact(document, "sip:bob@x.test", None, "work")
    assert duplicate.value.error_element == "uniqueness-failure"
    assert list_contacts(remove_contact(document, "sip:bob@x.test", "work")) == list_contacts(document)[:1]
    assert list_contacts(remove_contact(document, "sip:bob@x.test")) == []
    assert remove_contact(document, "sip:nobody@x.test") is None


def test_contact_uris_are_canonicalised_per_rfc4826_5_and_numbers_refused():
    assert canonical_contact_uri("bob@EXAMPLE.test") == "sip:bob@example.test"
    assert canonical_contact_uri("sip:bob@Example.test;Transport=TCP;lr") == "sip:bob@example.test;lr;transport=tcp"
    with pytest.raises(XCAPError) as number:
        canonical_contact_uri("+49 151 12345678")
    assert b"look the number up first" in number.value.body()


def test_rfc4825_12_capabilities_list_every_usage_and_namespace():
    caps = xcap_caps_document()
    for auid in ("xcap-caps", "resource-lists", "org.sipim.im-rules", "org.sipim.profile"):
        assert f"<auid>{auid}</auid>".encode() in caps
    assert get_node(caps, "xcap-caps/auids/auid[1]", default_namespace="urn:ietf:params:xml:ns:xcap-caps") == \
        b'<auid xmlns="urn:ietf:params:xml:ns:xcap-caps">xcap-caps</auid>'



def test_contacts_of_lists_without_a_name_can_be_removed():
    # RFC 4826 §3.4 makes a list's name optional; such lists are shown as "list<position>"
    # and addressed by position (RFC 4825 §6.3), here inside a named list and beside one.
    document = lists('<list><entry uri="sip:ann@x.test"/><entry uri="sip:bob@x.test"/></list>'
                     '<list name="work"><entry uri="sip:bob@x.test"/>'
                     '<list><entry uri="sip:bob@x.test"/></list></list>')
    assert [(c.uri, c.list) for c in list_contacts(document)] == [
        ("sip:ann@x.test", "list1"), ("sip:bob@x.test", "list1"),
        ("sip:bob@x.test", "work"), ("sip:bob@x.test", "work/list1")]
    only_nested = remove_contact(document, "sip:bob@x.test", "work/list1")
    assert [(c.uri, c.list) for c in list_contacts(only_nested)] == [
        ("sip:ann@x.test", "list1"), ("sip:bob@x.test", "list1"), ("sip:bob@x.test", "work")]
    assert [(c.uri, c.list) for c in list_contacts(remove_contact(document, "sip:bob@x.test"))] == [
        ("sip:ann@x.test", "list1")]
    LISTS.validate(remove_contact(document, "sip:bob@x.test"))
