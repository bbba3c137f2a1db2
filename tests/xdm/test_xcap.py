"""RFC 4825 (XCAP) node selectors and document operations, on RFC 4826 resource lists."""

import xml.etree.ElementTree as ET

import pytest

from sipim.xdm.xcap import (
    XCAP_ERROR_NS,
    NodeSelector,
    Step,
    XCAPError,
    delete_node,
    error_document,
    get_node,
    parse_node_selector,
    parse_xcap_uri,
    put_node,
)

RL = "urn:ietf:params:xml:ns:resource-lists"
FRIENDS = 'resource-lists/list[@name="friends"]'
BOB = FRIENDS + '/entry[@uri="sip:bob@example.com"]'

# RFC 4826 §3.3-style document (whitespace and a comment matter for §8.2.3/§8.4).
DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">
  <list name="friends">
    <entry uri="sip:bob@example.com"><display-name>Bob</display-name></entry>
    <entry uri="sip:carol@example.com"/>
    <!-- colleagues below -->
  </list>
  <list name="work"/>
</resource-lists>"""


def get(selector, doc=DOC, **kw):
    return get_node(doc, selector, default_namespace=RL, **kw)


def put(selector, fragment, doc=DOC, **kw):
    return put_node(doc, selector, fragment, default_namespace=RL, **kw)


def delete(selector, doc=DOC, **kw):
    return delete_node(doc, selector, default_namespace=RL, **kw)


def entries(doc, list_name="friends"):
    root = ET.fromstring(doc)
    lst = root.find(f"{{{RL}}}list[@name='{list_name}']")
    return [e.get("uri") for e in lst.findall(f"{{{RL}}}entry")]


# ---- §6 URI construction

def test_rfc4825_6_2_users_tree_document_selector_with_percent_decoded_xui():
    ref = parse_xcap_uri("/resource-lists/users/sip:alice%40example.com/index")
    assert (ref.auid, ref.scope, ref.xui, ref.document) == ("resource-lists", "users", "sip:alice@example.com", "index")
    assert ref.node_selector is None
    assert ref.default_namespace == RL


def test_rfc4825_6_2_global_tree_has_no_xui():
    ref = parse_xcap_uri("/xcap-caps/global/index")
    assert (ref.scope, ref.xui, ref.document) == ("global", None, "index")


@pytest.mark.parametrize("path", ["/resource-lists/others/x/index", "/resource-lists/users/sip:a@b", "/resource-lists"])
def test_rfc4825_6_2_malformed_document_selector_is_404(path):
    with pytest.raises(XCAPError) as err:
        parse_xcap_uri(path)
    assert err.value.status == 404


def test_rfc4825_6_percent_encoded_node_selector_after_separator():
    ref = parse_xcap_uri(
        "/resource-lists/users/sip:alice@example.com/index/~~/resource-lists/"
        "list%5B@name=%22friends%22%5D/entry%5B2%5D/@uri"
    )
    assert ref.node_selector == NodeSelector(
        (Step("resource-lists"), Step("list", None, ("name", "friends")), Step("entry", 2)), attribute="uri"
    )


def test_rfc4825_6_4_xmlns_query_bindings_and_other_schemes_ignored():
    ref = parse_xcap_uri(
        "/test/users/sip:joe@example.com/index/~~/foo/a:bar/b:baz",
        "xmlns(a=urn:test:namespace1-uri)xmlns(b=urn:test:namespace2-uri)foo(bar)",
    )
    assert ref.namespaces == {"a": "urn:test:namespace1-uri", "b": "urn:test:namespace2-uri"}


# ---- §6.3 node selector grammar

def test_rfc4825_6_3_step_forms_and_terminals():
    sel = parse_node_selector('a/b[3]/*[@x="1/2"]/c[2][@y=\'v\']/namespace::*')
    assert sel.steps == (Step("a"), Step("b", 3), Step("*", None, ("x", "1/2")), Step("c", 2, ("y", "v")))
    assert sel.namespace_selector
    assert parse_node_selector("p:a/@q:att").attribute == "q:att"
    assert parse_node_selector('a[@x="&quot;&amp;&#65;"]').steps[0].attribute == ("x", '"&A')


@pytest.mark.parametrize(
    "selector", ["", "a//b", "a[0]", "a[@x=1]", 'a[@x="1"', "a/@", "@x", "a/b[x]", 'a[@x="1"][2]', "1a", 'a[@x="a&b"]', "a/ext()"]
)
def test_rfc4825_6_3_malformed_selector_is_rejected_with_400(selector):
    with pytest.raises(XCAPError) as err:
        parse_node_selector(selector)
    assert err.value.status == 400 and err.value.reason


# ---- §7.6 / §8.3 GET

def test_rfc4825_8_3_get_element_by_attribute_returns_it_with_namespace_decl():
    body = get(BOB)
    element = ET.fromstring(body)
    assert element.tag == f"{{{RL}}}entry" and element.get("uri") == "sip:bob@example.com"
    assert element.find(f"{{{RL}}}display-name").text == "Bob"


def test_rfc4825_6_3_get_element_by_position_and_wildcard():
    assert ET.fromstring(get(FRIENDS + "/entry[2]")).get("uri") == "sip:carol@example.com"
    assert ET.fromstring(get("resource-lists/*[2]")).get("name") == "work"


def test_rfc4825_7_9_get_attribute_returns_its_value():
    assert get(FRIENDS + "/entry[1]/@uri") == b"sip:bob@example.com"


def test_rfc4825_6_3_several_matching_elements_is_invalid_so_404():
    with pytest.raises(XCAPError) as err:
        get(FRIENDS + "/entry")
    assert err.value.status == 404


@pytest.mark.parametrize("selector", [FRIENDS + "/entry[3]", 'resource-lists/list[@name="nope"]', BOB + "/@name"])
def test_rfc4825_8_3_no_match_is_404(selector):
    with pytest.raises(XCAPError) as err:
        get(selector)
    assert err.value.status == 404


def test_rfc4825_6_4_namespaced_selector_uses_xmlns_bindings_not_document_prefixes():
    # The §6.4 example: prefixes come from the query, not from the document.
    doc = b"""<?xml version="1.0"?>
