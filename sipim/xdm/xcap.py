"""Sans-IO XCAP (RFC 4825): URI parsing, node selectors and document operations.

Bytes/strings in, results out: no sockets, no storage, no etags (§8.2.5 is
handled elsewhere).  Documents are parsed with ElementTree after a hardening
pass with expat that refuses any DOCTYPE or entity declaration, so an XML bomb
("billion laughs") or an external entity never reaches the tree builder.

Known limits: comments/PIs *outside* the root element and the original
attribute quoting are not preserved on re-serialisation; namespace prefixes
and declarations inside the root are preserved.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import unquote

XCAP_ERROR_NS = "urn:ietf:params:xml:ns:xcap-error"
XCAP_NS_NS = "urn:ietf:params:xml:ns:xcap-namespace"

# Default document namespaces of the application usages sipim knows
# (RFC 4825 §6.3: unprefixed names expand to the AUID's default namespace).
DEFAULT_NAMESPACES: dict[str, str] = {
    "resource-lists": "urn:ietf:params:xml:ns:resource-lists",  # RFC 4826 §3.4
    "rls-services": "urn:ietf:params:xml:ns:rls-services",  # RFC 4826 §4.4
    "pres-rules": "urn:ietf:params:xml:ns:pres-rules",  # RFC 5025
    "xcap-caps": "urn:ietf:params:xml:ns:xcap-caps",  # RFC 4825 §12
}

NODE_SELECTOR_SEPARATOR = "~~"  # RFC 4825 §6


class XCAPError(Exception):
    """An XCAP failure with its HTTP status and, for 409, the §11 error element."""

    def __init__(self, status: int, reason: str, error_element: str | None = None, **details: object) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.error_element = error_element
        self.details = details  # e.g. exists=[field], alt_values=[...] for <uniqueness-failure>

    def body(self) -> bytes | None:
        """The detailed conflict report (§11) for this error, if it has one."""
        if self.error_element is None:
            return None
        return error_document(self.error_element, phrase=self.reason, **self.details)


# ---------------------------------------------------------------- selectors

@dataclass(frozen=True)
class Step:
    """One element step of §6.3: NameorAny with optional position and attr-test."""

    name: str  # QName as written, or "*"
    position: int | None = None
    attribute: tuple[str, str] | None = None  # (att-name QName, value)


@dataclass(frozen=True)
class NodeSelector:
    """A parsed node selector: element steps and an optional terminal (§6.3)."""

    steps: tuple[Step, ...]
    attribute: str | None = None  # terminal attribute-selector QName
    namespace_selector: bool = False  # terminal "namespace::*"

    @property
    def selects_element(self) -> bool:
        return self.attribute is None and not self.namespace_selector


@dataclass(frozen=True)
class XCAPRef:
    """A parsed XCAP URI path (relative to the XCAP root) and its query (§6)."""

    auid: str
    scope: str  # "users" or "global"
    xui: str | None  # percent-decoded XUI, None in the global tree
    document: str  # document path below the XUI / "global", e.g. "index"
    node_selector: NodeSelector | None
    namespaces: Mapping[str, str] = field(default_factory=dict)

    @property
    def default_namespace(self) -> str | None:
        return DEFAULT_NAMESPACES.get(self.auid)


_NCNAME = r"[A-Za-z_][\w.\-]*"
_QNAME = rf"(?:{_NCNAME}:)?{_NCNAME}"
_STEP_RE = re.compile(
    rf"""^(?P<name>\*|{_QNAME})
         (?:\[(?P<pos>[0-9]+)\])?
         (?:\[@(?P<att>{_QNAME})=(?:"(?P<dq>[^"<]*)"|'(?P<sq>[^'<]*)')\])?$""",
    re.VERBOSE,
)
_ATTRIBUTE_RE = re.compile(rf"^@(?P<att>{_QNAME})$")
_XMLNS_RE = re.compile(r"xmlns\(\s*(" + _NCNAME + r")\s*=\s*([^)\s]+)\s*\)")


