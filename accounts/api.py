from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle

from accounts import services
from accounts.roles import user_role
from config.openapi import ERROR_RESPONSE


class TokenRequest(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=256, trim_whitespace=False)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)


class LoginThrottle(AnonRateThrottle):
    rate = "30/min"


@extend_schema(
    summary="Get an API token from username and password (shown once)",
    request=TokenRequest,
    responses={
        201: inline_serializer(
            "TokenResponse",
            {"token": serializers.CharField(), "prefix": serializers.CharField(), "user": serializers.CharField()},
        ),
        401: ERROR_RESPONSE("wrong username or password (invalid_credentials)"),
        429: ERROR_RESPONSE("too many attempts from this address; Retry-After says when to try again"),
    },
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([AllowAny])
def token_obtain(request: Request) -> Response:
    LoginThrottle().allow_request(request, None) or _throttled()
    data = TokenRequest(data=request.data)
    data.is_valid(raise_exception=True)
    token, key = services.user_token_obtain(**data.validated_data)
    return Response({"token": key, "prefix": token.prefix, "user": token.user.get_username()}, status=201)


def _throttled() -> None:
    from rest_framework.exceptions import Throttled

    raise Throttled()


@extend_schema(
    summary="Who am I: user, role and teams",
    responses=inline_serializer(
        "Me",
        {
            "username": serializers.CharField(),
            "role": serializers.CharField(allow_null=True),
            "teams": serializers.ListField(child=serializers.CharField()),
        },
    ),
)
@api_view(["GET"])
def me(request: Request) -> Response:
    user = request.user
    return Response(
        {
            "username": user.get_username(),
            "role": user_role(user),
            "teams": list(user.teams.values_list("name", flat=True)),
        }
    )
