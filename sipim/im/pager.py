"""Pager-mode instant messaging: the IM server role for SIP MESSAGE (RFC 3428).

The core has already authenticated the sender and asserted who they are
(P-Asserted-Identity, RFC 3325); this role never authenticates by itself.

What happens to an accepted MESSAGE:

1. it is committed to the store, with a history entry for each side, before
   any 2xx is sent -- an acknowledged message survives a crash;
2. it goes to every registered device of the recipient in parallel (or to the
   one device its GRUU names, RFC 5627 §3); the sender's other devices get a
   copy, so each device of a user shows the whole conversation;
3. the sender gets 200 when a device took it within ``im_delivery_wait``, else
   202 (stored: RFC 3428 §7 "Accepted");
4. every device of the recipient that has not had it yet gets it, in order,
   when it next registers, for as long as the message lives.

Each delivery carries the sender's asserted identity in From and
P-Asserted-Identity, never what the sending client wrote, and the body
(a CPIM envelope included) unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import logging
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Protocol

from datetime import datetime, timezone

from sipim.config import Config
from sipim.cpim import CPIMError, CPIMMessage, parse_cpim
from sipim.imdn import (
    DELIVERY,
    PROCESSING,
    IMDNError,
    build_notification_cpim,
    intermediary_may_notify,
    is_notification,
    message_id,
    parse_notification,
    requested_notifications,
)
from sipim.core.gruu import TempGruuCodec
from sipim.core.identity import AssertedIdentity
from sipim.core.writer import StoreWriter
from sipim.im.devices import DeviceGateway
from sipim.sip.clock import Clock
from sipim.sip.message import Request, Response, make_response
from sipim.sip.tokens import random_hex
from sipim.sip.uri import SipURI, TelURI
from sipim.store.base import Store
from sipim.store.models import Binding, HistoryEntry, StoredMessage
from sipim.net import Source
from sipim.phone import InvalidNumber, normalise_e164, number_of

log = logging.getLogger(__name__)

_RECENT_LIMIT = 50_000


class PrivacyPolicy(Protocol):
    """The recipients' privacy rules, answered from memory (sipim/xdm/service.py: PrivacyRules)."""

    def message_allowed(self, recipient: str, sender: str) -> bool: ...

    def number_visible(self, owner: str, requester: str) -> bool: ...


class Refusal(Exception):
    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


# Content codings (RFC 3261 §20.12) the server undoes on receipt.  It reads bodies (CPIM,
# IMDN) and hands them to devices later in requests of its own, so it stores them as
# they are meant to be read and delivers them with no coding at all: a device that did
# not ask for one gets nothing it cannot read.  (liblinphone deflates its IMDNs.)
DECODED_CODINGS = ("gzip", "x-gzip", "deflate")
ACCEPT_ENCODING = "identity, gzip, deflate"


def decode_body(request: Request, max_size: int) -> None:
    """Undo ``request``'s Content-Encoding in place (the body, and the header removed).

    Refusal 415 (with Accept-Encoding, RFC 3261 §8.2.3) for a coding not in
    DECODED_CODINGS, 413 when the decoded body exceeds ``max_size`` (decoding stops
    there: a small body may inflate to gigabytes), 400 when it does not decode."""
    codings = [value.strip().lower() for header in request.headers.get_all("Content-Encoding")
               for value in header.split(",") if value.strip()]
    if not codings:
        return
    body = request.body
    for coding in reversed(codings):  # listed in the order they were applied
        if coding == "identity":
            continue
        if coding not in DECODED_CODINGS:
            raise Refusal(415, "Unsupported Content-Encoding", [("Accept-Encoding", ACCEPT_ENCODING)])
        body = _inflate(body, max_size)
    request.body = body
    request.headers.remove("Content-Encoding")


def _inflate(data: bytes, max_size: int) -> bytes:
    # A zlib or gzip stream (header detected), else raw deflate, which some senders of
    # "deflate" produce.
    for wbits in (zlib.MAX_WBITS | 32, -zlib.MAX_WBITS):
        decompressor = zlib.decompressobj(wbits)
        try:
            decoded = decompressor.decompress(data, max_size + 1)
        except zlib.error:
            continue
        if len(decoded) > max_size or decompressor.unconsumed_tail:
            raise Refusal(413, "Request Entity Too Large (decoded body)")
        if decompressor.eof:
            return decoded
    raise Refusal(400, "Body does not decode as its Content-Encoding says")


