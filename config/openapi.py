"""OpenAPI post-processing: every /api/ operation documents the error answers it can give.

The error body is one shape everywhere (config.exceptions.error_body), so it is one
component, `Error`, and each operation lists the 4xx answers that apply to it:
400 (bad input, including a NUL byte in any query parameter), 401 and 403 (when it
needs a signed-in caller), 404 (when its path names something, or another team's; a
write naming another object; a page past the end), 409 (writes that can clash with the
current state) and 413 (request bodies).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error of /api/: what went wrong, in words, with machine-readable details.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "e.g. invalid, not_found, forbidden, conflict"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
            "required": ["code", "message", "details"],
        }
    },
    "required": ["error"],
}

DESCRIPTIONS = {
    "400": "The request is malformed or breaks a rule; the message says which.",
    "401": "No valid credentials (Authorization: Bearer <token>, or a session).",
    "403": "Signed in, but the role (or team) does not allow this.",
    "404": "No such object, or one of another team (answered alike).",
    "409": "The change clashes with the current state (a duplicate, a version not ready, ...).",
    "413": "The request body is over the limit.",
    "415": "The body's Content-Type is not one this route reads (the message names it).",
}

WRITES = {"post", "put", "patch", "delete"}


def _error(code: str) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS[code],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.DictField()


class ErrorSerializer(serializers.Serializer):
    """The `Error` component (document_errors writes its final form)."""

    error = ErrorDetailSerializer()


def ERROR_RESPONSE(description: str) -> OpenApiResponse:  # noqa: N802 - reads like the constant it stands for
    """An error answer for `extend_schema(responses={401: ERROR_RESPONSE("why")})`."""
    return OpenApiResponse(response=ErrorSerializer, description=description)


def _applicable(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    codes = ["400"]
    security = operation.get("security")
    signed_in = bool(security) and {} not in security
    if signed_in:
        codes += ["401", "403"]
    names = {p.get("name") for p in operation.get("parameters", [])}
    # 404: the path names an object; a write names others (a team, a model, a version);
    # a list's ?page is past its end; ?format names no known format.
    if "{" in path or (signed_in and method in WRITES) or names & {"page", "format"}:
        codes.append("404")
    if signed_in and method in WRITES:
        codes.append("409")
    if "requestBody" in operation:
        codes += ["413", "415"]  # too large; a content type the view does not parse
    return codes


def document_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: add `Error` and the 4xx answers."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    schemas.pop("ErrorDetail", None)  # ErrorSerializer's nested part, inline in ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/"):
            continue  # /v2 answers in the Open Inference Protocol's own error shape
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for code in _applicable(path, method, operation):
                responses.setdefault(code, _error(code))
    return result
