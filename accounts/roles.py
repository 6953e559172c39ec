"""The four roles, as Django groups. Superusers are admins whatever their groups."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

VIEWER = "viewer"
ML_ENGINEER = "ml_engineer"
APPROVER = "approver"
ADMIN = "admin"
ALL_ROLES = (VIEWER, ML_ENGINEER, APPROVER, ADMIN)
# Each role includes the powers of the ones before it.
_RANK = {role: rank for rank, role in enumerate(ALL_ROLES)}


def user_role(user: AbstractBaseUser | AnonymousUser) -> str | None:
    if not user.is_authenticated:
        return None
    if getattr(user, "is_superuser", False):
        return ADMIN
    names = set(user.groups.values_list("name", flat=True))  # type: ignore[attr-defined]
    held = [role for role in ALL_ROLES if role in names]
    return max(held, key=_RANK.__getitem__) if held else None


def has_role(user: AbstractBaseUser | AnonymousUser, role: str) -> bool:
    held = user_role(user)
    return held is not None and _RANK[held] >= _RANK[role]