def unwrapped(message: StoredMessage) -> StoredMessage | None:
    """A CPIM message as its content alone (RFC 3862 §3: the content's own type and
    body), for a device that refuses message/cpim; None when it is not CPIM (or not
    readable as such)."""
    if message.content_type.split(";", 1)[0].strip().lower() != "message/cpim":
        return None
    try:
        cpim = parse_cpim(message.body)
    except CPIMError:
        return None
    return dataclasses.replace(message, content_type=cpim.content_type or "text/plain", body=cpim.body)


def new_message_id(now: float) -> str:
    """A fresh StoredMessage id: 32 hex digits, the time in milliseconds then 80 random bits.

    Time first: the store's indexes on the id (messages, history) grow at their end,
    so a batch of new messages touches a few index pages rather than one per message.
    """
    return f"{int(now * 1000) & 0xFFFFFFFFFFFF:012x}{random_hex(10)}"


def device_key(binding: Binding) -> str:
    """The stable name of a device: its instance id, or (without one) its binding key."""
    return binding.instance_id or binding.binding_key


def content_type_of(request: Request) -> str:
    value = request.headers.get("Content-Type") or ""
    return value.split(";", 1)[0].strip().lower()


class DeviceHome(Protocol):
    """Another worker process's pager, as the home of a device (sipim/cluster)."""

    def send(self, message: StoredMessage, binding: Binding, stored: bool,
             on_result: Callable[[int], None]) -> None: ...

    def catch_up(self, binding: Binding) -> None: ...


class DeviceHomes(Protocol):
    """Which process delivers to a device: None when it is this one."""

    def home_of(self, binding: Binding) -> DeviceHome | None: ...


class EveryDeviceHere:
    """`DeviceHomes` of a server that is one process."""

    def home_of(self, binding: Binding) -> DeviceHome | None:
        return None


