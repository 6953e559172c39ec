"""Endpoints, their traffic, keys and monitoring are team-scoped like registry models:
another team's endpoint is a 404, and a route may name only versions the caller may see
(and the endpoint's team may serve)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.test import Client

from accounts.roles import ML_ENGINEER
from audit.models import AuditEvent
from inference import api_keys, endpoints, traffic
from inference.models import ApiKey, Endpoint, TrafficPolicyRevision
from monitoring.models import AlertEvent, AlertRule
from registry import storage
from registry.models import ModelVersion
from tests.conftest import client_for
from tests.inference.conftest import IRIS_META, iris_variant
from tests.registry import governance as g

pytestmark = pytest.mark.django_db

ROUTE = {"model": "alpha-model", "version": 1, "role": "primary", "weight": 100}


def ready_version(name: str, team: Any, variant: int) -> ModelVersion:
    """A served-able iris version as validation leaves it (validation is tested elsewhere)."""
    data = iris_variant(variant)
    digest = hashlib.sha256(data).hexdigest()
    path = storage.artifact_path(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    model = g.model(name, team=team)
    return ModelVersion.objects.create(
        model=model,
        version=1,
        artifact_sha256=digest,
        artifact_size=len(data),
        status=ModelVersion.Status.READY,
        signature=g.SIGNATURE,
        metadata=IRIS_META,
    )


def make_user(django_user_model: Any, username: str, role: str) -> Any:
    """A user with a role and no password (hashing one costs a second on a busy machine)."""
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user(username=username)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


@pytest.fixture
def world(django_user_model: Any) -> dict[str, Any]:
    """al (alpha) serves alpha-model v1 on alpha-ep with a key and an alert rule; bo is in beta."""
    al = make_user(django_user_model, "al", ML_ENGINEER)
    bo = make_user(django_user_model, "bo", ML_ENGINEER)
    alpha, beta = g.team("alpha", al), g.team("beta", bo)
    ready_version("alpha-model", alpha, 0)
    ready_version("open-model", None, 1)  # no team: anyone may serve it
    endpoint = endpoints.endpoint_create(name="alpha-ep", user=al)
    traffic.traffic_policy_revise(endpoint=endpoint, routes=[ROUTE], user=al)
    api_keys.api_key_create(name="alpha-app", endpoints=[endpoint], user=al)
    rule = AlertRule.objects.create(endpoint=endpoint, name="slow", metric="p99_latency_ms", threshold=10)
    AlertEvent.objects.create(rule=rule, endpoint="alpha-ep", kind="firing", value=12, threshold=10)
    return {"al": al, "bo": bo, "alpha": alpha, "beta": beta, "endpoint": endpoint, "rule": rule}


def test_an_endpoint_takes_its_creators_team_and_the_split_serves_it(world):
    endpoint = Endpoint.objects.get(name="alpha-ep")
    assert endpoint.team == world["alpha"]
    body = client_for(world["al"]).get("/api/v1/endpoints/alpha-ep/").json()
    assert body["team"] == "alpha" and body["traffic"]["routes"][0]["model"] == "alpha-model"


def test_the_attack_in_the_issue_now_fails(world):
    """Issue 10 item 1, step by step, as beta's ml_engineer bo."""
    bo = client_for(world["bo"])
    revisions, keys = TrafficPolicyRevision.objects.count(), ApiKey.objects.count()
    # 1. PUT traffic on alpha's endpoint (was 200 and a new revision).
    answer = bo.put("/api/v1/endpoints/alpha-ep/traffic", {"routes": [ROUTE]}, format="json")
    assert answer.status_code == 404, answer.content
    assert answer.json()["error"]["message"] == "no endpoint named 'alpha-ep'"
    # 2. Create a working key for it (was 201) and list its keys (was 200).
    assert bo.post("/api/v1/endpoints/alpha-ep/keys/", {"name": "mine"}, format="json").status_code == 404
    assert bo.get("/api/v1/endpoints/alpha-ep/keys/").status_code == 404
    # 3. Their own endpoint routed to alpha's version: refused before anything is made.
    answer = bo.post("/api/v1/endpoints/", {"name": "beta-ep", "routes": [ROUTE]}, format="json")
    assert answer.status_code == 404, answer.content
    assert answer.json()["error"]["message"] == "no version 1 of a model named 'alpha-model'"
    assert not Endpoint.objects.filter(name="beta-ep").exists()
    # ... nor by creating it empty and routing it afterwards.
    assert bo.post("/api/v1/endpoints/", {"name": "beta-ep"}, format="json").status_code == 201
    answer = bo.put("/api/v1/endpoints/beta-ep/traffic", {"routes": [ROUTE]}, format="json")
    assert answer.status_code == 404, answer.content
    assert "no version 1 of a model named 'alpha-model'" in answer.json()["error"]["message"]
    # ... nor by asking for a key of their endpoint that also reaches alpha's.
    answer = bo.post("/api/v1/endpoints/beta-ep/keys/", {"name": "k", "endpoints": ["alpha-ep"]}, format="json")
    assert answer.status_code == 404
    assert TrafficPolicyRevision.objects.count() == revisions
    assert ApiKey.objects.count() == keys
    assert Endpoint.objects.get(name="beta-ep").team == world["beta"]
    # 4. V2 infer: bo's endpoint can serve a model of no team, never alpha's; bo's key
    # does not open alpha's endpoint.
    open_route = {"model": "open-model", "version": 1, "role": "primary", "weight": 100}
    assert bo.put("/api/v1/endpoints/beta-ep/traffic", {"routes": [open_route]}, format="json").status_code == 200
    key = bo.post("/api/v1/endpoints/beta-ep/keys/", {"name": "mine"}, format="json").json()["key"]
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
    v2 = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    answer = v2.post("/v2/models/beta-ep/infer", body, content_type="application/json")
    assert answer.status_code == 200 and answer.json()["model_name"] == "beta-ep", answer.content
    simple = v2.post("/api/v1/endpoints/beta-ep/predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]}, "application/json")
    assert simple.json()["model"] == "open-model"
    assert v2.post("/v2/models/alpha-ep/infer", body, content_type="application/json").status_code == 403


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("get", "/api/v1/endpoints/alpha-ep/", None),
        ("patch", "/api/v1/endpoints/alpha-ep/", {"description": "mine now"}),
        ("get", "/api/v1/endpoints/alpha-ep/traffic", None),
        ("put", "/api/v1/endpoints/alpha-ep/traffic", {"routes": [ROUTE]}),
        ("get", "/api/v1/endpoints/alpha-ep/traffic/revisions", None),
        ("post", "/api/v1/endpoints/alpha-ep/traffic/rollback", {}),
        ("get", "/api/v1/endpoints/alpha-ep/keys/", None),
        ("post", "/api/v1/endpoints/alpha-ep/keys/", {"name": "k"}),
        ("delete", "/api/v1/endpoints/alpha-ep/keys/{prefix}", None),
        ("get", "/api/v1/endpoints/alpha-ep/metrics", None),
        ("get", "/api/v1/endpoints/alpha-ep/monitoring", None),
        ("patch", "/api/v1/endpoints/alpha-ep/monitoring", {"drift_sample_rate": 1.0}),
        ("get", "/api/v1/endpoints/alpha-ep/samples/", None),
        ("get", "/api/v1/alerts/rules/{rule}/", None),
        ("patch", "/api/v1/alerts/rules/{rule}/", {"threshold": 99}),
        ("delete", "/api/v1/alerts/rules/{rule}/", None),
        ("post", "/api/v1/alerts/rules/", {"endpoint": "alpha-ep", "metric": "p99_latency_ms", "threshold": 1}),
        ("get", "/api/v1/models/alpha-model/versions/1/reference", None),
        ("get", "/api/v1/endpoints/alpha-ep/rollouts", None),
        ("post", "/api/v1/endpoints/alpha-ep/rollouts", {"model": "alpha-model", "version": 1}),
    ],
)
def test_another_teams_endpoint_is_not_found(world, method, path, body):
    prefix = ApiKey.objects.get(name="alpha-app").prefix
    path = path.format(prefix=prefix, rule=world["rule"].pk)
    answer = getattr(client_for(world["bo"]), method)(path, body, format="json")
    assert answer.status_code == 404, answer.content
    assert answer.json()["error"]["code"] == "not_found"
    # The owner's team reaches the same resource.
    if method == "get":
        assert getattr(client_for(world["al"]), method)(path).status_code == 200
    assert ApiKey.objects.get(prefix=prefix).revoked_at is None
    assert AlertRule.objects.get(pk=world["rule"].pk).threshold == 10


