from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import UserToken

pytestmark = pytest.mark.django_db


def test_a_user_gets_a_token_from_username_and_password(engineer):
    response = APIClient().post("/api/v1/auth/token/", {"username": "erin", "password": "erin-pass-123"}, format="json")
    assert response.status_code == 201
    token = response.json()["token"]
    assert token.startswith("mh_user_")
    me = APIClient(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/v1/auth/me/")
    assert me.json() == {"username": "erin", "role": "ml_engineer", "teams": []}


def test_tokens_are_stored_only_as_hashes(engineer):
    token = APIClient().post("/api/v1/auth/token/", {"username": "erin", "password": "erin-pass-123"}).json()["token"]
    row = UserToken.objects.get()
    assert token not in (row.hashed, row.prefix, row.name)
    assert token.split("_", 3)[3] not in row.hashed


def test_a_wrong_password_gets_a_401_json(engineer):
    response = APIClient().post("/api/v1/auth/token/", {"username": "erin", "password": "nope"}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"


def test_a_revoked_or_altered_token_is_refused(engineer):
    token = APIClient().post("/api/v1/auth/token/", {"username": "erin", "password": "erin-pass-123"}).json()["token"]
    altered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {altered}").get("/api/v1/models/").status_code == 401
    UserToken.objects.update(revoked_at=timezone.now())
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {token}").get("/api/v1/models/").status_code == 401
