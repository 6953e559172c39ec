#!/usr/bin/env python3
"""Prepare a fresh Modelhub to serve one benchmark model (run by bench/start_modelhub.sh).

    python bench/modelhub_setup.py MODEL ONNX_PATH --placement in_process|worker_pool \
        [--max-batch-size 64] [--max-queue-delay-ms 1] [--wait-s 120]

Registers MODEL from ONNX_PATH through the registry's services (upload + validation),
creates the endpoint MODEL without API keys (the load generator sends none), and makes
a traffic revision with one primary deployment. For worker_pool it waits (the service the
Celery task `inference.deployment_pool_load` runs) until an inference worker reports it
warm. Uses whatever DATABASE_URL / REDIS_URL / MODELHUB_DATA_DIR the environment gives.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("onnx")
    parser.add_argument("--placement", default="in_process", choices=["in_process", "worker_pool"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-ms", type=float, default=1.0)
    parser.add_argument("--wait-s", type=float, default=120.0)
    args = parser.parse_args()

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from inference.endpoints import endpoint_create
    from inference.models import Deployment, Endpoint
    from inference.traffic import traffic_policy_revise
    from registry import storage
    from registry.models import ModelVersion, RegisteredModel
    from registry.services import model_register, model_version_create

    user, _ = get_user_model().objects.get_or_create(username="bench")
    model = RegisteredModel.objects.filter(name=args.model).first() or model_register(name=args.model, user=user)
    data = Path(args.onnx).read_bytes()
    version = ModelVersion.objects.filter(model=model).order_by("-version").first()
    if version is None:
        staged = storage.stage_bytes(data, filename=f"{args.model}.onnx")
        version = model_version_create(model=model, staged=staged, user=user)
    version.refresh_from_db()
    if version.status != ModelVersion.Status.READY:
        raise SystemExit(f"{args.model} v{version.version} is {version.status}: {version.validation_report}")
    endpoint = Endpoint.objects.filter(name=args.model).first() or endpoint_create(
        name=args.model, user=user, require_key=False
    )
    route = {
        "model": args.model,
        "version": version.version,
        "role": "primary",
        "weight": 100,
        "placement": args.placement,
        "device": args.device,
        "max_batch_size": args.max_batch_size,
        "max_queue_delay_ms": args.max_queue_delay_ms,
    }
    traffic_policy_revise(endpoint=endpoint, routes=[route], user=user, comment="benchmark")
    deployment = Deployment.objects.filter(endpoint=endpoint).order_by("-pk").first()
    if args.placement == "worker_pool":
        from inference.pool_services import deployment_pool_load

        state = deployment_pool_load(deployment_id=deployment.pk, wait_s=args.wait_s)
        if state != "ready":
            deployment.refresh_from_db()
            raise SystemExit(f"worker pool did not warm {args.model}: {state} {deployment.state_detail}")
    deployment.refresh_from_db()
    print(f"modelhub_setup: {args.model} v{version.version} {args.placement} {deployment.state}", flush=True)


if __name__ == "__main__":
    main()
