"""Domain errors of the serving core.

Each error carries the HTTP status an edge should answer with (`status`) and a short
machine-readable `code`: they derive from the one Django-free base
(`common.errors.ModelhubError`), so `common.http.error_reply` maps every runtime failure
to a JSON error without knowing the runtime's internals.
"""

from __future__ import annotations

from typing import Any

from common.errors import ModelhubError


class RuntimeErrorBase(ModelhubError):
    """Base of every error the serving core raises on purpose."""

    status: int = 500
    code: str = "runtime_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: `{"error": message, "code": code}`."""
        return {"error": self.message, "code": self.code}


class InputError(RuntimeErrorBase):
    """The request does not fit the model: names, datatypes, shapes, values or payload."""

    status = 400
    code = "invalid_input"


class ModelNotFound(RuntimeErrorBase):
    """No model is loaded under the requested key."""

    status = 404
    code = "model_not_found"


class ModelNotReady(RuntimeErrorBase):
    """The model is loading, unloaded, or its batcher is closed."""

    status = 503
    code = "model_not_ready"


class ColdStart(ModelNotReady):
    """The model was unloaded to make room for others and reloading it takes longer than
    the request's deadline: the reload has started, retry after about that long."""

    code = "cold_start"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after_s


class MemoryBudgetExceeded(ModelNotReady):
    """Loading the model would exceed the process's model-memory budget even after
    unloading every model that may be unloaded (the others are pinned or too few)."""

    code = "memory_budget_exceeded"

    def __init__(self, message: str, *, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after_s


class Overloaded(RuntimeErrorBase):
    """The deployment's queue is full; the client should back off and retry."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after_s


class DeadlineExceeded(RuntimeErrorBase):
    """The request ran out of time, waiting in the queue or inside the model."""

    status = 504
    code = "deadline_exceeded"


class ModelLoadError(RuntimeErrorBase):
    """A model file could not be loaded into ONNX Runtime."""

    status = 500
    code = "model_load_failed"


class ModelExecutionError(RuntimeErrorBase):
    """ONNX Runtime failed while running validated inputs: a fault of the model."""

    status = 500
    code = "model_error"
