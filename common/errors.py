"""The one error base of Modelhub: every refusal carries what an HTTP answer needs.

`config.errors.DomainError` (services), `inference.runtime.errors.RuntimeErrorBase` (the
serving core), `inference.edge.EdgeError` and `inference.router.RoutingError` all derive
from `ModelhubError`, so one function (`common.http.error_reply`) answers every one of
them, on every front, the same way. Django-free: the runtime imports it.
"""

from __future__ import annotations

from typing import Any

# Seconds a client is told to wait when a 503 names no figure of its own.
DEFAULT_RETRY_AFTER_S = 1.0


class ModelhubError(Exception):
    """A refusal: HTTP `status`, a short machine-readable `code`, a `message` that says what
    was expected and what arrived, structured `details`, and for a 503/429 `retry_after`
    (seconds; every 503 is answered with a Retry-After header, 1 s unless set).

    `headers` are extra response headers a refusal needs (WWW-Authenticate on a 401, Allow
    on a 405). Subclasses set `status` and `code` as class attributes; any instance may
    override them.
    """

    status: int = 500
    code: str = "error"
    retry_after: float | None = None

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        if retry_after is not None:
            self.retry_after = retry_after
        self.headers: list[tuple[str, str]] = headers or []

    @property
    def retry_after_s(self) -> float:
        """The old name of `retry_after` (config.errors.ServiceUnavailable, runtime.Overloaded)."""
        return self.retry_after if self.retry_after is not None else DEFAULT_RETRY_AFTER_S

    @retry_after_s.setter
    def retry_after_s(self, seconds: float) -> None:
        self.retry_after = seconds


class BadRequest(ModelhubError):
    status = 400
    code = "bad_request"


class UnsupportedMediaType(ModelhubError):
    status = 415
    code = "unsupported_media_type"


class MethodNotAllowed(ModelhubError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"method {method} is not allowed here; use {', '.join(allowed)}",
            headers=[("Allow", ", ".join(allowed))],
        )


class PayloadTooLarge(ModelhubError):
    status = 413
    code = "payload_too_large"


def payload_too_large(limit: int, length: int | None = None) -> PayloadTooLarge:
    """The one 413 every front answers (an announced length, or a body that grew past it)."""
    got = f"{length} bytes" if length is not None else "more"
    return PayloadTooLarge(f"request body is over the limit of {limit} bytes (got {got})")


def host_not_allowed(host: str) -> BadRequest:
    """The 400 for a Host header outside ALLOWED_HOSTS (the data plane's and Django's)."""
    return BadRequest(
        f'the Host header "{host[:100]}" is not one this server answers to (MODELHUB_ALLOWED_HOSTS)',
        code="disallowed_host",
    )
