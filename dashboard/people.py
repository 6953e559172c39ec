"""The People page (admins): create accounts, set roles and teams, reset passwords and
revoke tokens. Writes call accounts.people, the same services as `manage.py modelhub_user`."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from accounts import people
from accounts.models import Team
from accounts.roles import ADMIN, ALL_ROLES, has_role
from config.http import client_ip
from dashboard.views import domain_errors_as_messages, page


def _admin_only(request: HttpRequest) -> None:
    if not has_role(request.user, ADMIN):
        raise PermissionDenied("the People page needs the admin role")


def _list_page(request: HttpRequest, **extra: object) -> HttpResponse:
    response = page(
        request,
        "dashboard/people/list.html",
        {
            "people": people.people_list(),
            "roles": ALL_ROLES,
            "teams": list(Team.objects.order_by("name").values_list("name", flat=True)),
            **extra,
        },
    )
    if extra:
        response["Cache-Control"] = "no-store"  # a password is in this page only
    return response


@login_required
def people_list(request: HttpRequest) -> HttpResponse:
    _admin_only(request)
    return _list_page(request)


@login_required
@require_POST
@domain_errors_as_messages
def person_create(request: HttpRequest) -> HttpResponse:
    _admin_only(request)
    team = request.POST.get("team", "").strip()
    user, password = people.user_create(
        username=request.POST.get("username", ""),
        role=request.POST.get("role", ""),
        email=request.POST.get("email", "").strip(),
        password=request.POST.get("password", ""),
        teams=[team] if team else [],
        actor=request.user,
        source_ip=client_ip(request),
    )
    messages.success(request, f"Account {user.username} created.")
    if request.POST.get("password"):
        return redirect("dash-people")
    return _list_page(request, new_user=user.username, new_password=password)


@login_required
@require_POST
@domain_errors_as_messages
def person_action(request: HttpRequest, username: str, action: str) -> HttpResponse:
    _admin_only(request)
    user = people.user_get(username=username)
    ip = client_ip(request)
    if action == "role":
        people.user_set_role(user=user, role=request.POST.get("role", ""), actor=request.user, source_ip=ip)
        messages.success(request, f"{username} is {request.POST.get('role')} now.")
    elif action == "team-add":
        team = request.POST.get("team", "").strip()
        people.user_add_to_team(user=user, team=team, actor=request.user, source_ip=ip)
        messages.success(request, f"{username} joined {team}.")
    elif action == "team-remove":
        team = request.POST.get("team", "").strip()
        people.user_remove_from_team(user=user, team=team, actor=request.user, source_ip=ip)
        messages.success(request, f"{username} left {team}.")
    elif action == "password":
        password = people.user_password_reset(user=user, actor=request.user, source_ip=ip)
        return _list_page(request, new_user=username, new_password=password)
    elif action == "revoke-tokens":
        count = people.user_tokens_revoke(user=user, actor=request.user, source_ip=ip)
        messages.success(request, f"{count} token(s) of {username} revoked.")
    else:
        raise PermissionDenied(f"unknown action {action!r}")
    return redirect("dash-people")