def test_lists_show_only_visible_endpoints_rules_and_events(world):
    endpoints.endpoint_create(name="open-ep", user=world["al"], team=None)
    Endpoint.objects.filter(name="open-ep").update(team=None)
    bo, al = client_for(world["bo"]), client_for(world["al"])
    assert [e["name"] for e in bo.get("/api/v1/endpoints/").json()["results"]] == ["open-ep"]
    assert [e["name"] for e in al.get("/api/v1/endpoints/").json()["results"]] == ["alpha-ep", "open-ep"]
    assert bo.get("/api/v1/alerts/rules/").json()["results"] == []
    assert bo.get("/api/v1/alerts/events/").json()["results"] == []
    assert len(al.get("/api/v1/alerts/rules/").json()["results"]) == 1
    assert len(al.get("/api/v1/alerts/events/").json()["results"]) == 1


def test_another_teams_key_events_are_left_out_of_the_audit_log(world, django_user_model):
    """Key names, prefixes and endpoint names of alpha do not reach beta's approvers."""
    beta_approver = make_user(django_user_model, "bea", "approver")
    world["beta"].members.add(beta_approver)
    event = AuditEvent.objects.get(action="apikey.create")
    assert event.team == world["alpha"]
    actions = [e["action"] for e in client_for(beta_approver).get("/api/v1/audit/").json()["results"]]
    assert "apikey.create" not in actions and "endpoint.create" not in actions


