"""A small, realistic platform for screenshots: real services where they exist, rows otherwise."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from django.utils import timezone

from audit.services import audit_record
from inference.models import Deployment, Endpoint
from registry import services
from registry.models import ModelVersion

CHECKS = [
    ("onnx_checker", 4.1),
    ("external_data", 0.2),
    ("operator_domains", 0.3),
    ("loads_in_onnxruntime", 38.5),
    ("signature", 0.4),
    ("smoke_inference", 2.7),
]


def seed_platform(user: Any) -> dict[str, Any]:
    specs = [
        ("iris-classifier", "Logistic regression on the iris data set", ["tabular", "demo"], 4),
        ("churn-predictor", "Gradient-boosted churn score for subscription customers", ["tabular", "team:growth"], 7),
        ("fraud-detector", "Card transaction fraud, 38 features", ["tabular", "risk"], 3),
        ("digits-cnn", "Tiny CNN on 8x8 digits", ["vision"], 2),
    ]
    made: dict[str, Any] = {}
    now = timezone.now()
    for name, description, tags, count in specs:
        model = services.model_register(name=name, description=description, tags=tags, user=user)
        for n in range(1, count + 1):
            failed = name == "fraud-detector" and n == 1
            version = ModelVersion.objects.create(
                model=model,
                version=n,
                artifact_sha256=hashlib.sha256(f"{name}{n}".encode()).hexdigest(),
                artifact_size=18_000 + 913 * n,
                artifact_filename=f"{name}-{n}.onnx",
                status=ModelVersion.Status.FAILED if failed else ModelVersion.Status.READY,
                stage=(
                    ModelVersion.Stage.PRODUCTION
                    if n == count - 1
                    else ModelVersion.Stage.STAGING
                    if n == count
                    else ModelVersion.Stage.NONE
                ),
                metadata={
                    "metrics": {"accuracy": round(0.90 + 0.01 * n, 4), "f1": round(0.88 + 0.012 * n, 4)},
                    "params": {"max_iter": 500, "C": 1.0},
                    "training_data": f"s3://ml-data/{name}/2026-0{n}.parquet",
                    "code_commit": hashlib.sha1(f"{name}{n}".encode()).hexdigest()[:7],
                },
                signature={
                    "inputs": [{"name": "float_input", "dtype": "float32", "shape": [-1, 4]}],
                    "outputs": [
                        {"name": "label", "dtype": "int64", "shape": [-1]},
                        {"name": "probabilities", "dtype": "float32", "shape": [-1, 3]},
                    ],
                },
                opset={"": 17, "ai.onnx.ml": 3},
                producer="skl2onnx 1.19",
                ir_version=9,
                validation_report={
                    "ok": not failed,
                    "error": "smoke inference: input float_input got NaN outputs" if failed else "",
                    "checks": [
                        {"name": c, "ok": not (failed and c == "smoke_inference"), "duration_ms": d} for c, d in CHECKS
                    ],
                },
                validated_at=now - timedelta(days=count - n, hours=2),
                created_by=user,
            )
            audit_record(actor=user, action="version.upload", obj=version, after={"size": version.artifact_size})
            audit_record(actor=None, action="version.validated", obj=version, after={"status": version.status})
            made[f"{name}:{n}"] = version
    for endpoint_name, model_name, prod in (("iris", "iris-classifier", 3), ("churn", "churn-predictor", 6)):
        endpoint = Endpoint.objects.create(name=endpoint_name, description=f"{model_name} for applications", owner=user)
        Deployment.objects.create(
            endpoint=endpoint, model_version=made[f"{model_name}:{prod}"], role="primary", weight=90, state="ready"
        )
        Deployment.objects.create(
            endpoint=endpoint, model_version=made[f"{model_name}:{prod + 1}"], role="canary", weight=10, state="ready"
        )
    return made


def seed_extras(user: Any, approver: Any, made: dict[str, Any]) -> dict[str, str]:
    """Approvals, traffic revisions, an hour of roll-ups and a firing alert.

    Returns extra screenshot pages {name: path}.
    """
    import math
    import random

    from inference.models import TrafficPolicyRevision
    from inference.telemetry.recorder import LATENCY_BUCKETS_MS
    from monitoring import alerts
    from monitoring.models import MetricRollup
    from registry import promotions

    pages: dict[str, str] = {}
    for endpoint in Endpoint.objects.all():
        deployments = list(endpoint.deployments.select_related("model_version__model").order_by("role"))
        for number, weights in ((1, (100, 0)), (2, (90, 10))):
            TrafficPolicyRevision.objects.create(
                endpoint=endpoint,
                revision=number,
                is_current=number == 2,
                created_by=user,
                comment="initial" if number == 1 else "canary 10%",
                routes=[
                    {
                        "deployment": d.pk,
                        "model": d.model_version.model.name,
                        "version": d.model_version.version,
                        "role": d.role,
                        "weight": w,
                    }
                    for d, w in zip(deployments[::-1], weights, strict=True)
                    if w or number == 2
                ],
            )
    pages["endpoint"] = "/endpoints/churn/"
    request = promotions.promotion_request_create(
        version=made["churn-predictor:7"],
        to_stage="Production",
        user=user,
        justification="+1.2 points of accuracy on the March hold-out; canary ran 48 h without errors",
    )
    pages["approval"] = f"/approvals/{request.pk}/"
    rng = random.Random(7)
    now = timezone.now().replace(second=0, microsecond=0)
    rows = []
    for deployment, role, share in (("churn-predictor:6", "primary", 0.9), ("churn-predictor:7", "canary", 0.1)):
        for i in range(60):
            count = int(share * (1800 + 600 * math.sin(i / 9)) * rng.uniform(0.9, 1.1))
            buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
            for _ in range(40):
                buckets[min(len(buckets) - 1, int(abs(rng.gauss(3 if role == "primary" else 4, 1.2))))] += count // 40
            errors = int(count * (0.002 if role == "primary" else 0.01))
            rows.append(
                MetricRollup(
                    endpoint="churn",
                    deployment=deployment,
                    role=role,
                    minute=now - timedelta(minutes=60 - i),
                    count=count,
                    rows=count,
                    error_count=errors,
                    errors={"invalid_input": errors},
                    latency_buckets=buckets,
                    latency_sum_ms=2.5 * count,
                    batch_rows_sum=count * 3,
                    batch_count=count // 3 or 1,
                    outputs={
                        "label": {
                            "kind": "class",
                            "counts": {
                                "stays": int(count * (0.8 if role == "primary" else 0.74)),
                                "churns": int(count * (0.2 if role == "primary" else 0.26)),
                            },
                        }
                    },
                )
            )
    MetricRollup.objects.bulk_create(rows)
    rule = alerts.alert_rule_create(
        endpoint_name="churn",
        user=user,
        values={
            "name": "canary errors",
            "metric": "error_rate",
            "comparison": ">",
            "threshold": 0.005,
            "window_minutes": 10,
            "severity": "critical",
            "deployment": "churn-predictor:7",
        },
    )
    alerts.alert_rule_create(
        endpoint_name="churn",
        user=user,
        values={
            "name": "p99 budget",
            "metric": "p99_latency_ms",
            "comparison": ">",
            "threshold": 50,
            "window_minutes": 5,
        },
    )
    alerts.alert_rule_evaluate(rule_id=rule.pk)
    pages["monitoring"] = "/monitoring/churn/"
    pages["alerts"] = "/alerts/"
    return pages