def _split_steps(text: str) -> list[str]:
    """Split on "/" outside quoted attribute values (values may hold "/")."""
    parts: list[str] = []
    current: list[str] = []
    quote: str | None = None
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "/":
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    if quote:
        raise XCAPError(400, "unterminated quote in node selector")
    parts.append("".join(current))
    return parts


_REFERENCE_RE = re.compile(r"&(?:#x([0-9A-Fa-f]+)|#([0-9]+)|(amp|lt|gt|quot|apos));")
_PREDEFINED = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}


def _decode_att_value(value: str, step: str) -> str:
    """Resolve the references an AttValue may hold (XML 1.0 §2.3); bare "&" is bad."""
    if "&" in _REFERENCE_RE.sub("", value):
        raise XCAPError(400, f"bad reference in attribute value of {step!r}")

    def resolve(match: re.Match[str]) -> str:
        if match[1]:
            return chr(int(match[1], 16))
        if match[2]:
            return chr(int(match[2]))
        return _PREDEFINED[match[3]]

    return _REFERENCE_RE.sub(resolve, value)


def parse_node_selector(text: str) -> NodeSelector:
    """Parse the decoded node selector grammar of RFC 4825 §6.3."""
    if not text:
        raise XCAPError(400, "empty node selector")
    raw_steps = _split_steps(text)
    attribute: str | None = None
    namespace_selector = False
    last = raw_steps[-1]
    if last == "namespace::*":
        namespace_selector = True
        raw_steps = raw_steps[:-1]
    elif last.startswith("@"):
        match = _ATTRIBUTE_RE.match(last)
        if not match:
            raise XCAPError(400, f"bad attribute selector {last!r}")
        attribute = match["att"]
        raw_steps = raw_steps[:-1]
    if not raw_steps:
        raise XCAPError(400, "node selector has no element step")
    steps = []
    for raw in raw_steps:
        match = _STEP_RE.match(raw)
        if not match:
            # Extension selectors (§6.3) are not understood by this server.
            raise XCAPError(400, f"bad node selector step {raw!r}")
        position = int(match["pos"]) if match["pos"] is not None else None
        if position == 0:
            raise XCAPError(400, f"position must be >= 1 in {raw!r}")
        value = match["dq"] if match["dq"] is not None else match["sq"]
        if value is not None:
            value = _decode_att_value(value, raw)
        steps.append(Step(match["name"], position, (match["att"], value) if match["att"] else None))
    return NodeSelector(tuple(steps), attribute, namespace_selector)


def parse_xmlns_query(query: str) -> dict[str, str]:
    """The prefix bindings of the xmlns() xpointer parts of the query (§6.4).

    Other xpointer schemes MUST be ignored (§6.4), so only xmlns() is read."""
    return {prefix: uri for prefix, uri in _XMLNS_RE.findall(unquote(query))}


def parse_xcap_uri(path: str, query: str = "") -> XCAPRef:
    """Parse a request path relative to the XCAP root (§6.1-§6.4).

    `path` is percent-encoded as on the wire, e.g.
    "/resource-lists/users/sip:alice@example.com/index/~~/resource-lists/list%5B@name=%22friends%22%5D".
    """
    document_part, separator, selector_part = path.partition("/" + NODE_SELECTOR_SEPARATOR)
    if separator and selector_part and not selector_part.startswith("/"):
        raise XCAPError(404, "node selector separator must be a whole path segment")
    segments = document_part.strip("/").split("/")
    if len(segments) < 3 or any(not segment for segment in segments):
        raise XCAPError(404, "document selector needs AUID, tree and document")
    auid, scope = unquote(segments[0]), segments[1]
    if scope == "users":  # §6.2: the XUI is the segment after "users"
        if len(segments) < 4:
            raise XCAPError(404, "users tree needs an XUI and a document")
        xui: str | None = unquote(segments[2])
        document_segments = segments[3:]
    elif scope == "global":
        xui = None
        document_segments = segments[2:]
    else:
        raise XCAPError(404, f"second path segment must be users or global, not {scope!r}")
    node_selector = None
    if separator:
        node_selector = parse_node_selector(unquote(selector_part[1:]))
    return XCAPRef(
        auid=auid,
        scope=scope,
        xui=xui,
        document="/".join(unquote(segment) for segment in document_segments),
        node_selector=node_selector,
        namespaces=parse_xmlns_query(query),
    )


