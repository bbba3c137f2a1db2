"""The XDM server role: users' XCAP documents, the directory, and privacy rules in memory.

I/O on top of the sans-IO modules: the store holds the documents; every write
is a compare-and-swap on the etag (RFC 4825 §8.5), so concurrent writers (two
requests, or two nodes) never lose an update.  The privacy rules of every user
are kept parsed in memory: the IM server asks them on each MESSAGE without a
database round trip.  A change on another node arrives through the store's
change feed (``on_change``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sipim.config import Config
from sipim.core.ratelimit import RateLimiter, local_limiter
from sipim.store.base import Store
from sipim.store.models import AuditRecord, User, XcapDocument
from sipim.phone import InvalidNumber, normalise_e164
from sipim.xdm.policy import ALLOW_ALL, Permissions, Policy, parse_policy
from sipim.xdm.usages import IM_RULES, USAGES
from sipim.xdm.xcap import XCAPError

log = logging.getLogger(__name__)

INDEX = "index"
CAS_ATTEMPTS = 5

# Audit results of the XDM role (the `sipim audit --result` values).
PROFILE_READ = "profile read"
RULES_CHANGED = "rules changed"
XDM_REFUSED = "xdm refused"
ADMIN_ACCESS = "admin access"
DIRECTORY_CHANGED = "directory changed"


class Precondition(Exception):
    """If-Match / If-None-Match failed: 412 (or 304 for a GET's If-None-Match)."""

    def __init__(self, status: int, etag: str | None) -> None:
        super().__init__(status)
        self.status = status
        self.etag = etag


@dataclass(frozen=True)
class WriteResult:
    etag: str | None  # None: the document no longer exists
    created: bool


def new_etag() -> str:
    return uuid.uuid4().hex


def etag_matches(header: str | None, etag: str | None) -> bool:
    """RFC 7232 §3.1/§3.2 list matching: ``*`` matches any existing representation."""
    if header is None:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" and etag is not None:
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if etag is not None and candidate.strip('"') == etag:
            return True
    return False


class PrivacyRules:
    """Every user's parsed rules, in memory: what the IM server asks per MESSAGE."""

    MEMO_LIMIT = 100_000

    def __init__(self, now: Callable[[], float]) -> None:
        self._policies: dict[str, Policy] = {}
        self._now = now
        # (owner, requester) -> permissions, for rules that do not depend on the time:
        # a conversation's messages then cost one dict look-up each.
        self._memo: dict[tuple[str, str], Permissions] = {}

    def set(self, owner: str, document: bytes | None) -> None:
        self._memo.clear()
        if document is None:
            self._policies.pop(owner, None)
            return
        try:
            self._policies[owner] = parse_policy(document)
        except XCAPError as error:  # stored documents were validated; be safe anyway
            log.error("privacy rules of %s unreadable (%s): nothing is granted", owner, error.reason)
            self._policies[owner] = Policy([])

    def permissions(self, owner: str, requester: str) -> Permissions:
        if owner == requester:
            return ALLOW_ALL  # the owner is never hidden from themselves
        policy = self._policies.get(owner)
        if policy is None:
            return ALLOW_ALL
        if policy.time_dependent:
            return policy.evaluate(requester, self._now())
        key = (owner, requester)
        found = self._memo.get(key)
        if found is None:
            if len(self._memo) >= self.MEMO_LIMIT:
                self._memo.clear()
            found = self._memo[key] = policy.evaluate(requester, self._now())
        return found

    # The IM server's interface (sipim/im/pager.py).
    def message_allowed(self, recipient: str, sender: str) -> bool:
        return self.permissions(recipient, sender).may_message

    def number_visible(self, owner: str, requester: str) -> bool:
        return self.permissions(owner, requester).provide_number


class XdmService:
    def __init__(self, config: Config, *, store: Store, get_user: Callable[[str], Awaitable[User | None]],
                 audit: Callable[[AuditRecord], None], now: Callable[[], float] = time.time,
                 make_limiter: Callable[[str, int, float], RateLimiter] | None = None) -> None:
        self.config = config
        self.store = store
        self.get_user = get_user
        self.audit = audit
        self.now = now
        self.privacy = PrivacyRules(now)
        # Number lookups per user and minute, over HTTPS and through number-addressed
        # MESSAGEs alike (worker processes pass a limiter that counts over all of them).
        make = make_limiter or local_limiter
        self._lookups = make("directory-lookups", config.directory_lookups_per_minute, 60.0)
        # Told of every document written here, (auid, owner, filename, content or None):
        # worker processes pass it to each other (sipim/cluster), who `take_change` it.
        self.change_listeners: list[Callable[[str, str, str, bytes | None], None]] = []

    async def start(self) -> None:
        for document in await self.store.list_xcap_documents(IM_RULES):
            if document.filename == INDEX:
                self.privacy.set(document.owner, document.content)

    async def on_change(self, key: str) -> None:
        """A document changed (maybe on another node): refresh what is derived from it."""
        auid, _, rest = key.partition(" ")
        owner, _, filename = rest.partition(" ")
        if auid == IM_RULES and filename == INDEX:
            document = await self.store.get_xcap_document(auid, owner, filename)
            self.privacy.set(owner, document.content if document else None)

    # -- users ------------------------------------------------------------------------
    def owner_of(self, username: str) -> str:
        return f"sip:{username}@{self.config.domain}"

    async def user_for_xui(self, xui: str) -> User | None:
        """The local user an XUI names (RFC 4825 §4: the SIP AOR), or None."""
        text = xui.strip()
        if text.lower().startswith(("sip:", "sips:")):
            text = text.split(":", 1)[1]
        user, at, host = text.partition("@")
        if not at or not user or host.lower() not in self.config.local_domains():
            return None
        return await self.get_user(user)

    # -- documents ----------------------------------------------------------------------
    async def get(self, auid: str, owner: str, filename: str = INDEX) -> XcapDocument | None:
        return await self.store.get_xcap_document(auid, owner, filename)

    async def modify(self, auid: str, owner: str, filename: str,
                     change: Callable[[bytes | None], bytes | None], *,
                     if_match: str | None = None, if_none_match: str | None = None) -> WriteResult:
        """Read, check the preconditions, apply ``change`` (new content, or None to
        delete), validate (§8.2.5) and write with compare-and-swap; on a lost race,
        start over (the preconditions are then checked against the newer document)."""
        usage = USAGES[auid]
        for _ in range(CAS_ATTEMPTS):
            current = await self.store.get_xcap_document(auid, owner, filename)
            etag = current.etag if current else None
            if if_match is not None and not etag_matches(if_match, etag):
                raise Precondition(412, etag)
            if if_none_match is not None and etag_matches(if_none_match, etag):
                raise Precondition(412, etag)
            content = change(current.content if current else None)
            if content is None:
                if current is None:
                    raise XCAPError(404, "no such document")
                if await self.store.delete_xcap_document(auid, owner, filename, current.etag):
                    self._changed(auid, owner, filename, None)
                    return WriteResult(None, False)
                continue
            if len(content) > self.config.xcap_max_document_size:
                raise XCAPError(409, f"document larger than {self.config.xcap_max_document_size} bytes",
                                "constraint-failure")
            usage.validate(content)
            if current is None and usage.documents is None:
                existing = await self.store.list_xcap_documents(auid, owner)
                if len(existing) >= self.config.xcap_max_documents_per_user:
                    raise XCAPError(409, f"at most {self.config.xcap_max_documents_per_user} {auid} documents "
                                         "per user", "constraint-failure")
            document = XcapDocument(auid, owner, filename, content, new_etag(), self.now())
            if await self.store.put_xcap_document(document, etag):
                self._changed(auid, owner, filename, content)
                return WriteResult(document.etag, current is None)
        raise XCAPError(503, "the document is being changed by others; try again")

    def _changed(self, auid: str, owner: str, filename: str, content: bytes | None) -> None:
        self.take_change(auid, owner, filename, content)  # at once here; other nodes via the change feed
        for listener in self.change_listeners:
            listener(auid, owner, filename, content)

    def take_change(self, auid: str, owner: str, filename: str, content: bytes | None) -> None:
        """A document now has this content (None: deleted): what is kept in memory follows."""
        if auid == IM_RULES and filename == INDEX:
            self.privacy.set(owner, content)

    # -- directory -------------------------------------------------------------------------
    def lookup_wait(self, requester: str) -> int | None:
        """Count a number lookup by ``requester``: None when allowed, else the seconds to
        wait.  A bound per user and minute: the directory is not for harvesting."""
        return self._lookups.hit(requester, self.now())

    async def lookup(self, number: str, requester: str) -> list[str]:
        """The User IDs a number leads ``requester`` to: users who hide their number
        from the requester are left out, as if they did not have it.
        Raises InvalidNumber."""
        e164 = normalise_e164(number)
        users = await self.store.users_by_phone(e164, self.config.domain)
        owners = [self.owner_of(u.username) for u in users if not u.disabled]
        return [o for o in owners if self.privacy.number_visible(o, requester)]

    # -- audit ---------------------------------------------------------------------------
    def record(self, *, target: str, username: str | None, source: str, user_agent: str, result: str,
               reason: str, instance_id: str | None = None) -> None:
        self.audit(AuditRecord(ts=self.now(), aor=target, username=username, instance_id=instance_id,
                               user_agent=user_agent[:200], source=source, transport="https", result=result,
                               reason=reason[:300]))


__all__ = ["XdmService", "PrivacyRules", "Precondition", "WriteResult", "InvalidNumber", "etag_matches",
           "PROFILE_READ", "RULES_CHANGED", "XDM_REFUSED", "ADMIN_ACCESS", "DIRECTORY_CHANGED", "INDEX"]
