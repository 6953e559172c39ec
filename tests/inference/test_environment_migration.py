"""Migration 0003 gives endpoints of a database made at c3bd1b7 an environment, audited."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

# The leaf migrations of every app at commit c3bd1b7 (before environments existed).
AT_C3BD1B7 = [
    ("accounts", "0002_roles"),
    ("inference", "0002_endpoint_require_key_deployment_provider"),
    ("monitoring", "0002_input_samples_per_flush"),
    ("registry", "0002_promotion_requests_webhooks_watchers"),
]


def _migrate(targets: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_existing_endpoints_get_production_only_when_they_serve_production_versions() -> None:
    old = _migrate(AT_C3BD1B7)
    model = old.get_model("registry", "RegisteredModel").objects.create(name="churn")
    Version = old.get_model("registry", "ModelVersion")
    stages = {1: "Production", 2: "None", 3: "Staging"}
    for number, stage in stages.items():
        Version.objects.create(
            model=model, version=number, artifact_sha256=f"{number:064d}", artifact_size=1, status="ready", stage=stage
        )
    Endpoint = old.get_model("inference", "Endpoint")
    Revision = old.get_model("inference", "TrafficPolicyRevision")

    def endpoint(name: str, routes: list[tuple[int, str, int]]) -> None:
        created = Endpoint.objects.create(name=name)
        Revision.objects.create(
            endpoint=created,
            revision=1,
            is_current=True,
            routes=[{"model": "churn", "version": v, "role": role, "weight": w} for v, role, w in routes],
        )

    endpoint("serves-prod", [(1, "primary", 100), (3, "shadow", 0)])
    endpoint("canary-of-none", [(1, "primary", 90), (2, "canary", 10)])
    endpoint("serves-staging", [(3, "primary", 100)])
    Endpoint.objects.create(name="no-split")

    new = _migrate([*AT_C3BD1B7[:1], ("inference", "0003_endpoint_environment"), *AT_C3BD1B7[2:]])
    environments = dict(new.get_model("inference", "Endpoint").objects.values_list("name", "environment"))
    assert environments == {
        "serves-prod": "production",
        "canary-of-none": "development",
        "serves-staging": "development",
        "no-split": "development",
    }
    events = new.get_model("registry", "AuditEvent").objects.filter(action="endpoint.environment")
    audited = {e.object_repr: (e.actor_name, e.after["environment"]) for e in events}
    assert audited == {name: ("system", env) for name, env in environments.items()}
    reason = events.get(object_repr="canary-of-none").after["reason"]
    assert "churn v2 (canary) is in None" in reason
    _migrate(executor_leaves())


def executor_leaves() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes()
