from __future__ import annotations

import time
from typing import Any

import orjson
import pytest
from django.test import TestCase

from inference import api_keys
from inference.models import ApiKey
from inference.routing_cache import EdgeCache, edge_cache
from tests.inference.conftest import ROWS, auth

pytestmark = pytest.mark.django_db


def predict(client: Any, key: str, name: str = "iris") -> Any:
    return client.post(
        f"/api/v1/endpoints/{name}/predict",
        orjson.dumps({"instances": ROWS}),
        content_type="application/json",
        **auth(key),
    )


def test_the_secret_is_stored_hashed_only(app_key: str) -> None:
    row = ApiKey.objects.get()
    assert app_key.startswith(f"mh_app_{row.prefix}_")
    assert app_key not in row.hashed and len(row.hashed) == 64


def test_a_key_only_calls_the_endpoints_it_is_scoped_to(client: Any, app_key: str, make_endpoint: Any) -> None:
    make_endpoint("other", [{"model": "iris", "version": 1, "role": "primary", "weight": 100}])
    assert predict(client, app_key).status_code == 200
    response = predict(client, app_key, "other")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "key_not_allowed"


def test_a_revoked_key_is_refused_at_once_in_this_process(client: Any, app_key: str, engineer: Any) -> None:
    assert predict(client, app_key).status_code == 200
    api_keys.api_key_revoke(key=ApiKey.objects.get(), user=engineer)
    response = predict(client, app_key)
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_a_revocation_reaches_other_processes_within_the_cache_window(app_key: str, engineer: Any) -> None:
    # Another web process: its own cache, which only learns of changes through the
    # shared generation counter (Redis here), checked at most every check_every_s.
    other = EdgeCache(check_every_s=0.2)
    assert other.api_key(app_key) is not None
    with TestCase.captureOnCommitCallbacks(execute=True):
        api_keys.api_key_revoke(key=ApiKey.objects.get(), user=engineer)
    deadline = time.monotonic() + 5
    while other.api_key(app_key) is not None:
        assert time.monotonic() < deadline, "revocation did not reach the other cache"
        time.sleep(0.05)


def test_keys_are_served_from_the_cache_after_first_use(app_key: str, django_assert_num_queries: Any) -> None:
    edge_cache.api_key(app_key)
    with django_assert_num_queries(0):
        assert edge_cache.api_key(app_key) is not None
