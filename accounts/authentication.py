from __future__ import annotations

from typing import Any

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from accounts.keys import key_matches, key_prefix
from accounts.models import UserToken


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
            raise exceptions.AuthenticationFailed("malformed token: expected 'Bearer mh_user_...'")
        token = UserToken.objects.select_related("user").filter(prefix=prefix).first()
        if token is None or not key_matches(key, token.hashed) or token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("invalid or revoked token")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("user is inactive")
        now = timezone.now()
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            UserToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="modelhub"'
