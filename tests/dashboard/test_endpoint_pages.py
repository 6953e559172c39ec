"""Endpoints from the browser: split editor, rollback, keys (secret once), settings."""

from __future__ import annotations

import pytest
from django.test import Client

from dashboard import endpoints
from inference.models import ApiKey, Endpoint
from tests.conftest import iris_bytes, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def iris(api):
    """Two ready versions of a real model (uploaded and validated through the API)."""
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    for tag in ("a", "b"):
        body = upload(api, "iris", iris_bytes() if tag == "a" else _variant(), metadata='{"metrics": {}}').json()
        assert body["status"] == "ready", body
    return "iris"


def _variant() -> bytes:
    import onnx

    model = onnx.load_from_string(iris_bytes())
    model.doc_string = "second build"
    return model.SerializeToString()


@pytest.fixture
def endpoint(browser_client, iris):
    response = browser_client.post("/endpoints/new", {"name": "flowers", "description": "iris for apps"})
    assert response.status_code == 302
    return Endpoint.objects.get(name="flowers")


def split(client: Client, rows: list[tuple[str, str, int]], **extra):
    data = {"comment": "test"}
    for i, (version, role, weight) in enumerate(rows):
        data |= {f"route-{i}-version": version, f"route-{i}-role": role, f"route-{i}-weight": str(weight)}
    return client.post("/endpoints/flowers/traffic", data, follow=True, HTTP_REFERER="/endpoints/flowers/", **extra)


def test_the_endpoint_list_shows_health_and_split(browser_client, endpoint):
    split(browser_client, [("iris:1", "primary", 100)])
    html = browser_client.get("/endpoints/").content.decode()
    assert "flowers" in html and "healthy" in html and "iris v1" in html


def test_a_90_10_split_becomes_a_new_revision(browser_client, endpoint):
    split(browser_client, [("iris:1", "primary", 100)])
    response = split(browser_client, [("iris:1", "primary", 90), ("iris:2", "canary", 10)])
    assert "Revision 2 is the split of flowers now." in response.content.decode()
    current = endpoint.revisions.get(is_current=True)
    assert [(r["version"], r["role"], r["weight"]) for r in current.routes] == [(1, "primary", 90), (2, "canary", 10)]


def test_weights_that_do_not_add_up_to_100_are_refused_by_the_service(browser_client, endpoint):
    response = split(browser_client, [("iris:1", "primary", 80), ("iris:2", "canary", 10)])
    assert "must add up to 100, got 90" in response.content.decode()
    assert not endpoint.revisions.exists()


def test_a_weight_that_is_not_a_number_is_refused(browser_client, endpoint):
    response = split(browser_client, [("iris:1", "primary", "ninety")])
    assert "weight must be a whole number" in response.content.decode()


def test_a_shadow_takes_no_weight(browser_client, endpoint):
    split(browser_client, [("iris:1", "primary", 100), ("iris:2", "shadow", 30)])
    routes = endpoint.revisions.get(is_current=True).routes
    assert routes[1]["role"] == "shadow" and routes[1]["weight"] == 0


def test_one_click_rollback_goes_back_to_a_revision(browser_client, endpoint):
    split(browser_client, [("iris:1", "primary", 100)])
    split(browser_client, [("iris:2", "primary", 100)])
    response = browser_client.post("/endpoints/flowers/rollback", {"revision": "1"}, follow=True)
    assert "Rolled back: revision 3" in response.content.decode()
    assert endpoint.revisions.get(is_current=True).routes[0]["version"] == 1


def test_a_new_key_secret_is_shown_once(browser_client, endpoint):
    response = browser_client.post("/endpoints/flowers/keys", {"key_name": "checkout"})
    html = response.content.decode()
    key = ApiKey.objects.get(name="checkout")
    assert 'id="new-secret"' in html and f"{key.prefix}" in html
    assert response["Cache-Control"] == "no-store"
    assert 'id="new-secret"' not in browser_client.get("/endpoints/flowers/").content.decode()


