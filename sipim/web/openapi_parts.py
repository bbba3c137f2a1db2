"""Building blocks of OpenAPI 3 response objects, shared by every part that describes
its routes (the document itself is assembled in sipim/web/openapi.py)."""

from __future__ import annotations


def error_response(description: str) -> dict:
    """A response whose body is the JSON ``{"error": ...}`` every route answers errors with."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def json_response(description: str, schema: str | dict) -> dict:
    """A JSON response: ``schema`` names a component schema, or is a schema itself."""
    ref = {"$ref": f"#/components/schemas/{schema}"} if isinstance(schema, str) else schema
    return {"description": description, "content": {"application/json": {"schema": ref}}}