# ---------------------------------------------------------------- parsing

class _Tree:
    """A parsed document: root plus the namespace declarations of each element."""

    def __init__(self, root: ET.Element, declarations: dict[int, dict[str, str]], xml_decl: bool) -> None:
        self.root = root
        self.declarations = declarations  # id(element) -> {prefix: uri} declared on it
        self.xml_decl = xml_decl
        self.parents: dict[int, ET.Element] = {}
        self.reindex()

    def reindex(self) -> None:
        self.parents = {id(child): parent for parent in self.root.iter() for child in parent}

    def scope(self, element: ET.Element) -> dict[str, str]:
        """Namespace bindings in scope at `element` (nearest declaration wins)."""
        chain = [element]
        while id(chain[-1]) in self.parents:
            chain.append(self.parents[id(chain[-1])])
        bindings: dict[str, str] = {}
        for ancestor in reversed(chain):
            bindings.update(self.declarations.get(id(ancestor), {}))
        return bindings


class _RecordingBuilder(ET.TreeBuilder):
    """TreeBuilder that keeps comments/PIs and notes each element's xmlns decls."""

    def __init__(self) -> None:
        super().__init__(insert_comments=True, insert_pis=True)
        self.pending: dict[str, str] = {}
        self.declarations: dict[int, dict[str, str]] = {}

    def start_ns(self, prefix: str, uri: str) -> None:
        self.pending[prefix or ""] = uri

    def start(self, tag, attrs):  # type: ignore[no-untyped-def]
        element = super().start(tag, attrs)
        if self.pending:
            self.declarations[id(element)] = self.pending
            self.pending = {}
        return element


def _refuse_dtd(data: bytes) -> None:
    """Refuse DOCTYPE and entity declarations before building any tree.

    This stops entity expansion bombs and external entities; XCAP documents
    never need a DTD (RFC 4825 §8.2.2 only asks for well-formed UTF-8)."""
    checker = xml.parsers.expat.ParserCreate()

    def refuse(*_args: object) -> None:
        raise XCAPError(409, "DOCTYPE and entity declarations are not allowed", "not-well-formed")

    checker.StartDoctypeDeclHandler = refuse
    checker.EntityDeclHandler = refuse
    checker.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    try:
        checker.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise XCAPError(409, f"not well-formed: {exc}", "not-well-formed") from None


def _parse(data: bytes, error_element: str = "not-well-formed", wrapper_scope: Mapping[str, str] | None = None) -> tuple[ET.Element, dict[int, dict[str, str]]]:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise XCAPError(409, "body is not UTF-8", "not-utf-8") from None
    if wrapper_scope is not None:
        # §8.2.3: a fragment is interpreted with the bindings in scope at its parent.
        decls = "".join(
            f' xmlns{":" + prefix if prefix else ""}="{_escape(uri, True)}"'
            for prefix, uri in wrapper_scope.items()
        )
        data = f"<xcap-wrapper{decls}>".encode() + data + b"</xcap-wrapper>"
    try:
        _refuse_dtd(data)
    except XCAPError as exc:
        raise XCAPError(409, exc.reason, error_element) from None
    builder = _RecordingBuilder()
    parser = ET.XMLParser(target=builder)
    try:
        parser.feed(data)
        root = parser.close()
    except ET.ParseError as exc:
        raise XCAPError(409, f"not well-formed: {exc}", error_element) from None
    return root, builder.declarations


def parse_root(doc: bytes) -> ET.Element:
    """The root element of a whole document, parsed with the same hardening (no DTDs);
    XCAPError 409 <not-well-formed>/<not-utf-8> otherwise (§8.2.2)."""
    return _parse(doc)[0]