def test_a_key_is_revoked_from_the_page(browser_client, endpoint):
    browser_client.post("/endpoints/flowers/keys", {"key_name": "checkout"})
    key = ApiKey.objects.get(name="checkout")
    response = browser_client.post(f"/endpoints/flowers/keys/{key.prefix}/revoke", follow=True)
    assert "revoked" in response.content.decode()
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_the_sticky_header_is_saved(browser_client, endpoint):
    browser_client.post("/endpoints/flowers/settings", {"sticky_header": "X-User-Id", "description": "d"})
    endpoint.refresh_from_db()
    assert endpoint.sticky_header == "X-User-Id"


def test_outlier_scoring_is_turned_on_and_off_from_the_settings(browser_client, endpoint):
    browser_client.post("/endpoints/flowers/settings", {"sticky_header": "X", "outlier_scoring": "on"})
    endpoint.refresh_from_db()
    assert endpoint.outlier_scoring
    assert 'id="outlier-scoring" name="outlier_scoring" checked' in browser_client.get("/endpoints/flowers/").text
    browser_client.post("/endpoints/flowers/settings", {"sticky_header": "X"})
    endpoint.refresh_from_db()
    assert not endpoint.outlier_scoring


def test_a_viewer_cannot_change_the_split(viewer_client, browser_client, endpoint):
    response = split(viewer_client, [("iris:1", "primary", 100)])
    assert "needs the ml_engineer role" in response.content.decode()
    assert not endpoint.revisions.exists()


def test_the_try_it_panel_and_snippets_carry_an_example_body_from_the_signature(browser_client, endpoint):
    split(browser_client, [("iris:1", "primary", 100)])
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert "[[0.5, 0.5, 0.5, 0.5]]" in html.replace("&quot;", '"')
    assert "/api/v1/endpoints/flowers/predict" in html and "curl -s -X POST" in html


def test_the_example_payload_follows_the_signature():
    one = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}]}
    assert endpoints.example_payload(one) == {"instances": [[0.5, 0.5, 0.5]]}
    two = {"inputs": [{"name": "a", "datatype": "INT64", "shape": [-1]}, {"name": "b", "dtype": "float", "shape": [2]}]}
    assert endpoints.example_payload(two) == {"inputs": {"a": [1], "b": [0.5, 0.5]}}


def test_the_split_editor_greys_out_versions_the_environment_forbids_and_says_why(browser_client, endpoint, approver):
    from registry.models import ModelVersion

    ModelVersion.objects.filter(model__name="iris", version=1).update(stage="Production")
    ModelVersion.objects.filter(model__name="iris", version=2).update(stage="Staging")
    Endpoint.objects.filter(pk=endpoint.pk).update(environment="production")
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert "its traffic changes need the approver role" in html and 'id="split-form"' not in html
    approver_client = Client()
    approver_client.force_login(approver)
    html = approver_client.get("/endpoints/flowers/").content.decode()
    assert '<option value="iris:1">iris v1 (Production)</option>' in html
    assert '<option value="iris:2">iris v2 (Staging: shadow only)</option>' in html
    assert "take only Production versions" in html
    Endpoint.objects.filter(pk=endpoint.pk).update(environment="staging")
    ModelVersion.objects.filter(model__name="iris", version=2).update(stage="None")
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert (
        '<option value="iris:2" disabled title="a staging endpoint takes only Staging or Production versions">' in html
    )
    assert "iris v2 (None: not allowed on a staging endpoint)" in html