<foo xmlns="urn:test:default-namespace">
  <ns1:bar xmlns:ns1="urn:test:namespace1-uri" xmlns="urn:test:namespace1-uri">
    <baz/>
    <ns2:baz xmlns:ns2="urn:test:namespace2-uri"/>
  </ns1:bar>
</foo>"""
    first = get_node(doc, "foo/a:bar/b:baz", {"a": "urn:test:namespace1-uri", "b": "urn:test:namespace1-uri"},
                     "urn:test:default-namespace")
    second = get_node(doc, "d:foo/a:bar/b:baz",
                      {"a": "urn:test:namespace1-uri", "b": "urn:test:namespace2-uri", "d": "urn:test:default-namespace"})
    assert ET.fromstring(first).tag == "{urn:test:namespace1-uri}baz"
    assert ET.fromstring(second).tag == "{urn:test:namespace2-uri}baz"
    with pytest.raises(XCAPError) as err:
        get_node(doc, "foo/z:bar", {}, "urn:test:default-namespace")
    assert err.value.status == 400  # unbound prefix


def test_rfc4825_7_10_namespace_selector_returns_bindings_in_scope():
    doc = DOC.replace(b'<list name="friends">', b'<list name="friends" xmlns:cp="urn:ietf:params:xml:ns:common-policy">')
    body = get(FRIENDS + "/namespace::*", doc=doc)
    assert b'xmlns="urn:ietf:params:xml:ns:resource-lists"' in body
    assert b'xmlns:cp="urn:ietf:params:xml:ns:common-policy"' in body


# ---- §7.4 / §8.2 PUT

def test_rfc4825_8_2_4_put_replaces_selected_entry_in_place():
    new = put(BOB, b'<entry uri="sip:bob@example.com"><display-name>Robert</display-name></entry>')
    assert entries(new) == ["sip:bob@example.com", "sip:carol@example.com"]
    assert ET.fromstring(get(BOB, doc=new)).find(f"{{{RL}}}display-name").text == "Robert"
    assert b"<!-- colleagues below -->" in new


def test_rfc4825_8_2_3_insert_new_entry_earliest_last_keeping_whitespace_and_comment():
    new = put(FRIENDS + '/entry[@uri="sip:dave@example.com"]', b'<entry uri="sip:dave@example.com"/>')
    assert entries(new) == ["sip:bob@example.com", "sip:carol@example.com", "sip:dave@example.com"]
    # Right after the last <entry>, before the whitespace and comment that followed it.
    assert b'<entry uri="sip:carol@example.com"/><entry uri="sip:dave@example.com"/>\n    <!--' in new
    assert get(FRIENDS + '/entry[@uri="sip:dave@example.com"]/@uri', doc=new) == b"sip:dave@example.com"


def test_rfc4825_8_2_3_rfc_examples_of_insertion_positions():
    doc = b'<?xml version="1.0"?>\n<root>\n <el1 att="first"/>\n <el1 att="second"/>\n <!-- comment -->\n <el2 att="first"/>\n</root>'
    third = b'<root>\n <el1 att="first"/>\n <el1 att="second"/><el1 att="third"/>\n <!-- comment -->\n <el2 att="first"/>\n</root>'
    for selector in ['root/el1[@att="third"]', 'root/el1[3][@att="third"]', 'root/*[3][@att="third"]']:
        assert put_node(doc, selector, b'<el1 att="third"/>').endswith(third)
    assert b'<root>\n <el0 att="zero"/><el1 att="first"/>' in put_node(doc, 'root/*[1][@att="zero"]', b'<el0 att="zero"/>')
    assert put_node(doc, "root/el3", b'<el3 att="first"/>').endswith(b' <el2 att="first"/>\n<el3 att="first"/></root>')
    assert put_node(doc, 'root/el1[1][@att="zero"]', b'<el1 att="zero"/>').endswith(
        b'<root>\n <el1 att="zero"/><el1 att="first"/>\n <el1 att="second"/>\n <!-- comment -->\n <el2 att="first"/>\n</root>')


def test_rfc4825_8_2_3_insert_into_empty_list_by_position():
    new = put('resource-lists/list[@name="work"]/entry[1]', b'<entry uri="sip:erin@example.com"/>')
    assert entries(new, "work") == ["sip:erin@example.com"]


def test_rfc4825_8_2_3_cannot_insert_when_selector_would_not_select_new_element():
    with pytest.raises(XCAPError) as err:
        put(FRIENDS + '/entry[@uri="sip:dave@example.com"]', b'<entry uri="sip:mallory@example.com"/>')
    assert (err.value.status, err.value.error_element) == (409, "cannot-insert")
    with pytest.raises(XCAPError) as err:
        put(FRIENDS + "/entry[5]", b'<entry uri="sip:x@example.com"/>')  # no 4 siblings before
    assert (err.value.status, err.value.error_element) == (409, "cannot-insert")


def test_rfc4825_8_2_1_missing_parent_is_409_no_parent():
    with pytest.raises(XCAPError) as err:
        put('resource-lists/list[@name="nope"]/entry', b'<entry uri="sip:x@example.com"/>')
    assert (err.value.status, err.value.error_element) == (409, "no-parent")


@pytest.mark.parametrize("fragment", [b"<entry", b'<entry uri="a"/><entry uri="b"/>', b"text", b'<entry uri="a"/>junk'])
def test_rfc4825_8_2_2_element_body_must_be_one_well_balanced_element(fragment):
    with pytest.raises(XCAPError) as err:
        put(FRIENDS + '/entry[@uri="a"]', fragment)
    assert (err.value.status, err.value.error_element) == (409, "not-xml-frag")


def test_rfc4825_7_7_put_attribute_replaces_and_creates():
    new = put(FRIENDS + "/entry[2]/@uri", b"sip:caroline@example.com")
    assert entries(new) == ["sip:bob@example.com", "sip:caroline@example.com"]
    new = put(BOB + "/@note", b"a &amp; b")
    assert get(BOB + "/@note", doc=new) == b"a & b"


def test_rfc4825_8_2_3_put_attribute_that_breaks_its_own_selector_is_cannot_insert():
    with pytest.raises(XCAPError) as err:
        put(BOB + "/@uri", b"sip:robert@example.com")
    assert err.value.error_element == "cannot-insert"


def test_rfc4825_8_2_2_bad_attribute_value_is_not_xml_att_value():
    with pytest.raises(XCAPError) as err:
        put(BOB + "/@note", b"a < b")
    assert (err.value.status, err.value.error_element) == (409, "not-xml-att-value")


def test_rfc4825_7_10_namespace_bindings_cannot_be_put_or_deleted():
    for call in (lambda: put(FRIENDS + "/namespace::*", b"<x/>"), lambda: delete(FRIENDS + "/namespace::*")):
        with pytest.raises(XCAPError) as err:
            call()
        assert err.value.status == 405


# ---- §7.5 / §8.4 DELETE

def test_rfc4825_8_4_delete_entry_keeps_surrounding_whitespace():
    new = delete(BOB)
    assert entries(new) == ["sip:carol@example.com"]
    assert b'<list name="friends">\n    \n    <entry uri="sip:carol@example.com"/>' in new


def test_rfc4825_8_4_delete_attribute():
    new = delete(BOB + "/@uri")
    assert entries(new) == [None, "sip:carol@example.com"]


def test_rfc4825_8_4_delete_of_nothing_or_several_is_404():
    for selector in [FRIENDS + '/entry[@uri="sip:nobody@example.com"]', FRIENDS + "/entry", BOB + "/@nope"]:
        with pytest.raises(XCAPError) as err:
            delete(selector)
        assert err.value.status == 404


def test_rfc4825_8_4_cannot_delete_when_selector_would_then_select_another_node():
    with pytest.raises(XCAPError) as err:
        delete(FRIENDS + "/entry[1]")  # carol would become entry[1]
    assert (err.value.status, err.value.error_element) == (409, "cannot-delete")
    new = delete(FRIENDS + "/entry[2]")  # nothing after carol: idempotent, allowed
    assert entries(new) == ["sip:bob@example.com"]


# ---- hardening

def test_xml_bomb_with_entities_is_refused_before_expansion():
    bomb = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list name="&lol3;"/></resource-lists>"""
    with pytest.raises(XCAPError) as err:
        get("resource-lists/list", doc=bomb)
    assert (err.value.status, err.value.error_element) == (409, "not-well-formed")
    assert "DOCTYPE" in err.value.reason  # refused by the DTD check, not expanded
    with pytest.raises(XCAPError):
        put(FRIENDS + "/entry[3]", b'<!DOCTYPE x [<!ENTITY e "x">]><entry uri="&e;"/>')


