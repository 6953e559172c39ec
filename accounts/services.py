from __future__ import annotations

from django.contrib.auth import authenticate
from django.contrib.auth.models import AbstractBaseUser, Group

from accounts.keys import key_generate
from accounts.models import UserToken, WorkerKey
from accounts.roles import ALL_ROLES
from config.errors import DomainError


class InvalidCredentials(DomainError):
    status = 401
    code = "invalid_credentials"


def user_token_create(*, user: AbstractBaseUser, name: str = "") -> tuple[UserToken, str]:
    """A new token for the user; the plain key is returned once and never stored."""
    new = key_generate("user")
    token = UserToken.objects.create(user=user, name=name[:100], prefix=new.prefix, hashed=new.hashed)
    return token, new.key


def worker_key_create(*, name: str) -> tuple[WorkerKey, str]:
    """A new inference worker key; the plain key is returned once and never stored."""
    new = key_generate("worker")
    key = WorkerKey.objects.create(name=name[:100], prefix=new.prefix, hashed=new.hashed)
    return key, new.key


def worker_key_revoke(*, prefix: str) -> int:
    """Revoke the worker key with this prefix (its name's key, as listed); how many were revoked."""
    from django.utils import timezone

    return WorkerKey.objects.filter(prefix=prefix, revoked_at__isnull=True).update(revoked_at=timezone.now())


def user_token_obtain(*, username: str, password: str, name: str = "") -> tuple[UserToken, str]:
    user = authenticate(username=username, password=password)
    if user is None or not user.is_active:
        raise InvalidCredentials("unknown username or wrong password")
    return user_token_create(user=user, name=name or "api")


def roles_ensure() -> None:
    """The role groups exist (idempotent; run by migrations and the bootstrap command)."""
    for role in ALL_ROLES:
        Group.objects.get_or_create(name=role)
