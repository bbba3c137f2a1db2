"""The routes that serve the browser client (sipim/web/client.py), without a browser."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sipim.web.client import add_web_client_routes


async def client_for(static_dir: Path) -> TestClient:
    app = web.Application()
    add_web_client_routes(app, domain="example.test", static_dir=static_dir)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


def built_bundle(folder: Path) -> Path:
    folder.mkdir()
    (folder / "index.html").write_text(
        '<meta name="sipim-domain" content="__SIPIM_DOMAIN__">'
        '<script src="/static/app.js?v=__SIPIM_VERSION__"></script>')
    (folder / "app.js").write_text("console.log('client')")
    (folder / "app.css").write_text("body {}")
    (folder / "secret.pem").write_text("not for the web")
    return folder


async def test_missing_bundle_answers_503_with_how_to_build_it(tmp_path):
    client = await client_for(tmp_path / "never-built")
    try:
        response = await client.get("/")
        assert response.status == 503
        page = await response.text()
        assert "make web" in page and "npm ci" in page
        assert response.headers["Content-Type"].startswith("text/html")
    finally:
        await client.close()


async def test_page_names_the_domain_and_a_versioned_bundle_under_a_strict_policy(tmp_path):
    client = await client_for(built_bundle(tmp_path / "static"))
    try:
        response = await client.get("/")
        assert response.status == 200
        page = await response.text()
        assert 'content="example.test"' in page
        assert "__SIPIM_VERSION__" not in page and "/static/app.js?v=" in page
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "wss://" in policy  # the page's own SIP WebSocket
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        await client.close()


async def test_only_bundle_files_are_served(tmp_path):
    client = await client_for(built_bundle(tmp_path / "static"))
    try:
        script = await client.get("/static/app.js")
        assert script.status == 200 and script.headers["Content-Type"].startswith("text/javascript")
        assert (await client.get("/static/app.css")).headers["Content-Type"].startswith("text/css")
        for name in ("secret.pem", "..%2Fapp.js", "index.html", "missing.js"):
            assert (await client.get(f"/static/{name}")).status == 404, name
    finally:
        await client.close()
