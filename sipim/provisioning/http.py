"""HTTP routes of device auto-configuration (``/provisioning/v1/...``), served on
every ws/wss listener's HTTPS port.  Requests and answers are JSON; errors are
``{"error": "..."}`` with a proper status (429 with ``Retry-After``)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

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


async def _body(request: web.Request, max_body: int) -> dict:
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


def _wish(body: dict) -> DeviceWish:
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


def add_provisioning_routes(app: web.Application, service: ProvisioningService, *, auth: HttpDigestAuth,
                            address: PublicAddress) -> None:
    def guarded(handler):
        async def run(request: web.Request, *args) -> web.StreamResponse:
            if not request.secure and not service.allow_insecure:
                # The answers carry passwords and tokens: never over plain HTTP (a ws: listener).
                return web.json_response({"error": "provisioning needs HTTPS (a wss listener)"}, status=403)
            try:
                return await handler(request, *args)
            except ProvisioningRefused as refused:
                return _refusal(refused)

        return run

    @guarded
    async def otp(request: web.Request) -> web.Response:
        body = await _body(request, service.max_body)
        expires_in = await service.request_otp(body.get("phone"), _client(request))
        return web.json_response({"status": "code-sent", "expires_in": expires_in}, status=202)

    @guarded
    async def config(request: web.Request) -> web.Response:
        body = await _body(request, service.max_body)
        client, endpoints = _client(request), address.endpoints(request)
        if body.get("code") not in (None, ""):
            document = await service.config_with_code(body.get("phone"), body.get("code"), _wish(body),
                                                      client, endpoints)
        else:
            asserted = request.headers.get(service.msisdn_header)
            document = await service.config_trusted(asserted, _wish(body), client, endpoints)
        return _no_store(web.json_response(document))

    @guarded
    async def signin(request: web.Request) -> web.Response:
        body = await _body(request, service.max_body)
        document = await service.signin(body.get("user"), body.get("password"), _wish(body), _client(request),
                                        address.endpoints(request))
        return _no_store(web.json_response(document))

    @guarded
    async def pairing(request: web.Request, identity: HttpIdentity) -> web.Response:
        code, lifetime = await service.create_pairing(identity.user, identity.device_id, _client(request))
        endpoints = address.endpoints(request)
        host = f"[{endpoints.host}]" if ":" in endpoints.host else endpoints.host
        url = f"https://{host}:{endpoints.https_port}/#pair={code}"
        return _no_store(web.json_response({"code": code, "url": url, "qr_svg": qr_svg(url),
                                            "expires_in": lifetime}, status=201))

    @guarded
    async def pair(request: web.Request) -> web.Response:
        body = await _body(request, service.max_body)
        document = await service.pair(body.get("code"), _wish(body), _client(request), address.endpoints(request))
        return _no_store(web.json_response(document))

    @guarded
    async def devices(request: web.Request, identity: HttpIdentity) -> web.Response:
        return web.json_response({"devices": await service.list_devices(identity.user),
                                  "current": identity.device_id})

    @guarded
    async def revoke(request: web.Request, identity: HttpIdentity) -> web.Response:
        await service.revoke_device(identity.user, request.match_info["device_id"], identity.device_id,
                                    _client(request))
        return web.Response(status=204)

    app.router.add_post(f"{PREFIX}/otp", otp)
    app.router.add_get(f"{PREFIX}/devices", require_user(auth, devices))
    app.router.add_delete(f"{PREFIX}/devices/{{device_id}}", require_user(auth, revoke))
    app.router.add_post(f"{PREFIX}/config", config)
    app.router.add_post(f"{PREFIX}/signin", signin)
    app.router.add_post(f"{PREFIX}/pairing", require_user(auth, pairing))
    app.router.add_post(f"{PREFIX}/pair", pair)
