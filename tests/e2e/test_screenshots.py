"""Screenshots of the main pages for the README (docs/screenshots/*.png), from a seeded platform."""

from __future__ import annotations

import pytest
from django.urls import NoReverseMatch, reverse

from tests.e2e.conftest import SCREENSHOTS, sign_in
from tests.e2e.seed import seed_platform

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_the_main_pages_render_and_are_saved_as_screenshots(page, engineer):
    seed_platform(engineer)
    sign_in(page, "erin")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = {
        "home": "/",
        "models": "/models/",
        "model": "/models/churn-predictor/",
        "version": "/models/fraud-detector/versions/1/",
    }
    for name, url_name in (("approvals", "dash-approvals"), ("endpoints", "dash-endpoints"), ("alerts", "dash-alerts")):
        try:
            shots[name] = reverse(url_name)
        except NoReverseMatch:
            pass
    for name, path in shots.items():
        response = page.goto(path)
        assert response.ok, path
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)
