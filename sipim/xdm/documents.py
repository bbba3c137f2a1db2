"""The JSON API's view of the XCAP documents: contacts and profile (sans-IO).

The JSON API reads and writes the very same documents as XCAP; these helpers
turn a document into JSON-friendly values and apply one change to it.  The
result is always validated by the usage (sipim/xdm/usages.py) before it is
stored, so both APIs obey the same constraints.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from sipim.sip.errors import SIPParseError
from sipim.sip.uri import SipURI, parse_uri
from sipim.xdm.usages import MAX_PROFILE_TEXT, field_uri, PF_NS, RL_NS, refuse_raw_number
from sipim.xdm.xcap import XCAPError, delete_node, get_node, parse_root, put_node

DEFAULT_LIST = "default"


def _q(local: str, ns: str = RL_NS) -> str:
    return f"{{{ns}}}{local}"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def canonical_contact_uri(text: str) -> str:
    """A contact as the JSON API stores it: RFC 4826 §5 canonical SIP URI (host and
    tokens lower-case, parameters sorted, headers dropped).  ``bob@example.com`` means
    ``sip:bob@example.com``.  A phone number is refused (409 constraint-failure)."""
    value = text.strip()
    refuse_raw_number(value)
    if ":" not in value.split("@", 1)[0] and "@" in value:
        value = "sip:" + value
    refuse_raw_number(value)
    try:
        uri = parse_uri(value)
    except (SIPParseError, ValueError):
        raise XCAPError(409, f"{text!r} is not a SIP URI such as sip:bob@example.com",
                        "constraint-failure") from None
    if not isinstance(uri, SipURI) or not uri.user:
        raise XCAPError(409, f"{text!r} is not a user's SIP URI such as sip:bob@example.com", "constraint-failure")
    params = "".join(f";{k.lower()}" + (f"={v.lower()}" if v is not None else "")
                     for k, v in sorted(uri.params.items()))
    port = f":{uri.port}" if uri.port else ""
    return f"{uri.scheme.lower()}:{uri.user}@{uri.host.lower()}{port}{params}"


# ---------------------------------------------------------------- contacts

@dataclass(frozen=True)
class Contact:
    uri: str
    display_name: str | None
    list: str

    def as_json(self) -> dict:
        return {"uri": self.uri, "display_name": self.display_name, "list": self.list}


def _display_name(element: ET.Element) -> str | None:
    found = element.find(_q("display-name"))
    return found.text if found is not None else None


def list_contacts(document: bytes | None) -> list[Contact]:
    """Every <entry> of the lists, in document order; nested lists as "outer/inner"; a
    list without a name (RFC 4826 makes it optional) is called "list<position>"."""
    return [contact for contact, _ in _contact_places(document)]


def _contact_places(document: bytes | None) -> list[tuple[Contact, str]]:
    """Every contact with the node-selector steps of its list (RFC 4825 §6.3): by name,
    or by position among its sibling lists when it has none."""
    if document is None:
        return []
    places: list[tuple[Contact, str]] = []

    def walk(parent: ET.Element, path: str, steps: str) -> None:
        for index, child in enumerate(parent.findall(_q("list")), 1):
            name = child.get("name")
            full = f"{path}/{name or f'list{index}'}" if path else (name or f"list{index}")
            step = f"list[@name={_att(name)}]" if name else f"list[{index}]"
            list_steps = f"{steps}/{step}" if steps else step
            for entry in child.findall(_q("entry")):
                places.append((Contact(entry.get("uri", ""), _display_name(entry), full), list_steps))
            walk(child, full, list_steps)

    walk(parse_root(document), "", "")
    return places


def _empty_lists() -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<resource-lists xmlns="{RL_NS}"></resource-lists>\n'.encode()


def _att(value: str) -> str:
    """A node-selector attribute value (RFC 4825 §6.3 AttValue, double-quoted)."""
    return '"' + value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;") + '"'


def _list_steps(list_name: str) -> str:
    names = list_name.split("/")
    if not all(names):
        raise XCAPError(409, f"bad list name {list_name!r}", "constraint-failure")
    return "/".join(f"list[@name={_att(name)}]" for name in names)


def _exists(document: bytes, selector: str) -> bool:
    try:
        get_node(document, selector, default_namespace=RL_NS)
        return True
    except XCAPError as error:
        if error.status == 404:
            return False
        raise


def add_contact(document: bytes | None, uri: str, display_name: str | None, list_name: str = DEFAULT_LIST
                ) -> bytes:
    """The document with a new <entry> in list ``list_name`` (created if missing),
    written with the XCAP operations so the rest of the document is kept as it is.

    A contact already in that list is a 409 <uniqueness-failure> (RFC 4826 §3.4.5)."""
    doc = document if document is not None else _empty_lists()
    steps = "resource-lists"
    for name in (list_name or "").split("/"):
        if not name:
            raise XCAPError(409, f"bad list name {list_name!r}", "constraint-failure")
        steps += f"/list[@name={_att(name)}]"
        if not _exists(doc, steps):
            doc = put_node(doc, steps, f'<list name={_att(name)}/>'.encode(), default_namespace=RL_NS)
    entry_selector = f"{steps}/entry[@uri={_att(uri)}]"
    if _exists(doc, entry_selector):
        raise XCAPError(409, f"{uri} is already in list {list_name!r}", "uniqueness-failure",
                        exists=[field_uri(f"resource-lists/{_list_steps(list_name)}/entry/@uri")])
    inner = f"<display-name>{_escape(display_name)}</display-name>" if display_name else ""
    fragment = f"<entry uri={_att(uri)}>{inner}</entry>".encode()
    return put_node(doc, entry_selector, fragment, default_namespace=RL_NS)


def remove_contact(document: bytes | None, uri: str, list_name: str | None = None) -> bytes | None:
    """The document without that contact (in one list, or in every list); None if absent."""
    if document is None:
        return None
    # (Deleting entries moves no list: positional steps of unnamed lists stay right.)
    lists = sorted({steps for contact, steps in _contact_places(document)
                    if contact.uri == uri and list_name in (None, contact.list)})
    doc = document
    for steps in lists:
        doc = delete_node(doc, f"resource-lists/{steps}/entry[@uri={_att(uri)}]", default_namespace=RL_NS)
    return doc if lists else None


# ---------------------------------------------------------------- profile

PROFILE_FIELDS = {"display_name": "display-name", "status_text": "status-text", "avatar_url": "avatar-url"}


def read_profile(document: bytes | None) -> dict[str, str | None]:
    values: dict[str, str | None] = {key: None for key in PROFILE_FIELDS}
    if document is None:
        return values
    root = parse_root(document)
    for key, element in PROFILE_FIELDS.items():
        found = root.find(_q(element, PF_NS))
        if found is not None:
            values[key] = (found.text or "").strip() or None
    return values


def build_profile(values: dict[str, object]) -> bytes:
    """A profile document from JSON; unknown keys and non-strings are a 409."""
    unknown = set(values) - set(PROFILE_FIELDS)
    if unknown:
        raise XCAPError(409, f"unknown profile fields {sorted(unknown)} (known: {sorted(PROFILE_FIELDS)})",
                        "constraint-failure")
    parts = []
    for key, element in PROFILE_FIELDS.items():
        value = values.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise XCAPError(409, f"{key} must be a string", "constraint-failure")
        if len(value) > MAX_PROFILE_TEXT[element]:
            raise XCAPError(409, f"{key} is longer than {MAX_PROFILE_TEXT[element]} characters",
                            "constraint-failure")
        parts.append(f"<{element}>{_escape(value)}</{element}>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<profile xmlns="{PF_NS}">{"".join(parts)}</profile>\n'
            ).encode()
