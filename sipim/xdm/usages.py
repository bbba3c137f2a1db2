"""XCAP application usages (RFC 4825 §5): what each AUID's documents may hold.

Sans-IO: a document's bytes in, nothing out or an XCAPError (409 with the
§11 conflict report) that says what is wrong.  Three usages are served:

- ``resource-lists`` (RFC 4826 §3.4): contact lists and groups of contacts,
  with the §3.4.5 uniqueness constraints, plus sipim's own constraint that a
  raw phone number never enters a list (it must be looked up to a User ID);
- ``org.sipim.im-rules``: who may message me, read my profile, find me by my
  number -- a common-policy document (RFC 4745) with sipim's actions and
  transformations (see sipim/xdm/policy.py);
- ``org.sipim.profile``: display name, status text and avatar URL.

Vendor AUIDs take a reverse-domain name (RFC 4825 §5.1).  Elements from
namespaces a usage does not know are allowed and kept (§8.2.5); unknown
elements in a namespace it does know are a <schema-validation-error>.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

from sipim.sip.errors import SIPParseError
from sipim.sip.uri import SipURI, TelURI, parse_uri
from sipim.phone import number_of
from sipim.xdm.xcap import DEFAULT_NAMESPACES, XCAP_NS_NS, XCAPError, parse_root

RL_NS = "urn:ietf:params:xml:ns:resource-lists"
CP_NS = "urn:ietf:params:xml:ns:common-policy"
IR_NS = "urn:sipim:xml:ns:im-rules"
PF_NS = "urn:sipim:xml:ns:profile"
CAPS_NS = "urn:ietf:params:xml:ns:xcap-caps"

RESOURCE_LISTS = "resource-lists"
IM_RULES = "org.sipim.im-rules"
PROFILE = "org.sipim.profile"
XCAP_CAPS = "xcap-caps"

DEFAULT_NAMESPACES.setdefault(IM_RULES, CP_NS)
DEFAULT_NAMESPACES.setdefault(PROFILE, PF_NS)

RAW_NUMBER_PHRASE = ("a phone number cannot be a contact: look the number up first "
                     "(GET /api/v1/lookup?number=...) and add the User ID it gives")

MAX_PROFILE_TEXT = {"display-name": 100, "status-text": 280, "avatar-url": 2000}


def _q(namespace: str, local: str) -> str:
    return f"{{{namespace}}}{local}"


def _ns(tag: object) -> str | None:
    if isinstance(tag, str) and tag.startswith("{"):
        return tag[1:].partition("}")[0]
    return None


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _elements(parent: ET.Element) -> list[ET.Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _schema_error(reason: str) -> XCAPError:
    return XCAPError(409, reason, "schema-validation-error")


def _check_children(parent: ET.Element, namespace: str, allowed: set[str], where: str) -> None:
    """Children in our namespace must be known; other namespaces are extensions (§8.2.5)."""
    for child in _elements(parent):
        if _ns(child.tag) == namespace and _local(child.tag) not in allowed:
            raise _schema_error(f"<{_local(child.tag)}> is not allowed in <{where}>")
        if _ns(child.tag) is None:
            raise _schema_error(f"<{child.tag}> has no namespace; expected {namespace}")


def field_uri(selector: str) -> str:
    """A node selector as the <exists field> of §11: a relative URI, percent-encoded."""
    return quote(selector, safe="/@:~=-._")


def _unique(elements: list[ET.Element], attribute: str, field: str) -> None:
    seen: set[str] = set()
    for element in elements:
        value = element.get(attribute)
        if value is None:
            continue
        if value in seen:
            raise XCAPError(409, f"{attribute}={value!r} appears twice in the same parent",
                            "uniqueness-failure", exists=[field_uri(field)])
        seen.add(value)


# ---------------------------------------------------------------- raw numbers

def is_raw_number(uri: str) -> bool:
    """A phone number standing where a User ID belongs: ``tel:...``, ``sip:+...;user=phone``
    or ``sip:+E164@host`` (no User ID starts with "+"), or a bare ``+4915...``."""
    text = uri.strip()
    if text.lower().startswith("tel:"):
        return True
    if re.fullmatch(r"\+?[0-9][0-9 ().\-]*", text) and any(c.isdigit() for c in text):
        return True
    try:
        parsed = parse_uri(text)
    except (SIPParseError, ValueError):
        return False
    return isinstance(parsed, TelURI) or (isinstance(parsed, SipURI) and number_of(parsed) is not None)


def refuse_raw_number(uri: str) -> None:
    if is_raw_number(uri):
        raise XCAPError(409, RAW_NUMBER_PHRASE, "constraint-failure")


# ---------------------------------------------------------------- resource-lists (RFC 4826)

_URI_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


def _validate_list_children(parent: ET.Element, path: str) -> None:
    """RFC 4826 §3.2 listType content and the §3.4.5 uniqueness constraints."""
    _check_children(parent, RL_NS, {"display-name", "list", "external", "entry", "entry-ref"}, _local(parent.tag))
    children = _elements(parent)
    display_names = [c for c in children if c.tag == _q(RL_NS, "display-name")]
    if len(display_names) > 1:
        raise _schema_error(f"<{_local(parent.tag)}> has more than one <display-name>")
    lists = [c for c in children if c.tag == _q(RL_NS, "list")]
    entries = [c for c in children if c.tag == _q(RL_NS, "entry")]
    refs = [c for c in children if c.tag == _q(RL_NS, "entry-ref")]
    externals = [c for c in children if c.tag == _q(RL_NS, "external")]
    # RFC 4826 §3.4.5: unique name/uri/ref/anchor among siblings, case-sensitive.
    _unique(lists, "name", f"{path}/list/@name")
    _unique(entries, "uri", f"{path}/entry/@uri")
    _unique(refs, "ref", f"{path}/entry-ref/@ref")
    _unique(externals, "anchor", f"{path}/external/@anchor")
    for entry in entries:
        uri = entry.get("uri")
        if uri is None:
            raise _schema_error("<entry> needs a uri attribute")
        refuse_raw_number(uri)
        if not _URI_RE.fullmatch(uri.strip()):
            raise _schema_error(f"entry uri {uri!r} is not an absolute URI")
        _check_children(entry, RL_NS, {"display-name"}, "entry")
    for ref in refs:
        if ref.get("ref") is None:
            raise _schema_error("<entry-ref> needs a ref attribute")
        if "://" in ref.get("ref", "") or ref.get("ref", "").startswith("/"):
            raise XCAPError(409, "entry-ref ref must be a relative path reference", "constraint-failure")
    for external in externals:
        anchor = external.get("anchor")
        if anchor is None:
            raise _schema_error("<external> needs an anchor attribute")
        if urlsplit(anchor).scheme not in ("http", "https"):
            raise XCAPError(409, "external anchor must be an absolute HTTP URI", "constraint-failure")
    for index, child in enumerate(lists, 1):
        name = child.get("name")
        step = f'list[@name="{name}"]' if name is not None else f"list[{index}]"
        _validate_list_children(child, f"{path}/{step}")


def validate_resource_lists(root: ET.Element) -> None:
    if root.tag != _q(RL_NS, "resource-lists"):
        raise _schema_error("the root element must be <resource-lists> (RFC 4826)")
    _check_children(root, RL_NS, {"list"}, "resource-lists")
    lists = [c for c in _elements(root) if c.tag == _q(RL_NS, "list")]
    _unique(lists, "name", "resource-lists/list/@name")
    for index, child in enumerate(lists, 1):
        name = child.get("name")
        step = f'list[@name="{name}"]' if name is not None else f"list[{index}]"
        _validate_list_children(child, f"resource-lists/{step}")


# ---------------------------------------------------------------- im-rules (RFC 4745 subset)

IM_HANDLING_VALUES = ("block", "allow")  # ordered: RFC 4745 §10.2 combines by maximum
BOOLEAN_TRANSFORMATIONS = ("provide-profile", "provide-number")


def xml_datetime(text: str) -> datetime:
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("no time zone")
    return moment


def validate_im_rules(root: ET.Element) -> None:
    if root.tag != _q(CP_NS, "ruleset"):
        raise _schema_error("the root element must be <ruleset> (RFC 4745 §13)")
    _check_children(root, CP_NS, {"rule"}, "ruleset")
    rules = [c for c in _elements(root) if c.tag == _q(CP_NS, "rule")]
    for rule in rules:
        if not rule.get("id"):
            raise _schema_error("every <rule> needs an id (RFC 4745 §6.1)")
    # RFC 4745 §6.1: a rule maker MUST NOT use the same id for two rules.
    _unique(rules, "id", "ruleset/rule/@id")
    for rule in rules:
        _check_children(rule, CP_NS, {"conditions", "actions", "transformations"}, "rule")
        for part in _elements(rule):
            if part.tag == _q(CP_NS, "conditions"):
                _validate_conditions(part)
            elif part.tag == _q(CP_NS, "actions"):
                for action in _elements(part):
                    if action.tag == _q(IR_NS, "im-handling"):
                        if (action.text or "").strip() not in IM_HANDLING_VALUES:
                            raise _schema_error("<im-handling> is block or allow")
                    elif _ns(action.tag) == IR_NS:
                        raise _schema_error(f"unknown action <{_local(action.tag)}>")
            elif part.tag == _q(CP_NS, "transformations"):
                for transformation in _elements(part):
                    if _ns(transformation.tag) != IR_NS:
                        continue
                    if _local(transformation.tag) not in BOOLEAN_TRANSFORMATIONS:
                        raise _schema_error(f"unknown transformation <{_local(transformation.tag)}>")
                    if (transformation.text or "").strip() not in ("true", "false", "1", "0"):
                        raise _schema_error(f"<{_local(transformation.tag)}> is a boolean")


def _validate_conditions(conditions: ET.Element) -> None:
    _check_children(conditions, CP_NS, {"identity", "sphere", "validity"}, "conditions")
    for condition in _elements(conditions):
        if condition.tag == _q(CP_NS, "identity"):
            _check_children(condition, CP_NS, {"one", "many"}, "identity")
            for child in _elements(condition):
                if child.tag == _q(CP_NS, "one"):
                    # RFC 4745 §7.2: a single-user entity has an id and no domain.
                    if not child.get("id") or child.get("domain") is not None:
                        raise _schema_error("<one> needs an id and no domain (RFC 4745 §7.2)")
                elif child.tag == _q(CP_NS, "many"):
                    _check_children(child, CP_NS, {"except"}, "many")
                    for exception in _elements(child):
                        has_id, has_domain = exception.get("id") is not None, exception.get("domain") is not None
                        if has_id == has_domain:
                            raise _schema_error("<except> has either an id or a domain (RFC 4745 §7.1.3)")
                        if has_domain and child.get("domain") is not None:
                            raise _schema_error("<many domain=...> may only except ids (RFC 4745 §7.1.3.3)")
        elif condition.tag == _q(CP_NS, "validity"):
            _check_children(condition, CP_NS, {"from", "until"}, "validity")
            parts = _elements(condition)
            # RFC 4745 §7.4: <from> and <until> come in pairs.
            if len(parts) % 2 or any(p.tag != _q(CP_NS, "from" if i % 2 == 0 else "until")
                                     for i, p in enumerate(parts)):
                raise _schema_error("<validity> holds <from>/<until> pairs (RFC 4745 §7.4)")
            for part in parts:
                try:
                    xml_datetime(part.text or "")
                except ValueError:
                    raise _schema_error(f"<{_local(part.tag)}> is not an XML dateTime with a zone") from None


# ---------------------------------------------------------------- profile

def validate_profile(root: ET.Element) -> None:
    if root.tag != _q(PF_NS, "profile"):
        raise _schema_error(f"the root element must be <profile xmlns=\"{PF_NS}\">")
    _check_children(root, PF_NS, set(MAX_PROFILE_TEXT), "profile")
    seen: set[str] = set()
    for child in _elements(root):
        if _ns(child.tag) != PF_NS:
            continue
        name = _local(child.tag)
        if name in seen:
            raise _schema_error(f"<{name}> appears twice")
        seen.add(name)
        if _elements(child):
            raise _schema_error(f"<{name}> holds text only")
        text = (child.text or "").strip()
        if len(text) > MAX_PROFILE_TEXT[name]:
            raise XCAPError(409, f"{name} is longer than {MAX_PROFILE_TEXT[name]} characters", "constraint-failure")
        if name == "avatar-url" and text:
            parts = urlsplit(text)
            if parts.scheme not in ("https", "http") or not parts.netloc:
                raise XCAPError(409, "avatar-url must be an http(s) URL", "constraint-failure")


# ---------------------------------------------------------------- registry

@dataclass(frozen=True)
class ApplicationUsage:
    """What RFC 4825 §5 asks an application usage to define, for the server's side."""

    auid: str
    mime_type: str  # §5.4 / §8.3: the MIME type of whole documents
    default_namespace: str  # §5.2
    validator: Callable[[ET.Element], None]  # §5.3 schema and constraints (§8.2.5)
    documents: frozenset[str] | None  # document names allowed below the XUI; None: any
    others_may_read: bool = False  # §5.7: readable by others as the owner's rules allow

    def validate(self, document: bytes) -> None:
        """Raise the §8.2.5 409 if the whole document breaks the schema or a constraint."""
        self.validator(parse_root(document))


