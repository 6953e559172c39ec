"""Admins manage people from the command line and from the People page (issue #12)."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import Team, UserToken
from accounts.roles import user_role
from audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("modelhub_user", *args, stdout=out)
    return out.getvalue()


def test_the_command_creates_an_approver_whose_printed_password_gets_a_token_from_the_api() -> None:
    text = run("add", "alice", "--role", "approver")
    password = re.search(r"user created: alice / (\S+) \(role approver\)", text).group(1)  # type: ignore[union-attr]
    response = APIClient().post("/api/v1/auth/token/", {"username": "alice", "password": password}, format="json")
    assert response.status_code == 201, response.content
    me = APIClient(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}").get("/api/v1/auth/me/")
    assert me.json()["role"] == "approver"
    assert AuditEvent.objects.get(action="user.create").after["role"] == "approver"


def test_the_command_sets_roles_and_teams_and_lists_people() -> None:
    run("add", "bob", "--password", "a-long-enough-pass-9")
    run("set-role", "bob", "viewer")
    run("add-to-team", "bob", "fraud", "--create-team")
    bob = get_user_model().objects.get(username="bob")
    assert user_role(bob) == "viewer" and list(bob.groups.values_list("name", flat=True)) == ["viewer"]
    assert Team.objects.get(name="fraud").members.filter(pk=bob.pk).exists()
    listing = run("list")
    assert re.search(r"bob\s+viewer\s+yes\s+0\s+fraud", listing), listing
    with pytest.raises(CommandError, match="no team named 'nope'"):
        run("add-to-team", "bob", "nope")
    with pytest.raises(CommandError, match="already exists"):
        run("add", "bob")


def test_the_command_prints_a_token_and_revokes_them_all() -> None:
    run("add", "carol", "--password", "a-long-enough-pass-9")
    key = re.search(r"\(shown once\): (mh_user_\S+)", run("token", "carol")).group(1)  # type: ignore[union-attr]
    client = APIClient(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.get("/api/v1/auth/me/").status_code == 200
    assert "1 token(s) revoked" in run("revoke-tokens", "carol")
    assert client.get("/api/v1/auth/me/").status_code == 401


@pytest.fixture
def admin_client(admin_user: Any) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def test_an_admin_manages_people_from_the_people_page(admin_client: Client, engineer: Any) -> None:
    Team.objects.create(name="risk")
    page = admin_client.get("/people/").content.decode()
    assert "erin" in page and 'href="/people/"' in page
    response = admin_client.post("/people/new", {"username": "dana", "role": "approver", "team": "risk"})
    html = response.content.decode()
    password = re.search(r'<code id="new-secret">(\S+)</code>', html).group(1)  # type: ignore[union-attr]
    assert Client().login(username="dana", password=password)
    dana = get_user_model().objects.get(username="dana")
    assert user_role(dana) == "approver" and list(dana.teams.values_list("name", flat=True)) == ["risk"]

    admin_client.post("/people/erin/role", {"role": "approver"})
    admin_client.post("/people/erin/team-add", {"team": "risk"})
    assert user_role(engineer) == "approver" and engineer.teams.filter(name="risk").exists()
    admin_client.post("/people/erin/team-remove", {"team": "risk"})
    assert not engineer.teams.exists()

    html = admin_client.post("/people/erin/password").content.decode()
    new = re.search(r'<code id="new-secret">(\S+)</code>', html).group(1)  # type: ignore[union-attr]
    assert Client().login(username="erin", password=new)

    UserToken.objects.create(user=engineer, prefix="abcdefabcdef", hashed="x")
    admin_client.post("/people/erin/revoke-tokens")
    assert not UserToken.objects.filter(user=engineer, revoked_at__isnull=True).exists()
    actions = set(AuditEvent.objects.filter(actor_name="ada").values_list("action", flat=True))
    assert {"user.create", "user.role", "user.team_add", "user.team_remove", "user.password_reset"} <= actions
    assert "user.tokens_revoke" in actions


def test_people_is_for_admins_only(engineer: Any, approver: Any) -> None:
    client = Client()
    client.force_login(approver)
    assert client.get("/people/").status_code == 403
    assert 'href="/people/"' not in client.get("/").content.decode()
    assert client.post("/people/erin/role", {"role": "admin"}).status_code == 403
    assert user_role(engineer) == "ml_engineer"


def test_a_bad_role_from_the_page_is_a_message_and_changes_nothing(admin_client: Client, engineer: Any) -> None:
    response = admin_client.post("/people/erin/role", {"role": "king"}, follow=True, HTTP_REFERER="/people/")
    assert "role: expected one of" in response.content.decode()
    assert user_role(engineer) == "ml_engineer"
