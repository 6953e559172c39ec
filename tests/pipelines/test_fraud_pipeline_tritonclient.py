"""The fraud pipeline called unchanged by tritonclient.http against a real gunicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from inference import endpoints, traffic
from inference.pipelines import services as pipeline_services
from tests.integration.conftest import gunicorn_serving
from tests.pipelines.conftest import expected_scores, fraud_spec

pytestmark = [pytest.mark.integration]
CARDS = [101, 102, 103]
AMOUNTS = [2500.0, 50.0, 1800.0]


@pytest.fixture
def served(
    transactional_db: Any, settings: Any, tmp_path: Path, engineer: Any, fraud_versions: Any, feature_set: str
) -> Iterator[tuple[str, float]]:
    scores = expected_scores(CARDS, AMOUNTS)
    threshold = float(np.mean([scores[0], scores[2]]))
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec(feature_set, threshold), user=engineer)
    endpoint = endpoints.endpoint_create(name="fraud", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    with gunicorn_serving(settings.ARTIFACT_STORE, tmp_path / "gunicorn.log") as url:
        yield url, threshold


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_calls_the_fraud_pipeline_unchanged(served: tuple[str, float], binary: bool) -> None:
    url, threshold = served
    client = httpclient.InferenceServerClient(url)
    meta = client.get_model_metadata("fraud")
    assert [i["name"] for i in meta["inputs"]] == ["card_id", "amount"]
    cards = httpclient.InferInput("card_id", [3], "INT64")
    cards.set_data_from_numpy(np.array(CARDS, dtype=np.int64), binary_data=binary)
    amounts = httpclient.InferInput("amount", [3], "FP32")
    amounts.set_data_from_numpy(np.array(AMOUNTS, dtype=np.float32), binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("fraud_score", "action")]
    result = client.infer("fraud", [cards, amounts], outputs=outputs, request_id="tx-1")
    scores = expected_scores(CARDS, AMOUNTS)
    np.testing.assert_allclose(result.as_numpy("fraud_score"), scores, rtol=1e-4)
    actions = [a.decode() if isinstance(a, bytes) else a for a in result.as_numpy("action").tolist()]
    assert actions == [
        "review" if s > threshold and a > 100 else "approve" for s, a in zip(scores, AMOUNTS, strict=True)
    ]
    assert result.get_response()["id"] == "tx-1"
