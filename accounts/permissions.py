from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.roles import ADMIN, APPROVER, ML_ENGINEER, has_role
from config.errors import Forbidden


class ReadOrEngineerWrites(BasePermission):
    """Any signed-in role reads; writing needs the ML engineer role or above."""

    message = "this change needs the ml_engineer role or above"

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        return request.method in SAFE_METHODS or has_role(request.user, ML_ENGINEER)


class ApproverOnly(BasePermission):
    """Reading the audit trail needs the approver role or above."""

    message = "this needs the approver role or above"

    def has_permission(self, request: Request, view: Any) -> bool:
        return bool(request.user and request.user.is_authenticated and has_role(request.user, APPROVER))


# --- Team scoping ---------------------------------------------------------------------
# A user sees and changes only their teams' objects, plus those that belong to no team;
# admins see everything. These helpers are shared by the registry, inference (endpoints)
# and the dashboard: pass any queryset whose rows carry a team foreign key.


def is_admin(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and has_role(user, ADMIN))


def user_team_ids(user: Any) -> set[int]:
    if user is None or not user.is_authenticated:
        return set()
    return set(user.teams.values_list("pk", flat=True))


def team_scope(queryset: QuerySet[Any], user: Any, *, team_field: str = "team") -> QuerySet[Any]:
    """Rows of `queryset` the user may see: no team, or one of the user's teams (all for admins)."""
    if is_admin(user):
        return queryset
    if user is None or not user.is_authenticated:
        return queryset.none()
    # A subquery, not a join: no duplicate rows, no DISTINCT needed.
    teams = user.teams.values("pk")
    return queryset.filter(Q(**{f"{team_field}__isnull": True}) | Q(**{f"{team_field}__in": teams}))


def visible_models(user: Any, queryset: QuerySet[Any] | None = None) -> QuerySet[Any]:
    """Registered models the user may see (`queryset` narrows a prepared one)."""
    from registry.models import RegisteredModel

    return team_scope(queryset if queryset is not None else RegisteredModel.objects.all(), user)


def visible_endpoints(user: Any, queryset: QuerySet[Any] | None = None) -> QuerySet[Any]:
    """Endpoints the user may see; the serving API and the dashboard use this."""
    from inference.models import Endpoint

    return team_scope(queryset if queryset is not None else Endpoint.objects.all(), user)


def can_access_team(user: Any, team_id: int | None) -> bool:
    """Whether the user may see and (with the right role) change an object of this team."""
    if team_id is None or is_admin(user):
        return True
    return team_id in user_team_ids(user)


def team_check(user: Any, team_id: int | None, *, what: str) -> None:
    """Raise Forbidden (403 JSON) when the object belongs to a team the user is not in."""
    if not can_access_team(user, team_id):
        from accounts.models import Team

        team = Team.objects.filter(pk=team_id).values_list("name", flat=True).first()
        raise Forbidden(f"{what} belongs to team {team!r} and you are not a member of it")


def role_check(user: Any, role: str, *, to: str) -> None:
    """Raise Forbidden unless the user holds `role` or above."""
    if user is None or not user.is_authenticated or not has_role(user, role):
        raise Forbidden(f"{to} needs the {role} role or above")
