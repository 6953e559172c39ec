from __future__ import annotations

import pytest

from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_user_signs_in_and_sees_the_platform_at_a_glance(page, engineer):
    page.goto("/models/")
    assert "/login/" in page.url
    sign_in(page, "erin")
    assert page.get_by_role("heading", name="Platform at a glance").is_visible()
    assert page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").is_visible()


def test_a_wrong_password_shows_a_message(page, engineer):
    page.goto("/login/")
    page.get_by_label("Username").fill("erin")
    page.get_by_label("Password").fill("nope")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong username or password."
