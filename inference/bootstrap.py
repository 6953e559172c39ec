"""The serving step of `modelhub_bootstrap`: the demo endpoint `iris`, ready to call."""

from __future__ import annotations

import time
from typing import Any

from django.db import connection

from inference import api_keys, endpoints, traffic
from inference.models import Endpoint
from registry.demo import DEMO_MODEL_NAME
from registry.models import ModelVersion

DEMO_ENDPOINT = "iris"


def _ready_version(wait_s: float) -> ModelVersion | None:
    deadline = time.monotonic() + wait_s
    while True:
        version = ModelVersion.objects.filter(model__name=DEMO_MODEL_NAME).order_by("-version").first()
        if version is None or version.status == ModelVersion.Status.READY:
            return version
        if version.status == ModelVersion.Status.FAILED or time.monotonic() > deadline or connection.in_atomic_block:
            return None
        time.sleep(0.5)


def serving_bootstrap(
    *, admin: Any, write: Any, base_url: str = "http://127.0.0.1:8000", wait_s: float = 60.0
) -> str | None:
    """Create the `iris` endpoint on the demo model (in-process) and an API key for it.

    Returns the new key (printed once), or None when the endpoint already existed or the
    demo model is not validated yet (a Celery worker validates it on the full stack: run
    the command again once it is).
    """
    if Endpoint.objects.filter(name=DEMO_ENDPOINT).exists():
        write(
            f"demo endpoint: {DEMO_ENDPOINT} (exists; create a key with POST /api/v1/endpoints/{DEMO_ENDPOINT}/keys/)"
        )
        return None
    version = _ready_version(wait_s)
    if version is None:
        write("demo endpoint: not created yet, the demo model is not validated; run modelhub_bootstrap again later")
        return None
    # A development endpoint: it serves the demo version as uploaded, never promoted, and
    # the environment rule holds (production endpoints take Production versions only).
    endpoint = endpoints.endpoint_create(
        name=DEMO_ENDPOINT,
        user=admin,
        environment=Endpoint.Environment.DEVELOPMENT,
        description="The demo iris classifier (a development endpoint), served in the web processes.",
        postprocessing={"steps": [{"op": "labels", "output": "label", "name": "species"}]},
    )
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[{"model": DEMO_MODEL_NAME, "version": version.version, "role": "primary", "weight": 100}],
        user=admin,
        comment="bootstrap",
    )
    _, key = api_keys.api_key_create(name="demo", endpoints=[endpoint], user=admin)
    write(f"demo endpoint created: {DEMO_ENDPOINT} -> {version} (in-process). API key (shown once): {key}")
    write(
        f"try it:\n  curl -s -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        f"-d '{{\"instances\": [[5.1, 3.5, 1.4, 0.2]]}}' {base_url}/api/v1/endpoints/{DEMO_ENDPOINT}/predict"
    )
    return key
