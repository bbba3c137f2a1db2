"""The OpenAPI 3 description of every /api/v1 route, served at GET /api/v1/openapi.json.

tests/web/test_openapi.py checks that every /api/v1 route the application
registers is described here (and nothing else), so a route cannot be added
without its documentation.
"""

from __future__ import annotations

from aiohttp import web

from sipim import __version__
from sipim.web.openapi_parts import error_response as _error
from sipim.web.openapi_parts import json_response as _json
from sipim.web.openapi_provisioning import PATHS as PROVISIONING_PATHS
from sipim.web.openapi_provisioning import SCHEMAS as PROVISIONING_SCHEMAS

API = "/api/v1"


def _query(name: str, description: str, required: bool = False, type_: str = "string") -> dict:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": {"type": type_}}


USER_PARAM = {"name": "user", "in": "path", "required": True,
              "description": "a user name (bob) or User ID (sip:bob@example.com)", "schema": {"type": "string"}}
IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
            "description": "the etag last read: the change is refused with 412 if the document changed since"}
AUTH_ERRORS = {"401": _error("authentication required (digest challenge)"),
               "403": _error("wrong credentials, or locked out")}

SCHEMAS: dict[str, dict] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Contact": {"type": "object", "required": ["uri", "list"], "properties": {
        "uri": {"type": "string", "example": "sip:bob@example.com"},
        "display_name": {"type": "string", "nullable": True},
        "list": {"type": "string", "example": "default"}}},
    "Contacts": {"type": "object", "properties": {
        "etag": {"type": "string", "nullable": True},
        "contacts": {"type": "array", "items": {"$ref": "#/components/schemas/Contact"}}}},
    "NewContact": {"type": "object", "required": ["uri"], "properties": {
        "uri": {"type": "string", "description": "a User ID; a phone number is refused (look it up first)"},
        "display_name": {"type": "string"}, "list": {"type": "string", "default": "default"}}},
    "Profile": {"type": "object", "properties": {
        "user_id": {"type": "string"}, "display_name": {"type": "string", "nullable": True},
        "status_text": {"type": "string", "nullable": True}, "avatar_url": {"type": "string", "nullable": True},
        "etag": {"type": "string", "nullable": True}}},
    "ProfileUpdate": {"type": "object", "additionalProperties": False, "properties": {
        "display_name": {"type": "string", "maxLength": 100}, "status_text": {"type": "string", "maxLength": 280},
        "avatar_url": {"type": "string", "format": "uri", "maxLength": 2000}}},
    "Privacy": {"type": "object", "properties": {
        "etag": {"type": "string", "nullable": True},
        "custom": {"type": "boolean", "description": "true: the rules were written over XCAP in another shape"},
        "blocked_users": {"type": "array", "items": {"type": "string"}},
        "blocked_domains": {"type": "array", "items": {"type": "string"}},
        "profile_visible": {"type": "boolean"}, "number_discoverable": {"type": "boolean"}}},
    "PrivacyUpdate": {"type": "object", "properties": {
        "blocked_users": {"type": "array", "items": {"type": "string"}},
        "blocked_domains": {"type": "array", "items": {"type": "string"}},
        "profile_visible": {"type": "boolean", "default": True},
        "number_discoverable": {"type": "boolean", "default": True}}},
    "Phones": {"type": "object", "properties": {
        "user_id": {"type": "string"}, "phones": {"type": "array", "items": {"type": "string"}}}},
    "History": {"type": "object", "properties": {
        "owner": {"type": "string"},
        "entries": {"type": "array", "items": {"type": "object", "properties": {
            "time": {"type": "number"}, "direction": {"type": "string", "enum": ["in", "out"]},
            "peer": {"type": "string"}, "message_id": {"type": "string"},
            "imdn_message_id": {"type": "string", "nullable": True}, "content_type": {"type": "string"},
            "body": {"type": "string"}, "status": {"type": "string"}}}},
        "next_cursor": {"type": "string", "nullable": True}}},
}

