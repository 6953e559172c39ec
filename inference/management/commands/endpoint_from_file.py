"""Register an ONNX file as a model version and serve it on an endpoint (benchmarks, demos).

    manage.py endpoint_from_file --file tiny.onnx --name tiny [--open] [--placement worker_pool]
        [--max-batch-size 64] [--max-queue-delay-ms 0]

Idempotent: the same bytes again reuse the version; an existing endpoint gets a new
revision only when its split differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from inference import endpoints, traffic
from inference.models import Endpoint
from inference.spec import DEFAULT_MAX_QUEUE_DELAY_MS
from registry import services as registry_services
from registry import storage
from registry.models import ModelVersion, RegisteredModel


class Command(BaseCommand):
    help = "Register an ONNX file and serve it on an endpoint of the same name."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--file", required=True)
        parser.add_argument("--name", required=True, help="model and endpoint name")
        parser.add_argument("--open", action="store_true", help="no API key needed (benchmarks)")
        parser.add_argument("--placement", default="in_process", choices=["in_process", "worker_pool"])
        parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
        parser.add_argument("--max-batch-size", type=int, default=64)
        parser.add_argument("--max-queue-delay-ms", type=float, default=DEFAULT_MAX_QUEUE_DELAY_MS)

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        user = users.objects.filter(is_superuser=True).order_by("pk").first()
        if user is None:
            raise CommandError("no admin user: run modelhub_bootstrap first")
        name = options["name"]
        data = Path(options["file"]).read_bytes()
        model = RegisteredModel.objects.filter(name=name).first() or registry_services.model_register(
            name=name, user=user
        )
        staged = storage.stage_bytes(data, filename=Path(options["file"]).name)
        version = model.versions.filter(artifact_sha256=staged.sha256).first()
        if version is None:
            version = registry_services.model_version_create(model=model, staged=staged, user=user)
        else:
            staged.discard()
        version.refresh_from_db()
        if version.status != ModelVersion.Status.READY:
            raise CommandError(f"{version} is {version.status}: {version.validation_report}")
        endpoint = Endpoint.objects.filter(name=name).first()
        if endpoint is None:
            endpoint = endpoints.endpoint_create(name=name, user=user, require_key=not options["open"])
        elif endpoint.require_key == options["open"]:
            endpoint = endpoints.endpoint_update(endpoint=endpoint, user=user, require_key=not options["open"])
        route = {
            "model": name,
            "version": version.version,
            "role": "primary",
            "weight": 100,
            "placement": options["placement"],
            "device": options["device"],
            "max_batch_size": options["max_batch_size"],
            "max_queue_delay_ms": options["max_queue_delay_ms"],
        }
        current = endpoint.revisions.filter(is_current=True).first()
        if current is None or [{k: r[k] for k in route} for r in current.routes] != [route]:
            traffic.traffic_policy_revise(endpoint=endpoint, routes=[route], user=user, comment="endpoint_from_file")
        self.stdout.write(f"endpoint {name} serves {version} ({options['placement']})")
