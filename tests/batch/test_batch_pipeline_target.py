"""A batch job whose target is an endpoint serving a pipeline: the graph runs over each
chunk (real ONNX Runtime, feature lookups from the test's store), under the endpoint's rules,
with the pipeline version and its models recorded."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pytest

from inference import endpoints, traffic
from inference.batch import services
from inference.batch.models import BatchJob
from inference.models import Endpoint, TrafficPolicyRevision
from inference.pipelines import services as pipeline_services
from registry.models import ModelVersion
from tests.batch.test_batch_job_api import error, post
from tests.conftest import client_for
from tests.pipelines import conftest as pipeline_fixtures
from tests.pipelines.conftest import expected_scores, fraud_spec

# The fraud example's fixtures (two versions of a fraud model, a feature set in the store).
fraud_versions = pipeline_fixtures.fraud_versions
feature_set = pipeline_fixtures.feature_set

pytestmark = pytest.mark.django_db
CARDS = [101, 102, 103]


def card_rows(n: int) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "card_id", "amount"])
    for i in range(n):
        writer.writerow([f"t{i}", CARDS[i % 3], 40.0 + 37.5 * i])
    return text.getvalue().encode()


def serve_pipeline(engineer: Any, spec: dict[str, Any], name: str = "fraud-ep") -> Endpoint:
    pipeline_services.pipeline_create(name="fraud", spec=spec, user=engineer)
    endpoint = endpoints.endpoint_create(name=name, user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    return endpoint


def by_endpoint(api: Any, data: bytes, **fields: Any) -> Any:
    return post(api, data=data, model="", version="", endpoint="fraud-ep", passthrough="id", **fields)


def result(api: Any, job_id: int) -> list[dict[str, str]]:
    body = b"".join(api.get(f"/api/v1/batch-jobs/{job_id}/result").streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_an_endpoint_serving_a_pipeline_runs_its_graph_over_every_chunk(engineer, fraud_versions, feature_set):
    serve_pipeline(engineer, fraud_spec(feature_set, 0.5))
    api = client_for(engineer)
    n = 250
    response = by_endpoint(api, card_rows(n), chunk_rows="100")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["model"] is None and created["model_ref"] == "endpoint:fraud-ep"
    assert created["pipeline"]["pipeline"] == "fraud" and created["pipeline"]["version"] == 1
    assert [(m["model"], m["version"], m["sha256"]) for m in created["pipeline"]["models"]] == [
        ("fraud", v.version, v.artifact_sha256) for v in fraud_versions
    ]
    services._job_drive(created["id"])
    job = BatchJob.objects.get(pk=created["id"])
    assert job.state == "succeeded", job.error
    assert job.chunks_total == 3 and job.rows_done == n
    out = result(api, job.pk)
    assert [r["id"] for r in out] == [f"t{i}" for i in range(n)]
    cards = [CARDS[i % 3] for i in range(n)]
    amounts = [40.0 + 37.5 * i for i in range(n)]
    want = expected_scores(cards, amounts)
    np.testing.assert_allclose([float(r["fraud_score"]) for r in out], want, rtol=1e-5, atol=1e-6)
    for row, score, amount in zip(out, want, amounts, strict=True):
        assert row["action"] == ("review" if score > 0.5 and amount > 100 else "approve")


def test_a_dry_run_of_a_pipeline_target_answers_its_outputs(engineer, fraud_versions, feature_set):
    serve_pipeline(engineer, fraud_spec(feature_set, 0.5))
    response = by_endpoint(client_for(engineer), card_rows(10), dry_run="true", dry_run_rows="4")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["ok"] and body["rows_checked"] == 4
    assert body["pipeline_version"] == {"pipeline": "fraud", "version": 1}
    assert body["output_columns"] == ["id", "fraud_score", "action"]


def test_an_unknown_entity_under_on_missing_refuse_fails_the_job_naming_it(engineer, fraud_versions, feature_set):
    serve_pipeline(engineer, fraud_spec(feature_set, 0.5))
    api = client_for(engineer)
    data = card_rows(6) + b"t6,999,12.5\n"
    job_id = by_endpoint(api, data).json()["id"]
    services._job_drive(job_id)
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "failed" and 'entity "999"' in job.error


def test_a_production_endpoint_refuses_a_pipeline_whose_models_are_not_in_production(
    engineer, fraud_versions, feature_set
):
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec(feature_set, 0.5), user=engineer)
    endpoint = Endpoint.objects.create(name="fraud-ep", environment="production")
    version = pipeline_services.pipeline_version_get(name="fraud", version=1, team_id=None, where="test")
    # Written as the split would have been when both models were in Production; they are not now.
    TrafficPolicyRevision.objects.create(
        endpoint=endpoint,
        revision=1,
        is_current=True,
        routes=[{"pipeline": "fraud", "version": 1, "pipeline_version": version.pk, "role": "primary", "weight": 100}],
    )
    found = error(by_endpoint(client_for(engineer), card_rows(5)), 409)
    assert found["code"] == "environment_rule"
    assert found["details"]["pipeline"] == "fraud" and found["details"]["stage"] == ModelVersion.Stage.NONE
    assert not BatchJob.objects.exists()


def test_a_pipeline_job_fails_when_its_alias_moves_to_another_version(engineer, fraud_versions, feature_set):
    v1, v2 = fraud_versions
    ModelVersion.objects.filter(pk=v1.pk).update(stage=ModelVersion.Stage.STAGING)
    spec = fraud_spec(feature_set, 0.5)
    spec["steps"][3]["members"] = [{"model": "fraud@staging"}, {"model": "fraud", "version": 2}]
    serve_pipeline(engineer, spec)
    api = client_for(engineer)
    job_id = by_endpoint(api, card_rows(50), chunk_rows="25").json()["id"]
    services.job_plan(job_id=job_id)
    assert services.chunk_run(job_id=job_id, index=0).status == "done"
    ModelVersion.objects.filter(pk=v2.pk).update(stage=ModelVersion.Stage.STAGING)  # the alias now means v2
    assert services.chunk_run(job_id=job_id, index=1).status == "error"
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "failed" and "a stage alias moved since the job was created" in job.error


def test_a_pipeline_with_a_router_is_refused_as_a_batch_target(engineer, fraud_versions, feature_set):
    pytest.importorskip("inference.bandits")
    from tests.pipelines.test_router_pipeline import bandit_spec

    pipeline_services.pipeline_create(name="fraud-strict", spec=fraud_spec(feature_set, 0.2), user=engineer)
    pipeline_services.pipeline_create(name="fraud-lenient", spec=fraud_spec(feature_set, 0.9), user=engineer)
    pipeline_services.pipeline_create(
        name="fraud-bandit", spec=bandit_spec({"policy": "epsilon_greedy", "epsilon": 0.2}), user=engineer
    )
    endpoint = endpoints.endpoint_create(name="fraud-ep", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[{"pipeline": "fraud-bandit", "version": 1, "role": "primary", "weight": 100}],
        user=engineer,
    )
    found = error(by_endpoint(client_for(engineer), card_rows(5)), 400)
    assert "router step (bandit)" in found["message"] and "per request" in found["message"]
    assert not BatchJob.objects.exists()