def test_a_rollout_is_started_watched_and_aborted_from_the_endpoint_page(browser_client, endpoint, viewer_client):
    from inference.models import Rollout
    from rollouts import services as rollouts

    split(browser_client, [("iris:1", "primary", 100)])
    plan = '{"steps": [{"weight": 20, "bake_s": 60}, {"weight": 100, "bake_s": 60}]}'
    response = browser_client.post(
        "/endpoints/flowers/rollouts",
        {"candidate": "iris:2", "plan": plan},
        follow=True,
        HTTP_REFERER="/endpoints/flowers/",
    )
    html = response.content.decode()
    assert "Rollout #" in html and "started" in html
    rollout = Rollout.objects.get()
    rollouts.rollout_advance(rollout_id=rollout.pk)  # no traffic yet: baking, nothing recorded
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert f'id="rollout-{rollout.pk}"' in html and "iris v2 takes 20 % of the traffic" in html
    assert "20 → 100" in html and ">Pause</button>" in html and ">Abort</button>" in html
    assert ">Promote to 100 %</button>" not in html  # an engineer, not an approver
    # A viewer sees the timeline but no buttons, and cannot act by posting either.
    assert ">Abort</button>" not in viewer_client.get("/endpoints/flowers/").content.decode()
    viewer_client.post(f"/endpoints/flowers/rollouts/{rollout.pk}/abort", HTTP_REFERER="/endpoints/flowers/")
    assert Rollout.objects.get().state == "running"
    browser_client.post(f"/endpoints/flowers/rollouts/{rollout.pk}/abort", HTTP_REFERER="/endpoints/flowers/")
    assert Rollout.objects.get().state == "aborted"
    current = endpoint.revisions.get(is_current=True)
    assert [(r["version"], r["role"], r["weight"]) for r in current.routes] == [(1, "primary", 100)]
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert "aborted by erin" in html


def test_the_timeline_shows_the_values_that_decided_an_analysis():
    check = {
        "check": "error_rate",
        "result": "fail",
        "candidate": 0.3,
        "stable": 0.0,
        "max_increase": 0.01,
        "candidate_requests": 100,
        "stable_requests": 98,
    }
    assert endpoints.check_summary(check) == (
        "error_rate fail: candidate 0.3 vs stable 0.0, max +0.01 (100/98 requests)"
    )
    shadow = {
        "check": "shadow_agreement",
        "result": "fail",
        "compared": 145,
        "agreed": 0,
        "agreement": 0.0,
        "min_agreement": 0.99,
        "min_comparisons": 20.0,
    }
    assert endpoints.check_summary(shadow) == (
        "shadow_agreement fail: 0 of 145 shadow answers agreed, min 0.99 (at least 20 compared)"
    )


PLAN = '{"steps": [{"weight": 20, "bake_s": 60}, {"weight": 100, "bake_s": 60}]}'


def _start(client: Client, candidate: str, plan: str = PLAN) -> str:
    response = client.post(
        "/endpoints/flowers/rollouts",
        {"candidate": candidate, "plan": plan},
        follow=True,
        HTTP_REFERER="/endpoints/flowers/",
    )
    assert response.status_code == 200
    return response.content.decode()


def _pipeline(engineer, name: str = "iris-pipe", **step) -> None:
    from inference.pipelines import services as pipeline_services
    from tests.inference.test_pipeline_rollouts import iris_pipeline

    spec = iris_pipeline(name, model_version=2)
    spec["steps"][0] |= step
    pipeline_services.pipeline_create(name=name, spec=spec, user=engineer)


