from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.roles import ML_ENGINEER, has_role


class ReadOrEngineerWrites(BasePermission):
    """Any signed-in role reads; writing needs the ML engineer role or above."""

    message = "this change needs the ml_engineer role or above"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        return request.method in SAFE_METHODS or has_role(request.user, ML_ENGINEER)
