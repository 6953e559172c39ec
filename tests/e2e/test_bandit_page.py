"""The bandit page in a real Chromium: the arms table and the five Plotly charts (pulls,
mean reward, posterior, cumulative regret, pulls over time), drawn from local assets."""

from __future__ import annotations

from typing import Any

import pytest

from inference import endpoints
from tests.e2e.conftest import sign_in
from tests.inference.bandit_helpers import bandit_state, simulate  # noqa: F401 - fixture

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("bandit_state")]

KEY = "pipeline:5:route"
CONFIG = {"policy": "thompson_bernoulli", "arms": ["fraud-v1", "fraud-v2"]}


def test_the_bandit_page_draws_arms_posteriors_and_regret(page: Any, engineer: Any, live_server: Any) -> None:
    endpoints.endpoint_create(name="fraud", user=engineer)
    simulate(
        KEY, CONFIG, lambda arm, env: float(env.random() < (0.7 if arm == "fraud-v2" else 0.3)), 150, endpoint="fraud"
    )  # noqa: E501
    external: list[str] = []
    page.on("request", lambda request: external.append(request.url))
    sign_in(page, engineer.username)
    page.goto("/endpoints/fraud/")
    page.get_by_role("link", name="Bandits").click()
    page.get_by_role("link", name=KEY).click()
    page.wait_for_selector("body[data-charts-drawn='1']")
    rows = page.locator("#arms tbody tr")
    assert rows.count() == 2
    assert "fraud-v2" in rows.nth(1).inner_text()
    for chart in ("pulls", "means", "posterior", "regret", "over_time"):
        assert page.locator(f"#chart-{chart} .main-svg").count() >= 1, chart
    # Two posterior curves (one per arm) and a regret line with points.
    assert page.locator("#chart-posterior .scatterlayer .trace").count() == 2
    assert page.locator("#chart-regret .scatterlayer path.js-line").count() == 1
    assert [url for url in external if not url.startswith(live_server.url)] == []  # Plotly is served locally
