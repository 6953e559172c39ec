from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from config.errors import Conflict, DomainError, NotFound
from inference import loading, traffic
from inference.models import Deployment, TrafficPolicyRevision
from inference.routing_cache import edge_cache
from registry.models import ModelVersion

pytestmark = pytest.mark.django_db


def route(version: int, role: str = "primary", weight: int = 100, **extra: Any) -> dict[str, Any]:
    return {"model": "iris", "version": version, "role": role, "weight": weight, **extra}


@pytest.mark.parametrize(
    ("routes", "needle"),
    [
        ([route(1, weight=90)], "add up to 100, got 90"),
        ([route(1, weight=50), route(2, weight=50)], "at most one primary"),
        ([route(1), route(2, "shadow", 10)], "its weight must be 0"),
        ([route(1, weight=50), route(1, "canary", 50)], "appears more than once"),
        ([], "non-empty list"),
        ([route(1, role="boss")], "role: expected one of"),
        ([route(1, placement="moon")], "placement"),
        ([route(1, max_batch_size=0)], "max_batch_size"),
    ],
)
def test_it_refuses_splits_that_break_the_rules(
    iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any, routes: list[dict[str, Any]], needle: str
) -> None:
    with pytest.raises(DomainError) as refused:
        traffic.traffic_policy_revise(endpoint=iris_endpoint, routes=routes, user=engineer)
    assert needle in refused.value.message


def test_it_refuses_a_version_that_is_not_validated(iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any) -> None:
    ModelVersion.objects.filter(pk=iris_v2.pk).update(status=ModelVersion.Status.FAILED)
    with pytest.raises(Conflict, match="not ready"):
        traffic.traffic_policy_revise(endpoint=iris_endpoint, routes=[route(2)], user=engineer)


def test_it_refuses_an_unknown_version(iris_endpoint: Any, engineer: Any) -> None:
    with pytest.raises(NotFound, match="no version 9"):
        traffic.traffic_policy_revise(endpoint=iris_endpoint, routes=[route(9)], user=engineer)


def test_each_change_is_a_new_revision_with_a_full_snapshot(
    iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any
) -> None:
    traffic.traffic_policy_revise(
        endpoint=iris_endpoint, routes=[route(1, weight=80), route(2, "canary", 20)], user=engineer, comment="canary"
    )
    revisions = list(TrafficPolicyRevision.objects.filter(endpoint=iris_endpoint).order_by("revision"))
    assert [r.revision for r in revisions] == [1, 2]
    assert [r.is_current for r in revisions] == [False, True]
    assert [(r["version"], r["role"], r["weight"]) for r in revisions[1].routes] == [
        (1, "primary", 80),
        (2, "canary", 20),
    ]
    assert all("deployment" in r and "placement" in r for r in revisions[1].routes)
    assert AuditEvent.objects.filter(action="traffic.revise").count() == 2


def test_in_process_deployments_are_ready_and_report_their_provider(iris_endpoint: Any) -> None:
    deployment = Deployment.objects.get(endpoint=iris_endpoint)
    assert deployment.state == Deployment.State.READY
    assert deployment.provider == "CPUExecutionProvider"


def test_rollback_goes_to_the_previous_revision_as_a_new_one(
    iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any
) -> None:
    traffic.traffic_policy_revise(endpoint=iris_endpoint, routes=[route(2)], user=engineer)
    revision = traffic.traffic_policy_rollback(endpoint=iris_endpoint, user=engineer)
    assert revision.revision == 3 and revision.is_current
    assert [(r["version"], r["weight"]) for r in revision.routes] == [(1, 100)]
    assert "rollback to revision 1" in revision.comment
    assert AuditEvent.objects.filter(action="traffic.rollback").count() == 1
    assert edge_cache.table("iris").routes[0].spec.version == 1


def test_rollback_to_a_given_revision(iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any) -> None:
    traffic.traffic_policy_revise(endpoint=iris_endpoint, routes=[route(2)], user=engineer)
    traffic.traffic_policy_revise(
        endpoint=iris_endpoint, routes=[route(1, weight=50), route(2, "canary", 50)], user=engineer
    )
    revision = traffic.traffic_policy_rollback(endpoint=iris_endpoint, revision=2, user=engineer)
    assert [(r["version"], r["weight"]) for r in revision.routes] == [(2, 100)]


def test_rollback_without_an_earlier_revision_is_refused(iris_endpoint: Any, engineer: Any) -> None:
    with pytest.raises(Conflict, match="no revision before 1"):
        traffic.traffic_policy_rollback(endpoint=iris_endpoint, user=engineer)


def test_a_pool_revision_waits_until_its_deployment_is_warm(
    iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any
) -> None:
    revision = traffic.traffic_policy_revise(
        endpoint=iris_endpoint, routes=[route(2, placement="worker_pool")], user=engineer
    )
    deployment = Deployment.objects.get(pk=revision.routes[0]["deployment"])
    assert deployment.state == Deployment.State.LOADING
    table = edge_cache.table("iris")
    assert table.revision == 1 and table.pending_revision == 2
    assert table.choose().version == 1  # traffic stays on the ready revision
    loading.deployment_state_set(deployment_id=deployment.pk, state="ready", provider="CUDAExecutionProvider")
    table = edge_cache.table("iris")
    assert table.revision == 2 and table.pending_revision is None
    assert table.choose().placement == "worker_pool"


def test_a_version_that_fails_to_load_is_failed_and_takes_no_traffic(
    iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any, artifact_store: Any
) -> None:
    from registry import storage

    path = storage.artifact_path(iris_v2.artifact_sha256)
    path.chmod(0o644)
    path.write_bytes(b"broken")
    traffic.traffic_policy_revise(endpoint=iris_endpoint, routes=[route(2)], user=engineer)
    deployment = Deployment.objects.get(endpoint=iris_endpoint, model_version=iris_v2)
    assert deployment.state == Deployment.State.FAILED and "cannot load" in deployment.state_detail
    assert edge_cache.table("iris").choose().version == 1


def test_a_deployment_that_leaves_the_split_is_retired_and_unloaded_here(
    iris_endpoint: Any, iris_v2: ModelVersion, engineer: Any, django_capture_on_commit_callbacks: Any
) -> None:
    from inference.transport import in_process_transport

    old = Deployment.objects.get(endpoint=iris_endpoint)
    assert f"d{old.pk}" in in_process_transport().loaded_keys()
    with django_capture_on_commit_callbacks(execute=True):
        traffic.traffic_policy_revise(endpoint=iris_endpoint, routes=[route(2)], user=engineer)
    old.refresh_from_db()
    assert old.state == Deployment.State.RETIRED
    assert f"d{old.pk}" not in in_process_transport().loaded_keys()
    traffic.traffic_policy_rollback(endpoint=iris_endpoint, user=engineer)
    old.refresh_from_db()
    assert old.state == Deployment.State.READY  # rolled back: loaded and warmed again
