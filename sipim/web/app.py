"""The HTTPS side of sipim, served on the port of each ws/wss listener.

SIP WebSocket upgrades are taken by the transport's middleware before these
routes see anything; everything else is an HTTP API for users' devices.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from sipim.store.base import Store
from sipim.web.auth import HttpDigestAuth, HttpIdentity, require_user
from sipim.web.openapi import add_openapi_route
from sipim.web.client import STATIC_DIR, add_web_client_routes

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


def make_web_app(*, store: Store, auth: HttpDigestAuth, domain: str,
                 provisioning=None, public_address=None, xdm=None,
                 web_client_dir: Path | None = None, ca_pem: str | None = None) -> Callable[[], web.Application]:
    async def history(request: web.Request, identity: HttpIdentity) -> web.Response:
        """A page of the authenticated user's own history, newest first.

        Query: ``with`` (a user name or AOR), ``since`` (epoch seconds),
        ``before`` (the ``next_cursor`` of the previous page), ``limit``.
        """
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
        entries = await store.query_history(identity.aor, peer=peer, since=since, before=before, limit=limit)
        next_cursor = f"{entries[-1].ts!r}:{entries[-1].row_id}" if len(entries) == limit else None
        return web.json_response({
            "owner": identity.aor,
            "entries": [{"time": e.ts, "direction": e.direction, "peer": e.peer, "message_id": e.message_id,
                         "imdn_message_id": e.imdn_message_id, "content_type": e.content_type,
                         "body": e.body.decode("utf-8", "replace"), "status": e.status} for e in entries],
            "next_cursor": next_cursor,
        })

    def factory() -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_get(f"{API}/history", require_user(auth, history))
        if provisioning is not None:
            from sipim.provisioning.http import add_provisioning_routes

            add_provisioning_routes(app, provisioning, auth=auth, address=public_address)
        if xdm is not None:
            from sipim.xdm.http import add_xdm_routes

            add_xdm_routes(app, service=xdm, auth=auth)
        add_openapi_route(app)
        add_web_client_routes(app, domain=domain, static_dir=web_client_dir or STATIC_DIR)
        if ca_pem is not None:  # not with the operator's own certificate (--tls-cert)
            add_ca_route(app, ca_pem)
        return app

    return factory
