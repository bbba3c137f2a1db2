"""The OpenAPI 3 description of the /provisioning/v1 routes (merged into the document
served at GET /api/v1/openapi.json)."""

from __future__ import annotations

from sipim.web.openapi_parts import error_response as _error
from sipim.web.openapi_parts import json_response as _json

PREFIX = "/provisioning/v1"


def _body(schema: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


_DEVICE_WISH = {
    "device_name": {"type": "string", "maxLength": 64},
    "instance_id": {"type": "string", "description": "urn:uuid:...; the same user's device with this instance "
                                                     "gets new credentials instead of a new device"},
}
_PUBLIC: dict[str, list[dict[str, list[str]]]] = {"security": []}  # no authentication
_HTTPS_ONLY = _error("over plain HTTP (a ws: listener) without --allow-insecure")

SCHEMAS: dict[str, dict] = {
    "DeviceConfig": {"type": "object", "description": "the device configuration document (no-store: it holds "
                                                      "the device's password and token)", "properties": {
        "user_id": {"type": "string", "example": "sip:alice@example.com"},
        "username": {"type": "string"}, "domain": {"type": "string"},
        "display_name": {"type": "string", "nullable": True},
        "device": {"type": "object", "properties": {
            "id": {"type": "string", "example": "d-3f9a2c7d10"}, "name": {"type": "string"},
            "instance_id": {"type": "string"}, "auth_username": {"type": "string", "example": "alice!3f9a2c7d10"},
            "password": {"type": "string"}, "token": {"type": "string"}}},
        "sip": {"type": "object", "properties": {
            "realm": {"type": "string"}, "registrar": {"type": "string"},
            "outbound_proxy": {"type": "object", "properties": {
                "tls": {"type": "string", "example": "sips:sip.example.com:5061;transport=tls"},
                "wss": {"type": "string", "example": "wss://sip.example.com:8443/"}}}}},
        "http": {"type": "object", "properties": {"api": {"type": "string"}, "xcap_root": {"type": "string"}}},
        "ca_pem": {"type": "string", "nullable": True,
                   "description": "the private CA to trust; null when the server's certificate is the operator's"}}},
    "OtpRequest": {"type": "object", "required": ["phone"], "properties": {
        "phone": {"type": "string", "example": "+4915112345678"}}},
    "ConfigRequest": {"type": "object", "properties": {
        "phone": {"type": "string"}, "code": {"type": "string",
                                              "description": "without a code: the trusted-network path"},
        **_DEVICE_WISH}},
    "SigninRequest": {"type": "object", "required": ["user", "password"], "properties": {
        "user": {"type": "string", "example": "alice"}, "password": {"type": "string"}, **_DEVICE_WISH}},
    "PairRequest": {"type": "object", "required": ["code"], "properties": {
        "code": {"type": "string"}, **_DEVICE_WISH}},
    "Pairing": {"type": "object", "properties": {
        "code": {"type": "string"}, "url": {"type": "string", "example": "https://sip.example.com:8443/#pair=ABCD2345"},
        "qr_svg": {"type": "string"}, "expires_in": {"type": "integer"}}},
    "Devices": {"type": "object", "properties": {
        "current": {"type": "string", "nullable": True, "description": "the calling device's id"},
        "devices": {"type": "array", "items": {"type": "object", "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "instance_id": {"type": "string"},
            "auth_username": {"type": "string"}, "created_at": {"type": "number"},
            "last_used_at": {"type": "number", "nullable": True},
            "revoked_at": {"type": "number", "nullable": True}}}}}},
}

PATHS: dict[str, dict] = {
    f"{PREFIX}/otp": {"post": {
        **_PUBLIC, "summary": "Send a one-time code by SMS (the same answer for unknown numbers)",
        "requestBody": _body("OtpRequest"),
        "responses": {"202": _json("code sent (or not: the answer does not say)", {"type": "object", "properties": {
            "status": {"type": "string", "example": "code-sent"}, "expires_in": {"type": "integer"}}}),
            "400": _error("not a valid number"), "403": _HTTPS_ONLY,
            "429": _error("too many codes for this number or source (Retry-After)")}}},
    f"{PREFIX}/config": {"post": {
        **_PUBLIC, "summary": "The device configuration, for a one-time code or from a trusted network "
                              "(network-asserted number header, e.g. X-MSISDN)",
        "requestBody": _body("ConfigRequest"),
        "responses": {"200": _json("the configuration", "DeviceConfig"), "400": _error("bad request"),
                      "403": _error("wrong, expired or used code; or not a trusted network"),
                      "429": _error("too many attempts (Retry-After)")}}},
    f"{PREFIX}/signin": {"post": {
        **_PUBLIC, "summary": "The device configuration for a user name and password",
        "requestBody": _body("SigninRequest"),
        "responses": {"200": _json("the configuration", "DeviceConfig"), "400": _error("bad request"),
                      "403": _error("wrong user or password, or locked out")}}},
    f"{PREFIX}/pairing": {"post": {
        "summary": "A short-lived single-use pairing code (link and QR code) for another device",
        "responses": {"201": _json("the pairing code", "Pairing"), "401": _error("authentication required"),
                      "403": _error("wrong credentials")}}},
    f"{PREFIX}/pair": {"post": {
        **_PUBLIC, "summary": "The device configuration for a pairing code", "requestBody": _body("PairRequest"),
        "responses": {"200": _json("the configuration", "DeviceConfig"),
                      "403": _error("unknown, expired or used pairing code"),
                      "429": _error("too many attempts (Retry-After)")}}},
    f"{PREFIX}/devices": {"get": {
        "summary": "The user's devices (credentials, revoked ones included)",
        "responses": {"200": _json("the devices", "Devices"), "401": _error("authentication required")}}},
    f"{PREFIX}/devices/{{device_id}}": {"delete": {
        "summary": "Revoke one of the user's devices: its credentials and token stop working, its "
                   "registration ends",
        "parameters": [{"name": "device_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"204": {"description": "revoked"}, "401": _error("authentication required"),
                      "404": _error("no such device of yours, or already revoked")}}},
}
