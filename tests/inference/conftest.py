"""Fixtures for the serving edge: validated versions, endpoints with splits, app keys."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import onnx
import pytest
from django.test import TestCase

from inference import api_keys, endpoints, traffic
from inference.routing_cache import edge_cache
from inference.shadow import shadow_pool
from registry import services as registry_services
from registry import storage
from registry.models import ModelVersion, RegisteredModel
from tests.conftest import iris_bytes


@functools.cache
def iris_variant(n: int) -> bytes:
    """The demo iris model with a different doc string: same behaviour, new bytes."""
    if n == 0:
        return iris_bytes()
    model = onnx.load_from_string(iris_bytes())
    model.doc_string = f"variant {n}"
    return model.SerializeToString()


def version_add(model_name: str, data: bytes, user: Any, metadata: dict[str, Any] | None = None) -> ModelVersion:
    """Register (if needed) and upload a version, validated in-process (ready)."""
    model = RegisteredModel.objects.filter(name=model_name).first()
    if model is None:
        model = registry_services.model_register(name=model_name, user=user)
    with TestCase.captureOnCommitCallbacks(execute=True):
        version = registry_services.model_version_create(
            model=model, staged=storage.stage_bytes(data, filename="m.onnx"), user=user, metadata=metadata or {}
        )
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.READY, version.validation_report
    return version


IRIS_META = {"class_names": ["setosa", "versicolor", "virginica"]}


def iris_served_with_key(user: Any, key_name: str) -> str:
    """The demo iris v1 as the "iris" endpoint's primary, and a new app key for it (returned)."""
    version_add("iris", iris_variant(0), user, IRIS_META)
    endpoint = endpoints.endpoint_create(name="iris", user=user)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=user
    )
    _, key = api_keys.api_key_create(name=key_name, endpoints=[endpoint], user=user)
    return key


@pytest.fixture(autouse=True)
def fresh_edge_cache() -> Iterator[None]:
    edge_cache.clear()
    yield
    edge_cache.clear()
    shadow_pool.wait_idle(10)


@pytest.fixture
def iris_v1(engineer: Any) -> ModelVersion:
    return version_add("iris", iris_variant(0), engineer, IRIS_META)


@pytest.fixture
def iris_v2(engineer: Any, iris_v1: ModelVersion) -> ModelVersion:
    return version_add("iris", iris_variant(1), engineer, IRIS_META)


@pytest.fixture
def make_endpoint(engineer: Any) -> Callable[..., Any]:
    def make(name: str = "iris", routes: list[dict[str, Any]] | None = None, **fields: Any) -> Any:
        endpoint = endpoints.endpoint_create(name=name, user=engineer, **fields)
        if routes:
            traffic.traffic_policy_revise(endpoint=endpoint, routes=routes, user=engineer)
        endpoint.refresh_from_db()
        return endpoint

    return make


@pytest.fixture
def iris_endpoint(make_endpoint: Callable[..., Any], iris_v1: ModelVersion) -> Any:
    return make_endpoint("iris", [{"model": "iris", "version": 1, "role": "primary", "weight": 100}])


@pytest.fixture
def app_key(iris_endpoint: Any, engineer: Any) -> str:
    _, secret = api_keys.api_key_create(name="app", endpoints=[iris_endpoint], user=engineer)
    return secret


def auth(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
