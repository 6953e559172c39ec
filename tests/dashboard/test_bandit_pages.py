"""The bandit pages: listed per endpoint, another team's a 404, charts from plain data."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from accounts.models import Team
from dashboard.charts import bandit_figures
from inference import endpoints
from tests.conftest import make_user
from tests.inference.bandit_helpers import bandit_state, simulate  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bandit_state")]

KEY = "pipeline:6:route"
CONFIG = {"policy": "thompson_gaussian", "arms": ["a", "b"]}


def test_the_router_page_lists_arms_and_another_teams_is_a_404(
    browser_client: Client, engineer: Any, django_user_model: Any
) -> None:
    endpoint = endpoints.endpoint_create(name="scores", user=engineer)
    simulate(KEY, CONFIG, lambda arm, env: env.gauss(2.0 if arm == "b" else 1.0, 0.5), 60, endpoint="scores")
    index = browser_client.get("/endpoints/scores/bandits/")
    assert index.status_code == 200 and KEY in index.content.decode()
    page = browser_client.get(f"/endpoints/scores/bandits/{KEY}/")
    assert page.status_code == 200
    assert 'id="bandit-figures"' in page.content.decode() and "thompson_gaussian" in page.content.decode()

    endpoint.team = Team.objects.create(name="scorers")
    endpoint.save(update_fields=["team"])
    outsider = Client()
    outsider.force_login(make_user(django_user_model, "oscar", "ml_engineer"))
    assert outsider.get("/endpoints/scores/bandits/").status_code == 404
    assert outsider.get(f"/endpoints/scores/bandits/{KEY}/").status_code == 404
    assert browser_client.get("/endpoints/scores/bandits/pipeline:0:none/").status_code == 404


def test_bandit_charts_from_literal_stats() -> None:
    stats = {
        "arms": [
            {"arm": "a", "pulls": 10, "mean_reward": 0.2, "posterior": {"alpha": 3.0, "beta": 9.0}},
            {"arm": "b", "pulls": 30, "mean_reward": 0.7, "posterior": {"mean": 0.7, "scale": 0.1, "df": 29}},
            {"arm": "c", "pulls": 0, "mean_reward": None, "posterior": {"mean": None, "scale": None, "df": None}},
        ],
        "series": [
            {"time": 1_700_000_000, "decisions": 1, "regret": 0.5, "pulls": {"a": 1}},
            {"time": 1_700_000_060, "decisions": 2, "regret": 0.5, "pulls": {"a": 1, "b": 1}},
        ],
    }
    figures = bandit_figures(stats)
    assert list(figures["pulls"].data[0].y) == [10, 30, 0]
    assert [trace.name for trace in figures["posterior"].data] == ["a", "b"]  # c has no posterior yet
    beta_curve = figures["posterior"].data[0]
    assert max(beta_curve.y) > 2 and beta_curve.x[int(beta_curve.y.argmax())] == pytest.approx(0.2, abs=0.02)
    assert list(figures["regret"].data[0].y) == [0.5, 0.5]
    assert [list(t.y) for t in figures["over_time"].data] == [[1, 1], [0, 1], [0, 0]]
    assert bandit_figures({"arms": [], "series": []})["regret"].layout.annotations  # an "empty" note