def test_a_route_names_only_models_the_endpoints_team_may_serve(world, django_user_model):
    """Even a member of both teams cannot make alpha's endpoint serve beta's model (or the reverse)."""
    both = make_user(django_user_model, "bi", ML_ENGINEER)
    world["alpha"].members.add(both)
    world["beta"].members.add(both)
    ready_version("beta-model", world["beta"], 2)
    route = {"model": "beta-model", "version": 1, "role": "primary", "weight": 100}
    answer = client_for(both).put("/api/v1/endpoints/alpha-ep/traffic", {"routes": [route]}, format="json")
    assert answer.status_code == 400, answer.content
    assert "cannot serve model 'beta-model' of team 'beta'" in answer.json()["error"]["message"]
    # A model of no team may be served by any endpoint.
    route = {"model": "open-model", "version": 1, "role": "primary", "weight": 100}
    answer = client_for(both).put("/api/v1/endpoints/alpha-ep/traffic", {"routes": [route]}, format="json")
    assert answer.status_code == 200, answer.content


def test_the_team_asked_for_must_be_one_of_the_users_teams(world):
    al = client_for(world["al"])
    answer = al.post("/api/v1/endpoints/", {"name": "sneaky", "team": "beta"}, format="json")
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == "you are not a member of team 'beta'"
    assert al.post("/api/v1/endpoints/", {"name": "nowhere", "team": "gamma"}, format="json").status_code == 404
    assert al.patch("/api/v1/endpoints/alpha-ep/", {"team": "beta"}, format="json").status_code == 403
    assert Endpoint.objects.get(name="alpha-ep").team == world["alpha"]