class PagerService:
    def __init__(
        self,
        config: Config,
        *,
        store: Store,
        writer: StoreWriter,
        gateway: DeviceGateway,
        temp_gruus: TempGruuCodec,
        user_exists: Callable[[str], Awaitable[bool]],
        clock: Clock,
        privacy: PrivacyPolicy | None = None,
        lookup_wait: Callable[[str], int | None] | None = None,
        mailboxes: MutableMapping[str, float] | None = None,
        homes: DeviceHomes | None = None,
    ) -> None:
        self._config = config
        self._store = store
        self._writer = writer
        self._gateway = gateway
        self._temp_gruus = temp_gruus
        self._user_exists = user_exists
        # Wall time (message ids, lifetimes and Date headers are stored and sent); the
        # delivery wait runs on its timers.
        self._clock = clock
        self._privacy = privacy
        # Counts a phone-number lookup for a sender: None, or the seconds to wait (the
        # directory's per-user limit, XdmService.lookup_wait).
        self._lookup_wait = lookup_wait
        self._local_domains = config.local_domains()
        # (sender, call_id, cseq) and (sender, imdn id) -> status already answered
        self._recent: OrderedDict[tuple, int] = OrderedDict()
        # Recipients owed stored messages by devices that register later -> until when.
        # Worker processes of one server pass a mapping that also tells the other
        # workers (sipim/cluster ReplicatedMailboxes).
        self.mailboxes: MutableMapping[str, float] = {} if mailboxes is None else mailboxes
        # (message id, device key) being delivered right now
        self._in_flight: set[tuple[str, str]] = set()
        self._catching_up: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        # Behind an external core sipim may be one of several nodes on one database:
        # another node may have stored what a device here is owed, and may be sending
        # the same message to the same device.  Then every delivery is claimed in the
        # store (Store.claim_delivery: one atomic statement) and a registration always
        # asks the store what the device is owed.
        self._shared = config.external_core
        # Worker processes of one server (sipim/cluster) need no claims: every delivery
        # to a device, live or catching up, goes out from one process -- the device's
        # "home" -- whose _in_flight and _catching_up see them all, as with one process.
        # ``homes.home_of(binding)`` gives the home's stand-in when it is another
        # worker, None when it is this one (always, for one process).
        self._homes: DeviceHomes = homes or EveryDeviceHere()
        # A gateway whose device list lives in the shared store refreshes it before
        # a live delivery (a device may have registered through another node a moment ago).
        self._refresh_devices = getattr(gateway, "refresh", None)

    async def start(self) -> None:
        self.mailboxes.update(await self._store.recipients_owed_messages(self._clock.now()))

    # -- receiving -----------------------------------------------------------------
    async def handle(self, request: Request, source: Source, identity: AssertedIdentity | None) -> Response:
        """A MESSAGE (the router's route for it is identified: ``identity`` is set)."""
        assert identity is not None
        content_type = request.headers.get("Content-Type") or ""
        media_type = content_type.split(";", 1)[0].strip().lower()
        try:
            decode_body(request, self._config.im_max_message_size)
            self._check_size_and_type(request, source, media_type)
            recipient, instance = await self._resolve(request, identity.aor)
        except Refusal as refusal:
            response = make_response(request, refusal.status, refusal.reason)
            for name, value in refusal.headers:
                response.headers.add(name, value)
            return response

        cpim = None
        if media_type == "message/cpim":
            try:
                cpim = parse_cpim(request.body, max_size=self._config.im_max_message_size)
            except CPIMError as error:
                return make_response(request, 400, f"Malformed CPIM: {error}"[:120])
        imdn_id = message_id(cpim) if cpim is not None else None
        notification = cpim is not None and is_notification(cpim)
        keys = [(identity.aor, request.call_id, request.cseq.seq)]
        if imdn_id:
            keys.append((identity.aor, imdn_id))
        for key in keys:
            if key in self._recent:
                # A retransmitted or re-sent message is delivered once.
                return make_response(request, self._recent[key], "OK" if self._recent[key] == 200 else "Accepted")

        now = self._clock.now()
        message = StoredMessage(
            id=new_message_id(now), sender=identity.aor, recipient=recipient, target_instance=instance,
            call_id=request.call_id, cseq=request.cseq.seq, imdn_message_id=imdn_id,
            content_type=content_type or "text/plain", body=request.body,
            disposition_notification=(", ".join(sorted(requested_notifications(cpim))) or None) if cpim else None,
            created_at=now,
            expires_at=now + self._expires(request), state="pending")
        if self._privacy is not None and not self._privacy.message_allowed(recipient, identity.aor):
            return self._blocked(request, message, identity, source, cpim, keys, notification)

        history = [
            HistoryEntry(owner=identity.aor, peer=recipient, direction="out", message_id=message.id,
                         imdn_message_id=imdn_id, content_type=message.content_type, body=message.body, ts=now),
            HistoryEntry(owner=recipient, peer=identity.aor, direction="in", message_id=message.id,
                         imdn_message_id=imdn_id, content_type=message.content_type, body=message.body, ts=now),
        ] if recipient != identity.aor and not notification else []
        if not await self._writer.message(message, history):
            self._remember(keys, 200)
            if self._shared:
                # Resent after the node that stored it stopped: make sure it goes out.
                self._spawn(self._deliver_stored_duplicate(identity.aor, imdn_id, request))
            return make_response(request, 200, "OK")  # the store already had it: delivered once
        self.mailboxes[recipient] = max(self.mailboxes.get(recipient, 0.0), message.expires_at)

        self._copy_to_other_devices(message, identity, source)
        delivered = await self._deliver_live(message, identity)
        if delivered:
            # Taken at once: later devices catch up through history, not by replay.
            self._writer.taken_at_once(message.id)
        if notification:
            self._spawn(self._note_disposition(cpim, recipient))
        elif not delivered:
            self._writer.history_status(message.id, "stored")
            if cpim is not None:
                # RFC 5438 §8.1 / §12.2: an intermediary that stored the IM may say so,
                # if the sender asked for processing notifications.
                self._spawn(self._notify(cpim, message, PROCESSING, "stored"))
        status = 200 if delivered else 202
        self._remember(keys, status)
        return make_response(request, status, "OK" if delivered else "Accepted")

    def _blocked(self, request: Request, message: StoredMessage, identity: AssertedIdentity, source: Source,
                 cpim: CPIMMessage | None, keys: list[tuple], notification: bool) -> Response:
        """The recipient's privacy rules block the sender (RFC 4745 rules, sipim/xdm/policy.py):
        nothing reaches the recipient, nothing is stored for them.  ``im_blocked_answer =
        "403"`` says so.  By default ("silent") the sender sees what an accepted message
        gives them: 200 when the recipient has a device online, else 202; the copy on
        their own other devices; and, for a 202, the "stored" processing notification
        when they asked for one (RFC 5438 §8.1) -- so a block is not revealed."""
        if self._config.im_blocked_answer == "403":
            return make_response(request, 403, "Forbidden")
        delivered = bool(self._gateway.devices(message.recipient))
        if not notification:
            # ``message`` is never stored: the sender's side of an accepted one is made from it.
            self._copy_to_other_devices(message, identity, source)
            if not delivered and cpim is not None:
                self._spawn(self._notify(cpim, message, PROCESSING, "stored"))
        status = 200 if delivered else 202
        self._remember(keys, status)
        return make_response(request, status, "OK" if delivered else "Accepted")

    def _check_size_and_type(self, request: Request, source: Source, content_type: str) -> None:
        """``content_type``: the media type, lower case, without parameters."""
        config = self._config
        if not request.body:
            raise Refusal(400, "MESSAGE without a body")
        if source.transport == "udp":
            if len(request.body) > config.im_max_udp_message_size:
                # RFC 3428 §8: too large for UDP; the client should use a stream transport.
                raise Refusal(513, "Message Too Large")
        elif len(request.body) > config.im_max_message_size:
            raise Refusal(413, "Request Entity Too Large")
        if not content_type:
            raise Refusal(400, "MESSAGE without Content-Type")
        if config.im_refuse_other_types and content_type not in config.im_content_types:
            raise Refusal(415, "Unsupported Media Type", [("Accept", ", ".join(config.im_content_types))])

    async def _resolve(self, request: Request, sender: str) -> tuple[str, str | None]:
        """The recipient AOR and, for a GRUU, the one device instance (RFC 5627 §3).

        A phone number (``tel:`` or ``user=phone``) is looked up by the server to
        exactly one User ID; the device does no lookup.
        """
        uri = request.uri
        number = number_of(uri)
        if number is not None and (isinstance(uri, TelURI) or uri.host.lower() in self._local_domains):
            return await self._resolve_number(number, sender), None
        if isinstance(uri, TelURI):
            raise Refusal(404, "Only global (+E.164) numbers are looked up")
        if not isinstance(uri, SipURI):
            raise Refusal(416, "Unsupported URI Scheme")
        if uri.host.lower() not in self._local_domains:
            raise Refusal(403, "Relaying to other domains is not allowed")
        if not uri.user:
            raise Refusal(404, "Not Found")
        instance = None
        user = uri.user
        temp = self._temp_gruus.resolve(user)
        if temp is not None:
            aor, instance = temp.aor, temp.instance_id
        else:
            aor = f"sip:{user}@{self._config.domain}"
            gr = uri.params.get("gr")
            if gr:
                instance = f"<{gr}>"
        if not await self._user_exists(aor):
            raise Refusal(404, "Not Found")
        return aor, instance

    async def _resolve_number(self, number: str, sender: str) -> str:
        try:
            e164 = normalise_e164(number)
        except InvalidNumber:
            raise Refusal(404, "Not a valid phone number") from None
        if self._lookup_wait is not None:
            # 404 or not tells whether a number is a user's: the same per-user bound as the
            # directory's HTTPS lookups, or MESSAGEs to numbers would harvest it instead.
            # (403, not 503: a proxy in front would turn a 503 into a 500, RFC 3261 §16.7.)
            wait = self._lookup_wait(sender)
            if wait is not None:
                raise Refusal(403, "Too many phone-number lookups", [("Retry-After", str(wait))])
        users = await self._store.users_by_phone(e164, self._config.domain)
        if self._privacy is not None:
            # A user who hides their number from the sender does not have it, for them.
            users = [u for u in users
                     if self._privacy.number_visible(f"sip:{u.username}@{self._config.domain}", sender)]
        if not users:
            raise Refusal(404, "No user has this number")
        if len(users) > 1:
            raise Refusal(485, "Ambiguous")  # RFC 3261 §21.4.23
        return f"sip:{users[0].username}@{self._config.domain}"

    def _expires(self, request: Request) -> int:
        requested = request.expires
        lifetime = self._config.deferred_lifetime
        return min(requested, lifetime) if requested else lifetime

    def _remember(self, keys: list[tuple], status: int) -> None:
        for key in keys:
            self._recent[key] = status
        while len(self._recent) > _RECENT_LIMIT:
            self._recent.popitem(last=False)

    # -- delivering ------------------------------------------------------------------
    def build_delivery(self, message: StoredMessage, binding: Binding, *, stored: bool) -> Request:
        """The MESSAGE one device receives: the asserted sender, the body unchanged."""
        uri = self._gateway.request_uri(binding)
        headers = [
            ("Max-Forwards", "70"),
            ("From", f"<{message.sender}>;tag={random_hex(6)}"),
            ("To", f"<{message.recipient}>"),
            ("Call-ID", f"{message.id}.{random_hex(4)}"),
            ("CSeq", "1 MESSAGE"),
            ("P-Asserted-Identity", f"<{message.sender}>"),
            ("Content-Type", message.content_type),
        ]
        if stored:
            # When the message was really sent (RFC 3261 §20.17), for a device catching up.
            headers.append(("Date", email.utils.formatdate(message.created_at, usegmt=True)))
        return Request("MESSAGE", uri, headers, message.body)

    async def _deliver_stored_duplicate(self, sender: str, imdn_id: str | None, request: Request) -> None:
        original = await self._store.find_duplicate(sender, imdn_id, request.call_id, request.cseq.seq)
        if original is None or original.state != "pending":
            return
        self.mailboxes[original.recipient] = max(self.mailboxes.get(original.recipient, 0.0), original.expires_at)
        for binding in self._targets(original):
            self._start_catch_up(binding)

    async def _claim_live(self, message: StoredMessage, targets: list[Binding]) -> list[Binding]:
        """With several nodes: the devices this node won the delivery claim for."""
        if not self._shared:
            return targets
        now = self._clock.now()
        won = await asyncio.gather(*(self._store.claim_delivery(message.id, device_key(b), self._config.node_id, now)
                                     for b in targets))
        return [b for b, ok in zip(targets, won) if ok]

    def _send(self, message: StoredMessage, binding: Binding, *, stored: bool) -> asyncio.Future[int]:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_result(status: int) -> None:
            if not future.done():
                future.set_result(status)

        self._send_to(message, binding, stored, on_result)
        return future

    def _send_to(self, message: StoredMessage, binding: Binding, stored: bool,
                 on_result: Callable[[int], None]) -> None:
        """Send ``message`` to one device; ``on_result`` gets its final status once."""
        home = self._homes.home_of(binding)
        if home is not None:
            home.send(message, binding, stored, on_result)
            return
        key = (message.id, device_key(binding))
        self._in_flight.add(key)

        def done(status: int) -> None:
            self._in_flight.discard(key)
            on_result(status)

        def first_answer(status: int) -> None:
            if status == 415:
                # A device that takes no message/cpim (baresip answers 415, Accept:
                # text/plain) gets what the envelope carries, once: the sender is in the
                # asserted From all the same; only the IMDN requests are lost to it.
                plain = unwrapped(message)
                if plain is not None:
                    self._gateway.send(binding, self.build_delivery(plain, binding, stored=stored), done)
                    return
            done(status)

        self._gateway.send(binding, self.build_delivery(message, binding, stored=stored), first_answer)

    def _targets(self, message: StoredMessage) -> list[Binding]:
        devices = self._gateway.devices(message.recipient)
        if message.target_instance is not None:
            devices = [b for b in devices if b.instance_id == message.target_instance]
        # RFC 5626 §7: one branch per instance (several reg-ids are one device).
        seen: dict[str, Binding] = {}
        for binding in devices:
            seen.setdefault(device_key(binding), binding)
        return list(seen.values())

    async def _deliver_live(self, message: StoredMessage, identity: AssertedIdentity | None) -> bool:
        if self._refresh_devices is not None:
            await self._refresh_devices(message.recipient)
        targets = self._targets(message)
        if targets and self._shared:
            targets = await self._claim_live(message, targets)
        if not targets:
            return False
        # One future for the whole fan-out, settled by the devices' answers (no task
        # or asyncio.wait per message): True at the first 2xx, False once every
        # device failed or im_delivery_wait passed.
        first: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        remaining = len(targets)

        def on_result(binding: Binding, status: int) -> None:
            nonlocal remaining
            remaining -= 1
            # Record every device that took it, also those answering after the sender's
            # 200/202 went out, so catching up never sends it to them again.
            try:
                self._after_live_send(message, binding, status)
            except Exception:
                log.exception("recording the delivery of %s failed", message.id)
            if not first.done():
                if 200 <= status < 300:
                    first.set_result(True)
                elif remaining == 0:
                    first.set_result(False)

        for binding in targets:
            self._send_to(message, binding, False, lambda status, b=binding: on_result(b, status))
        if first.done():
            return first.result()
        timer = self._clock.call_later(self._config.im_delivery_wait,
                                       lambda: first.done() or first.set_result(False))
        try:
            return await first
        finally:
            timer.cancel()

    def _after_live_send(self, message: StoredMessage, binding: Binding, status: int) -> None:
        if 200 <= status < 300:
            self._writer.delivered(message.id, device_key(binding), self._clock.now())
        elif self._shared:
            # Release the claim: the device gets it when it next registers.
            self._spawn(self._store.finish_delivery(message.id, device_key(binding), False, self._clock.now()))

    def _copy_to_other_devices(self, message: StoredMessage, identity: AssertedIdentity, source: Source) -> None:
        """The sender's other devices get what was sent (From = themselves marks it as sent)."""
        if message.recipient == identity.aor:
            return
        origin_flow = source.flow.id if source.flow is not None else None
        origin = f"{source.remote[0]}:{source.remote[1]}"
        for binding in self._gateway.devices(identity.aor):
            if (origin_flow and binding.flow_id == origin_flow) or (not binding.flow_id and binding.source == origin):
                continue
            self._gateway.send(binding, self.build_delivery(message, binding, stored=False), lambda status: None)

    # The home side of ``DeviceHomes`` (sipim/cluster calls these on the device's home).
    def deliver_to_device(self, message: StoredMessage, binding: Binding, stored: bool,
                          on_result: Callable[[int], None]) -> None:
        self._send_to(message, binding, stored, on_result)

    def catch_up_device(self, binding: Binding) -> None:
        self._start_catch_up(binding)

    # -- catching up (RFC 3428 store-and-forward) -------------------------------------
    def on_registered(self, binding: Binding) -> None:
        """A device (re-)registered: send what it has not had yet, oldest first."""
        if self._shared:
            # Another node may have stored what it is owed: the store knows.
            self._start_catch_up(binding)
            return
        owed_until = self.mailboxes.get(binding.aor)
        if owed_until is None:
            return
        if owed_until <= self._clock.now():
            del self.mailboxes[binding.aor]
            return
        self._start_catch_up(binding)

    def on_registered_elsewhere(self, binding: Binding) -> None:
        """Another node recorded this registration (change feed).  That node catches
        the device up; this one looks too when it stored messages for the user itself,
        which closes the race of a message stored here while the device registered there."""
        owed_until = self.mailboxes.get(binding.aor)
        if owed_until is not None and owed_until > self._clock.now():
            self._start_catch_up(binding)

    def _start_catch_up(self, binding: Binding) -> None:
        home = self._homes.home_of(binding)
        if home is not None:
            home.catch_up(binding)
            return
        key = f"{binding.aor} {device_key(binding)}"
        if key in self._catching_up:
            return
        self._catching_up.add(key)
        self._spawn(self._catch_up(binding, key))

    async def _catch_up(self, binding: Binding, key: str) -> None:
        device = device_key(binding)
        try:
            while True:
                now = self._clock.now()
                messages = await self._store.undelivered_for_device(binding.aor, device, binding.instance_id, now)
                messages = [m for m in messages if (m.id, device) not in self._in_flight]
                if not messages:
                    return
                for message in messages:
                    if not await self._store.claim_delivery(message.id, device, self._config.node_id, now):
                        continue
                    status = await self._send(message, binding, stored=True)
                    ok = 200 <= status < 300
                    await self._store.finish_delivery(message.id, device, ok, self._clock.now())
                    if not ok:
                        return  # keep the order: the rest waits for the next registration
        except Exception:
            log.exception("delivering stored messages to %s failed", binding.contact)
        finally:
            self._catching_up.discard(key)

    # -- disposition notifications (RFC 5438) ----------------------------------------
    @property
    def notifier_uri(self) -> str:
        """The IM server's own address, From of the notifications it generates."""
        return f"sip:{self._config.domain}"

    async def _notify(self, original: CPIMMessage, message: StoredMessage, kind: str, status: str) -> None:
        """Send the original sender an IMDN the server itself may generate (§7.2, §8)."""
        if not intermediary_may_notify(original, kind, status):
            return
        try:
            cpim = build_notification_cpim(original, notifier_uri=self.notifier_uri, kind=kind, status=status,
                                           now=datetime.fromtimestamp(self._clock.now(), timezone.utc),
                                           recipient_uri=message.recipient)
        except IMDNError as error:
            log.info("no %s/%s notification for %s: %s", kind, status, message.id, error)
            return
        now = self._clock.now()
        report = StoredMessage(
            id=new_message_id(now), sender=self.notifier_uri, recipient=message.sender, target_instance=None,
            call_id=f"imdn-{message.id}-{status}", cseq=1, imdn_message_id=message_id(cpim),
            content_type="message/cpim", body=cpim.serialize(), disposition_notification=None,
            created_at=now, expires_at=now + self._config.deferred_lifetime, state="pending")
        if not await self._writer.message(report, []):
            return
        self.mailboxes[report.recipient] = max(self.mailboxes.get(report.recipient, 0.0), report.expires_at)
        if await self._deliver_live(report, None):
            self._writer.taken_at_once(report.id)

    async def _note_disposition(self, cpim: CPIMMessage, original_sender: str) -> None:
        """A recipient's IMDN passes through to the sender; history shows the new state."""
        try:
            document = parse_notification(cpim)
        except IMDNError:
            return
        original = await self._store.find_duplicate(original_sender, document.message_id, "", -1)
        if original is not None:
            await self._history_status(original.id, document.status)

    async def _history_status(self, message_id_: str, status: str) -> None:
        self._writer.history_status(message_id_, status)

    # -- housekeeping -------------------------------------------------------------------
    async def expire(self) -> list[StoredMessage]:
        """Stored messages past their lifetime that no device ever received; their
        senders get a "failed" delivery notification where they asked for one (§8.2)."""
        now = self._clock.now()
        expired = await self._store.expire_messages(now)
        for message in expired:
            await self._history_status(message.id, "failed")
            if message.content_type.split(";", 1)[0].strip().lower() == "message/cpim":
                try:
                    original = parse_cpim(message.body, max_size=self._config.im_max_message_size)
                except CPIMError:
                    continue
                await self._notify(original, message, DELIVERY, "failed")
        await self._store.prune_history(now - self._config.history_retention_days * 86400)
        await self._store.purge_messages(now - self._config.deferred_lifetime)
        return expired

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float = 2.0) -> None:
        """Let the deliveries under way finish, for at most ``grace`` seconds on the clock."""
        if not self._tasks:
            return
        deadline: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        timer = self._clock.call_later(grace, lambda: deadline.done() or deadline.set_result(None))
        try:
            pending = set(self._tasks)
            while pending and not deadline.done():
                _, pending = await asyncio.wait(pending | {deadline}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(deadline)
        finally:
            timer.cancel()
