"""Privacy rules: the common-policy subset (RFC 4745) sipim evaluates.

Sans-IO.  A user's ``org.sipim.im-rules`` document is a <ruleset> of rules;
each rule has conditions (§7: identity with <one>/<many>/<except>, validity;
<sphere> and unknown conditions are FALSE because sipim keeps no sphere state)
and permissions in the ``urn:sipim:xml:ns:im-rules`` namespace:

- action ``<im-handling>`` block | allow (ordered, combined by maximum): may
  this identity message me;
- transformation ``<provide-profile>`` (boolean): may it read my profile;
- transformation ``<provide-number>`` (boolean): may it find me by my number.

RFC 4745 §10.2: permissions of all matching rules are combined, each on its
own; a permission a rule does not state takes its lowest value (block/false).
So rules only ever grant, and "block X" is written as an exception to the
rule that grants everyone (<many><except id="X"/></many>), which is exactly
what the JSON API's canonical document does.

A user without a rules document gets the server default: everything allowed
(a new user can be messaged, looked up and seen until they decide otherwise).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from functools import lru_cache
from dataclasses import dataclass

from sipim.sip.errors import SIPParseError
from sipim.sip.uri import SipURI, TelURI, parse_uri
from sipim.xdm.usages import CP_NS, IR_NS, IM_HANDLING_VALUES, xml_datetime, validate_im_rules
from sipim.xdm.xcap import parse_root


@dataclass(frozen=True, slots=True)
class Permissions:
    im_handling: str = "block"
    provide_profile: bool = False
    provide_number: bool = False

    @property
    def may_message(self) -> bool:
        return self.im_handling == "allow"


ALLOW_ALL = Permissions("allow", True, True)
NOTHING = Permissions()


@lru_cache(maxsize=65536)  # the IM server asks for every MESSAGE to a user with rules
def canonical_identity(uri: str) -> str:
    """An identity as rules compare it (RFC 4745 §7.2 ids are URIs): SIP URIs as
    ``sip:user@host`` (host lower-cased, parameters dropped, sips same as sip),
    tel URIs as ``tel:+digits``; anything else lower-cased as written."""
    text = uri.strip()
    try:
        parsed = parse_uri(text)
    except (SIPParseError, ValueError):
        return text.lower()
    if isinstance(parsed, SipURI):
        user = parsed.user or ""
        return f"sip:{user}@{parsed.host.lower()}" if user else f"sip:{parsed.host.lower()}"
    if isinstance(parsed, TelURI):
        return "tel:" + "".join(c for c in parsed.number if c.isdigit() or c == "+")
    return text.lower()


def _domain_of(identity: str) -> str:
    _, _, host = identity.rpartition("@")
    return _ascii_domain(host) if "@" in identity else ""


@lru_cache(maxsize=65536)
def _ascii_domain(domain: str) -> str:
    """RFC 4745 §7.1.3: compare domains after ToASCII (RFC 3490), label by label."""
    text = domain.strip().lower()
    try:
        return text.encode("idna").decode("ascii")
    except UnicodeError:
        return text


def _q(local: str, ns: str = CP_NS) -> str:
    return f"{{{ns}}}{local}"


class _Rule:
    def __init__(self, element: ET.Element) -> None:
        self.id = element.get("id", "")
        self.identity: list[tuple] | None = None
        self.validity: list[tuple[float, float]] | None = None
        self.impossible = False  # a condition that can never be TRUE here
        self.im_handling = 0
        self.provide_profile = False
        self.provide_number = False
        for part in element:
            if part.tag == _q("conditions"):
                self._conditions(part)
            elif part.tag == _q("actions"):
                for action in part:
                    if action.tag == _q("im-handling", IR_NS):
                        self.im_handling = max(self.im_handling, IM_HANDLING_VALUES.index((action.text or "").strip()))
            elif part.tag == _q("transformations"):
                for transformation in part:
                    value = (transformation.text or "").strip() in ("true", "1")
                    if transformation.tag == _q("provide-profile", IR_NS):
                        self.provide_profile |= value
                    elif transformation.tag == _q("provide-number", IR_NS):
                        self.provide_number |= value

    def _conditions(self, conditions: ET.Element) -> None:
        for condition in conditions:
            if not isinstance(condition.tag, str):
                continue
            if condition.tag == _q("identity"):
                matchers: list[tuple] = []
                for child in condition:
                    if child.tag == _q("one"):
                        matchers.append(("one", canonical_identity(child.get("id", ""))))
                    elif child.tag == _q("many"):
                        domain = child.get("domain")
                        excepted_ids = {canonical_identity(e.get("id", "")) for e in child
                                        if e.tag == _q("except") and e.get("id") is not None}
                        excepted_domains = {_ascii_domain(e.get("domain", "")) for e in child
                                            if e.tag == _q("except") and e.get("domain") is not None}
                        matchers.append(("many", _ascii_domain(domain) if domain is not None else None,
                                         excepted_ids, excepted_domains))
                    # RFC 4745 §7.1.1: an unknown child evaluates to FALSE (adds nothing to the OR).
                self.identity = (self.identity or []) + [("all", matchers)]
            elif condition.tag == _q("validity"):
                parts = [p for p in condition if isinstance(p.tag, str)]
                self.validity = [(xml_datetime(parts[i].text or "").timestamp(),
                                  xml_datetime(parts[i + 1].text or "").timestamp())
                                 for i in range(0, len(parts) - 1, 2)]
            else:
                # <sphere> (no sphere state is kept) and conditions from unknown
                # namespaces (RFC 4745 §7) evaluate to FALSE.
                self.impossible = True

    def matches(self, identity: str, domain: str, now: float) -> bool:
        """RFC 4745 §10.1: a rule matches when all its conditions are TRUE."""
        if self.impossible:
            return False
        if self.validity is not None and not any(start <= now < end for start, end in self.validity):
            return False  # §7.4: within at least one from/until pair
        if self.identity is not None:
            for _, matchers in self.identity:  # several <identity> elements: AND
                if not any(_identity_matches(m, identity, domain) for m in matchers):
                    return False  # §7.1.1: the children of <identity> are ORed
        return True


def _identity_matches(matcher: tuple, identity: str, domain: str) -> bool:
    if matcher[0] == "one":  # §7.1.2
        return identity == matcher[1]
    _, many_domain, excepted_ids, excepted_domains = matcher
    if many_domain is not None and domain != many_domain:  # §7.1.3.3
        return False
    # §7.1.3.2: excepted users and domains are left out (their results are ORed).
    return identity not in excepted_ids and domain not in excepted_domains


class Policy:
    """A parsed rule set; ``evaluate`` gives the combined permissions for one requester."""

    def __init__(self, rules: list[_Rule]) -> None:
        self.rules = rules
        # Only <validity> makes the answer change with the clock (RFC 4745 §7.4).
        self.time_dependent = any(rule.validity is not None for rule in rules)

    def evaluate(self, requester: str, now: float) -> Permissions:
        identity = canonical_identity(requester)
        domain = _domain_of(identity)
        matching = [rule for rule in self.rules if rule.matches(identity, domain, now)]
        # RFC 4745 §10.2: each permission combined separately; absent = lowest value.
        return Permissions(
            im_handling=IM_HANDLING_VALUES[max((r.im_handling for r in matching), default=0)],
            provide_profile=any(r.provide_profile for r in matching),
            provide_number=any(r.provide_number for r in matching),
        )


def parse_policy(document: bytes) -> Policy:
    """Parse (and validate) an im-rules document; XCAPError 409 if it is not one."""
    root = parse_root(document)
    validate_im_rules(root)
    return Policy([_Rule(rule) for rule in root if rule.tag == _q("rule")])


def permissions_for(policy: Policy | None, requester: str, now: float) -> Permissions:
    """The server default (everything allowed) when the user has no rules document."""
    return ALLOW_ALL if policy is None else policy.evaluate(requester, now)


# ---------------------------------------------------------------- the JSON API's document

EVERYONE_RULE = "everyone"


@dataclass(frozen=True)
class PrivacySettings:
    """What the JSON API edits: one rule granting everyone, minus the blocked."""

    blocked_users: tuple[str, ...] = ()
    blocked_domains: tuple[str, ...] = ()
    profile_visible: bool = True
    number_discoverable: bool = True


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


def build_policy_document(settings: PrivacySettings) -> bytes:
    excepts = "".join(f'<except id="{_escape(canonical_identity(u))}"/>' for u in settings.blocked_users)
    excepts += "".join(f'<except domain="{_escape(_ascii_domain(d))}"/>' for d in settings.blocked_domains)
    many = f"<many>{excepts}</many>" if excepts else "<many/>"
    transformations = (
        f"<ir:provide-profile>{str(settings.profile_visible).lower()}</ir:provide-profile>"
        f"<ir:provide-number>{str(settings.number_discoverable).lower()}</ir:provide-number>")
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<ruleset xmlns="{CP_NS}" xmlns:ir="{IR_NS}">'
            f'<rule id="{EVERYONE_RULE}"><conditions><identity>{many}</identity></conditions>'
            f"<actions><ir:im-handling>allow</ir:im-handling></actions>"
            f"<transformations>{transformations}</transformations></rule></ruleset>\n").encode()


def read_settings(document: bytes | None) -> PrivacySettings | None:
    """The settings a document built by build_policy_document holds; None when the
    document was written some other way (XCAP) and has another shape."""
    if document is None:
        return PrivacySettings()
    root = parse_root(document)
    rules = [r for r in root if r.tag == _q("rule")]
    if len(rules) != 1 or rules[0].get("id") != EVERYONE_RULE:
        return None
    rule = rules[0]
    manys = rule.findall(f"{_q('conditions')}/{_q('identity')}/{_q('many')}")
    if len(manys) != 1 or manys[0].get("domain") is not None:
        return None
    parsed = _Rule(rule)
    if parsed.im_handling != 1 or parsed.validity is not None or parsed.impossible:
        return None
    excepts = manys[0].findall(_q("except"))
    return PrivacySettings(
        blocked_users=tuple(e.get("id", "") for e in excepts if e.get("id") is not None),
        blocked_domains=tuple(e.get("domain", "") for e in excepts if e.get("domain") is not None),
        profile_visible=parsed.provide_profile,
        number_discoverable=parsed.provide_number,
    )
