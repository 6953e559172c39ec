"""Long work shows progress: a deployment warming up on the worker pool, a validating version."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from inference import pool_protocol as wire
from inference.models import Deployment, Endpoint, TrafficPolicyRevision
from inference.selectors import deployment_spec
from registry import services
from registry.models import ModelVersion
from tests.conftest import iris_bytes, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def pool_redis(settings: Any) -> Iterator[Any]:
    import redis

    if not settings.REDIS_URL:
        pytest.skip("needs Redis (set REDIS_URL)")
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(wire.WORKERS_KEY)
    yield client
    names = list(client.scan_iter("mh:*", count=1000))
    if names:
        client.delete(*names)


def _beat(client: Any, worker: str, deployments: dict[str, Any], device: str = "cpu") -> None:
    body = {"worker": worker, "device": device, "ts": time.time(), "deployments": deployments}
    client.set(wire.heartbeat_key(worker), orjson.dumps(body), ex=60)
    client.zadd(wire.WORKERS_KEY, {worker: time.time() + 60})


@pytest.fixture
def warming(api: Any, engineer: Any) -> Deployment:
    """An endpoint whose only deployment is loading on the worker pool (rows written directly:
    no worker runs here, the heartbeats are written by the test)."""
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    assert upload(api, "iris", iris_bytes()).json()["status"] == "ready"
    endpoint = Endpoint.objects.create(name="flowers", owner=engineer)
    version = ModelVersion.objects.get(model__name="iris", version=1)
    deployment = Deployment.objects.create(
        endpoint=endpoint, model_version=version, placement=Deployment.Placement.WORKER_POOL
    )
    route = {"deployment": deployment.pk, "model": "iris", "version": 1, "role": "primary", "weight": 100}
    TrafficPolicyRevision.objects.create(endpoint=endpoint, revision=1, routes=[route], is_current=True)
    return deployment


def test_the_endpoint_api_reports_warm_up_per_worker(api: Any, warming: Deployment, pool_redis: Any) -> None:
    key = deployment_spec(warming).key
    _beat(pool_redis, "cpu-0", {key: {"state": "ready", "ready": True}})
    _beat(pool_redis, "cpu-1", {key: {"state": "loading", "ready": False}})
    _beat(pool_redis, "cpu-2", {})  # live, not yet reconciled with the assignment
    _beat(pool_redis, "gpu-0", {}, device="gpu")  # another device class: not counted
    body = api.get("/api/v1/endpoints/flowers/").json()
    (row,) = body["deployments"]
    assert row["state"] == "loading"
    assert row["warmup"] == {"workers": 3, "loading": 1, "loaded": 1, "failed": 0}


def test_a_ready_deployment_has_no_warm_up(api: Any, warming: Deployment, pool_redis: Any) -> None:
    Deployment.objects.filter(pk=warming.pk).update(state=Deployment.State.READY)
    (row,) = api.get("/api/v1/endpoints/flowers/").json()["deployments"]
    assert row["warmup"] is None


def test_the_endpoint_page_shows_warm_up_and_polls(browser_client: Any, warming: Deployment, pool_redis: Any) -> None:
    key = deployment_spec(warming).key
    _beat(pool_redis, "cpu-0", {key: {"state": "loading", "ready": False}})
    _beat(pool_redis, "cpu-1", {key: {"state": "ready", "ready": True}})
    html = browser_client.get("/endpoints/flowers/").content.decode()
    assert 'data-warmup-poll="/api/v1/endpoints/flowers/"' in html
    assert f'data-deployment="{warming.pk}"' in html
    assert "warming up on 1 of 2 workers / loaded on 1" in html
    assert '<progress class="warmup-progress" max="2" value="1">' in html


def test_the_checklist_is_the_order_the_validator_runs_its_checks(api: Any) -> None:
    from inference.runtime.validate_child import CHECKS

    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    report = upload(api, "iris", iris_bytes()).json()["validation_report"]
    assert [c["name"] for c in report["checks"]] == list(CHECKS)


def test_a_validating_version_shows_its_checklist_and_polls(api: Any, browser_client: Any) -> None:
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    upload(api, "iris", iris_bytes())
    check = {"name": "parse", "ok": True, "detail": "", "duration_ms": 1.0}
    ModelVersion.objects.filter(model__name="iris", version=1).update(
        status=ModelVersion.Status.VALIDATING, validation_report={"checks": [check]}
    )
    html = browser_client.get("/models/iris/versions/1/").content.decode()
    assert 'data-poll="/api/v1/models/iris/versions/1/"' in html
    assert '<li data-check="parse" data-state="ok">' in html
    assert '<li data-check="external_data" data-state="pending">' in html
    assert html.index('data-check="ort_load"') < html.index('data-check="smoke_inference"')
    assert '<progress id="validation-bar" max="8" value="1">' in html
    assert "1 of 8 checks done" in html
    assert "dashboard/js/version.js" in html


def test_the_upload_form_carries_the_checklist_and_a_bytes_counter(browser_client: Any, api: Any) -> None:
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    html = browser_client.get("/models/iris/").content.decode()
    assert 'data-checks="parse,external_data,operator_domains,ir_version,onnx_checker,ort_load,signature,' in html
    assert '<progress id="upload-progress"' in html and 'id="upload-bytes"' in html


def test_the_validator_reports_each_check_as_it_starts_and_ends(tmp_path: Any) -> None:
    from inference.runtime.validate_child import CHECKS
    from inference.runtime.validation import validate_model_file

    path = tmp_path / "iris.onnx"
    path.write_bytes(iris_bytes())
    events: list[tuple[str, str]] = []

    def on_event(event: dict[str, Any]) -> None:
        if event["event"] == "running":
            events.append(("running", event["name"]))
        elif event["event"] == "check":
            events.append(("check", event["check"]["name"]))

    assert validate_model_file(path, on_event=on_event).ok
    assert events == [(kind, name) for name in CHECKS for kind in ("running", "check")]


def test_the_lease_renewal_records_progress_and_the_api_shows_it(api: Any) -> None:
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    upload(api, "iris", iris_bytes())
    version = ModelVersion.objects.get(model__name="iris", version=1)
    ModelVersion.objects.filter(pk=version.pk).update(
        status=ModelVersion.Status.VALIDATING, validation_lease_owner="task-1", validation_report={}
    )
    progress = {"running": "ort_load", "done": 5}
    assert services.model_version_renew_validation_lease(
        version_id=version.pk, owner="task-1", lease_s=30, progress=progress
    )
    body = api.get("/api/v1/models/iris/versions/1/").json()
    assert body["status"] == "validating" and body["validation_progress"] == progress
    report = {"ok": True, "checks": [], "signature": {}, "opset": {}}
    services.model_version_record_validation(version_id=version.pk, report=report)
    assert api.get("/api/v1/models/iris/versions/1/").json()["validation_progress"] == {}


def test_the_version_page_marks_the_running_check(api: Any, browser_client: Any) -> None:
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    upload(api, "iris", iris_bytes())
    ModelVersion.objects.filter(model__name="iris", version=1).update(
        status=ModelVersion.Status.VALIDATING, validation_report={}, validation_progress={"running": "parse", "done": 0}
    )
    html = browser_client.get("/models/iris/versions/1/").content.decode()
    assert '<li data-check="parse" data-state="running">' in html
    assert '<li data-check="external_data" data-state="pending">' in html


@pytest.mark.django_db(transaction=True)  # the renewal thread writes over its own connection
def test_the_validation_task_writes_its_progress_with_the_lease(api: Any) -> None:
    from registry.tasks import _lease_renewed

    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    upload(api, "iris", iris_bytes())
    version = ModelVersion.objects.get(model__name="iris", version=1)
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.VALIDATING, validation_lease_owner="t")
    progress: dict[str, Any] = {"running": "signature", "done": 6}
    deadline = time.monotonic() + 20
    with _lease_renewed(version.pk, "t", 0.3, progress):
        while time.monotonic() < deadline:
            version.refresh_from_db()
            if version.validation_progress:
                break
            time.sleep(0.05)
    assert version.validation_progress == {"running": "signature", "done": 6}


def test_without_javascript_the_upload_form_posts_to_the_api(engineer: Any, api: Any) -> None:
    import re

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(engineer)
    html = browser.get("/models/iris/").content.decode()
    form = re.search(r'<form id="upload-form" method="post" enctype="multipart/form-data" action="([^"]+)"', html)
    assert form is not None
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token is not None
    fields = {"csrfmiddlewaretoken": token.group(1), "description": "", "metadata": ""}
    artifact = SimpleUploadedFile("iris.onnx", iris_bytes(), content_type="application/octet-stream")
    response = browser.post(form.group(1), {**fields, "artifact": artifact}, HTTP_ACCEPT="text/html")
    assert response.status_code == 201
    assert ModelVersion.objects.filter(model__name="iris", version=1).exists()
