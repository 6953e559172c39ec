"""A small, realistic platform for screenshots: real services where they exist, rows otherwise."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from django.utils import timezone

from inference.models import Deployment, Endpoint
from registry import services
from registry.audit import audit_record
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
