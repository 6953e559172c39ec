"""The raw ASGI front answers V2 infer in the event loop, with the edge's JSON errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

pytest.importorskip("inference.edge")  # the serving edge (serving branch) this front calls

from tests.inference.asgi_client import asgi_call  # noqa: E402

# The edge reads its routing cache's misses on the event loop, through a connection of its
# own: it sees committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def orm_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the front's lifespan start-up does in a server (these tests skip lifespan)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


Headers = list[tuple[str, str]]


def call(method: str, path: str, body: bytes = b"", headers: Headers | None = None) -> tuple[int, dict, bytes]:
    return asgi_call(method, path, body, [("content-type", "application/json"), *(headers or [])])


def v2_body(rows: list[list[float]]) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [len(rows), 4], "data": [v for r in rows for v in r]}]}
    )


@pytest.fixture
def open_iris(make_endpoint: Any, iris_v1: Any) -> Any:
    return make_endpoint(
        "iris",
        require_key=False,
        routes=[{"model": "iris", "version": iris_v1.version, "role": "primary", "weight": 100}],
    )


def test_v2_infer_answers_from_the_in_process_batcher(open_iris):
    status, headers, body = call("POST", "/v2/models/iris/infer", v2_body([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
    assert status == 200, body
    answer = orjson.loads(body)
    assert answer["model_name"] == "iris"
    assert {o["name"] for o in answer["outputs"]} >= {"label"}
    assert headers["content-type"] == "application/json"


def test_a_wrong_shape_is_a_v2_json_400(open_iris):
    status, _, body = call(
        "POST",
        "/v2/models/iris/infer",
        orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}),
    )
    assert status == 400
    assert "X" in orjson.loads(body)["error"]


def test_an_unknown_model_is_a_v2_json_404():
    status, _, body = call("POST", "/v2/models/nope/infer", v2_body([[1, 2, 3, 4]]))
    assert status == 404
    assert "nope" in orjson.loads(body)["error"]


def test_invalid_json_is_a_400(open_iris):
    status, _, body = call("POST", "/v2/models/iris/infer", b"{not json")
    assert status == 400
    assert orjson.loads(body)["error"]


def test_a_body_over_the_limit_is_a_413_before_it_is_parsed(open_iris, settings):
    settings.PREDICT_MAX_BODY_BYTES = 1000
    settings.MODELHUB_MAX_PREDICT_BYTES = 1000
    status, _, body = call("POST", "/v2/models/iris/infer", b"[" * 5000)
    assert status == 413
    assert "limit" in orjson.loads(body)["error"]


def test_other_paths_go_to_django_and_liveness_is_answered_here():
    assert call("GET", "/api/v1/models/")[0] == 418
    status, _, body = call("GET", "/v2/health/live")
    assert (status, orjson.loads(body)) == (200, {"live": True})
