from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from accounts.models import Team
from accounts.roles import ADMIN, APPROVER, ML_ENGINEER, has_role
from config.errors import Forbidden, NotFound


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
# and the dashboard: pass any queryset whose rows carry a team foreign key. Each app
# scopes its own models with them (registry.selectors.visible_models,
# inference.selectors.visible_endpoints): accounts knows no app above it.


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


def get_visible_or_404(queryset: QuerySet[Any], user: Any, *, team_field: str = "team", **lookup: Any) -> Any:
    """The one row of `queryset` matching `lookup` that the user may see, else NotFound (404).

    Another team's object is answered exactly like a missing one, so its existence does
    not leak. `team_field` names the path to the owning team (e.g. "endpoint__team" for a
    resource that belongs to an endpoint). Every team-owned resource's detail lookups go
    through this (or a thin wrapper such as `endpoint_for_user_or_404`).
    """
    found = team_scope(queryset, user, team_field=team_field).filter(**lookup).first()
    if found is None:
        what = queryset.model._meta.verbose_name
        shown = ", ".join(f"{key.split('__')[0]} {value!r}" for key, value in lookup.items())
        raise NotFound(f"no {what} with {shown}" if shown else f"no such {what}")
    return found


def team_for_user(user: Any, name: str) -> Any:
    """The team called `name`, if the user may put things in it (a member, or an admin).

    NotFound when there is no such team, Forbidden when the user is not a member of it.
    """
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise NotFound(f"no team named {name!r}")
    if not can_access_team(user, team.pk):
        raise Forbidden(f"you are not a member of team {team.name!r}")
    return team


def default_team(user: Any) -> Any:
    """The team a user's new object belongs to when nothing else decides: their only team, else none."""
    if user is None or not user.is_authenticated:
        return None
    teams = list(user.teams.all()[:2])
    return teams[0] if len(teams) == 1 else None


def can_access_team(user: Any, team_id: int | None) -> bool:
    """Whether the user may see and (with the right role) change an object of this team."""
    if team_id is None or is_admin(user):
        return True
    return team_id in user_team_ids(user)


def team_check(user: Any, team_id: int | None, *, what: str) -> None:
    """Raise Forbidden (403 JSON) when the object belongs to a team the user is not in."""
    if not can_access_team(user, team_id):
        team = Team.objects.filter(pk=team_id).values_list("name", flat=True).first()
        raise Forbidden(f"{what} belongs to team {team!r} and you are not a member of it")


def role_check(user: Any, role: str, *, to: str) -> None:
    """Raise Forbidden unless the user holds `role` or above."""
    if user is None or not user.is_authenticated or not has_role(user, role):
        raise Forbidden(f"{to} needs the {role} role or above")