def _parse_document(doc: bytes) -> _Tree:
    root, declarations = _parse(doc)
    return _Tree(root, declarations, doc.lstrip().startswith(b"<?xml"))


# ---------------------------------------------------------------- serialising

def _escape(text: str, attribute: bool = False) -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if attribute:
        text = text.replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")
    return text


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        uri, _, local = tag[1:].partition("}")
        return uri, local
    return None, tag


def _serialize(tree: _Tree, element: ET.Element, out: list[str], scope: dict[str, str], emit: dict[str, str]) -> None:
    """Write `element` with prefixes from the document's own declarations."""
    if element.tag is ET.Comment:
        out.append(f"<!--{element.text or ''}-->")
    elif element.tag is ET.ProcessingInstruction:
        out.append(f"<?{element.text or ''}?>")
    else:
        scope = {**scope, **emit}
        declared = dict(emit)
        uri, local = _split(element.tag)

        def prefix_for(namespace: str | None, is_attribute: bool) -> str:
            if namespace is None:
                if not is_attribute and scope.get(""):
                    scope[""] = declared[""] = ""  # undeclare the default namespace
                return ""
            if not is_attribute and scope.get("") == namespace:
                return ""
            for prefix, bound in scope.items():
                if prefix and bound == namespace:
                    return prefix + ":"
            counter = len(scope)
            while f"ns{counter}" in scope:  # never shadow a prefix in use
                counter += 1
            prefix = f"ns{counter}"
            scope[prefix] = declared[prefix] = namespace
            return prefix + ":"

        name = prefix_for(uri, False) + local
        attributes = []
        for key, value in element.attrib.items():
            attr_uri, attr_local = _split(key)
            attributes.append(f' {prefix_for(attr_uri, True)}{attr_local}="{_escape(value, True)}"')
        namespace_decls = "".join(
            f' xmlns{":" + prefix if prefix else ""}="{_escape(bound, True)}"' for prefix, bound in declared.items()
        )
        out.append(f"<{name}{namespace_decls}{''.join(attributes)}")
        if element.text is None and len(element) == 0:
            out.append("/>")
        else:
            out.append(">" + _escape(element.text or ""))
            for child in element:
                _serialize(tree, child, out, scope, tree.declarations.get(id(child), {}))
                out.append(_escape(child.tail or ""))  # whitespace is kept (§6.3)
            out.append(f"</{name}>")


def _element_to_string(tree: _Tree, element: ET.Element, standalone: bool) -> str:
    """Serialise one element; `standalone` declares every binding in scope."""
    out: list[str] = []
    emit = tree.scope(element) if standalone else tree.declarations.get(id(element), {})
    _serialize(tree, element, out, {}, dict(emit))
    return "".join(out)


def _document_bytes(tree: _Tree) -> bytes:
    body = _element_to_string(tree, tree.root, standalone=False)
    prologue = '<?xml version="1.0" encoding="UTF-8"?>\n' if tree.xml_decl else ""
    return (prologue + body).encode("utf-8")


# ---------------------------------------------------------------- selection

class _Resolver:
    """Expands selector QNames with the xmlns() bindings and default namespace (§6.3)."""

    def __init__(self, namespaces: Mapping[str, str] | None, default_namespace: str | None) -> None:
        self.namespaces = dict(namespaces or {})
        self.default_namespace = default_namespace

    def element_tag(self, qname: str) -> str:
        prefix, _, local = qname.rpartition(":")
        if prefix:
            if prefix not in self.namespaces:
                raise XCAPError(400, f"prefix {prefix!r} has no xmlns() binding in the query")
            return f"{{{self.namespaces[prefix]}}}{local}"
        return f"{{{self.default_namespace}}}{local}" if self.default_namespace else local

    def attribute_key(self, qname: str) -> str:
        prefix, _, local = qname.rpartition(":")
        if prefix:  # an unprefixed attribute QName is in no namespace (§6.3)
            if prefix not in self.namespaces:
                raise XCAPError(400, f"prefix {prefix!r} has no xmlns() binding in the query")
            return f"{{{self.namespaces[prefix]}}}{local}"
        return local


