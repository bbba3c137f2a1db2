"""The HTTP front end of the XDM role: XCAP (RFC 4825) at /xcap and a JSON API at /api/v1.

Both sit on the same documents (sipim.xdm.service.XdmService); every route authenticates with
``require_user`` (HTTP digest with the SIP credentials, or a device's bearer
token).  A user reaches only ``users/<own AOR>/``; another user's profile is
readable only as its owner's privacy rules allow; admins (``sipim user admin``)
reach every user's documents and the directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aiohttp import web

from sipim.store.models import User, XcapDocument
from sipim.web.auth import HttpDigestAuth, HttpIdentity, require_user
from sipim.phone import InvalidNumber, normalise_e164
from sipim.xdm.documents import (
    DEFAULT_LIST,
    add_contact,
    build_profile,
    canonical_contact_uri,
    list_contacts,
    read_profile,
    remove_contact,
)
from sipim.xdm.policy import PrivacySettings, build_policy_document, canonical_identity, read_settings
from sipim.xdm.service import (
    ADMIN_ACCESS,
    DIRECTORY_CHANGED,
    INDEX,
    PROFILE_READ,
    RULES_CHANGED,
    XDM_REFUSED,
    Precondition,
    XdmService,
    etag_matches,
)
from sipim.xdm.usages import (
    IM_RULES,
    PROFILE,
    RESOURCE_LISTS,
    USAGES,
    XCAP_CAPS,
    ApplicationUsage,
    xcap_caps_document,
)
from sipim.xdm.xcap import NodeSelector, XCAPError, XCAPRef, delete_node, get_node, parse_xcap_uri, put_node

XCAP_ROOT = "/xcap"
API = "/api/v1"
ELEMENT_TYPE = "application/xcap-el+xml"  # RFC 4825 §15.2.1
ATTRIBUTE_TYPE = "application/xcap-att+xml"  # §15.2.2
NAMESPACES_TYPE = "application/xcap-ns+xml"  # §15.2.3
ERROR_TYPE = "application/xcap-error+xml"  # §11
NO_CACHE = {"Cache-Control": "no-cache"}  # §9: documents change under the client's feet

Handler = Callable[[web.Request, HttpIdentity], Awaitable[web.StreamResponse]]


def _etag_header(etag: str) -> dict[str, str]:
    return {"ETag": f'"{etag}"', **NO_CACHE}


def _source(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return f"{peer[0]}:{peer[1]}" if peer else (request.remote or "")


def _xcap_error(error: XCAPError) -> web.Response:
    body = error.body()
    headers = {"Allow": "GET"} if error.status == 405 else {}
    if body is not None:
        return web.Response(status=error.status, body=body, content_type=ERROR_TYPE, headers=headers)
    return web.Response(status=error.status, text=error.reason + "\n", headers=headers)


def _json_error(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers or None)


def _selected_type(selector: NodeSelector | None, mime_type: str) -> str:
    if selector is None:
        return mime_type
    if selector.namespace_selector:
        return NAMESPACES_TYPE
    return ELEMENT_TYPE if selector.selects_element else ATTRIBUTE_TYPE



async def _json_body(request: web.Request) -> dict[str, object]:
    try:
        value = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise XCAPError(400, "the body must be a JSON object") from None
    if not isinstance(value, dict):
        raise XCAPError(400, "the body must be a JSON object")
    return value


def _json_errors(handler: Handler) -> Handler:
    """The JSON API answers the XDM service's refusals as ``{"error": ...}``."""

    async def answered(request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        try:
            return await handler(request, identity)
        except XCAPError as error:
            return _json_error(error.status, error.reason)
        except Precondition as failed:
            if failed.status == 304:
                return web.Response(status=304, headers=_etag_header(failed.etag or ""))
            return _json_error(412, "the document changed since you read it (If-Match)")

    return answered


def _settings_json(document: XcapDocument | None, settings: PrivacySettings | None) -> dict[str, object]:
    if settings is None:  # rules written over XCAP in a shape the JSON API cannot show as settings
        return {"etag": document.etag if document else None, "custom": True}
    return {"etag": document.etag if document else None, "custom": False,
            "blocked_users": list(settings.blocked_users), "blocked_domains": list(settings.blocked_domains),
            "profile_visible": settings.profile_visible, "number_discoverable": settings.number_discoverable}


class XdmHandlers:
    """The XDM routes: each public coroutine method is the handler of one route,
    called with the authenticated user (see ``add_routes``)."""

    def __init__(self, service: XdmService, *, auth: HttpDigestAuth, domain: str) -> None:
        self._service = service
        self._auth = auth
        self._domain = domain

    def add_routes(self, app: web.Application) -> None:
        def json_api(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
            return require_user(self._auth, _json_errors(handler))

        router = app.router
        router.add_route("*", XCAP_ROOT + "/{tail:.*}", require_user(self._auth, self.xcap))
        router.add_get(f"{API}/contacts", json_api(self.get_contacts))
        router.add_post(f"{API}/contacts", json_api(self.post_contact))
        router.add_delete(f"{API}/contacts", json_api(self.delete_contact))
        router.add_get(f"{API}/lookup", json_api(self.lookup))
        router.add_get(f"{API}/profile", json_api(self.get_own_profile))
        router.add_put(f"{API}/profile", json_api(self.put_own_profile))
        router.add_get(f"{API}/users/{{user}}/profile", json_api(self.get_user_profile))
        router.add_get(f"{API}/privacy", json_api(self.get_privacy))
        router.add_put(f"{API}/privacy", json_api(self.put_privacy))
        router.add_get(f"{API}/users/{{user}}/phones", json_api(self.get_phones))
        router.add_put(f"{API}/users/{{user}}/phones", json_api(self.put_phones))

    # ---------------------------------------------------------------- audit
    def _record(self, request: web.Request, identity: HttpIdentity, target: str, result: str, reason: str) -> None:
        self._service.record(target=target, username=identity.user.username, source=_source(request),
                             user_agent=request.headers.get("User-Agent", ""), result=result,
                             reason=f"{reason} by {identity.aor}", instance_id=identity.device_id)

    def _refuse(self, request: web.Request, identity: HttpIdentity, target: str, what: str) -> None:
        self._record(request, identity, target, XDM_REFUSED, f"{request.method} {what}")

    # ---------------------------------------------------------------- XCAP
    async def xcap(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        service = self._service
        path, _, query = request.raw_path.partition("?")
        try:
            ref = parse_xcap_uri(path[len(XCAP_ROOT):], query)
        except XCAPError as error:
            return _xcap_error(error)
        if request.method not in ("GET", "PUT", "DELETE"):
            # RFC 4825 §8.1: XCAP resources are not processing scripts.
            return web.Response(status=405, headers={"Allow": "GET, PUT, DELETE"})
        if ref.auid == XCAP_CAPS:
            return await self._xcap_caps(request, ref)
        usage = USAGES.get(ref.auid)
        if usage is None or ref.scope != "users":
            return _xcap_error(XCAPError(404, f"no application usage {ref.auid!r} here"))  # §8
        target = await service.user_for_xui(ref.xui or "")
        if target is None:
            if not identity.admin and not usage.others_may_read:
                # Not the caller's own tree: the same 403 whether the user exists or not.
                self._refuse(request, identity, ref.xui or "", f"{ref.auid} document of {ref.xui}")
                return web.Response(status=403, text="these documents belong to another user\n")
            return _xcap_error(XCAPError(404, "no such user"))  # §8: unknown XUI
        owner = service.owner_of(target.username)
        if owner != identity.aor and identity.admin:
            self._record(request, identity, owner, ADMIN_ACCESS, f"{request.method} {request.raw_path[:150]}")
        if owner != identity.aor and not identity.admin:
            # §5.7 default policy: only the owner reads and writes; a profile may be
            # read by others as the owner's privacy rules allow.
            may_read = (usage.others_may_read and request.method == "GET"
                        and service.privacy.permissions(owner, identity.aor).provide_profile)
            if not may_read:
                self._refuse(request, identity, owner, f"{ref.auid} document of {owner}")
                return web.Response(status=403, text="these documents belong to another user\n")
        if usage.documents is not None and ref.document not in usage.documents:
            return _xcap_error(XCAPError(404, f"{ref.auid} has only the documents {sorted(usage.documents)}"))
        try:
            if request.method == "GET":
                return await self._xcap_get(request, identity, ref, usage, owner)
            if request.method == "PUT":
                return await self._xcap_put(request, identity, ref, usage, owner)
            return await self._xcap_delete(request, identity, ref, usage, owner)
        except XCAPError as error:
            return _xcap_error(error)
        except Precondition as failed:
            headers = _etag_header(failed.etag) if failed.etag else {}
            return web.Response(status=failed.status, headers=headers)

    async def _xcap_caps(self, request: web.Request, ref: XCAPRef) -> web.StreamResponse:
        if ref.scope != "global" or ref.document != INDEX:
            return _xcap_error(XCAPError(404, "xcap-caps has only global/index"))
        if request.method != "GET":
            return _xcap_error(XCAPError(405, "the capabilities document is read-only"))
        document = xcap_caps_document()
        etag = hashlib.sha256(document).hexdigest()[:32]
        if etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers=_etag_header(etag))
        try:
            body = (get_node(document, ref.node_selector, ref.namespaces, "urn:ietf:params:xml:ns:xcap-caps")
                    if ref.node_selector else document)
        except XCAPError as error:
            return _xcap_error(error)
        return web.Response(body=body, content_type=_selected_type(ref.node_selector, "application/xcap-caps+xml"),
                            headers=_etag_header(etag))

    async def _xcap_get(self, request: web.Request, identity: HttpIdentity, ref: XCAPRef,
                        usage: ApplicationUsage, owner: str) -> web.StreamResponse:
        document = await self._service.get(ref.auid, owner, ref.document)
        if document is None:
            raise XCAPError(404, "no such document")  # §8.3
        if etag_matches(request.headers.get("If-None-Match"), document.etag):
            raise Precondition(304, document.etag)
        if "If-Match" in request.headers and not etag_matches(request.headers["If-Match"], document.etag):
            raise Precondition(412, document.etag)
        body = (get_node(document.content, ref.node_selector, ref.namespaces, usage.default_namespace)
                if ref.node_selector else document.content)
        if ref.auid == PROFILE:
            self._record(request, identity, owner, PROFILE_READ, f"XCAP GET of the profile of {owner}")
        return web.Response(body=body, headers={"Content-Type": _selected_type(ref.node_selector, usage.mime_type),
                                                **_etag_header(document.etag)})

    async def _xcap_put(self, request: web.Request, identity: HttpIdentity, ref: XCAPRef,
                        usage: ApplicationUsage, owner: str) -> web.StreamResponse:
        selector = ref.node_selector
        if selector is not None and selector.namespace_selector:
            raise XCAPError(405, "namespace bindings cannot be written")  # §8.2
        expected = _selected_type(selector, usage.mime_type)
        if request.content_type != expected:
            return web.Response(status=415, text=f"Content-Type must be {expected}\n")
        body = await request.read()
        existed = False

        def change(current: bytes | None) -> bytes:
            nonlocal existed
            if selector is None:
                existed = current is not None
                return body
            if current is None:
                raise XCAPError(409, "the document does not exist", "no-parent")  # §8.2.1
            try:
                get_node(current, selector, ref.namespaces, usage.default_namespace)
                existed = True
            except XCAPError:
                existed = False
            return put_node(current, selector, body, ref.namespaces, usage.default_namespace)

        result = await self._service.modify(ref.auid, owner, ref.document, change,
                                            if_match=request.headers.get("If-Match"),
                                            if_none_match=request.headers.get("If-None-Match"))
        if ref.auid == IM_RULES:
            self._record(request, identity, owner, RULES_CHANGED, f"XCAP PUT {request.raw_path[:150]}")
        # §8.2.7: 201 for a new document, element or attribute, else 200; an etag always.
        return web.Response(status=200 if existed else 201, headers=_etag_header(result.etag or ""))

    async def _xcap_delete(self, request: web.Request, identity: HttpIdentity, ref: XCAPRef,
                           usage: ApplicationUsage, owner: str) -> web.StreamResponse:
        selector = ref.node_selector
        if selector is not None and selector.namespace_selector:
            raise XCAPError(405, "namespace bindings cannot be deleted")  # §8.4

        def change(current: bytes | None) -> bytes | None:
            if current is None:
                raise XCAPError(404, "no such document")
            if selector is None:
                return None
            return delete_node(current, selector, ref.namespaces, usage.default_namespace)

        result = await self._service.modify(ref.auid, owner, ref.document, change,
                                            if_match=request.headers.get("If-Match"))
        if ref.auid == IM_RULES:
            self._record(request, identity, owner, RULES_CHANGED, f"XCAP DELETE {request.raw_path[:150]}")
        # §8.5: the etag of the document after the deletion, if it still exists.
        return web.Response(status=200, headers=_etag_header(result.etag) if result.etag else NO_CACHE)

    # ---------------------------------------------------------------- users named in requests
    def _identity_of(self, text: str) -> str:
        """``bob``, ``bob@example.com`` or a URI -> the identity rules compare."""
        value = text.strip()
        if ":" not in value:
            value = "sip:" + (value if "@" in value else f"{value}@{self._domain}")
        return canonical_identity(value)

    async def _named_user(self, text: str) -> User | None:
        return await self._service.user_for_xui(text if "@" in text else f"{text}@{self._domain}")

    # ---------------------------------------------------------------- contacts
    async def get_contacts(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        document = await self._service.get(RESOURCE_LISTS, identity.aor)
        return web.json_response({
            "etag": document.etag if document else None,
            "contacts": [c.as_json() for c in list_contacts(document.content if document else None)],
        }, headers=_etag_header(document.etag) if document else NO_CACHE)

    async def post_contact(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        body = await _json_body(request)
        uri, name, list_name = body.get("uri"), body.get("display_name"), body.get("list", DEFAULT_LIST)
        if not isinstance(uri, str) or not isinstance(list_name, str) or not (name is None or isinstance(name, str)):
            raise XCAPError(400, "uri (string) is required; display_name and list are strings")
        uri = canonical_contact_uri(uri)  # a raw number: 409, look it up first
        result = await self._service.modify(RESOURCE_LISTS, identity.aor, INDEX,
                                            lambda current: add_contact(current, uri, name, list_name),
                                            if_match=request.headers.get("If-Match"))
        return web.json_response({"etag": result.etag,
                                  "contact": {"uri": uri, "display_name": name, "list": list_name}},
                                 status=201, headers=_etag_header(result.etag or ""))

    async def delete_contact(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        uri = request.query.get("uri")
        if not uri:
            raise XCAPError(400, "give the contact as ?uri=")
        list_name = request.query.get("list")

        def change(current: bytes | None) -> bytes:
            updated = remove_contact(current, uri, list_name)
            if updated is None:
                try:
                    updated = remove_contact(current, canonical_contact_uri(uri), list_name)
                except XCAPError:
                    updated = None
            if updated is None:
                raise XCAPError(404, f"{uri} is not in your contacts")
            return updated

        result = await self._service.modify(RESOURCE_LISTS, identity.aor, INDEX, change,
                                            if_match=request.headers.get("If-Match"))
        return web.Response(status=204, headers=_etag_header(result.etag or ""))

    # ---------------------------------------------------------------- directory
    async def lookup(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        number = request.query.get("number", "")
        wait = self._service.lookup_wait(identity.aor)
        if wait is not None:
            return _json_error(429, f"too many lookups; try again in {wait} s", **{"Retry-After": str(wait)})
        try:
            found = await self._service.lookup(number, identity.aor)
        except InvalidNumber as error:
            return _json_error(400, str(error))
        if not found:
            return _json_error(404, "no user has this number")
        if len(found) > 1:
            return _json_error(409, "ambiguous: several users have this number")
        return web.json_response({"user_id": found[0], "number": normalise_e164(number)})

    # ---------------------------------------------------------------- profile
    async def _profile_json(self, owner: str, user: User) -> dict[str, object]:
        document = await self._service.get(PROFILE, owner)
        values = read_profile(document.content if document else None)
        if values["display_name"] is None:
            values["display_name"] = user.display_name
        return {"user_id": owner, **values, "etag": document.etag if document else None}

    async def get_own_profile(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        self._record(request, identity, identity.aor, PROFILE_READ, "own profile read")
        return web.json_response(await self._profile_json(identity.aor, identity.user), headers=NO_CACHE)

    async def put_own_profile(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        document = build_profile(await _json_body(request))
        result = await self._service.modify(PROFILE, identity.aor, INDEX, lambda current: document,
                                            if_match=request.headers.get("If-Match"))
        return web.json_response(await self._profile_json(identity.aor, identity.user),
                                 headers=_etag_header(result.etag or ""))

    async def get_user_profile(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        service = self._service
        target = await self._named_user(request.match_info["user"])
        if target is None:
            return _json_error(404, "no such user or no profile visible to you")
        owner = service.owner_of(target.username)
        allowed = (owner == identity.aor or identity.admin
                   or service.privacy.permissions(owner, identity.aor).provide_profile)
        if not allowed:
            self._refuse(request, identity, owner, f"profile of {owner}")
            # The same answer as an unknown user: hiding a profile does not reveal the user.
            return _json_error(404, "no such user or no profile visible to you")
        self._record(request, identity, owner, PROFILE_READ, f"profile of {owner} read")
        return web.json_response(await self._profile_json(owner, target), headers=NO_CACHE)

    # ---------------------------------------------------------------- privacy
    async def get_privacy(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        document = await self._service.get(IM_RULES, identity.aor)
        return web.json_response(_settings_json(document, read_settings(document.content if document else None)),
                                 headers=NO_CACHE)

    async def put_privacy(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        body = await _json_body(request)
        users, domains = body.get("blocked_users", []), body.get("blocked_domains", [])
        if not (isinstance(users, list) and all(isinstance(u, str) and u.strip() for u in users)
                and isinstance(domains, list) and all(isinstance(d, str) and d.strip() for d in domains)):
            raise XCAPError(400, "blocked_users and blocked_domains are lists of strings")
        profile_visible, number_discoverable = body.get("profile_visible", True), body.get("number_discoverable", True)
        if not (isinstance(profile_visible, bool) and isinstance(number_discoverable, bool)):
            raise XCAPError(400, "profile_visible and number_discoverable are true or false")
        settings = PrivacySettings(
            blocked_users=tuple(self._identity_of(u) for u in users),
            blocked_domains=tuple(d.strip().lower() for d in domains),
            profile_visible=profile_visible, number_discoverable=number_discoverable)
        document = build_policy_document(settings)
        result = await self._service.modify(IM_RULES, identity.aor, INDEX, lambda current: document,
                                            if_match=request.headers.get("If-Match"))
        self._record(request, identity, identity.aor, RULES_CHANGED,
                     f"privacy settings: {len(settings.blocked_users)} users, {len(settings.blocked_domains)} "
                     f"domains blocked, profile {'visible' if settings.profile_visible else 'hidden'}, number "
                     f"{'discoverable' if settings.number_discoverable else 'hidden'}")
        return web.json_response(_settings_json(await self._service.get(IM_RULES, identity.aor), settings),
                                 headers=_etag_header(result.etag or ""))

    # ---------------------------------------------------------------- admin: the directory
    async def _admin_target(self, request: web.Request, identity: HttpIdentity) -> User:
        if not identity.admin:
            self._refuse(request, identity, f"sip:{request.match_info['user']}", "directory administration")
            raise XCAPError(403, "only administrators manage the directory")
        target = await self._named_user(request.match_info["user"])
        if target is None:
            raise XCAPError(404, "no such user")
        return target

    async def get_phones(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        target = await self._admin_target(request, identity)
        return web.json_response({"user_id": self._service.owner_of(target.username), "phones": list(target.phones)})

    async def put_phones(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        service = self._service
        target = await self._admin_target(request, identity)
        phones = (await _json_body(request)).get("phones")
        if not isinstance(phones, list) or not all(isinstance(p, str) for p in phones):
            raise XCAPError(400, "phones is a list of E.164 numbers")
        try:
            normalised = tuple(dict.fromkeys(normalise_e164(p) for p in phones))
        except InvalidNumber as error:
            raise XCAPError(400, str(error)) from None
        fresh = await service.store.get_user(target.username, target.domain)
        if fresh is None:
            raise XCAPError(404, "no such user")
        await service.store.update_user(replace(fresh, phones=normalised))
        self._record(request, identity, service.owner_of(target.username), DIRECTORY_CHANGED,
                     f"phones set to {', '.join(normalised) or 'none'}")
        return web.json_response({"user_id": service.owner_of(target.username), "phones": list(normalised)})