PATHS: dict[str, dict] = {
    f"{API}/history": {"get": {
        "summary": "A page of the user's own message history, newest first",
        "parameters": [_query("with", "only the conversation with this user"),
                       _query("since", "epoch seconds", type_="number"),
                       _query("before", "the next_cursor of the previous page"),
                       _query("limit", "entries per page, 1..200", type_="integer")],
        "responses": {"200": _json("the page", "History"), "400": _error("bad parameter"), **AUTH_ERRORS}}},
    f"{API}/contacts": {
        "get": {"summary": "The user's contacts (the resource-lists document, RFC 4826)",
                "responses": {"200": _json("every entry of every list", "Contacts"), **AUTH_ERRORS}},
        "post": {"summary": "Add a contact (a User ID) to a list",
                 "parameters": [IF_MATCH],
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": {"$ref": "#/components/schemas/NewContact"}}}},
                 "responses": {"201": _json("added", {"type": "object", "properties": {
                     "etag": {"type": "string"}, "contact": {"$ref": "#/components/schemas/Contact"}}}),
                     "400": _error("not a JSON object with a uri"),
                     "409": _error("a raw phone number (look the number up first), or already in that list"),
                     "412": _error("If-Match failed"), **AUTH_ERRORS}},
        "delete": {"summary": "Remove a contact (from one list, or from all)",
                   "parameters": [_query("uri", "the contact's URI", required=True),
                                  _query("list", "only from this list"), IF_MATCH],
                   "responses": {"204": {"description": "removed"}, "404": _error("not a contact"),
                                 "412": _error("If-Match failed"), **AUTH_ERRORS}}},
    f"{API}/lookup": {"get": {
        "summary": "The directory: the one User ID a phone number belongs to",
        "parameters": [_query("number", "a number in E.164 form, e.g. +4915112345678", required=True)],
        "responses": {"200": _json("found", {"type": "object", "properties": {
            "user_id": {"type": "string"}, "number": {"type": "string"}}}),
            "400": _error("not a valid phone number"),
            "404": _error("no user has this number (or its owner hides it from you)"),
            "409": _error("ambiguous: several users have this number"),
            "429": _error("too many lookups (Retry-After)"), **AUTH_ERRORS}}},
    f"{API}/profile": {
        "get": {"summary": "The user's own profile", "responses": {"200": _json("the profile", "Profile"),
                                                                    **AUTH_ERRORS}},
        "put": {"summary": "Replace the user's own profile", "parameters": [IF_MATCH],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ProfileUpdate"}}}},
                "responses": {"200": _json("the new profile", "Profile"), "409": _error("a field is invalid"),
                              "412": _error("If-Match failed"), **AUTH_ERRORS}}},
    f"{API}/users/{{user}}/profile": {"get": {
        "summary": "Another user's profile, as that user's privacy rules allow",
        "parameters": [USER_PARAM],
        "responses": {"200": _json("the profile", "Profile"),
                      "404": _error("no such user, or the profile is not visible to you"), **AUTH_ERRORS}}},
    f"{API}/privacy": {
        "get": {"summary": "The user's privacy rules (who is blocked, what others may see)",
                "responses": {"200": _json("the settings", "Privacy"), **AUTH_ERRORS}},
        "put": {"summary": "Replace the privacy rules (recorded in the audit trail)", "parameters": [IF_MATCH],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PrivacyUpdate"}}}},
                "responses": {"200": _json("the new settings", "Privacy"), "400": _error("bad settings"),
                              "412": _error("If-Match failed"), **AUTH_ERRORS}}},
    f"{API}/users/{{user}}/phones": {
        "get": {"summary": "Admin: a user's phone numbers", "parameters": [USER_PARAM],
                "responses": {"200": _json("the numbers", "Phones"), "403": _error("not an administrator"),
                              "404": _error("no such user")}},
        "put": {"summary": "Admin: set a user's phone numbers (E.164)", "parameters": [USER_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"phones": {"type": "array", "items": {"type": "string"}}}}}}},
                "responses": {"200": _json("the numbers", "Phones"), "400": _error("an invalid number"),
                              "403": _error("not an administrator"), "404": _error("no such user")}}},
    f"{API}/openapi.json": {"get": {
        "summary": "This document", "security": [],
        "responses": {"200": {"description": "OpenAPI 3 document",
                              "content": {"application/json": {"schema": {"type": "object"}}}}}}},
}


def openapi_document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "sipim HTTPS API", "version": __version__,
                 "description": "Served on every ws/wss port. Authenticate with HTTP digest (RFC 7616) and "
                                "the SIP credentials, or Authorization: Bearer <device token>. Contact lists, "
                                "privacy rules and the profile are the same documents XCAP (RFC 4825) serves "
                                "at /xcap."},
        "components": {"schemas": {**SCHEMAS, **PROVISIONING_SCHEMAS}, "securitySchemes": {
            "digest": {"type": "http", "scheme": "digest"}, "bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"digest": []}, {"bearer": []}],
        "paths": {**PATHS, **PROVISIONING_PATHS},
    }


def add_openapi_route(app: web.Application) -> None:
    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    app.router.add_get(f"{API}/openapi.json", openapi)
