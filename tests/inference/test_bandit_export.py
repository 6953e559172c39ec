"""Per-arm statistics and the decision export (propensities and rewards), team-scoped."""

from __future__ import annotations

import csv
import io
from typing import Any

import orjson
import pytest

from accounts.models import Team
from inference.bandits import decide
from inference.bandits.feedback import feedback
from tests.conftest import client_for, make_user
from tests.inference.bandit_helpers import bandit_state, simulate  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bandit_state")]

CONFIG = {"policy": "thompson_bernoulli", "arms": ["v1", "v2"], "floor": 0.05}
KEY = "pipeline:3:route"


def seeded(iris_endpoint: Any) -> list[str]:
    return simulate(KEY, CONFIG, lambda arm, env: float(arm == "v2" or env.random() < 0.2), 120, endpoint="iris")


def test_stats_show_pulls_means_posteriors_and_regret(api: Any, iris_endpoint: Any) -> None:
    chosen = seeded(iris_endpoint)
    decide(KEY, CONFIG["arms"], CONFIG, "unrewarded", endpoint="iris")
    listed = api.get("/api/v1/endpoints/iris/bandits/").json()
    assert listed["routers"] == [{"router": KEY, "policy": "thompson_bernoulli", "arms": ["v1", "v2"]}]
    body = api.get(f"/api/v1/endpoints/iris/bandits/{KEY}/stats").json()
    arms = {arm["arm"]: arm for arm in body["arms"]}
    assert arms["v2"]["pulls"] - chosen.count("v2") in (0, 1)  # + the unrewarded decision's arm
    assert sum(a["pulls"] for a in arms.values()) == 121 and sum(a["rewards"] for a in arms.values()) == 120
    assert arms["v2"]["mean_reward"] == 1.0
    assert arms["v2"]["posterior"] == {"alpha": 1 + arms["v2"]["reward_sum"], "beta": 1.0}
    assert arms["v1"]["share"] == pytest.approx(0.05, abs=0.02) and sum(a["share"] for a in arms.values()) == 1
    assert body["decisions_logged"] == 121 and body["rewarded"] == 120
    regret = [point["regret"] for point in body["series"]]
    assert regret == sorted(regret) and regret[-1] > 0  # cumulative: never decreases
    assert body["series"][-1]["pulls"] == {"v1": arms["v1"]["pulls"], "v2": arms["v2"]["pulls"]}


@pytest.mark.parametrize("output", ["jsonl", "csv"])
def test_decisions_export_with_propensities_and_rewards(api: Any, iris_endpoint: Any, output: str) -> None:
    seeded(iris_endpoint)
    decide(KEY, CONFIG["arms"], CONFIG, "late", endpoint="iris")
    feedback("iris", "late", [0.0])
    response = api.get(f"/api/v1/endpoints/iris/bandits/{KEY}/decisions?output={output}")
    assert response.status_code == 200
    text = b"".join(response.streaming_content).decode()
    if output == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows[-1]["request_id"] == "late" and float(rows[-1]["reward"]) == 0.0
    else:
        rows = [orjson.loads(line) for line in text.splitlines()]
        assert rows[-1]["request_id"] == "late" and rows[-1]["reward"] == 0.0
    assert len(rows) == 121
    assert all(0 < float(row["propensity"]) <= 1 for row in rows)
    assert {row["arm"] for row in rows} == {"v1", "v2"}


def test_another_teams_router_is_a_404(django_user_model: Any, iris_endpoint: Any) -> None:
    seeded(iris_endpoint)
    team = Team.objects.create(name="owners")
    iris_endpoint.team = team
    iris_endpoint.save(update_fields=["team"])
    outsider = client_for(make_user(django_user_model, "olga", "ml_engineer"))
    for path in ("", f"{KEY}/stats", f"{KEY}/decisions"):
        assert outsider.get(f"/api/v1/endpoints/iris/bandits/{path}").status_code == 404


def test_a_router_that_never_served_the_endpoint_is_a_404(api: Any, iris_endpoint: Any) -> None:
    decide("pipeline:4:elsewhere", CONFIG["arms"], CONFIG, "x", endpoint="other")
    assert api.get("/api/v1/endpoints/iris/bandits/pipeline:4:elsewhere/stats").status_code == 404
