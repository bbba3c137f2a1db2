"""Every /api/v1 route the HTTPS application registers is described in the OpenAPI
document, with its methods -- and the document describes nothing that does not exist."""

from __future__ import annotations

from sipim.config import Config
from sipim.web.app import make_web_app
from sipim.web.openapi import openapi_document
from sipim.xdm.service import XdmService


class _Anything:
    """Stands for the store, auth and provisioning objects: building routes never calls them."""

    def __getattr__(self, name):
        return _Anything()

    def __call__(self, *args, **kwargs):
        return _Anything()


def registered_api_routes(app) -> set[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith(("/api/v1/", "/provisioning/v1/")) and route.method != "HEAD":
            routes.add((path, route.method.lower()))
    return routes


def test_every_api_route_is_documented_and_every_documented_route_exists():
    config = Config(domain="example.test")
    xdm = XdmService(config, store=_Anything(), get_user=_Anything(), audit=lambda record: None)
    app = make_web_app(store=_Anything(), auth=_Anything(), domain="example.test", xdm=xdm,
                       provisioning=_Anything(), public_address=_Anything())()
    documented = {(path, method) for path, item in openapi_document()["paths"].items() for method in item}
    registered = registered_api_routes(app)
    assert ("/api/v1/history", "get") in registered and ("/api/v1/lookup", "get") in registered
    assert ("/provisioning/v1/otp", "post") in registered
    assert registered - documented == set(), "routes without documentation"
    assert documented - registered == set(), "documented routes that do not exist"


def test_the_document_is_openapi_3_with_resolvable_schema_references():
    document = openapi_document()
    assert document["openapi"].startswith("3.")
    schemas = document["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
