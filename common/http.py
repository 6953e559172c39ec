"""Rendering refusals as HTTP answers, for every front: the one place that decides the
status, the JSON body and the headers of an error.

Two body shapes: the API's `{"error": {"code", "message", "details"}}` ("simple", /api/v1
and everything else) and the Open Inference Protocol's `{"error": message, "code": code}`
("v2", under /v2). Django-free: the edge, DRF's handler (config/exceptions.py) and
Django's error views all call `error_reply`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from common.errors import DEFAULT_RETRY_AFTER_S, ModelhubError

log = logging.getLogger("modelhub.errors")

Shape = Literal["simple", "v2"]
JSON = "application/json"


def shape_for_path(path: str) -> Shape:
    """The error shape a path's clients expect: V2 clients parse `{"error": "..."}`."""
    return "v2" if path == "/v2" or path.startswith("/v2/") else "simple"


def as_modelhub_error(exc: BaseException) -> ModelhubError:
    """Any exception as a ModelhubError: ours as they are, a too-deep body as a 400, anything
    else as a logged 500 that names nothing internal."""
    if isinstance(exc, ModelhubError):
        return exc
    if isinstance(exc, RecursionError):
        return ModelhubError("request is nested too deeply", status=400, code="invalid_input")
    log.error("unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
    return ModelhubError("internal error; it has been logged", status=500, code="server_error")


def retry_after_header(exc: ModelhubError) -> str | None:
    """Whole seconds (at least 1) for a 503, or for any refusal that names a wait."""
    if exc.retry_after is None and exc.status != 503:
        return None
    seconds = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER_S
    return str(max(1, round(seconds)))


def error_body(exc: ModelhubError, shape: Shape) -> dict[str, Any]:
    if shape == "v2":
        return {"error": exc.message, "code": exc.code}
    return {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}


def error_parts(exc: BaseException, shape: Shape = "simple") -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
    """(status, body as data, headers) for a refusal: what every front answers. DRF renders
    the data itself (config/exceptions.py); the others take `error_reply`'s bytes."""
    error = as_modelhub_error(exc)
    headers = list(error.headers)
    retry_after = retry_after_header(error)
    if retry_after is not None and not any(name.lower() == "retry-after" for name, _ in headers):
        headers.append(("Retry-After", retry_after))
    return error.status, error_body(error, shape), headers


def error_reply(exc: BaseException, shape: Shape = "simple") -> tuple[int, bytes, list[tuple[str, str]]]:
    """(status, JSON body, headers) for a refusal; the one function every front uses."""
    status, data, headers = error_parts(exc, shape)
    return status, orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS), headers


# ------------------------------------------------------------------ the one request and reply


class Headers(Protocol):
    """Request headers by lower-case name (`get("x-api-key")`)."""

    def get(self, name: str, /) -> str | None: ...


_ENVIRON_KEYS: dict[str, str] = {"content-type": "CONTENT_TYPE", "content-length": "CONTENT_LENGTH"}


def environ_key(name: str) -> str:
    """The WSGI environ key of a header: "x-api-key" -> "HTTP_X_API_KEY" (cached)."""
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = _ENVIRON_KEYS[name] = "HTTP_" + name.upper().replace("-", "_")
    return key


class EnvironHeaders:
    """A WSGI environ (or Django's request.META) read as headers, without copying it."""

    __slots__ = ("environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self.environ = environ

    def get(self, name: str, /) -> str | None:
        value: str | None = self.environ.get(_ENVIRON_KEYS.get(name) or environ_key(name))
        return value


@dataclass(slots=True)
class PredictRequest:
    """What every front hands the data plane: its server's request, translated once.

    `headers.get()` takes lower-case names; `query` is the raw query string; `body` is
    filled by the dispatcher (through the front's reader) once the request passed the
    checks that need no body; `host` is the Host header (or the server's own name when
    the client sent none; None skips the ALLOWED_HOSTS check, for a front whose server
    already made it).
    """

    method: str
    path: str
    headers: Headers
    query: str = ""
    body: bytes = b""
    host: str | None = None


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = JSON