def test_an_admin_routing_a_teams_model_makes_an_endpoint_of_that_team(world, admin_user):
    answer = client_for(admin_user).post("/api/v1/endpoints/", {"name": "ops-ep", "routes": [ROUTE]}, format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["team"] == "alpha"
    assert client_for(world["bo"]).get("/api/v1/endpoints/ops-ep/").status_code == 404
    assert client_for(world["al"]).get("/api/v1/endpoints/ops-ep/").status_code == 200


def test_a_new_endpoint_with_no_team_takes_the_team_of_its_first_split(world, admin_user):
    """The dashboard makes an endpoint first and routes it next; the audit log says so."""
    admin = client_for(admin_user)
    assert admin.post("/api/v1/endpoints/", {"name": "later"}, format="json").json()["team"] is None
    assert admin.put("/api/v1/endpoints/later/traffic", {"routes": [ROUTE]}, format="json").status_code == 200
    assert Endpoint.objects.get(name="later").team == world["alpha"]
    event = AuditEvent.objects.filter(action="endpoint.update", object_repr="later").get()
    assert (event.before["team"], event.after["team"]) == (None, "alpha")


# --- the dashboard ------------------------------------------------------------------------


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/endpoints/alpha-ep/"),
        ("post", "/endpoints/alpha-ep/traffic"),
        ("post", "/endpoints/alpha-ep/rollback"),
        ("post", "/endpoints/alpha-ep/settings"),
        ("post", "/endpoints/alpha-ep/keys"),
        ("post", "/endpoints/alpha-ep/keys/{prefix}/revoke"),
        ("get", "/monitoring/alpha-ep/"),
        ("get", "/monitoring/alpha-ep/charts.json"),
        ("post", "/alerts/rules/{rule}/delete"),
    ],
)
def test_another_teams_endpoint_pages_are_not_found(world, method, path):
    prefix = ApiKey.objects.get(name="alpha-app").prefix
    path = path.format(prefix=prefix, rule=world["rule"].pk)
    data = {"route-0-version": "alpha-model:1", "route-0-weight": "100", "key_name": "k", "description": "x"}
    assert getattr(browser(world["bo"]), method)(path, data).status_code == 404
    if method == "get":
        assert browser(world["al"]).get(path).status_code == 200
    assert ApiKey.objects.filter(endpoints__name="alpha-ep").count() == 1
    assert AlertRule.objects.filter(pk=world["rule"].pk).exists()


def test_dashboard_lists_leave_out_another_teams_endpoint_and_models(world):
    bo, al = browser(world["bo"]), browser(world["al"])
    for path in ("/endpoints/", "/monitoring/", "/alerts/", "/"):
        assert b"alpha-ep" not in bo.get(path).content, path
        assert b"alpha-ep" in al.get(path).content, path
    # bo's own endpoint offers only versions bo may see in its split editor.
    endpoints.endpoint_create(name="beta-ep", user=world["bo"])
    page = bo.get("/endpoints/beta-ep/").content
    assert b"open-model:1" in page and b"alpha-model:1" not in page
    assert b"alpha-model:1" in al.get("/endpoints/alpha-ep/").content
    assert b'id="team" title="the team that owns it; only its members (and admins) see it">team alpha<' in (
        al.get("/endpoints/alpha-ep/").content
    )


def test_an_alert_rule_cannot_be_made_for_another_teams_endpoint_from_the_dashboard(world):
    form = {"endpoint": "alpha-ep", "name": "x", "metric": "p99_latency_ms", "comparison": ">", "threshold": "1"}
    browser(world["bo"]).post("/alerts/rules/new", form)
    assert AlertRule.objects.count() == 1


def test_a_member_of_two_teams_picks_the_endpoints_team_in_the_dashboard(world, django_user_model):
    both = make_user(django_user_model, "bi", ML_ENGINEER)
    world["alpha"].members.add(both)
    world["beta"].members.add(both)
    page = browser(both).get("/endpoints/").content.decode()
    assert '<option value="alpha">alpha</option>' in page and '<option value="beta">beta</option>' in page
    browser(both).post("/endpoints/new", {"name": "picked", "team": "beta"})
    assert Endpoint.objects.get(name="picked").team == world["beta"]
    # bo (beta only) is offered no choice and cannot name alpha.
    assert 'name="team"' not in browser(world["bo"]).get("/endpoints/").content.decode()
    browser(world["bo"]).post("/endpoints/new", {"name": "sneaky", "team": "alpha"})
    assert not Endpoint.objects.filter(name="sneaky").exists()
