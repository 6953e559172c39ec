"""Set a 90/10 split, send predictions from the try-it panel, see the charts show the
traffic, then create an alert rule and see it fire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.e2e.conftest import sign_in
from tests.e2e.helpers import ready_iris

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_split_predict_watch_and_alert(page, engineer):
    from monitoring import alerts, flusher, rollups

    ready_iris(engineer)
    sign_in(page, "erin")
    page.goto("/endpoints/")
    page.get_by_text("Create an endpoint").click()
    page.get_by_label("Name").fill("flowers")
    page.get_by_role("button", name="Create").click()
    page.wait_for_url("**/endpoints/flowers/")

    page.get_by_label("Version for row 1").select_option("iris:1")
    page.get_by_label("Role for row 1").select_option("primary")
    page.get_by_label("Weight for row 1").fill("90")
    page.get_by_label("Version for row 2").select_option("iris:2")
    page.get_by_label("Role for row 2").select_option("canary")
    page.get_by_label("Weight for row 2").fill("5")
    assert "must add up to 100%" in page.locator("#split-sum").inner_text()
    assert page.locator("#split-save").is_disabled()
    page.get_by_label("Weight for row 2").fill("10")
    page.get_by_role("button", name="Save as a new revision").click()
    assert "Revision 1 is the split of flowers now." in page.get_by_role("status").first.inner_text()
    deployments = page.get_by_role("table", name="Deployments")
    assert "90%" in deployments.inner_text() and "10%" in deployments.inner_text()

    page.get_by_label("New key name").fill("e2e")
    page.get_by_role("button", name="Create key").click()
    assert page.locator("#new-secret").inner_text().startswith("mh_")
    for _ in range(6):
        page.evaluate("document.getElementById('try-status').removeAttribute('data-status')")
        page.get_by_role("button", name="Send prediction").click()
        page.locator("#try-status[data-status]").wait_for()
        assert page.locator("#try-status").get_attribute("data-status") == "200", page.locator(
            "#try-output"
        ).inner_text()

    # What beat does every minute: move the counters to Redis, close the minute, roll it up.
    flusher.flush_now()
    rollups.rollup_minutes(now=timezone.now() + timedelta(minutes=3))
    page.goto("/monitoring/flowers/")
    page.locator("#monitor-status[data-requests]").wait_for()
    assert page.locator("#monitor-status").get_attribute("data-requests") == "6"
    assert page.locator("#chart-rps .scatterlayer .trace").count() >= 1

    page.goto("/alerts/?endpoint=flowers")
    page.get_by_label("Metric").select_option("no_traffic")
    page.get_by_label("Comparison").select_option(">=")
    page.get_by_label("Threshold").fill("1")
    page.get_by_label("Window (min)").fill("10")
    page.get_by_role("button", name="Create rule").click()
    assert "created" in page.get_by_role("status").first.inner_text()
    alerts.alerts_evaluate()
    page.reload()
    assert page.locator(".rule-state").inner_text() == "firing"
    assert "firing" in page.get_by_role("table", name="Alert history").inner_text()
