"""An unloaded in-process deployment whose reload would not fit the request's deadline
answers 503 `cold_start` JSON with Retry-After through the edge, and is reloaded in the
background so that a retry is answered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from inference.runtime.repository import ModelRepository
from inference.transport import in_process_transport

pytestmark = pytest.mark.django_db


@pytest.fixture
def budgeted_repository() -> Iterator[ModelRepository]:
    """This process's transport serves from a repository with a budget for the test."""
    transport = in_process_transport()
    own, transport.repository = transport.repository, ModelRepository(budget_bytes=1 << 40)
    yield transport.repository
    transport.repository.close()
    transport.repository = own


def test_a_reload_longer_than_the_deadline_is_a_503_with_retry_after_and_the_retry_is_answered(
    client: Any, budgeted_repository: ModelRepository, iris_endpoint: Any, app_key: str
) -> None:
    body = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})

    def predict() -> Any:
        return client.post(
            "/api/v1/endpoints/iris/predict", body, content_type="application/json", HTTP_X_API_KEY=app_key
        )

    assert predict().status_code == 200  # loaded by its first request
    [key] = budgeted_repository.keys()
    budgeted_repository.unload(key)  # as if unloaded to make room
    budgeted_repository._load_ms[key] = 60_000.0  # its last load took a minute: more than the 5 s deadline

    refused = predict()

    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "cold_start", refused.content
    assert int(refused["Retry-After"]) == 60
    for _ in range(600):  # the background reload lands (bounded so that a bug fails, not hangs)
        if key in budgeted_repository:
            break
        time.sleep(0.05)
    assert predict().status_code == 200