def _is_element(node: ET.Element) -> bool:
    return isinstance(node.tag, str)  # comments and PIs cannot be selected (§6.3)


def _candidates(context: list[ET.Element], step: Step, resolver: _Resolver) -> list[ET.Element]:
    """Apply one step to the children of the context, per §6.3; may return 0..n."""
    children = [child for child in context if _is_element(child)]
    if step.name != "*":
        tag = resolver.element_tag(step.name)
        children = [child for child in children if child.tag == tag]
    if step.position is not None:
        children = children[step.position - 1 : step.position]
    if step.attribute is not None:
        key, value = resolver.attribute_key(step.attribute[0]), step.attribute[1]
        children = [child for child in children if child.get(key) == value]
    return children


def _select_element(root: ET.Element, steps: tuple[Step, ...], resolver: _Resolver) -> ET.Element | None:
    """The element selected by `steps`, or None on no-match or invalid (§6.3)."""
    context: list[ET.Element] = [root]  # the document node's only child is the root
    selected: ET.Element | None = None
    for step in steps:
        found = _candidates(context, step, resolver)
        if len(found) != 1:  # several elements make the selector invalid (§6.3)
            return None
        selected = found[0]
        context = list(selected)
    return selected


def _coerce(selector: str | NodeSelector) -> NodeSelector:
    return parse_node_selector(selector) if isinstance(selector, str) else selector


# ---------------------------------------------------------------- operations

def get_node(
    doc: bytes,
    selector: str | NodeSelector,
    namespaces: Mapping[str, str] | None = None,
    default_namespace: str | None = None,
) -> bytes:
    """GET of an element, attribute or namespace bindings (§7.6, §7.9, §7.10, §8.3).

    An element comes back with every namespace binding in scope declared on it,
    so it is usable on its own; an attribute comes back as its value; a
    namespace selector gives the element name with its in-scope xmlns decls (§10)."""
    node_selector = _coerce(selector)
    resolver = _Resolver(namespaces, default_namespace)
    tree = _parse_document(doc)
    element = _select_element(tree.root, node_selector.steps, resolver)
    if element is None:
        raise XCAPError(404, "node selector matches no single element")
    if node_selector.attribute is not None:
        value = element.get(resolver.attribute_key(node_selector.attribute))
        if value is None:
            raise XCAPError(404, "attribute not present")
        return value.encode("utf-8")
    if node_selector.namespace_selector:
        bindings = tree.scope(element)
        empty = ET.Element(element.tag)
        out: list[str] = []
        # §10: the selected element, empty, carrying the bindings in scope.
        _serialize(_Tree(empty, {}, False), empty, out, {}, bindings)
        return "".join(out).encode("utf-8")
    return _element_to_string(tree, element, standalone=True).encode("utf-8")


def _attribute_value(fragment: bytes) -> str:
    """Decode a PUT attribute body as an AttValue (§8.2.2), without its quotes."""
    try:
        text = fragment.decode("utf-8")
    except UnicodeDecodeError:
        raise XCAPError(409, "attribute value is not UTF-8", "not-utf-8") from None
    if "<" in text or ('"' in text and "'" in text):
        raise XCAPError(409, "not a valid attribute value", "not-xml-att-value")
    quote = "'" if '"' in text else '"'
    try:
        root, _ = _parse(f"<v a={quote}{text}{quote}/>".encode(), "not-xml-att-value")
    except XCAPError as exc:
        raise XCAPError(409, exc.reason, "not-xml-att-value") from None
    return root.get("a", "")


