from __future__ import annotations

import hashlib
from typing import Any

import pytest
from django.test import Client

from registry.models import ModelVersion, RegisteredModel


def seed_models(
    n_models: int, versions_each: int, *, user: Any = None, tags: list[str] | None = None
) -> list[RegisteredModel]:
    """Rows straight into the tables (bulk_create): pages are read-only over them."""
    models = RegisteredModel.objects.bulk_create(
        RegisteredModel(
            name=f"model-{i:03d}", description=f"seeded model {i}", tags=tags or ["seeded"], created_by=user
        )
        for i in range(n_models)
    )
    versions = []
    for model in models:
        for n in range(1, versions_each + 1):
            digest = hashlib.sha256(f"{model.name}-{n}".encode()).hexdigest()
            versions.append(
                ModelVersion(
                    model=model,
                    version=n,
                    artifact_sha256=digest,
                    artifact_size=1000 + n,
                    status=ModelVersion.Status.READY,
                    stage=ModelVersion.Stage.PRODUCTION if n == versions_each else ModelVersion.Stage.NONE,
                    metadata={"metrics": {"accuracy": 0.9}},
                    signature={"inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}], "outputs": []},
                    created_by=user,
                )
            )
    ModelVersion.objects.bulk_create(versions)
    return models


@pytest.fixture
def browser_client(engineer: Any) -> Client:
    client = Client()
    client.force_login(engineer)
    return client


@pytest.fixture
def viewer_client(viewer: Any) -> Client:
    client = Client()
    client.force_login(viewer)
    return client
