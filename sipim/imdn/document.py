"""The message/imdn+xml document (RFC 5438 §11): IMDNNotification, a hardened
parser and a builder.

The parser drives pyexpat directly (the stdlib ElementTree C parser does not
expose its expat handlers) and refuses any DOCTYPE: with no DTD there are no
entity declarations, so no billion-laughs expansion and no external entity
fetch; an undeclared entity reference is an expat error.  Depth, element count
and size are bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime as DateTime
from typing import Any
from xml.parsers import expat

from ..cpim.timestamps import format_rfc3339, parse_rfc3339
from .errors import IMDNError

IMDN_XML_NAMESPACE = "urn:ietf:params:xml:ns:imdn"  # §11.1
IMDN_MEDIA_TYPE = "message/imdn+xml"  # §11.1.8
_XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"

DELIVERY = "delivery"
DISPLAY = "display"
PROCESSING = "processing"

# §11.1.7 and the §11.1.9 schema: which <status> children each notification allows.
STATUSES: dict[str, frozenset[str]] = {
    DELIVERY: frozenset({"delivered", "failed", "forbidden", "error"}),
    DISPLAY: frozenset({"displayed", "forbidden", "error"}),
    PROCESSING: frozenset({"processed", "stored", "forbidden", "error"}),
}
_NOTIFICATION_ELEMENTS = {
    "delivery-notification": DELIVERY,
    "display-notification": DISPLAY,
    "processing-notification": PROCESSING,
}

DEFAULT_MAX_IMDN_SIZE = 16384
_MAX_DEPTH = 16
_MAX_ELEMENTS = 256
_XML_SPACE_CHARS = " \t\r\n"  # XML 1.0 S production
_XML_WHITESPACE = re.compile("[ \t\r\n]+")


@dataclass(frozen=True)
class IMDNNotification:
    """One disposition notification (RFC 5438 §11.1).

    ``datetime`` is the DateTime of the *IM* (not of the IMDN, §11.1.2), kept
    as the text the IM carried so the sender can match it exactly; a
    ``datetime.datetime`` given here is formatted as RFC 3339.  ``kind`` is
    "delivery", "display" or "processing"; ``status`` one of ``STATUSES[kind]``.
    """

    message_id: str
    datetime: str
    kind: str
    status: str
    recipient_uri: str | None = None
    original_recipient_uri: str | None = None
    subject: str | None = None
    subject_lang: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.datetime, DateTime):
            object.__setattr__(self, "datetime", format_rfc3339(self.datetime))
        if self.kind not in STATUSES:
            raise IMDNError(f"Unknown notification kind {self.kind!r}")
        if self.status not in STATUSES[self.kind]:
            raise IMDNError(f"Status {self.status!r} is not allowed in a {self.kind} notification")
        # <message-id> is an xs:token (§11.1.9): no inner whitespace runs, not empty.
        if not self.message_id or _XML_WHITESPACE.search(self.message_id):
            raise IMDNError("Bad message-id")
        if not self.datetime.strip():
            raise IMDNError("Empty datetime")

    @property
    def sent_at(self) -> DateTime | None:
        """``datetime`` parsed (RFC 3339), None when it is not a valid date-time."""
        try:
            return parse_rfc3339(self.datetime.strip())
        except ValueError:
            return None

    def to_xml(self) -> bytes:
        return build_imdn_xml(self)


# ---------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------


def _xml_text(text: str) -> str:
    """Escape for element content / attribute values.  Characters XML 1.0
    cannot carry at all (most C0 controls, lone surrogates) become U+FFFD."""
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"':
            out.append("&quot;")
        elif ch == "\r":
            out.append("&#13;")  # a literal CR would be normalised away
        elif (code < 0x20 and ch not in "\t\n") or 0xD800 <= code <= 0xDFFF or code in (0xFFFE, 0xFFFF):
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def build_imdn_xml(notification: IMDNNotification) -> bytes:
    """The UTF-8 XML document (§11.1), element order as in the §11.1.9 schema.

    Only the fields that are set are written; the schema pairs
    <recipient-uri> with <original-recipient-uri>, so callers that set one
    should set both (``build_notification_cpim`` does).
    """
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<imdn xmlns="{IMDN_XML_NAMESPACE}">',
        f"  <message-id>{_xml_text(notification.message_id)}</message-id>",
        f"  <datetime>{_xml_text(notification.datetime)}</datetime>",
    ]
    if notification.recipient_uri is not None:
        lines.append(f"  <recipient-uri>{_xml_text(notification.recipient_uri)}</recipient-uri>")
    if notification.original_recipient_uri is not None:
        lines.append(
            "  <original-recipient-uri>"
            f"{_xml_text(notification.original_recipient_uri)}</original-recipient-uri>"
        )
    if notification.subject is not None:
        lang = (
            f' xml:lang="{_xml_text(notification.subject_lang)}"' if notification.subject_lang else ""
        )
        lines.append(f"  <subject{lang}>{_xml_text(notification.subject)}</subject>")
    element = f"{notification.kind}-notification"
    lines.append(f"  <{element}><status><{notification.status}/></status></{element}>")
    lines.append("</imdn>")
    return ("\n".join(lines) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------


class _Refused(Exception):
    """Raised inside expat handlers to abort on a forbidden construct."""


class _Element:
    __slots__ = ("namespace", "name", "attributes", "children", "text")

    def __init__(self, namespace: str, name: str, attributes: dict[str, str]) -> None:
        self.namespace = namespace
        self.name = name
        self.attributes = attributes
        self.children: list[_Element] = []
        self.text: list[str] = []

    def imdn_children(self, name: str) -> list["_Element"]:
        return [c for c in self.children if c.namespace == IMDN_XML_NAMESPACE and c.name == name]


def _split_name(qualified: str) -> tuple[str, str]:
    namespace, _, local = qualified.rpartition(" ")
    return namespace, local


class _TreeBuilder:
    def __init__(self) -> None:
        self.root: _Element | None = None
        self.stack: list[_Element] = []
        self.count = 0

    def start(self, qualified: str, attributes: dict[str, str]) -> None:
        self.count += 1
        if self.count > _MAX_ELEMENTS:
            raise _Refused("Too many XML elements")
        if len(self.stack) >= _MAX_DEPTH:
            raise _Refused("XML nested too deeply")
        element = _Element(*_split_name(qualified), attributes)
        if self.stack:
            self.stack[-1].children.append(element)
        else:
            self.root = element
        self.stack.append(element)

    def end(self, qualified: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text.append(text)


def _refuse(reason: str) -> Any:
    def handler(*_args: Any) -> Any:
        raise _Refused(reason)

    return handler


def _parse_tree(data: bytes) -> _Element:
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    builder = _TreeBuilder()
    parser.StartElementHandler = builder.start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    # No DTD at all: it is where entities (billion laughs) and external
    # references (XXE) are declared.  The others are belt and braces.
    parser.StartDoctypeDeclHandler = _refuse("DOCTYPE not allowed")
    parser.EntityDeclHandler = _refuse("Entity declarations not allowed")
    parser.UnparsedEntityDeclHandler = _refuse("Entity declarations not allowed")
    parser.ExternalEntityRefHandler = _refuse("External entities not allowed")
    try:
        parser.Parse(data, True)
    except _Refused as refused:
        raise IMDNError(str(refused)) from None
    except expat.ExpatError as error:
        raise IMDNError(f"Malformed XML: {expat.ErrorString(error.code)}") from None
    except (ValueError, LookupError, RecursionError):  # e.g. an unknown declared encoding
        raise IMDNError("Malformed XML") from None
    if builder.root is None:
        raise IMDNError("Empty XML document")
    return builder.root


def _single_text(parent: _Element, name: str, *, required: bool) -> str | None:
    found = parent.imdn_children(name)
    if len(found) > 1:
        raise IMDNError(f"More than one <{name}>")
    if not found:
        if required:
            raise IMDNError(f"Missing <{name}>")
        return None
    if found[0].children:
        raise IMDNError(f"<{name}> must hold text only")
    return "".join(found[0].text)


def parse_imdn_xml(data: bytes, *, max_size: int = DEFAULT_MAX_IMDN_SIZE) -> IMDNNotification:
    """Read a message/imdn+xml document.  Raises only IMDNError.

    Lenient where the schema is stricter without consequence (element order,
    <recipient-uri> without <original-recipient-uri>); elements of other
    namespaces are extensions and ignored (§11.1.9 anyIMDN).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise IMDNError("IMDN document must be bytes")
    data = bytes(data)
    if len(data) > max_size:
        raise IMDNError(f"IMDN document larger than {max_size} bytes")
    root = _parse_tree(data)
    if root.namespace != IMDN_XML_NAMESPACE or root.name != "imdn":
        raise IMDNError("Root element is not <imdn> in urn:ietf:params:xml:ns:imdn")

    # xs:token: XML whitespace collapsed (not Python's wider notion of it)
    message_id = _XML_WHITESPACE.sub(" ", _single_text(root, "message-id", required=True) or "").strip(" ")
    moment = (_single_text(root, "datetime", required=True) or "").strip(_XML_SPACE_CHARS)
    recipient = _single_text(root, "recipient-uri", required=False)
    original = _single_text(root, "original-recipient-uri", required=False)
    subject = _single_text(root, "subject", required=False)
    subject_lang = None
    if subject is not None:
        subject_lang = root.imdn_children("subject")[0].attributes.get(f"{_XML_NAMESPACE} lang")

    # §11.1.6: exactly one of the three notification elements.
    notifications = [
        (child, _NOTIFICATION_ELEMENTS[child.name])
        for child in root.children
        if child.namespace == IMDN_XML_NAMESPACE and child.name in _NOTIFICATION_ELEMENTS
    ]
    if len(notifications) != 1:
        raise IMDNError(
            "Missing notification element" if not notifications else "More than one notification element"
        )
    element, kind = notifications[0]
    statuses = element.imdn_children("status")
    if len(statuses) != 1:
        raise IMDNError(f"<{element.name}> needs exactly one <status>")
    # §11.1.7: one status value in the IMDN namespace; extensions ignored.
    values = [c for c in statuses[0].children if c.namespace == IMDN_XML_NAMESPACE]
    if len(values) != 1:
        raise IMDNError("<status> needs exactly one value")
    status = values[0].name
    if status not in STATUSES[kind]:
        raise IMDNError(f"Status <{status}> is not allowed in <{element.name}>")
    return IMDNNotification(
        message_id=message_id,
        datetime=moment,
        kind=kind,
        status=status,
        recipient_uri=recipient.strip(_XML_SPACE_CHARS) if recipient is not None else None,
        original_recipient_uri=original.strip(_XML_SPACE_CHARS) if original is not None else None,
        subject=subject,
        subject_lang=subject_lang,
    )