def put_node(
    doc: bytes,
    selector: str | NodeSelector,
    fragment: bytes,
    namespaces: Mapping[str, str] | None = None,
    default_namespace: str | None = None,
) -> bytes:
    """PUT of an element or attribute: replace it, or insert it (§8.2.1-§8.2.4)."""
    node_selector = _coerce(selector)
    if node_selector.namespace_selector:
        # §7.10: namespace bindings cannot be set; §8.4 gives 405 for DELETE likewise.
        raise XCAPError(405, "namespace bindings cannot be PUT")
    resolver = _Resolver(namespaces, default_namespace)
    tree = _parse_document(doc)

    if node_selector.attribute is not None:
        value = _attribute_value(fragment)
        element = _select_element(tree.root, node_selector.steps, resolver)
        if element is None:  # §8.2.1: the parent must be a single element
            raise XCAPError(409, "parent element not found", "no-parent")
        element.set(resolver.attribute_key(node_selector.attribute), value)
        # Setting an attribute the selector's own predicates test can make the
        # URI select something else afterwards (§8.2.3 cannot-insert rule).
        if _select_element(tree.root, node_selector.steps, resolver) is not element:
            raise XCAPError(409, "the selector would no longer select the element", "cannot-insert")
        return _document_bytes(tree)

    parent_steps, target = node_selector.steps[:-1], node_selector.steps[-1]
    if parent_steps:
        parent = _select_element(tree.root, parent_steps, resolver)
        if parent is None:
            raise XCAPError(409, "parent element not found", "no-parent")
    else:
        parent = None  # the target is the root element itself
    scope = tree.scope(parent) if parent is not None else {}
    new_root, new_declarations = _parse(fragment, "not-xml-frag", wrapper_scope=scope)
    new_elements = [child for child in new_root if _is_element(child)]
    # §8.2.2: the body must be exactly one element (no stray text or comments).
    if len(new_elements) != 1 or len(new_root) != 1 or (new_root.text or "").strip() or (new_elements[0].tail or "").strip():
        raise XCAPError(409, "body must be a single XML element", "not-xml-frag")
    new_element = new_elements[0]
    new_element.tail = None
    new_declarations.pop(id(new_root), None)  # the wrapper's bindings are the parent's scope
    tree.declarations.update(new_declarations)

    if parent is None:
        # Replacing the root element through "~~/root": the whole document.
        if _candidates([tree.root], target, resolver) != [tree.root]:
            raise XCAPError(409, "root element cannot be inserted", "cannot-insert")
        tree.declarations.setdefault(id(new_element), {}).update(
            {k: v for k, v in scope.items() if k not in new_declarations.get(id(new_element), {})}
        )
        tree = _Tree(new_element, tree.declarations, tree.xml_decl)
        if _select_element(tree.root, node_selector.steps, resolver) is not new_element:
            raise XCAPError(409, "the selector would not select the new root", "cannot-insert")
        return _document_bytes(tree)

    existing = _candidates(parent, target, resolver)
    children = list(parent)
    if len(existing) == 1:  # §8.2.4 replacement, in place, keeping the tail
        index = children.index(existing[0])
        new_element.tail = existing[0].tail
        parent.remove(existing[0])
        parent.insert(index, new_element)
    else:
        _insert(parent, target, new_element, resolver)
    tree.reindex()
    # §8.2.3: after the PUT the request URI must select the new element.
    if _select_element(tree.root, node_selector.steps, resolver) is not new_element:
        raise XCAPError(409, "the selector would not select the inserted element", "cannot-insert")
    return _document_bytes(tree)


def _insert_after(parent: ET.Element, sibling: ET.Element, new_element: ET.Element) -> None:
    # Directly after the sibling: whitespace/comments that followed it stay after
    # the new element, so "as many sibling nodes as possible" come after it.
    new_element.tail = sibling.tail
    sibling.tail = None
    parent.insert(list(parent).index(sibling) + 1, new_element)


def _insert_before(parent: ET.Element, sibling: ET.Element, new_element: ET.Element) -> None:
    new_element.tail = None
    parent.insert(list(parent).index(sibling), new_element)


