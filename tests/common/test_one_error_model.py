"""Every error family derives from one base and renders through one function."""

from __future__ import annotations

import orjson
import pytest
import redis

from common.errors import ModelhubError
from common.http import error_reply
from config import errors as domain
from inference.edge import EdgeError
from inference.router import RoutingError
from inference.runtime import errors as runtime


@pytest.mark.parametrize(
    "error",
    [
        domain.NotFound("no model named x"),
        domain.Conflict("taken"),
        domain.ServiceUnavailable("redis is away", retry_after_s=5),
        runtime.InputError("bad input"),
        runtime.Overloaded("queue full", retry_after_s=2.4),
        runtime.DeadlineExceeded("late"),
        EdgeError(401, "missing_key", "a key please", [("WWW-Authenticate", "Bearer")]),
        RoutingError("no ready deployment"),
    ],
)
def test_every_family_is_one_error_with_status_code_and_message(error: ModelhubError) -> None:
    assert isinstance(error, ModelhubError)
    for shape in ("simple", "v2"):
        status, body, headers = error_reply(error, shape)  # type: ignore[arg-type]
        assert status == error.status
        data = orjson.loads(body)
        if shape == "v2":
            assert data == {"error": error.message, "code": error.code}
        else:
            assert data == {"error": {"code": error.code, "message": error.message, "details": {}}}
        assert ("Retry-After" in dict(headers)) == (status == 503), headers


def test_every_503_carries_retry_after_with_the_error_s_own_figure() -> None:
    assert dict(error_reply(domain.ServiceUnavailable("away", retry_after_s=5))[2])["Retry-After"] == "5"
    assert dict(error_reply(runtime.Overloaded("full", retry_after_s=2.4))[2])["Retry-After"] == "2"
    assert dict(error_reply(runtime.ModelNotReady("loading"))[2])["Retry-After"] == "1"
    assert dict(error_reply(RoutingError("none ready"))[2])["Retry-After"] == "1"


def test_the_worker_pool_s_redis_down_error_is_a_503_with_retry_after() -> None:
    """What inference.pool raises when Redis refuses: no longer an unmapped 500."""
    from inference.pool import _unavailable

    status, body, headers = error_reply(_unavailable(redis.ConnectionError("Connection refused")), "v2")
    assert status == 503 and int(dict(headers)["Retry-After"]) >= 1
    assert orjson.loads(body)["code"] == "unavailable"


def test_an_unexpected_error_is_a_500_that_names_nothing_internal() -> None:
    status, body, headers = error_reply(KeyError("/srv/secret/path"))
    assert status == 500 and b"secret" not in body and headers == []


def test_details_and_extra_headers_travel() -> None:
    error = domain.Conflict("taken", details={"version": 1})
    assert orjson.loads(error_reply(error)[1])["error"]["details"] == {"version": 1}
    assert ("WWW-Authenticate", "Bearer") in error_reply(EdgeError(401, "k", "m", [("WWW-Authenticate", "Bearer")]))[2]
