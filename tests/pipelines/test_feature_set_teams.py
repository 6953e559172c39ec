"""Feature sets belong to a team: loading, pipelines that read them, and the list."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from accounts.models import Team
from accounts.roles import ML_ENGINEER
from inference.pipelines import features, services
from inference.pipelines.graph import FeatureLookup
from inference.pipelines.models import FeatureSet, Pipeline, PipelineVersion
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db
ROWS = [{"card_id": 101, "avg_amount": 40.0}, {"card_id": 102, "avg_amount": 900.0}]


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


@pytest.fixture
def set_name() -> Iterator[str]:
    name = f"cards-{uuid.uuid4().hex[:8]}"
    yield name
    keys = list(_redis().scan_iter(f"{features.PREFIX}{name}:*"))
    if keys:
        _redis().delete(*keys)


def _store(name: str) -> dict[bytes, dict[bytes, bytes]]:
    client = _redis()
    return {k: client.hgetall(k) for k in client.scan_iter(f"{features.PREFIX}{name}:*")}


@pytest.fixture
def teams(django_user_model: Any) -> dict[str, Any]:
    """Two teams with an ML engineer each."""
    fraud, risk = Team.objects.create(name="fraud"), Team.objects.create(name="risk")
    frank, rita = make_user(django_user_model, "frank", ML_ENGINEER), make_user(django_user_model, "rita", ML_ENGINEER)
    frank.teams.add(fraud)
    rita.teams.add(risk)
    return {"fraud": fraud, "risk": risk, "frank": frank, "rita": rita}


def _load(user: Any, name: str, rows: list[dict[str, Any]] = ROWS, **extra: Any) -> Any:
    return client_for(user).post(
        f"/api/v1/feature-sets/{name}/load", {"key": "card_id", "rows": rows, **extra}, format="json"
    )


def lookup_spec(name: str) -> dict[str, Any]:
    return {
        "inputs": [{"name": "card_id", "datatype": "INT64", "shape": [-1]}],
        "outputs": ["avg_amount"],
        "steps": [
            {
                "name": "lookup",
                "kind": "feature_lookup",
                "key": "card_id",
                "feature_set": name,
                "features": ["avg_amount"],
                "on_missing": "default",
                "defaults": {"avg_amount": -1.0},
            }
        ],
    }


def test_a_first_load_makes_the_set_the_loaders_teams(teams: dict[str, Any], set_name: str) -> None:
    answer = _load(teams["frank"], set_name)
    assert answer.status_code == 201, answer.content
    assert answer.json()["team"] == "fraud"
    feature_set = FeatureSet.objects.get(name=set_name)
    assert feature_set.team == teams["fraud"] and feature_set.rows_loaded == 2 and feature_set.loaded_at is not None
    assert _load(teams["frank"], set_name, [{"card_id": 103, "avg_amount": 15.0}]).status_code == 201  # own team


def test_loading_into_another_teams_set_is_a_404_and_changes_nothing(teams: dict[str, Any], set_name: str) -> None:
    assert _load(teams["frank"], set_name).status_code == 201
    before, row = _store(set_name), FeatureSet.objects.values().get(name=set_name)
    assert before  # the set is in the test Redis
    answer = _load(teams["rita"], set_name, [{"card_id": 101, "avg_amount": 1.0}, {"card_id": 999, "avg_amount": 2.0}])
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert _store(set_name) == before
    assert FeatureSet.objects.values().get(name=set_name) == row


def test_the_list_shows_only_the_sets_a_user_may_see(teams: dict[str, Any], set_name: str, admin_user: Any) -> None:
    assert _load(teams["frank"], set_name).status_code == 201
    mine = client_for(teams["frank"]).get("/api/v1/feature-sets/").json()
    assert [(s["name"], s["team"], s["rows_loaded"]) for s in mine] == [(set_name, "fraud", 2)]
    assert mine[0]["loaded_at"]
    assert client_for(teams["rita"]).get("/api/v1/feature-sets/").json() == []
    assert [s["name"] for s in client_for(admin_user).get("/api/v1/feature-sets/").json()] == [set_name]


def test_an_admin_loads_any_teams_set_which_keeps_its_team(
    teams: dict[str, Any], set_name: str, admin_user: Any
) -> None:
    assert _load(teams["frank"], set_name).status_code == 201
    answer = _load(admin_user, set_name, [{"card_id": 105, "avg_amount": 5.0}])
    assert answer.status_code == 201, answer.content
    assert FeatureSet.objects.get(name=set_name).team == teams["fraud"]


def test_saving_a_pipeline_that_reads_another_teams_set_is_a_400_naming_it(
    teams: dict[str, Any], set_name: str
) -> None:
    assert _load(teams["frank"], set_name).status_code == 201
    body = {"name": "risky", "team": "risk", "spec": lookup_spec(set_name)}
    answer = client_for(teams["rita"]).post("/api/v1/pipelines/", body, format="json")
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_pipeline"
    assert set_name in answer.json()["error"]["message"]
    assert not Pipeline.objects.filter(name="risky").exists()
    check = client_for(teams["rita"]).post(
        "/api/v1/pipelines/validate", {"team": "risk", "spec": lookup_spec(set_name)}, format="json"
    )
    assert check.status_code == 400 and set_name in check.json()["error"]["message"]
    own = client_for(teams["frank"]).post(
        "/api/v1/pipelines/", {"name": "fraudy", "team": "fraud", "spec": lookup_spec(set_name)}, format="json"
    )
    assert own.status_code == 201, own.content


def test_a_pipeline_that_names_a_new_set_keeps_it_for_its_team(teams: dict[str, Any], set_name: str) -> None:
    services.pipeline_create(name="early", spec=lookup_spec(set_name), user=teams["rita"], team=teams["risk"])
    assert FeatureSet.objects.get(name=set_name).team == teams["risk"]
    assert _load(teams["frank"], set_name).status_code == 404
    assert _store(set_name) == {}


def _served(version: PipelineVersion) -> list[float]:
    graph = services.compile_version(version)
    step = graph.steps["lookup"]
    assert isinstance(step, FeatureLookup)
    return features.fetch(step, np.array([101, 102])).ravel().tolist()


def test_at_run_time_a_lookup_reads_only_sets_its_pipelines_team_may_see(teams: dict[str, Any], set_name: str) -> None:
    assert _load(teams["frank"], set_name).status_code == 201
    # A version saved before sets had owners (no check then): stored as it was.
    theirs = PipelineVersion.objects.create(
        pipeline=Pipeline.objects.create(name="old-risk", team=teams["risk"]), version=1, spec=lookup_spec(set_name)
    )
    ours = PipelineVersion.objects.create(
        pipeline=Pipeline.objects.create(name="old-fraud", team=teams["fraud"]), version=1, spec=lookup_spec(set_name)
    )
    assert _served(ours) == [40.0, 900.0]
    assert _served(theirs) == [-1.0, -1.0]  # the defaults: nothing of the fraud team's set is read


def test_a_set_loaded_before_owners_stays_shared(teams: dict[str, Any], set_name: str) -> None:
    features.features_load(feature_set=set_name, key="card_id", rows=ROWS)  # as before this change
    assert _load(teams["rita"], set_name).status_code == 201
    assert FeatureSet.objects.get(name=set_name).team is None
    assert _load(teams["frank"], set_name).status_code == 201


def test_the_command_loads_for_a_team_and_keeps_an_existing_sets_team(
    teams: dict[str, Any], set_name: str, tmp_path: Any
) -> None:
    csv = tmp_path / "cards.csv"
    csv.write_text("card_id,avg_amount\n101,40\n102,900\n")
    out = io.StringIO()
    call_command("features_load", feature_set=set_name, key="card_id", file=str(csv), team="fraud", stdout=out)
    assert "team fraud" in out.getvalue()
    assert FeatureSet.objects.get(name=set_name).team == teams["fraud"]
    call_command("features_load", feature_set=set_name, key="card_id", file=str(csv), stdout=out)
    before = _store(set_name)
    with pytest.raises(CommandError, match="belongs to team 'fraud'"):
        call_command("features_load", feature_set=set_name, key="card_id", file=str(csv), team="risk")
    assert _store(set_name) == before
    assert FeatureSet.objects.get(name=set_name).team == teams["fraud"]