def test_a_pipeline_version_is_a_rollout_candidate_on_the_endpoint_page(browser_client, endpoint, engineer):
    from inference.models import Rollout

    split(browser_client, [("iris:1", "primary", 100)])
    _pipeline(engineer)
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert (
        '<optgroup label="Pipeline versions"><option value="pipeline:iris-pipe:1">pipeline iris-pipe v1</option>'
        in (html)
    )
    html = _start(browser_client, "pipeline:iris-pipe:1")
    assert "started: pipeline iris-pipe v1 takes its first step" in html
    rollout = Rollout.objects.get()
    assert rollout.candidate_route == {"pipeline": "iris-pipe", "version": 1}
    current = endpoint.revisions.get(is_current=True)
    assert [(r.get("model") or r.get("pipeline"), r["role"], r["weight"]) for r in current.routes] == [
        ("iris", "primary", 80),
        ("iris-pipe", "canary", 20),
    ]
    assert "pipeline iris-pipe v1 takes 20 % of the traffic" in html and ">Abort</button>" in html
    # The split names the pipeline route (it has no model version page: its pipeline's).
    assert '<a href="/pipelines/iris-pipe/">pipeline iris-pipe v1</a>' in html
    assert "pipeline iris-pipe v1 canary 20%" in html  # the policy history
    assert "pipeline iris-pipe v1" in browser_client.get("/endpoints/").content.decode()


def test_the_pipeline_rollout_form_shows_the_services_refusals(
    browser_client, viewer_client, endpoint, engineer, approver, django_user_model
):
    from accounts.models import Team
    from inference.models import Rollout
    from inference.pipelines.models import Pipeline
    from registry.models import ModelVersion
    from tests.conftest import make_user

    split(browser_client, [("iris:1", "primary", 100)])
    _pipeline(engineer)
    assert "no version 3 of a pipeline named &#x27;iris-pipe&#x27;" in _start(browser_client, "pipeline:iris-pipe:3")
    assert "needs the ml_engineer role" in _start(viewer_client, "pipeline:iris-pipe:1")
    # A graph that no longer checks (its stage alias resolves to nothing now): 400.
    ModelVersion.objects.filter(model__name="iris", version=2).update(stage="Staging")
    _pipeline(engineer, "iris-alias", model="iris@staging", version=None)
    ModelVersion.objects.filter(model__name="iris", version=2).update(stage="None")
    assert "pipeline iris-alias:1 no longer checks" in _start(browser_client, "pipeline:iris-alias:1")
    # Another team's pipeline is neither listed nor found.
    Pipeline.objects.filter(name="iris-alias").update(team=Team.objects.create(name="others"))
    team = Team.objects.create(name="flowers-team")
    Endpoint.objects.filter(pk=endpoint.pk).update(team=team)
    member = make_user(django_user_model, "mia", "ml_engineer")
    member.teams.add(team)
    member_client = Client()
    member_client.force_login(member)
    assert "iris-alias" not in member_client.get("/endpoints/flowers/").content.decode()
    assert "no version 1 of a pipeline named &#x27;iris-alias&#x27;" in _start(member_client, "pipeline:iris-alias:1")
    # Production: a model the endpoint may not serve is the 409 of the environment rule.
    ModelVersion.objects.filter(model__name="iris", version=1).update(stage="Production")
    Endpoint.objects.filter(pk=endpoint.pk).update(environment="production", team=None)
    approver_client = Client()
    approver_client.force_login(approver)
    html = _start(approver_client, "pipeline:iris-pipe:1")
    assert "pipeline iris-pipe:1 uses iris:2, which is in None, so it cannot be the canary" in html
    assert not Rollout.objects.exists()


def test_the_split_editor_keeps_a_pipeline_route_and_can_set_one(browser_client, endpoint, engineer):
    split(browser_client, [("iris:1", "primary", 100)])
    _pipeline(engineer)
    response = split(browser_client, [("iris:1", "primary", 70), ("pipeline:iris-pipe:1", "canary", 30)])
    assert "Revision 2 is the split of flowers now." in response.content.decode()
    current = endpoint.revisions.get(is_current=True)
    assert [(r.get("model") or r.get("pipeline"), r["role"], r["weight"]) for r in current.routes] == [
        ("iris", "primary", 70),
        ("iris-pipe", "canary", 30),
    ]
    # Its row shows it selected: saving the page's split as it is keeps the pipeline route.
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert '<option value="pipeline:iris-pipe:1" selected>pipeline iris-pipe v1</option>' in html