def test_rfc4825_8_2_2_not_well_formed_and_not_utf8_documents():
    with pytest.raises(XCAPError) as err:
        get("resource-lists", doc=b"<resource-lists>")
    assert err.value.error_element == "not-well-formed"
    with pytest.raises(XCAPError) as err:
        get("resource-lists", doc='<resource-lists a="é"/>'.encode("latin-1"))
    assert err.value.error_element == "not-utf-8"


# ---- §11 error documents

def test_rfc4825_11_error_document_is_well_formed_xcap_error():
    root = ET.fromstring(error_document("uniqueness-failure", phrase='dup "uri"', exists=["entry/@uri"],
                                        alt_values=["sip:bob2@example.com"]))
    assert root.tag == f"{{{XCAP_ERROR_NS}}}xcap-error"
    failure = root[0]
    assert failure.tag == f"{{{XCAP_ERROR_NS}}}uniqueness-failure" and failure.get("phrase") == 'dup "uri"'
    assert failure[0].get("field") == "entry/@uri"
    assert failure[0][0].text == "sip:bob2@example.com"
    no_parent = ET.fromstring(error_document("no-parent", ancestor="http://x/~~/a&b"))[0]
    assert no_parent[0].text == "http://x/~~/a&b"
    assert ET.fromstring(XCAPError(409, "x", "cannot-delete").body())[0].tag == f"{{{XCAP_ERROR_NS}}}cannot-delete"
    with pytest.raises(ValueError):
        error_document("bad tag")


def test_rfc4825_8_2_4_put_on_root_selector_replaces_root_element():
    new = put("resource-lists", b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list name="x"/></resource-lists>')
    assert ET.fromstring(get('resource-lists/list[@name="x"]', doc=new)).get("name") == "x"
    with pytest.raises(XCAPError) as err:
        put("resource-lists", b"<other/>")
    assert err.value.error_element == "cannot-insert"


def test_rfc4825_6_3_prefixed_attribute_in_predicate_and_terminal():
    doc = DOC.replace(b'<entry uri="sip:carol@example.com"/>',
                      b'<entry xmlns:x="urn:x" x:tag="vip" uri="sip:carol@example.com"/>')
    selector = FRIENDS + '/entry[@p:tag="vip"]/@uri'
    assert get(selector, doc=doc, namespaces={"p": "urn:x"}) == b"sip:carol@example.com"
    new = put(FRIENDS + '/entry[@p:tag="vip"]/@p:level', b"2", doc=doc, namespaces={"p": "urn:x"})
    assert b'x:level="2"' in new  # the document's own prefix is reused
    with pytest.raises(XCAPError):
        get(FRIENDS + '/entry[@tag="vip"]', doc=doc)  # unprefixed attribute is in no namespace