USAGES: dict[str, ApplicationUsage] = {
    RESOURCE_LISTS: ApplicationUsage(RESOURCE_LISTS, "application/resource-lists+xml", RL_NS,
                                     validate_resource_lists, None),
    # RFC 4745 §15.2 registers application/auth-policy+xml for common-policy documents.
    IM_RULES: ApplicationUsage(IM_RULES, "application/auth-policy+xml", CP_NS, validate_im_rules,
                               frozenset({"index"})),
    PROFILE: ApplicationUsage(PROFILE, "application/vnd.sipim.profile+xml", PF_NS, validate_profile,
                              frozenset({"index"}), others_may_read=True),
}


def xcap_caps_document() -> bytes:
    """The RFC 4825 §12 capabilities document of this server (global/index)."""
    auids = "".join(f"<auid>{auid}</auid>" for auid in (XCAP_CAPS, *USAGES))
    namespaces = "".join(f"<namespace>{ns}</namespace>" for ns in (CAPS_NS, RL_NS, CP_NS, IR_NS, PF_NS,
                                                                   "urn:ietf:params:xml:ns:xcap-error"))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<xcap-caps xmlns="{CAPS_NS}"><auids>{auids}</auids><extensions/>'
            f"<namespaces>{namespaces}</namespaces></xcap-caps>\n").encode()


__all__ = ["USAGES", "ApplicationUsage", "is_raw_number", "refuse_raw_number", "xcap_caps_document",
           "RESOURCE_LISTS", "IM_RULES", "PROFILE", "XCAP_CAPS", "RL_NS", "CP_NS", "IR_NS", "PF_NS",
           "RAW_NUMBER_PHRASE", "XCAP_NS_NS"]
