"""The fraud example of issue #14 end to end on the simple API: Redis lookup, transform, a
two-version ensemble and a business rule, served through the one dispatcher."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import services as pipeline_services
from tests.pipelines.conftest import CARDS as CARD_FEATURES
from tests.pipelines.conftest import expected_scores, fraud_spec

pytestmark = pytest.mark.django_db
CARDS = [101, 102, 103]
AMOUNTS = [2500.0, 50.0, 1800.0]


def serve(engineer: Any, spec: dict[str, Any], name: str = "fraud-api") -> str:
    pipeline_services.pipeline_create(name="fraud", spec=spec, user=engineer)
    endpoint = endpoints.endpoint_create(name=name, user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    return name


def threshold_between(scores: np.ndarray) -> float:
    """A rule threshold that sends the high-amount row with the higher score to review."""
    high = [scores[0], scores[2]]
    return float(np.mean(high))


def predict(client: Any, name: str, body: Any, query: str = "", **headers: str) -> Any:
    return client.post(
        f"/api/v1/endpoints/{name}/predict{query}", orjson.dumps(body), content_type="application/json", **headers
    )


def test_the_fraud_pipeline_answers_what_the_graph_computes(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    scores = expected_scores(CARDS, AMOUNTS)
    threshold = threshold_between(scores)
    name = serve(engineer, fraud_spec(feature_set, threshold))
    response = predict(client, name, {"inputs": {"card_id": CARDS, "amount": AMOUNTS}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["pipeline"] == "fraud" and body["version"] == 1
    np.testing.assert_allclose(body["outputs"]["fraud_score"], scores, rtol=1e-4)
    review = [bool(s > threshold and a > 100) for s, a in zip(scores, AMOUNTS, strict=True)]
    assert body["outputs"]["action"] == ["review" if r else "approve" for r in review]
    assert "review" in body["outputs"]["action"] and "approve" in body["outputs"]["action"]
    assert body["request_id"] and response["X-Request-Id"] == body["request_id"]


def test_the_callers_request_id_is_kept(client: Any, engineer: Any, fraud_versions: Any, feature_set: str) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5))
    response = predict(client, name, {"inputs": {"card_id": [101], "amount": [5.0]}}, HTTP_X_REQUEST_ID="order-77")
    assert response.status_code == 200, response.content
    assert response.json()["request_id"] == "order-77" and response["X-Request-Id"] == "order-77"


def test_trace_returns_each_steps_output_and_timing(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5))
    response = predict(client, name, {"inputs": {"card_id": [102], "amount": [10.0]}}, query="?trace=1")
    trace = response.json()["trace"]
    assert [t["step"] for t in trace] == ["lookup", "prep", "ensemble", "business"]
    assert trace[0]["outputs"]["avg_amount"] == [900.0] and all(t["ms"] >= 0 for t in trace)
    assert "trace" not in predict(client, name, {"inputs": {"card_id": [102], "amount": [10.0]}}).json()


def v2_infer(client: Any, name: str, body: dict[str, Any], query: str = "") -> Any:
    return client.post(f"/v2/models/{name}/infer{query}", orjson.dumps(body), content_type="application/json")


V2_BODY = {
    "inputs": [
        {"name": "card_id", "datatype": "INT64", "shape": [2], "data": [102, 101]},
        {"name": "amount", "datatype": "FP32", "shape": [2], "data": [10.0, 2500.0]},
    ]
}


@pytest.mark.parametrize("ask", ["query", "parameters"])
def test_v2_trace_returns_each_steps_output_and_timing_in_parameters(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str, ask: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5))
    body = {**V2_BODY, "parameters": {"trace": True}} if ask == "parameters" else V2_BODY
    response = v2_infer(client, name, body, query="?trace=1" if ask == "query" else "")
    assert response.status_code == 200, response.content
    data = response.json()
    trace = data["parameters"]["trace"]
    assert [t["step"] for t in trace] == ["lookup", "prep", "ensemble", "business"]
    assert [t["kind"] for t in trace] == ["feature_lookup", "transform", "ensemble", "transform"]
    assert all(isinstance(t["ms"], float) and t["ms"] >= 0 for t in trace)
    assert trace[0]["outputs"]["avg_amount"] == [900.0, 40.0]
    assert np.asarray(trace[1]["outputs"]["features"]).shape == (2, 4)  # nested lists, the tensor's shape
    assert np.asarray(trace[2]["outputs"]["proba"]).shape == (2, 2)
    scores = {o["name"]: o["data"] for o in data["outputs"]}["fraud_score"]
    np.testing.assert_allclose(trace[3]["outputs"]["fraud_score"], scores, rtol=1e-6)
    assert trace[3]["outputs"]["action"][0] in ("review", "approve")


def test_v2_answers_carry_no_trace_unless_asked(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5))
    response = v2_infer(client, name, V2_BODY, query="?trace=0")
    assert response.status_code == 200, response.content
    assert "trace" not in (response.json().get("parameters") or {})


def test_an_unknown_entity_is_refused_naming_it(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5))
    response = predict(client, name, {"inputs": {"card_id": [101, 999], "amount": [5.0, 6.0]}})
    assert response.status_code == 404, response.content
    error = response.json()["error"]
    assert error["code"] == "unknown_entity" and 'entity "999"' in error["message"]


def test_an_unknown_entity_takes_the_defaults_when_told(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5, on_missing="default"))
    response = predict(client, name, {"inputs": {"card_id": [999], "amount": [5.0]}}, query="?trace=1")
    assert response.status_code == 200, response.content
    assert response.json()["trace"][0]["outputs"]["avg_amount"] == [100.0]


def test_an_unknown_entity_is_imputed_from_the_reference_statistics(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5, on_missing="impute"))
    response = predict(client, name, {"inputs": {"card_id": [999], "amount": [5.0]}}, query="?trace=1")
    assert response.status_code == 200, response.content
    assert response.json()["trace"][0]["outputs"]["avg_amount"] == pytest.approx([(40.0 + 900.0 + 15.0) / 3])


def test_a_division_by_zero_at_run_time_is_a_clear_400(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    spec = fraud_spec(feature_set, 0.5)
    spec["steps"][2]["rules"] = ["ratio = amount / (avg_amount - 40)"]  # card 101 averages 40
    name = serve(engineer, spec)
    response = predict(client, name, {"inputs": {"card_id": [102, 101], "amount": [5.0, 6.0]}})
    assert response.status_code == 400, response.content
    assert "division by zero in row 1" in response.json()["error"]["message"]


def test_the_pipeline_has_its_own_v2_metadata(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5))
    meta = client.get(f"/v2/models/{name}").json()
    assert [i["name"] for i in meta["inputs"]] == ["card_id", "amount"]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("fraud_score", "FP32"), ("action", "BYTES")]


@pytest.fixture
def silent_redis(silent_port: int) -> str:
    """A Redis address that accepts connections and never answers (a hung store)."""
    return f"redis://127.0.0.1:{silent_port}/0"


def test_a_hung_feature_store_falls_back_to_the_defaults_or_refuses(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str, silent_redis: str, settings: Any
) -> None:
    """The lookup's timeout bounds the wait; on_missing decides (defaults, or a 503)."""
    serve(engineer, fraud_spec(feature_set, 0.5, on_missing="default"), name="fraud-defaults")
    pipeline_services.pipeline_create(name="fraud-strict", spec=fraud_spec(feature_set, 0.5), user=engineer)
    strict = endpoints.endpoint_create(name="fraud-strict", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=strict,
        routes=[{"pipeline": "fraud-strict", "version": 1, "role": "primary", "weight": 100}],
        user=engineer,
    )
    predict(client, "fraud-defaults", {"inputs": {"card_id": [101], "amount": [5.0]}})  # warm the routing tables
    predict(client, "fraud-strict", {"inputs": {"card_id": [101], "amount": [5.0]}})
    settings.REDIS_URL = silent_redis  # the store (only) now hangs
    answer = predict(client, "fraud-defaults", {"inputs": {"card_id": [101], "amount": [5.0]}}, query="?trace=1")
    assert answer.status_code == 200, answer.content
    assert answer.json()["trace"][0]["outputs"]["avg_amount"] == [100.0]  # the default, not card 101's 40
    answer = predict(client, "fraud-strict", {"inputs": {"card_id": [101], "amount": [5.0]}})
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "feature_store_unavailable"
    assert "Timeout" in answer.json()["error"]["message"] and answer["Retry-After"]


