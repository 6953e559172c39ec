from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.keys import key_matches, key_prefix
from accounts.models import UserToken, WorkerKey


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mh_user_...`: a person's API token."""

    def authenticate(self, request: Request) -> tuple[Any, UserToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        key = key.strip()
        prefix = key_prefix(key, "user")
        if prefix is None:
            # Application keys (mh_app_...) are for prediction endpoints, which
            # authenticate them themselves.
            if key.startswith("mh_app_"):
                return None
            if key.startswith("mh_worker_"):
                raise exceptions.AuthenticationFailed(
                    "a worker key (mh_worker_...) only downloads artifacts: GET /api/v1/artifacts/{sha256}"
                )
            raise exceptions.AuthenticationFailed("malformed token: expected 'Bearer mh_user_...'")
        token = UserToken.objects.select_related("user").filter(prefix=prefix).first()
        if token is None or not key_matches(key, token.hashed) or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("invalid or revoked token")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("user is inactive")
        token.mark_used()
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="modelhub"'


class WorkerPrincipal:
    """Who a worker key authenticates: an inference worker, not a person (no role, no team)."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_superuser = False

    def __init__(self, key: WorkerKey) -> None:
        self.key = key
        self.pk = None

    def get_username(self) -> str:
        return f"worker:{self.key.name}"

    def __str__(self) -> str:
        return self.get_username()


class WorkerKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mh_worker_...`: an inference worker's key (only the artifact route uses it)."""

    def authenticate(self, request: Request) -> tuple[WorkerPrincipal, WorkerKey] | None:
        scheme, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return None
        key = key.strip()
        prefix = key_prefix(key, "worker")
        if prefix is None:
            raise exceptions.AuthenticationFailed("this route takes a worker key: 'Bearer mh_worker_...'")
        found = WorkerKey.objects.filter(prefix=prefix).first()
        if found is None or not key_matches(key, found.hashed) or found.revoked_at is not None:
            raise exceptions.AuthenticationFailed("invalid or revoked worker key")
        found.mark_used()
        return WorkerPrincipal(found), found

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="modelhub-workers"'
