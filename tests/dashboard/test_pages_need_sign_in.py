from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/", "/models/", "/models/anything/", "/models/anything/versions/1/"])
def test_a_page_sends_an_anonymous_visitor_to_sign_in(path):
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_the_sign_in_page_signs_a_user_in(engineer):
    client = Client()
    response = client.post("/login/", {"username": "erin", "password": "erin-pass-123"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_a_wrong_password_is_refused_with_a_message(engineer):
    response = Client().post("/login/", {"username": "erin", "password": "wrong"})
    assert response.status_code == 200
    assert b"Wrong username or password" in response.content