def test_metrics_count_each_steps_latency_and_errors(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    name = serve(engineer, fraud_spec(feature_set, 0.5))
    assert predict(client, name, {"inputs": {"card_id": [101], "amount": [5.0]}}).status_code == 200
    assert predict(client, name, {"inputs": {"card_id": [999], "amount": [5.0]}}).status_code == 404
    text = client.get("/metrics").content.decode()
    calls = [line for line in text.splitlines() if line.startswith("modelhub_pipeline_step_calls_total")]
    errors = [line for line in text.splitlines() if line.startswith("modelhub_pipeline_step_errors_total")]
    assert any('pipeline="fraud:1",step="ensemble",kind="ensemble"' in line for line in calls)
    lookup_errors = [line for line in errors if 'step="lookup"' in line and 'pipeline="fraud:1"' in line]
    assert lookup_errors and float(lookup_errors[0].rsplit(" ", 1)[1]) >= 1
    assert 'modelhub_pipeline_step_latency_ms_bucket{le="+Inf",pipeline="fraud:1",step="business"' in text


@pytest.mark.parametrize("combine", ["mean", "weighted_mean", "max", "concat", "majority_vote"])
def test_each_ensemble_combination_matches_the_models_run_by_hand(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str, combine: str
) -> None:
    import onnxruntime as ort

    from tests.pipelines.conftest import SCALE, fraud_bytes

    spec = fraud_spec(feature_set, 0.5)
    ensemble = spec["steps"][3]
    ensemble["combine"] = combine
    ensemble["members"][1]["weight"] = 3.0
    output = "label" if combine == "majority_vote" else "probabilities"
    ensemble["outputs"] = {output: "combined"}
    del spec["steps"][0]  # the business rules: the combined output is the answer here
    spec["outputs"] = ["combined"]
    name = serve(engineer, spec)
    answer = predict(client, name, {"inputs": {"card_id": CARDS, "amount": AMOUNTS}})
    assert answer.status_code == 200, answer.content
    got = np.array(answer.json()["outputs"]["combined"])
    rows = [
        [a, CARD_FEATURES[c]["avg_amount"], CARD_FEATURES[c]["tx_count"], a / CARD_FEATURES[c]["avg_amount"]]
        for a, c in zip(AMOUNTS, CARDS, strict=True)
    ]
    x = ((np.array(rows) - np.array(SCALE["mean"])) / np.array(SCALE["std"])).astype(np.float32)
    each = [ort.InferenceSession(fraud_bytes(s)).run([output], {"x": x})[0] for s in (11, 21)]
    expected = {
        "mean": lambda: np.mean(each, axis=0),
        "weighted_mean": lambda: (each[0] * 1 + each[1] * 3) / 4,
        "max": lambda: np.max(each, axis=0),
        "concat": lambda: np.concatenate(each, axis=-1),
        "majority_vote": lambda: each[1],  # weight 3 against 1: the second model's label wins
    }[combine]()
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_the_embedded_default_keeps_features_in_the_database(
    client: Any, engineer: Any, fraud_versions: Any, settings: Any
) -> None:
    from inference.pipelines import features
    from inference.pipelines.models import FeatureRow

    settings.REDIS_URL = ""  # make run: no Redis
    rows = [{"card_id": card, **values} for card, values in CARD_FEATURES.items()]
    features.features_load(feature_set="cards-db", key="card_id", rows=rows)
    assert FeatureRow.objects.filter(feature_set="cards-db").count() == len(rows) + 1  # + the statistics
    name = serve(engineer, fraud_spec("cards-db", 0.5, on_missing="impute"))
    answer = predict(client, name, {"inputs": {"card_id": [102, 999], "amount": [5.0, 6.0]}}, query="?trace=1")
    assert answer.status_code == 200, answer.content
    assert answer.json()["trace"][0]["outputs"]["avg_amount"] == pytest.approx([900.0, (40.0 + 900.0 + 15.0) / 3])


def test_a_switch_sends_each_row_to_its_branch(
    client: Any, engineer: Any, fraud_versions: Any, feature_set: str
) -> None:
    """Rows over 1000 go to the two-model ensemble, the others to version 1 alone."""
    import onnxruntime as ort

    from tests.pipelines.conftest import SCALE, fraud_bytes

    spec = fraud_spec(feature_set, 0.5)
    ensemble = spec["steps"][3]
    spec["steps"][3] = {
        "name": "pick",
        "kind": "switch",
        "cases": [{"when": "amount > 1000", "step": "ensemble"}],
        "default": "only_v1",
    }
    only_v1 = {
        "name": "only_v1",
        "kind": "model",
        "model": "fraud:1",
        "inputs": {"x": "features"},
        "outputs": {"probabilities": "proba"},
    }
    spec["steps"] += [ensemble, only_v1]
    name = serve(engineer, spec)
    answer = predict(client, name, {"inputs": {"card_id": CARDS, "amount": AMOUNTS}}, query="?trace=1")
    assert answer.status_code == 200, answer.content
    rows = [
        [a, CARD_FEATURES[c]["avg_amount"], CARD_FEATURES[c]["tx_count"], a / CARD_FEATURES[c]["avg_amount"]]
        for a, c in zip(AMOUNTS, CARDS, strict=True)
    ]
    x = ((np.array(rows) - np.array(SCALE["mean"])) / np.array(SCALE["std"])).astype(np.float32)
    v1, v2 = (ort.InferenceSession(fraud_bytes(s)).run(["probabilities"], {"x": x})[0][:, 1] for s in (11, 21))
    expected = np.where(np.array(AMOUNTS) > 1000, (v1 + v2) / 2, v1)
    np.testing.assert_allclose(answer.json()["outputs"]["fraud_score"], expected, rtol=1e-4)
    steps = [t["step"] for t in answer.json()["trace"]]
    assert "ensemble" in steps and "only_v1" in steps and "pick" in steps
