"""Domain errors raised by services; one renderer (common.http.error_reply) maps them to JSON.

They derive from the one Django-free base, `common.errors.ModelhubError` (status, code,
message, details, retry_after); these names stay importable here for every app.
"""

from __future__ import annotations

from typing import Any

from common.errors import ModelhubError
from common.errors import PayloadTooLarge as _PayloadTooLarge


class DomainError(ModelhubError):
    """A refused request: the message says what was expected and what arrived."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class PayloadTooLarge(DomainError, _PayloadTooLarge):
    status = 413
    code = "payload_too_large"


class ServiceUnavailable(DomainError):
    """A dependency (Redis, the database, a worker pool) is away: 503 with Retry-After."""

    status = 503
    code = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 1, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after_s
