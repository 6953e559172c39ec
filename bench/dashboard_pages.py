"""Server time of the dashboard's main pages with 1,000 versions and 50 endpoints.

Creates a throw-away database (Django's test database machinery, so nothing real is
touched), seeds it with bulk_create, then times each page with Django's test client
(full middleware stack, no network): the median of several runs, and the query count.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/modelhub MODELHUB_TEST_DB_NAME=bench_dashboard \
        python3 bench/dashboard_pages.py [--runs 7]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import CaptureQueriesContext, setup_test_environment  # noqa: E402

N_MODELS = 50
VERSIONS_PER_MODEL = 20
N_ENDPOINTS = 50


def seed() -> None:
    from django.contrib.auth.models import Group, User

    from audit.models import AuditEvent
    from inference.models import Deployment, Endpoint, TrafficPolicyRevision
    from registry.models import ModelVersion, RegisteredModel

    user = User.objects.create_user("bench", password="bench-pass-123")
    user.groups.add(Group.objects.get_or_create(name="ml_engineer")[0])
    models = RegisteredModel.objects.bulk_create(
        RegisteredModel(
            name=f"model-{i:03d}", description=f"benchmark model {i}", tags=["bench", f"group-{i % 5}"], created_by=user
        )
        for i in range(N_MODELS)
    )
    rows = []
    for model in models:
        for n in range(1, VERSIONS_PER_MODEL + 1):
            rows.append(
                ModelVersion(
                    model=model,
                    version=n,
                    artifact_sha256=hashlib.sha256(f"{model.name}{n}".encode()).hexdigest(),
                    artifact_size=20_000,
                    status="ready",
                    stage="Production"
                    if n == VERSIONS_PER_MODEL - 1
                    else "Staging"
                    if n == VERSIONS_PER_MODEL
                    else "None",
                    metadata={"metrics": {"accuracy": 0.9, "f1": 0.88}, "code_commit": "abc1234"},
                    signature={
                        "inputs": [{"name": "x", "dtype": "float32", "shape": [-1, 4]}],
                        "outputs": [{"name": "y", "dtype": "int64", "shape": [-1]}],
                    },
                    validation_report={
                        "ok": True,
                        "checks": [{"name": "onnx_checker", "ok": True, "duration_ms": 3.0}],
                    },
                    created_by=user,
                )
            )
    versions = ModelVersion.objects.bulk_create(rows)
    AuditEvent.objects.bulk_create(
        AuditEvent(
            actor=user,
            actor_name="bench",
            action=action,
            object_type="registry.modelversion",
            object_id=str(v.pk),
            object_repr=f"v{v.version}",
        )
        for v in versions
        for action in ("version.upload", "version.validated")
    )
    endpoints = Endpoint.objects.bulk_create(Endpoint(name=f"endpoint-{i:03d}", owner=user) for i in range(N_ENDPOINTS))
    by_model = {}
    for v in versions:
        by_model.setdefault(v.model_id, []).append(v)
    deployments = []
    for i, endpoint in enumerate(endpoints):
        model_versions = by_model[models[i % N_MODELS].pk]
        deployments.append(
            Deployment(endpoint=endpoint, model_version=model_versions[-2], role="primary", weight=90, state="ready")
        )
        deployments.append(
            Deployment(endpoint=endpoint, model_version=model_versions[-1], role="canary", weight=10, state="ready")
        )
    Deployment.objects.bulk_create(deployments)
    TrafficPolicyRevision.objects.bulk_create(
        TrafficPolicyRevision(endpoint=e, revision=r, routes=[], is_current=r == 5)
        for e in endpoints
        for r in range(1, 6)
    )


def pages() -> list[str]:
    from django.urls import NoReverseMatch, reverse

    found = [
        "/",
        "/models/",
        "/models/?search=model-01&stage=Production",
        "/models/model-000/",
        f"/models/model-000/versions/{VERSIONS_PER_MODEL}/",
    ]
    for name, args in (
        ("dash-approvals", []),
        ("dash-endpoints", []),
        ("dash-endpoint", ["endpoint-000"]),
        ("dash-monitoring", []),
        ("dash-monitoring-endpoint", ["endpoint-000"]),
        ("dash-alerts", []),
    ):
        try:
            found.append(reverse(name, args=args))
        except NoReverseMatch:
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from django.test import Client

    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        seed()
        client = Client()
        client.login(username="bench", password="bench-pass-123")
        print(
            f"{N_MODELS} models, {N_MODELS * VERSIONS_PER_MODEL} versions, {N_ENDPOINTS} endpoints; "
            f"median of {args.runs} runs after one warm-up\n"
        )
        print(f"| {'page':<52} | {'median ms':>9} | {'max ms':>7} | {'queries':>7} |")
        print(f"| {'-' * 52} | {'-' * 8}: | {'-' * 6}: | {'-' * 6}: |")
        worst = 0.0
        for path in pages():
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                client.get(path)
                times.append((time.perf_counter() - start) * 1000)
            with CaptureQueriesContext(connection) as captured:
                client.get(path)
            median = statistics.median(times)
            worst = max(worst, median)
            print(f"| {path:<52} | {median:>9.1f} | {max(times):>7.1f} | {len(captured):>7} |")
        print(f"\nslowest page median: {worst:.1f} ms (budget 300 ms)")
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    main()