def _insert(parent: ET.Element, target: Step, new_element: ET.Element, resolver: _Resolver) -> None:
    """Place a new child per the three cases of RFC 4825 §8.2.3."""
    elements = [child for child in parent if _is_element(child)]
    if target.name == "*":
        same_name = elements
    else:
        tag = resolver.element_tag(target.name)
        same_name = [child for child in elements if child.tag == tag]
    position = target.position
    if position is None or not same_name:
        if same_name:
            _insert_after(parent, same_name[-1], new_element)  # "earliest last"
        else:
            # No sibling with this name: last among all children, after any
            # trailing text/comments (a position > 1 then fails the re-check).
            parent.append(new_element)
        return
    if position == 1:
        _insert_before(parent, same_name[0], new_element)  # before the first of its kind
        return
    if len(same_name) < position - 1:
        raise XCAPError(409, f"fewer than {position - 1} siblings precede position {position}", "cannot-insert")
    _insert_after(parent, same_name[position - 2], new_element)  # "earliest nth"


def delete_node(
    doc: bytes,
    selector: str | NodeSelector,
    namespaces: Mapping[str, str] | None = None,
    default_namespace: str | None = None,
) -> bytes:
    """DELETE of an element or attribute (§7.5, §7.8, §8.4)."""
    node_selector = _coerce(selector)
    if node_selector.namespace_selector:
        raise XCAPError(405, "namespace bindings cannot be deleted")  # §8.4, Allow: GET
    resolver = _Resolver(namespaces, default_namespace)
    tree = _parse_document(doc)
    element = _select_element(tree.root, node_selector.steps, resolver)
    if element is None:
        raise XCAPError(404, "node selector matches no single element")
    if node_selector.attribute is not None:
        key = resolver.attribute_key(node_selector.attribute)
        if key not in element.attrib:
            raise XCAPError(404, "attribute not present")
        del element.attrib[key]
        return _document_bytes(tree)
    parent = tree.parents.get(id(element))
    if parent is None:
        raise XCAPError(409, "the root element cannot be deleted; delete the document", "cannot-delete")
    _remove_keeping_whitespace(parent, element)
    tree.reindex()
    # §8.4: a DELETE must be idempotent; if the URI now selects another node, refuse.
    if _select_element(tree.root, node_selector.steps, resolver) is not None:
        raise XCAPError(409, "the selector would then select another element", "cannot-delete")
    return _document_bytes(tree)


def _remove_keeping_whitespace(parent: ET.Element, element: ET.Element) -> None:
    """Remove `element` but keep the text that followed it (§8.4)."""
    children = list(parent)
    index = children.index(element)
    tail = element.tail or ""
    if index == 0:
        parent.text = (parent.text or "") + tail
    else:
        previous = children[index - 1]
        previous.tail = (previous.tail or "") + tail
    parent.remove(element)


# ---------------------------------------------------------------- errors

def error_document(tag: str, **details: object) -> bytes:
    """An application/xcap-error+xml conflict report (RFC 4825 §11).

    `phrase` becomes the phrase attribute; `exists` (list of field URIs, for
    <uniqueness-failure>) and `alt_values` become <exists field=..><alt-value>;
    `ancestor` (for <no-parent>) becomes the <ancestor> child."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", tag):
        raise ValueError(f"bad xcap-error element {tag!r}")
    phrase = details.pop("phrase", None)
    attributes = f' phrase="{_escape(str(phrase), True)}"' if phrase is not None else ""
    children: list[str] = []
    ancestor = details.pop("ancestor", None)
    if ancestor is not None:
        children.append(f"<ancestor>{_escape(str(ancestor))}</ancestor>")
    exists = details.pop("exists", None) or []
    alt_values = details.pop("alt_values", None) or []
    for field_uri in exists:  # type: ignore[attr-defined]
        alts = "".join(f"<alt-value>{_escape(str(alt))}</alt-value>" for alt in alt_values)  # type: ignore[attr-defined]
        children.append(f'<exists field="{_escape(str(field_uri), True)}">{alts}</exists>')
    if details:
        raise ValueError(f"unknown xcap-error details {sorted(details)}")
    inner = f"<{tag}{attributes}>{''.join(children)}</{tag}>" if children else f"<{tag}{attributes}/>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<xcap-error xmlns="{XCAP_ERROR_NS}">{inner}</xcap-error>\n'
    ).encode("utf-8")
