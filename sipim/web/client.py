"""The browser client, served at ``https://HOST:PORT/`` on every ws/wss port.

The page and its bundle (JsSIP and the client, built by esbuild from ``web/``
into ``sipim/web/static/`` at set-up time) are static files; the page is told
the SIP domain so it can name users.  A server whose bundle was never built
answers ``/`` with a 503 page that says how to build it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")
ASSET_PATH = "/static/{name}"
# Only the files the build writes; nothing else under the folder is served.
_ASSET_NAME = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.(js|css|map|txt)$")
_CONTENT_TYPES = {"js": "text/javascript", "css": "text/css", "map": "application/json", "txt": "text/plain"}
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")

BUILD_HINT = "make web   (or: cd web && npm ci && npm run build)"
NOT_BUILT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sipim: web client not built</title></head>
<body><h1>The web client is not built</h1>
<p>This sipim server has no browser client bundle in <code>{folder}</code>.
Build it on the server with</p>
<pre>{hint}</pre>
<p>then reload this page. SIP over WebSocket and the HTTPS API work without it.</p>
</body></html>
"""


def _security_headers(request: web.Request) -> dict[str, str]:
    host = request.host if _HOST.match(request.host or "") else ""
    # The page talks only to its own origin: HTTPS for the API, WSS for SIP.
    connect = f"'self' wss://{host}" if host else "'self'"
    return {
        "Content-Security-Policy": (f"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                    f"connect-src {connect}; base-uri 'none'; form-action 'self'; "
                                    "frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def add_web_client_routes(app: web.Application, *, domain: str, static_dir: Path = STATIC_DIR) -> None:
    """``GET /`` (the single-page client) and ``GET /static/NAME`` (its bundle)."""

    def built() -> bool:
        return (static_dir / "index.html").is_file() and (static_dir / "app.js").is_file()

    async def index(request: web.Request) -> web.Response:
        if not built():
            page = NOT_BUILT_PAGE.format(folder=html.escape(str(static_dir)), hint=html.escape(BUILD_HINT))
            return web.Response(status=503, text=page, content_type="text/html",
                                headers={"Retry-After": "3600", "Cache-Control": "no-store"})
        template = (static_dir / "index.html").read_text(encoding="utf-8")
        # The asset URLs change with the bundle, so a rebuilt client is fetched anew.
        bundle = (static_dir / "app.js").stat()
        version = f"{bundle.st_mtime_ns:x}-{bundle.st_size:x}"
        page = (template.replace("__SIPIM_DOMAIN__", html.escape(domain, quote=True))
                .replace("__SIPIM_VERSION__", version))
        return web.Response(text=page, content_type="text/html", charset="utf-8", headers=_security_headers(request))

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = static_dir / name
        if not _ASSET_NAME.match(name) or not path.is_file():
            raise web.HTTPNotFound(text="no such file in the web client\n")
        response = web.FileResponse(path, headers={
            "Content-Type": _CONTENT_TYPES[name.rsplit(".", 1)[1]],
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "no-cache",
        })
        return response

    app.router.add_get("/", index)
    app.router.add_get(ASSET_PATH, asset)
