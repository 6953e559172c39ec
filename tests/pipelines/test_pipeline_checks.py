"""A pipeline is checked when saved: types flow from the ONNX signatures, and cycles,
unknown and unreachable steps, bad rules are a 400 naming what is wrong."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from audit.models import AuditEvent
from config.errors import Forbidden
from inference import endpoints, environments, traffic
from inference.models import Endpoint
from inference.pipelines import services as pipeline_services
from inference.pipelines.graph import GraphError
from inference.pipelines.models import PipelineVersion
from registry.models import ModelVersion
from tests.conftest import client_for
from tests.pipelines.conftest import fraud_spec

pytestmark = pytest.mark.django_db


def refused(spec: dict[str, Any]) -> str:
    with pytest.raises(GraphError) as info:
        pipeline_services.spec_check(spec, team=None)
    assert info.value.status == 400
    return info.value.message


def test_the_fraud_spec_checks_and_orders_its_steps(fraud_versions: Any) -> None:
    graph = pipeline_services.spec_check(fraud_spec("cards", 0.5), team=None)
    assert graph.order == ("lookup", "prep", "ensemble", "business")
    assert [(o.name, o.datatype) for o in graph.outputs] == [("fraud_score", "FP32"), ("action", "BYTES")]


def test_a_tensor_rewritten_in_place_is_read_rewritten_whatever_the_steps_order(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    # Listed last: "prep" and "business" read amount, and must read it capped.
    spec["steps"].append({"name": "cap", "kind": "transform", "ops": [{"op": "clip", "field": "amount", "max": 500}]})
    graph = pipeline_services.spec_check(spec, team=None)
    assert graph.order == ("lookup", "cap", "prep", "ensemble", "business")
    # Two rewrites of one tensor run in the order they are listed.
    spec["steps"].append({"name": "floor", "kind": "transform", "rules": ["amount = amount + 1"]})
    order = pipeline_services.spec_check(spec, team=None).order
    assert order.index("cap") < order.index("floor") < order.index("prep")


def test_a_rewrite_that_needs_what_its_readers_lead_to_runs_after_them(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    # "late" rewrites amount from the ensemble's answer, which prep's features (from amount)
    # lead to: prep reads amount before the rewrite; business, which late does not need,
    # after it.
    spec["steps"].append({"name": "late", "kind": "transform", "rules": ["amount = amount * proba[1]"]})
    graph = pipeline_services.spec_check(spec, team=None)
    assert graph.order == ("lookup", "prep", "ensemble", "late", "business")


def test_a_dtype_mismatch_names_the_step_the_tensor_and_both_types(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    spec["steps"][2]["ops"][0]["datatype"] = "FP64"
    message = refused(spec)
    assert 'step "ensemble"' in message and 'tensor "features"' in message
    assert "FP64 [-1, 4]" in message and "FP32 [-1, 4]" in message


def test_a_shape_mismatch_is_refused(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    spec["steps"][2]["ops"][0]["fields"] = ["amount", "avg_amount", "tx_count"]
    spec["steps"][2]["ops"][1] = {"op": "clip", "field": "features", "min": -5, "max": 5}
    message = refused(spec)
    assert 'tensor "features" is FP32 [-1, 3]' in message and "expects FP32 [-1, 4]" in message


def test_a_cycle_is_refused(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    # prep now needs the ensemble's answer, which needs prep's features.
    spec["steps"][2]["rules"] = ["ratio = amount / avg_amount + proba[1]"]
    assert "cycle" in refused(spec)


def test_an_unknown_step_is_refused(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    spec["steps"].append(
        {"name": "pick", "kind": "switch", "cases": [{"when": "amount > 5", "step": "nope"}], "default": "ensemble"}
    )
    assert 'unknown step "nope"' in refused(spec)


def test_an_unreachable_step_is_refused(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    spec["steps"].append({"name": "orphan", "kind": "transform", "rules": ["doubled = amount * 2"]})
    assert 'step "orphan" is unreachable' in refused(spec)


def test_a_tensor_nobody_produces_is_named(fraud_versions: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    spec["steps"][3]["inputs"] = {"x": "featurez"}
    assert '"featurez"' in refused(spec)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("fraud_score = proba[1] / 0", "division by zero"),
        ("fraud_score = probability[1]", "unknown field 'probability'"),
        ("if amount > 'x' then action = 'a' else action = 'b'", "cannot compare a number with a string"),
        ("if amount > 5 then action = 'review'", "add 'else action = ...'"),
        ("fraud_score = __import__('os')", "unknown field '__import__'"),
    ],
)
def test_a_bad_rule_is_refused_when_saved(fraud_versions: Any, rule: str, expected: str) -> None:
    spec = fraud_spec("cards", 0.5)
    spec["steps"][0]["rules"] = [rule, "action = 'x'"] if "action" not in rule else ["fraud_score = proba[1]", rule]
    message = refused(spec)
    assert expected in message and 'step "business"' in message


def test_a_switch_runs_its_branches_on_their_rows(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    spec = fraud_spec(feature_set, 0.5)
    ensemble = spec["steps"][3]
    spec["steps"][3] = {
        "name": "pick",
        "kind": "switch",
        "cases": [{"when": "amount > 1000", "step": "ensemble"}],
        "default": "only_v1",
    }
    spec["steps"] += [
        ensemble,
        {
            "name": "only_v1",
            "kind": "model",
            "model": "fraud:1",
            "inputs": {"x": "features"},
            "outputs": {"probabilities": "proba"},
        },
    ]
    graph = pipeline_services.spec_check(spec, team=None)
    assert graph.steps["ensemble"].owner == "pick" and "pick" in graph.order


def test_a_production_endpoint_takes_a_pipeline_only_when_every_model_step_is_in_production(
    engineer: Any, approver: Any, fraud_versions: Any
) -> None:
    ModelVersion.objects.filter(pk=fraud_versions[0].pk).update(stage=ModelVersion.Stage.PRODUCTION)
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec("cards", 0.5), user=engineer)
    single = fraud_spec("cards", 0.5)
    single["steps"][3] = {
        "name": "ensemble",
        "kind": "model",
        "model": "fraud@production",
        "inputs": {"x": "features"},
        "outputs": {"probabilities": "proba"},
    }
    pipeline_services.pipeline_version_create(
        pipeline=PipelineVersion.objects.get().pipeline, spec=single, user=engineer
    )
    endpoint = endpoints.endpoint_create(name="fraud-prod", user=engineer)
    Endpoint.objects.filter(pk=endpoint.pk).update(environment="production")
    endpoint.refresh_from_db()
    both = [{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}]
    with pytest.raises(Forbidden):  # a traffic change on production needs an approver
        traffic.traffic_policy_revise(endpoint=endpoint, routes=both, user=engineer)
    with pytest.raises(environments.EnvironmentRuleBroken) as info:  # fraud v2 is not in Production
        traffic.traffic_policy_revise(endpoint=endpoint, routes=both, user=approver)
    assert "pipeline fraud:1 uses fraud:2, which is in None" in info.value.message
    # Version 2 of the pipeline uses fraud@production only: it may serve.
    route = [{"pipeline": "fraud", "version": 2, "role": "primary", "weight": 100}]
    traffic.traffic_policy_revise(endpoint=endpoint, routes=route, user=approver)
    event = AuditEvent.objects.filter(action="traffic.revise").latest("pk")
    assert "pipeline fraud v2 primary 100%" in event.after["split"] and event.actor == approver


def test_pipelines_are_created_listed_and_versioned_through_the_api(engineer: Any, fraud_versions: Any) -> None:
    api = client_for(engineer)
    spec = fraud_spec("cards", 0.5)
    answer = api.post("/api/v1/pipelines/", {"name": "fraud", "spec": spec}, format="json")
    assert answer.status_code == 201, answer.content
    bad = copy.deepcopy(spec)
    bad["steps"][0]["rules"] = ["fraud_score = proba[1] / 0", "action = 'x'"]
    answer = api.post("/api/v1/pipelines/fraud/versions/", {"spec": bad}, format="json")
    assert answer.status_code == 400 and "division by zero" in answer.json()["error"]["message"]
    answer = api.post("/api/v1/pipelines/fraud/versions/", {"spec": spec, "comment": "again"}, format="json")
    assert answer.status_code == 201 and answer.json()["version"] == 2
    assert [p["name"] for p in api.get("/api/v1/pipelines/").json()] == ["fraud"]
    assert api.get("/api/v1/pipelines/fraud/versions/2").json()["resolved_models"][0]["model"] == "fraud"
    check = api.post("/api/v1/pipelines/validate", {"spec": spec}, format="json").json()
    assert check["ok"] and check["order"] == ["lookup", "prep", "ensemble", "business"]
    assert AuditEvent.objects.filter(action__in=["pipeline.create", "pipeline.version"]).count() == 2
    assert PipelineVersion.objects.count() == 2


def test_another_teams_pipeline_is_not_found(django_user_model: Any, engineer: Any, fraud_versions: Any) -> None:
    from accounts.roles import ML_ENGINEER
    from tests.conftest import make_user
    from tests.registry import governance as g

    al = make_user(django_user_model, "al", ML_ENGINEER)
    bo = make_user(django_user_model, "bo", ML_ENGINEER)
    g.team("alpha", al)
    g.team("beta", bo)
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec("cards", 0.5), user=al)
    assert client_for(bo).get("/api/v1/pipelines/fraud/").status_code == 404
    assert client_for(bo).get("/api/v1/pipelines/").json() == []
    assert client_for(al).get("/api/v1/pipelines/fraud/").status_code == 200
