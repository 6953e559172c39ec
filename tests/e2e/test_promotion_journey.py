"""Ask for a promotion in the browser, then sign in as an approver and approve it."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import sign_in
from tests.e2e.helpers import ready_iris

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def sign_out(page) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login/")


def test_an_engineer_asks_and_an_approver_approves(page, engineer, approver):
    ready_iris(engineer, versions=1)
    sign_in(page, "erin")
    page.goto("/models/iris/versions/1/")
    page.get_by_label("Move to").select_option("Staging")
    page.get_by_label("Justification").fill("accuracy 0.95 on the held-out split")
    page.get_by_role("button", name="Ask for promotion").click()
    assert "sent to the approvers" in page.get_by_role("status").first.inner_text()
    assert page.get_by_text("Waiting for an approver.").is_visible()
    sign_out(page)

    sign_in(page, "alice")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Approvals").click()
    page.get_by_role("link", name="Review").click()
    assert page.get_by_role("table", name="Gates").is_visible()
    page.get_by_label("Comment").fill("looks good")
    page.get_by_role("button", name="Approve").click()
    assert "approved" in page.get_by_role("status").first.inner_text()
    assert page.locator("#request-status").inner_text() == "approved"
    page.goto("/models/iris/")
    assert page.locator(".stages").get_by_role("link", name="v1").is_visible()


def test_an_approver_is_not_offered_to_decide_their_own_request(page, approver):
    ready_iris(approver, versions=1)
    sign_in(page, "alice")
    page.goto("/models/iris/versions/1/")
    page.get_by_label("Justification").fill("mine")
    page.get_by_role("button", name="Ask for promotion").click()
    assert "someone else must decide it" in page.locator("#own-note").inner_text()
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.get_by_role("button", name="Reject").count() == 0
    page.get_by_role("button", name="Cancel my request").click()
    assert page.locator("#request-status").inner_text() == "cancelled"
