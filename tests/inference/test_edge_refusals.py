"""Refusals the data plane makes before any endpoint is looked up, on every front (#10 item 7)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import orjson
import pytest

from inference.asgi import EdgeASGI
from inference.wsgi import EdgeWSGI
from tests.inference.test_every_front_answers_the_same import FRONTS, SIMPLE, v2_json

pytestmark = pytest.mark.django_db


class NeverRead(io.RawIOBase):
    def read(self, size: int = -1) -> bytes:
        raise AssertionError("the body was read")


def test_a_host_outside_allowed_hosts_is_a_400_json_on_every_front() -> None:
    for front, call in FRONTS.items():
        status, body, head = call("POST", "/v2/models/iris/infer", v2_json([[1, 2, 3, 4]]), {"host": "evil.example"})
        assert status == 400, (front, body)
        assert head.get("Content-Type", head.get("content-type")) == "application/json"
        assert orjson.loads(body)["code"] == "disallowed_host", front
        status, body, _ = call("GET", "/v2/health/live", b"", {"host": "evil.example:8000"})
        assert (status, orjson.loads(body)["code"]) == (400, "disallowed_host"), front


def test_an_allowed_host_with_a_port_is_answered() -> None:
    for front, call in FRONTS.items():
        assert call("GET", "/v2/health/live", b"", {"host": "testserver:8000"})[0] == 200, front


def test_json_sent_as_text_plain_is_a_415_json_on_every_front() -> None:
    for front, call in FRONTS.items():
        for path, body in (("/api/v1/endpoints/iris/predict", SIMPLE), ("/v2/models/iris/infer", v2_json([[1] * 4]))):
            status, out, _ = call("POST", path, body, {"host": "testserver", "content-type": "text/plain"})
            assert status == 415, (front, path, out)
            assert b"application/json" in out and b"text/plain" in out


def test_an_unknown_method_on_v2_is_a_405_json_not_a_csrf_page() -> None:
    for front, call in FRONTS.items():
        for method, path in (("PROPFIND", "/v2/models/iris"), ("PUT", "/v2/health/ready"), ("DELETE", "/v2")):
            status, out, head = call(method, path, b"", {"host": "testserver"})
            assert status == 405, (front, method, path, out)
            assert orjson.loads(out)["code"] == "method_not_allowed"
            assert head.get("Allow", head.get("allow")) == "GET"


def test_an_over_limit_content_length_is_refused_without_reading_the_body(settings: Any) -> None:
    settings.PREDICT_MAX_BODY_BYTES = 1000
    replies: list[Any] = []
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/v2/models/iris/infer",
        "CONTENT_LENGTH": str(16 * 1024 * 1024),
        "CONTENT_TYPE": "application/json",
        "wsgi.input": NeverRead(),
    }
    body = b"".join(EdgeWSGI(lambda *_: [])(environ, lambda status, head: replies.append(status)))
    assert replies == ["413 Request Entity Too Large"], body
    assert b"over the limit of 1000 bytes" in body

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was waited for")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/endpoints/iris/predict",
        "headers": [(b"content-length", str(16 * 1024 * 1024).encode()), (b"content-type", b"application/json")],
    }
    asyncio.run(asyncio.wait_for(EdgeASGI(lambda *_: None)(scope, receive, send), timeout=30))  # type: ignore[arg-type]
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"]["code"] == "payload_too_large"


def test_an_unannounced_body_is_read_only_to_one_byte_past_the_limit(settings: Any) -> None:
    """Chunked uploads (no Content-Length) stop at the limit instead of growing the buffer."""
    settings.PREDICT_MAX_BODY_BYTES = 1000
    stream = io.BytesIO(b"[" * 100_000)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v2/models/iris/infer", "wsgi.input": stream}
    statuses: list[str] = []
    out = b"".join(EdgeWSGI(lambda *_: [])(environ, lambda status, head: statuses.append(status)))
    assert statuses == ["413 Request Entity Too Large"], out
    assert stream.tell() == 1001

    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b"[" * 400, "more_body": True}  # endless

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v2/models/iris/infer", "headers": []}
    asyncio.run(asyncio.wait_for(EdgeASGI(lambda *_: None)(scope, receive, send), timeout=30))  # type: ignore[arg-type]
    assert (sent[0]["status"], received) == (413, 3)
