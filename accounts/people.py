"""Managing people: accounts, roles, teams, passwords and tokens (admins only).

The dashboard's People page and `python manage.py modelhub_user` both call these; each
change is an audit event. A role is one of the four groups (accounts.roles): setting it
replaces the others, so a person holds exactly one. The command line acts as `actor=None`
(recorded as "system"): whoever runs manage.py already owns the database.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import Team, UserToken
from accounts.permissions import role_check
from accounts.roles import ADMIN, ALL_ROLES, user_role
from accounts.services import roles_ensure
from audit.services import audit_record
from config.errors import Conflict, DomainError, NotFound


@dataclass(frozen=True)
class Person:
    username: str
    email: str
    role: str | None
    teams: tuple[str, ...]
    active: bool
    active_tokens: int
    last_login: str | None


def _admin_check(actor: AbstractBaseUser | None, what: str) -> None:
    if actor is not None:
        role_check(actor, ADMIN, to=what)


def _role_checked(role: str) -> str:
    if role not in ALL_ROLES:
        raise DomainError(f"role: expected one of {', '.join(ALL_ROLES)}, got {role!r}")
    return role


def _password_checked(password: str, user: Any = None) -> str:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise DomainError("password: " + " ".join(exc.messages)) from None
    return password


def user_get(*, username: str) -> Any:
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"no user named {username!r}")
    return user


def people_list() -> list[Person]:
    users = get_user_model().objects.order_by("username").prefetch_related("groups", "teams")
    tokens: dict[int, int] = {}
    for user_id in UserToken.objects.filter(revoked_at__isnull=True).values_list("user_id", flat=True):
        tokens[user_id] = tokens.get(user_id, 0) + 1
    return [
        Person(
            username=u.username,
            email=u.email,
            role=user_role(u),
            teams=tuple(sorted(t.name for t in u.teams.all())),
            active=u.is_active,
            active_tokens=tokens.get(u.pk, 0),
            last_login=u.last_login.isoformat() if u.last_login else None,
        )
        for u in users
    ]


@transaction.atomic
def user_create(
    *,
    username: str,
    role: str,
    actor: AbstractBaseUser | None,
    password: str = "",
    email: str = "",
    teams: list[str] | None = None,
    source_ip: str | None = None,
) -> tuple[Any, str]:
    """A new account with one role (and teams). Returns (user, password): the password is
    generated when none is given, and shown once by the caller."""
    _admin_check(actor, "creating an account")
    username = username.strip()
    if not username or len(username) > 150:
        raise DomainError("username: expected 1 to 150 characters")
    _role_checked(role)
    password = password or secrets.token_urlsafe(12)
    _password_checked(password)
    roles_ensure()
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(username=username, email=email, password=password)
    except IntegrityError:
        raise Conflict(f"a user named {username!r} already exists") from None
    user.groups.set([Group.objects.get(name=role)])
    for team in teams or []:
        _team_join(user, team)
    audit_record(
        actor=actor,
        action="user.create",
        obj=user,
        after={"username": username, "role": role, "teams": sorted(teams or [])},
        source_ip=source_ip,
    )
    return user, password


@transaction.atomic
def user_set_role(*, user: Any, role: str, actor: AbstractBaseUser | None, source_ip: str | None = None) -> Any:
    _admin_check(actor, "changing a role")
    _role_checked(role)
    before = user_role(user)
    if actor is not None and actor.pk == user.pk and role != ADMIN:
        raise DomainError("you cannot take the admin role away from yourself: ask another admin")
    roles_ensure()
    user.groups.remove(*Group.objects.filter(name__in=ALL_ROLES).exclude(name=role))
    user.groups.add(Group.objects.get(name=role))
    audit_record(
        actor=actor, action="user.role", obj=user, before={"role": before}, after={"role": role}, source_ip=source_ip
    )
    return user


def _team_join(user: Any, name: str) -> Team:
    team = Team.objects.filter(name=name).first()
    if team is None:
        raise NotFound(f"no team named {name!r} (create it in /admin/ or with --create-team)")
    team.members.add(user)
    return team


@transaction.atomic
def user_add_to_team(
    *, user: Any, team: str, actor: AbstractBaseUser | None, create: bool = False, source_ip: str | None = None
) -> Team:
    _admin_check(actor, "changing a team")
    if create:
        Team.objects.get_or_create(name=team)
    joined = _team_join(user, team)
    audit_record(actor=actor, action="user.team_add", obj=user, after={"team": team}, source_ip=source_ip)
    return joined


@transaction.atomic
def user_remove_from_team(
    *, user: Any, team: str, actor: AbstractBaseUser | None, source_ip: str | None = None
) -> None:
    _admin_check(actor, "changing a team")
    found = Team.objects.filter(name=team).first()
    if found is None:
        raise NotFound(f"no team named {team!r}")
    found.members.remove(user)
    audit_record(actor=actor, action="user.team_remove", obj=user, after={"team": team}, source_ip=source_ip)


@transaction.atomic
def user_password_reset(
    *, user: Any, actor: AbstractBaseUser | None, password: str = "", source_ip: str | None = None
) -> str:
    """Set a new password (generated when none is given; returned once). Existing tokens
    keep working: revoke them separately when the account may be compromised."""
    _admin_check(actor, "resetting a password")
    password = password or secrets.token_urlsafe(12)
    _password_checked(password, user)
    user.set_password(password)
    user.save(update_fields=["password"])
    audit_record(actor=actor, action="user.password_reset", obj=user, after={}, source_ip=source_ip)
    return password


@transaction.atomic
def user_tokens_revoke(*, user: Any, actor: AbstractBaseUser | None, source_ip: str | None = None) -> int:
    """Revoke every API token of the user at once; the next call with one is a 401."""
    _admin_check(actor, "revoking tokens")
    prefixes = list(UserToken.objects.filter(user=user, revoked_at__isnull=True).values_list("prefix", flat=True))
    UserToken.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=timezone.now())
    audit_record(actor=actor, action="user.tokens_revoke", obj=user, after={"prefixes": prefixes}, source_ip=source_ip)
    return len(prefixes)
