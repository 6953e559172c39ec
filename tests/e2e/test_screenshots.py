"""Screenshots of the main pages for the README (docs/screenshots/*.png), from a seeded platform."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import SCREENSHOTS, sign_in
from tests.e2e.seed import seed_extras, seed_platform

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_main_pages_render_and_are_saved_as_screenshots(page, engineer, approver):
    made = seed_platform(engineer)
    shots = {
        "home": "/",
        "models": "/models/",
        "model": "/models/churn-predictor/",
        "version": "/models/fraud-detector/versions/1/",
    }
    shots |= seed_extras(engineer, approver, made)
    sign_in(page, "alice")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, path in shots.items():
        response = page.goto(path)
        assert response.ok, path
        if name == "monitoring":
            page.locator("#monitor-status[data-requests]").wait_for()
            page.locator("#chart-drift .main-svg").first.wait_for()
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=name == "monitoring")
