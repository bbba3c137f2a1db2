"""The HTTPS side of sipim, served on the port of each ws/wss listener.

SIP WebSocket upgrades are taken by the transport's middleware before these
routes see anything; everything else is an HTTP API for users' devices.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from sipim.provisioning.service import ProvisioningService
from sipim.store.base import Store
from sipim.web.auth import HttpDigestAuth, HttpIdentity, require_user
from sipim.web.client import STATIC_DIR, add_web_client_routes
from sipim.web.openapi import add_openapi_route
from sipim.web.provisioning import ProvisioningHandlers, PublicAddress
from sipim.web.xdm import XdmHandlers
from sipim.xdm.service import XdmService

API = "/api/v1"
MAX_PAGE = 200


def _bad(reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=400)


CA_PATH = "/ca.pem"


def add_ca_route(app: web.Application, ca_pem: str) -> None:
    """``GET /ca.pem``: the certificate of the private CA sipim made for itself (public;
    its key never leaves the data directory).  Browsers and other devices install it to
    trust the server; whoever fetches it over a connection they cannot verify yet should
    compare its SHA-256 fingerprint, printed when the server starts, before trusting it."""
    body = ca_pem.encode("ascii")

    async def ca(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/x-pem-file", headers={
            "Content-Disposition": 'attachment; filename="sipim-ca.pem"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        })

    app.router.add_get(CA_PATH, ca)


class HistoryHandlers:
    """``GET /api/v1/history``: the authenticated user's own message history."""

    def __init__(self, store: Store, *, auth: HttpDigestAuth, domain: str) -> None:
        self._store = store
        self._auth = auth
        self._domain = domain

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{API}/history", require_user(self._auth, self.history))

    async def history(self, request: web.Request, identity: HttpIdentity) -> web.StreamResponse:
        """A page of the authenticated user's own history, newest first.

        Query: ``with`` (a user name or AOR), ``since`` (epoch seconds),
        ``before`` (the ``next_cursor`` of the previous page), ``limit``.
        """
        domain = self._domain
        query = request.query
        try:
            limit = int(query.get("limit", "50"))
            since = float(query["since"]) if "since" in query else None
            before = None
            if "before" in query:
                ts, _, row = query["before"].partition(":")
                before = (float(ts), int(row))
        except ValueError:
            return _bad("limit, since and before must be numbers (before is TIME:ROW)")
        if not 1 <= limit <= MAX_PAGE:
            return _bad(f"limit must be from 1 to {MAX_PAGE}")
        peer = query.get("with")
        if peer:
            name = peer.split(":", 1)[-1]
            user, _, host = name.partition("@")
            if host and host.lower() != domain:
                return _bad(f"{peer!r} is not in domain {domain}")
            peer = f"sip:{user}@{domain}"
        entries = await self._store.query_history(identity.aor, peer=peer, since=since, before=before, limit=limit)
        next_cursor = f"{entries[-1].ts!r}:{entries[-1].row_id}" if len(entries) == limit else None
        return web.json_response({
            "owner": identity.aor,
            "entries": [{"time": e.ts, "direction": e.direction, "peer": e.peer, "message_id": e.message_id,
                         "imdn_message_id": e.imdn_message_id, "content_type": e.content_type,
                         "body": e.body.decode("utf-8", "replace"), "status": e.status} for e in entries],
            "next_cursor": next_cursor,
        })


def make_web_app(*, store: Store, auth: HttpDigestAuth, domain: str,
                 provisioning: ProvisioningService | None = None, public_address: PublicAddress | None = None,
                 xdm: XdmService | None = None, web_client_dir: Path | None = None,
                 ca_pem: str | None = None) -> Callable[[], web.Application]:
    """The factory of the HTTPS application every ws/wss listener serves: the routes of
    the roles that are on (their HTTP front ends are the handler classes of this package)."""
    handlers: list[HistoryHandlers | ProvisioningHandlers | XdmHandlers] = [
        HistoryHandlers(store, auth=auth, domain=domain)]
    if provisioning is not None:
        if public_address is None:
            raise ValueError("provisioning routes need the public_address their documents name")
        handlers.append(ProvisioningHandlers(provisioning, auth=auth, address=public_address))
    if xdm is not None:
        handlers.append(XdmHandlers(xdm, auth=auth, domain=domain))

    def factory() -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        for part in handlers:
            part.add_routes(app)
        add_openapi_route(app)
        add_web_client_routes(app, domain=domain, static_dir=web_client_dir or STATIC_DIR)
        if ca_pem is not None:  # not with the operator's own certificate (--tls-cert)
            add_ca_route(app, ca_pem)
        return app

    return factory
