"""Seed a throw-away Modelhub database for the fault tests; prints one JSON line.

    DATABASE_URL=... REDIS_URL=... MODELHUB_CELERY_EAGER=1 python -m tests.integration.faults.seed

Roles and an admin (modelhub_bootstrap without the demo), the demo iris model validated
in-process, two endpoints on it: `iris` (in-process) and `iris-pool` (worker pool; the
reconciler marks it ready once an inference worker holds it warm), ten app keys for each
(so a test can use keys no web process has seen yet) and an admin API token.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import orjson
    from django.core.management import call_command

    from accounts.services import user_token_create
    from inference import api_keys, endpoints, traffic
    from registry import services as registry_services
    from registry import storage
    from registry.demo import iris_onnx

    call_command("modelhub_bootstrap", "--no-demo", stdout=sys.stderr)
    from django.contrib.auth import get_user_model

    admin = get_user_model().objects.get(username=os.environ.get("MODELHUB_ADMIN_USER", "admin"))
    data, metadata = iris_onnx()
    model = registry_services.model_register(name="iris", user=admin)
    version = registry_services.model_version_create(
        model=model, staged=storage.stage_bytes(data, filename="iris.onnx"), user=admin, metadata=metadata
    )
    version.refresh_from_db()
    if version.status != "ready":
        raise SystemExit(f"iris did not validate: {version.status} {version.validation_report}")
    keys: dict[str, list[str]] = {}
    for name, placement in (("iris", "in_process"), ("iris-pool", "worker_pool")):
        endpoint = endpoints.endpoint_create(name=name, user=admin)
        route = {"model": "iris", "version": version.version, "role": "primary", "weight": 100, "placement": placement}
        traffic.traffic_policy_revise(endpoint=endpoint, routes=[route], user=admin)
        keys[name] = [api_keys.api_key_create(name=f"app{i}", endpoints=[endpoint], user=admin)[1] for i in range(10)]
    _, token = user_token_create(user=admin, name="faults")
    print(orjson.dumps({"keys": keys, "token": token}).decode())


if __name__ == "__main__":
    main()
