"""One table of requests through every front (raw WSGI, raw ASGI, Django's test client):
the same status, body and headers from each, because one dispatcher answers them all."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import orjson
import pytest
from django.test import Client

from inference.wsgi import EdgeWSGI
from tests.inference.asgi_client import asgi_call

# The ASGI front reads the routing cache's misses on the event loop, through a connection
# of its own: it sees committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)

HOST = "testserver"  # in ALLOWED_HOSTS under the test runner
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
HEADERS_COMPARED = (
    "content-type",
    "allow",
    "www-authenticate",
    "retry-after",
    "x-model-version",
    "x-model-name",
    "inference-header-content-length",
)
Answer = tuple[int, bytes, dict[str, str]]


def _relevant(headers: dict[str, str]) -> dict[str, str]:
    lower = {k.lower(): v for k, v in headers.items()}
    return {k: lower[k] for k in HEADERS_COMPARED if k in lower}


def _django_not_called_wsgi(environ: Any, start_response: Any) -> list[bytes]:
    start_response("418 I'm a teapot", [("Content-Type", "text/plain")])
    return [b"django"]


def via_wsgi(method: str, path: str, body: bytes, headers: dict[str, str], query: str = "") -> Answer:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": headers.pop("content-length", str(len(body))),
    }
    for name, value in headers.items():
        key = "CONTENT_TYPE" if name == "content-type" else "HTTP_" + name.upper().replace("-", "_")
        environ[key] = value
    started: list[Any] = []
    out = b"".join(EdgeWSGI(_django_not_called_wsgi)(environ, lambda status, head: started.append((status, head))))
    status, head = started[0]
    return int(status.split()[0]), out, dict(head)


def via_asgi(method: str, path: str, body: bytes, headers: dict[str, str], query: str = "") -> Answer:
    headers = {"content-length": str(len(body)), **headers}
    status, head, out = asgi_call(method, path, body, headers.items(), query=query, server=("127.0.0.1", 8000))
    return status, out, head


def via_django(method: str, path: str, body: bytes, headers: dict[str, str], query: str = "") -> Answer:
    extra = {}
    content_type = headers.pop("content-type", "")
    length = headers.pop("content-length", None)
    for name, value in headers.items():
        extra["HTTP_" + name.upper().replace("-", "_")] = value
    if length is not None:
        extra["CONTENT_LENGTH"] = length
    response = Client().generic(method, path + (f"?{query}" if query else ""), body, content_type=content_type, **extra)
    return response.status_code, response.content, dict(response.headers)


FRONTS = {"wsgi": via_wsgi, "asgi": via_asgi, "django": via_django}


def v2_json(rows: list[list[float]]) -> bytes:
    data = [v for r in rows for v in r]
    return orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [len(rows), 4], "data": data}]})


def v2_binary(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    raw = np.asarray(rows, dtype=np.float32).tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [len(rows), 4],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    return header + raw, {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }


BINARY_BODY, BINARY_HEADERS = v2_binary(ROWS)
SIMPLE = orjson.dumps({"instances": ROWS})
JSON = {"content-type": "application/json"}

# label: (method, path, query, body, headers, expected status)
TABLE: dict[str, tuple[str, str, str, bytes, dict[str, str], int]] = {
    "good json": ("POST", "/api/v1/endpoints/iris/predict", "", SIMPLE, JSON, 200),
    "good v2 json": ("POST", "/v2/models/iris/infer", "", v2_json(ROWS), JSON, 200),
    "good v2 binary": ("POST", "/v2/models/iris/infer", "", BINARY_BODY, BINARY_HEADERS, 200),
    "no content type (tritonclient)": ("POST", "/v2/models/iris/infer", "", v2_json(ROWS), {}, 200),
    "bad json": ("POST", "/api/v1/endpoints/iris/predict", "", b"{not json", JSON, 400),
    "bad v2 json": ("POST", "/v2/models/iris/infer", "", b"{not json", JSON, 400),
    "too big body": ("POST", "/api/v1/endpoints/iris/predict", "", b"[" * 3000, JSON, 413),
    "too big v2 body": ("POST", "/v2/models/iris/infer", "", b"[" * 3000, JSON, 413),
    "json as text/plain": ("POST", "/api/v1/endpoints/iris/predict", "", SIMPLE, {"content-type": "text/plain"}, 415),
    "v2 json as a form": (
        "POST",
        "/v2/models/iris/infer",
        "",
        v2_json(ROWS),
        {"content-type": "application/x-www-form-urlencoded"},
        415,
    ),
    "unknown endpoint": ("POST", "/v2/models/nope/infer", "", v2_json(ROWS), JSON, 404),
    "unknown simple endpoint": ("POST", "/api/v1/endpoints/nope/predict", "", SIMPLE, JSON, 404),
    "unknown v2 path": ("GET", "/v2/nothing/here", "", b"", {}, 404),
    "missing key": ("POST", "/api/v1/endpoints/locked/predict", "", SIMPLE, JSON, 401),
    "missing key v2": ("POST", "/v2/models/locked/infer", "", v2_json(ROWS), JSON, 401),
    "wrong method": ("GET", "/api/v1/endpoints/iris/predict", "", b"", {}, 405),
    "wrong method v2": ("DELETE", "/v2/models/iris/infer", "", b"", {}, 405),
    "unknown method v2": ("PROPFIND", "/v2/models/iris", "", b"", {}, 405),
    "post to metadata": ("POST", "/v2/models/iris", "", b"{}", JSON, 405),
    "pinned version": ("POST", "/api/v1/endpoints/iris/predict", "version=1", SIMPLE, JSON, 200),
    "pinned v2 version": ("POST", "/v2/models/iris/versions/1/infer", "", v2_json(ROWS), JSON, 200),
    "unknown version": ("POST", "/api/v1/endpoints/iris/predict", "version=9", SIMPLE, JSON, 404),
    "unknown v2 version": ("POST", "/v2/models/iris/versions/9/infer", "", v2_json(ROWS), JSON, 404),
    "metadata": ("GET", "/v2/models/iris", "", b"", {}, 200),
    "version metadata": ("GET", "/v2/models/iris/versions/1", "", b"", {}, 200),
    "model ready": ("GET", "/v2/models/iris/ready", "", b"", {}, 200),
    "server ready": ("GET", "/v2/health/ready", "", b"", {}, 200),
    "server live": ("GET", "/v2/health/live", "", b"", {}, 200),
    "server metadata": ("GET", "/v2", "", b"", {}, 200),
    # Bandit feedback (inference.bandits): the refusals (a 200 would be a duplicate on the next front).
    "feedback unknown request": (
        "POST",
        "/api/v1/endpoints/iris/feedback",
        "",
        orjson.dumps({"request_id": "never", "reward": 1}),
        JSON,
        404,
    ),
    "feedback unknown request v2": (
        "POST",
        "/v2/models/iris/feedback",
        "",
        orjson.dumps({"request_id": "never", "reward": 1}),
        JSON,
        404,
    ),
    "feedback reward not a number": (
        "POST",
        "/api/v1/endpoints/iris/feedback",
        "",
        orjson.dumps({"request_id": "r", "reward": "good"}),
        JSON,
        400,
    ),
    "feedback missing key": ("POST", "/v2/models/locked/feedback", "", b"{}", JSON, 401),
    "feedback wrong method": ("GET", "/api/v1/endpoints/iris/feedback", "", b"", {}, 405),
    "disallowed host": ("POST", "/v2/models/iris/infer", "", v2_json(ROWS), {**JSON, "host": "evil.example"}, 400),
    "disallowed host simple": (
        "POST",
        "/api/v1/endpoints/iris/predict",
        "",
        SIMPLE,
        {**JSON, "host": "evil.example"},
        400,
    ),
}


@pytest.fixture
def served(make_endpoint: Any, iris_v1: Any, iris_v2: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """iris: open, v2 takes all traffic and v1 only pins; locked: needs a key."""
    settings.PREDICT_MAX_BODY_BYTES = 2000
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the ASGI front's lifespan sets it in a server
    make_endpoint(
        "iris",
        require_key=False,
        routes=[
            {"model": "iris", "version": 2, "role": "primary", "weight": 100},
            {"model": "iris", "version": 1, "role": "canary", "weight": 0},
        ],
    )
    make_endpoint("locked", routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}])


def test_every_front_gives_the_same_answer_to_every_request_of_the_table(served: None) -> None:
    """One test, one database set-up: the table's rows are cheap, the set-up is not."""
    wrong: list[str] = []
    for label, (method, path, query, body, headers, expected) in TABLE.items():
        answers = {}
        for front, call in FRONTS.items():
            status, out, head = call(method, path, body, {"host": HOST, **headers}, query)
            answers[front] = (status, out, _relevant(head))
        wsgi = answers["wsgi"]
        if wsgi[0] != expected:
            wrong.append(f"{label}: expected {expected}, WSGI answered {wsgi}")
        for front in ("asgi", "django"):
            if answers[front] != wsgi:
                wrong.append(f"{label}: {front} answered {answers[front]}, WSGI {wsgi}")
        if not wsgi[2].get("content-type", "").startswith(("application/json", "application/octet-stream")):
            wrong.append(f"{label}: not JSON: {wsgi}")
        if expected >= 400 and not orjson.loads(wsgi[1]).get("error"):
            wrong.append(f"{label}: no error in {wsgi[1]!r}")
    assert not wrong, "\n".join(wrong)


def test_a_pin_picks_the_version_and_the_split_the_other(served: None) -> None:
    for front, call in FRONTS.items():
        _, pinned, _ = call("POST", "/api/v1/endpoints/iris/predict", SIMPLE, {"host": HOST, **JSON}, "version=1")
        _, split, head = call("POST", "/api/v1/endpoints/iris/predict", SIMPLE, {"host": HOST, **JSON})
        assert (orjson.loads(pinned)["version"], orjson.loads(split)["version"]) == (1, 2), front
        # docs/serving.md: the answering version's number (what the request header pins), and its model
        assert (_relevant(head)["x-model-version"], _relevant(head)["x-model-name"]) == ("2", "iris")
