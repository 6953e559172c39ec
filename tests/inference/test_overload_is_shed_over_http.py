"""An overloaded in-process deployment answers 503 + Retry-After at once through the edge.

The overload is forced through the settings: a longest queue wait of one microsecond is
shorter than any batch, so once the batcher has timed one batch, every request is one
that could never be answered in time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from inference.transport import in_process_transport

pytestmark = pytest.mark.django_db


def unload_all() -> None:
    transport = in_process_transport()
    for key in transport.loaded_keys():
        transport.unload_key(key)


@pytest.fixture
def tiny_queue_wait(settings: Any) -> Iterator[None]:
    """Before the endpoint exists, so that its deployment loads under it (the policy is
    fixed at load, and another test's deployment of the same id may still be loaded)."""
    settings.SERVING_MAX_QUEUE_WAIT_MS = 0.001
    unload_all()
    yield
    unload_all()


def test_requests_that_cannot_be_answered_in_time_are_refused_with_503_and_retry_after(
    client: Any, tiny_queue_wait: None, iris_endpoint: Any, app_key: str
) -> None:
    body = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
    statuses: Counter[int] = Counter()
    for _ in range(21):
        response = client.post(
            "/api/v1/endpoints/iris/predict", body, content_type="application/json", HTTP_X_API_KEY=app_key
        )
        statuses[response.status_code] += 1
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "overloaded", response.content
            assert int(response["Retry-After"]) >= 1

    # The first one ran (no batch timed yet: nothing to plan with); every later one is
    # refused at once. Every request sent is one of the two: no 504, nothing else.
    assert statuses == Counter({200: 1, 503: 20})
