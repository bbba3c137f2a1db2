"""The HTTP front end of device auto-configuration (``/provisioning/v1/...``), served on
every ws/wss listener's HTTPS port; the logic is sipim.provisioning.service's.
Requests and answers are JSON; errors are ``{"error": "..."}`` with a proper status
(429 with ``Retry-After``)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable

import segno
from aiohttp import web

from sipim.provisioning.document import Endpoints
from sipim.provisioning.service import Client, DeviceWish, ProvisioningRefused, ProvisioningService
from sipim.web.auth import HttpDigestAuth, HttpIdentity, require_user

log = logging.getLogger(__name__)

PREFIX = "/provisioning/v1"


class PublicAddress:
    """Works out what a configuration document names as the server.

    ``tls_port`` is read when a document is built (listeners bind port 0 in tests).
    """

    def __init__(self, *, host: str = "", https_port: int = 0, tls_port: Callable[[], int | None]) -> None:
        self._host = host
        self._https_port = https_port
        self._tls_port = tls_port

    def endpoints(self, request: web.Request) -> Endpoints:
        host = self._host or request.url.host or "localhost"
        port = self._https_port
        if not port:
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            port = sockname[1] if sockname else (request.url.port or 443)
        return Endpoints(host=host, https_port=port, tls_port=self._tls_port())


def _client(request: web.Request) -> Client:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    port = peer[1] if peer and len(peer) > 1 else 0
    return Client(ip=request.remote or "", port=port, user_agent=request.headers.get("User-Agent", ""))


async def _body(request: web.Request, max_body: int) -> dict[str, object]:
    if request.content_length is not None and request.content_length > max_body:
        raise ProvisioningRefused(413, f"request body larger than {max_body} bytes")
    raw = await request.read()  # bounded by the application's client_max_size as well
    if len(raw) > max_body:
        raise ProvisioningRefused(413, f"request body larger than {max_body} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ProvisioningRefused(400, "the request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise ProvisioningRefused(400, "the request body must be a JSON object")
    return body


def _wish(body: dict[str, object]) -> DeviceWish:
    return DeviceWish(name=body.get("device_name"), instance_id=body.get("instance_id"))


def _refusal(refused: ProvisioningRefused) -> web.Response:
    response = web.json_response({"error": refused.reason}, status=refused.status)
    if refused.retry_after is not None:
        response.headers["Retry-After"] = str(refused.retry_after)  # RFC 9110 §10.2.3
    return response


def _no_store(response: web.Response) -> web.Response:
    # The document holds a password and a token: no cache may keep it (RFC 9111 §5.2.2.5).
    response.headers["Cache-Control"] = "no-store"
    return response


def qr_svg(text: str) -> str:
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="svg", xmldecl=False, scale=4, border=2)
    return buffer.getvalue().decode()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
UserHandler = Callable[[web.Request, HttpIdentity], Awaitable[web.StreamResponse]]


class ProvisioningHandlers:
    """The provisioning routes: each public coroutine method is the handler of one
    route (those taking an ``identity`` are called with the authenticated user)."""

    def __init__(self, service: ProvisioningService, *, auth: HttpDigestAuth, address: PublicAddress) -> None:
        self._service = service
        self._auth = auth
        self._address = address

    def add_routes(self, app: web.Application) -> None:
        def authenticated(handler: UserHandler) -> Handler:
            return require_user(self._auth, self._refusals_answered(handler))

        router = app.router
        router.add_post(f"{PREFIX}/otp", self._refusals_answered(self.otp))
        router.add_get(f"{PREFIX}/devices", authenticated(self.devices))
        router.add_delete(f"{PREFIX}/devices/{{device_id}}", authenticated(self.revoke))
        router.add_post(f"{PREFIX}/config", self._refusals_answered(self.config))
        router.add_post(f"{PREFIX}/signin", self._refusals_answered(self.signin))
        router.add_post(f"{PREFIX}/pairing", authenticated(self.pairing))
        router.add_post(f"{PREFIX}/pair", self._refusals_answered(self.pair))

    def _refusals_answered(self, handler: Callable[..., Awaitable[web.StreamResponse]]
                           ) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Plain HTTP refused, and the service's refusals answered as JSON errors."""

        async def run(request: web.Request, *args: HttpIdentity) -> web.StreamResponse:
            if not request.secure and not self._service.allow_insecure:
                # The answers carry passwords and tokens: never over plain HTTP (a ws: listener).
                return web.json_response({"error": "provisioning needs HTTPS (a wss listener)"}, status=403)
            try:
                return await handler(request, *args)
            except ProvisioningRefused as refused:
                return _refusal(refused)

        return run

    async def otp(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, self._service.max_body)
        expires_in = await self._service.request_otp(body.get("phone"), _client(request))
        return web.json_response({"status": "code-sent", "expires_in": expires_in}, status=202)

    async def config(self, request: web.Request) -> web.StreamResponse:
        service = self._service
        body = await _body(request, service.max_body)
        client, endpoints = _client(request), self._address.endpoints(request)
        if body.get("code") not in (None, ""):
            document = await service.config_with_code(body.get("phone"), body.get("code"), _wish(body),
                                                      client, endpoints)
        else:
            asserted = request.headers.get(service.msisdn_header)
            document = await service.config_trusted(asserted, _wish(body), client, endpoints)
        return _no_store(web.json_response(document))

    async def signin(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, self._service.max_body)
        document = await self._service.signin(body.get("user"), body.get("password"), _wish(body),
                                              _client(request), self._address.endpoints(request))
        return _no_store(web.json_response(document))

    async def pairing(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        code, lifetime = await self._service.create_pairing(identity.user, identity.device_id, _client(request))
        endpoints = self._address.endpoints(request)
        host = f"[{endpoints.host}]" if ":" in endpoints.host else endpoints.host
        url = f"https://{host}:{endpoints.https_port}/#pair={code}"
        return _no_store(web.json_response({"code": code, "url": url, "qr_svg": qr_svg(url),
                                            "expires_in": lifetime}, status=201))

    async def pair(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request, self._service.max_body)
        document = await self._service.pair(body.get("code"), _wish(body), _client(request),
                                            self._address.endpoints(request))
        return _no_store(web.json_response(document))

    async def devices(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        return web.json_response({"devices": await self._service.list_devices(identity.user),
                                  "current": identity.device_id})

    async def revoke(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        await self._service.revoke_device(identity.user, request.match_info["device_id"], identity.device_id,
                                          _client(request))
        return web.Response(status=204)
